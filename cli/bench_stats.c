/*
 * Statistics of the benchmark's repetitions: median, p90 and max over the
 * successful runs of one configuration.  p90 is the nearest-rank
 * percentile (the smallest value with at least 90% of the values at or
 * below it), so with few repetitions it is an actual measured value, not
 * an interpolation; with 5 runs it equals the max.  Failed runs are
 * counted apart by bench_count() and never averaged in.
 */
#include <math.h>
#include <stdlib.h>

#include "bench.h"

const struct bench_metric_info bench_metrics[BM_COUNT] = {
	[BM_DOWNTIME] = { "downtime_ms", "downtime ms", 2, true },
	[BM_STALL] = { "guest_stall_ms", "guest stall ms", 1, true },
	[BM_TOTAL] = { "total_ms", "total ms", 1, true },
	[BM_SETUP] = { "setup_ms", "setup ms", 1, true },
	[BM_WIRE] = { "wire_mib", "wire MiB", 1, true },
	[BM_ITERATIONS] = { "iterations", "iterations", 0, true },
	[BM_THROUGHPUT] = { "throughput_mbps", "throughput MB/s", 0, true },
	[BM_DIRTY_BEFORE] = { "dirty_before_mbps", "dirty before MB/s", 0, true },
	[BM_DIRTY_DURING] = { "dirty_during_mbps", "dirty during MB/s", 0, true },
	[BM_LOG_RATE] = { "log_dirty_mbps", "dirty-log MB/s", 0, false },
	[BM_STALL_BEFORE] = { "stall_before_ms", "stall before ms", 1, false },
	[BM_FIRST_PASS] = { "first_pass_mbps", "first pass MB/s", 0, false },
	[BM_SRC_CPU] = { "src_cpu_s", "src CPU s", 3, true },
	[BM_DST_CPU] = { "dst_cpu_s", "dst CPU s", 3, true },
	[BM_SRC_RSS] = { "src_rss_mib", "src RSS MiB", 0, true },
	[BM_DST_RSS] = { "dst_rss_mib", "dst RSS MiB", 0, true },
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct bench_stat bench_stat_of(double *v, unsigned n)
{
	struct bench_stat s = { .median = NAN, .p90 = NAN, .max = NAN };
	unsigned k = 0;

	/* Compact the finite values to the front, then sort them. */
	for (unsigned i = 0; i < n; i++)
		if (isfinite(v[i]))
			v[k++] = v[i];
	s.n = k;
	if (!k)
		return s;
	qsort(v, k, sizeof(*v), cmp_double);
	s.median = k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
	s.p90 = v[(9 * k + 9) / 10 - 1];   /* ceil(0.9 k), 1-based rank */
	s.max = v[k - 1];
	return s;
}

struct bench_stat bench_stat_metric(const struct bench_result *r, unsigned nr, unsigned cfg,
				    enum bench_engine e, enum bench_metric m)
{
	struct bench_stat s = { .median = NAN, .p90 = NAN, .max = NAN };
	double *v = malloc((nr ? nr : 1) * sizeof(*v));
	unsigned k = 0;

	if (!v)
		return s;
	for (unsigned i = 0; i < nr; i++)
		if (r[i].cfg == cfg && r[i].engine == e && r[i].ok)
			v[k++] = r[i].v[m];
	s = bench_stat_of(v, k);
	free(v);
	return s;
}

void bench_count(const struct bench_result *r, unsigned nr, unsigned cfg, enum bench_engine e,
		 unsigned *runs, unsigned *failed)
{
	*runs = *failed = 0;
	for (unsigned i = 0; i < nr; i++)
		if (r[i].cfg == cfg && r[i].engine == e) {
			(*runs)++;
			*failed += !r[i].ok;
		}
}
