/*
 * The benchmark's plots, drawn by gnuplot from data files the harness
 * writes next to them (so a reader can re-plot or check them):
 *
 *   downtime.png   median downtime against the guest's dirty rate during
 *                  the migration, one line per configuration (everything
 *                  but the workload), QEMU's lines dashed;
 *   timeline.png   one migration's iterations: pages sent and dirty pages
 *                  left, from query-migrate's `iterations`.
 *
 * The dirty-rate axis is logarithmic, so an idle guest (0 MB/s) is drawn
 * at 1 MB/s.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/util.h"
#include "bench.h"

#define MAX_SERIES 64

struct point {
	double x, y, p90;
};

static int cmp_point(const void *a, const void *b)
{
	double x = ((const struct point *)a)->x, y = ((const struct point *)b)->x;

	return x < y ? -1 : x > y;
}

/* The configuration without its workload: what one line of the plot is. */
static const char *series_key(const struct bench_cfg *c, enum bench_engine e, char *buf,
			      size_t len)
{
	char mem[16];

	if (c->mem_mib % 1024 == 0)
		snprintf(mem, sizeof(mem), "%uG", c->mem_mib / 1024);
	else
		snprintf(mem, sizeof(mem), "%uM", c->mem_mib);
	snprintf(buf, len, "%s%s %ucpu %uch %s %ums", e == BENCH_QEMU ? "QEMU " : "", mem,
		 c->vcpus, c->channels, c->compress_none ? "none" : "auto", c->downtime_ms);
	if (c->wss_mib) {
		size_t l = strlen(buf);

		snprintf(buf + l, len - l, " wss %uM", c->wss_mib);
	}
	return buf;
}

static double rate_of(const struct bench_result *r, unsigned nr, unsigned cfg,
		      enum bench_engine e)
{
	double x = bench_stat_metric(r, nr, cfg, e, BM_DIRTY_DURING).median;

	if (!isfinite(x))
		x = bench_stat_metric(r, nr, cfg, e, BM_DIRTY_BEFORE).median;
	return isfinite(x) && x > 1 ? x : 1;
}

static int downtime_data(const char *dir, const struct bench_cfg *cfgs, unsigned ncfg,
			 const struct bench_result *r, unsigned nr, FILE *gp)
{
	char keys[MAX_SERIES][96], key[96], path[512];
	unsigned nkeys = 0, block = 0;
	struct point *pts = calloc(ncfg ? ncfg : 1, sizeof(*pts));
	FILE *f;

	if (!pts)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/downtime.dat", dir);
	f = fopen(path, "we");
	if (!f) {
		free(pts);
		return ferr_sys(errno, "cannot create %s", path);
	}
	for (int e = BENCH_FERRY; e <= BENCH_QEMU; e++)
		for (unsigned i = 0; i < ncfg; i++) {
			series_key(&cfgs[i], e, key, sizeof(key));
			unsigned k;

			for (k = 0; k < nkeys && strcmp(keys[k], key) != 0; k++)
				;
			if (k == nkeys && nkeys < MAX_SERIES &&
			    isfinite(bench_stat_metric(r, nr, i, e, BM_DOWNTIME).median))
				snprintf(keys[nkeys++], sizeof(keys[0]), "%s", key);
		}
	fprintf(gp, "plot ");
	for (unsigned k = 0; k < nkeys; k++) {
		unsigned np = 0;
		bool qemu = strncmp(keys[k], "QEMU ", 5) == 0;
		enum bench_engine e = qemu ? BENCH_QEMU : BENCH_FERRY;

		for (unsigned i = 0; i < ncfg; i++) {
			struct bench_stat d = bench_stat_metric(r, nr, i, e, BM_DOWNTIME);

			if (strcmp(series_key(&cfgs[i], e, key, sizeof(key)), keys[k]) != 0 ||
			    !isfinite(d.median))
				continue;
			pts[np++] = (struct point){ rate_of(r, nr, i, e), d.median, d.p90 };
		}
		qsort(pts, np, sizeof(*pts), cmp_point);
		fprintf(f, "# %s\n# dirty_mbps downtime_median_ms downtime_p90_ms\n", keys[k]);
		for (unsigned p = 0; p < np; p++)
			fprintf(f, "%.3f %.3f %.3f\n", pts[p].x, pts[p].y, pts[p].p90);
		fputs("\n\n", f);
		fprintf(gp, "%s'downtime.dat' index %u using 1:2 with linespoints lw 2 %s title \"%s\"",
			k ? ", \\\n     " : "", block++, qemu ? "dt 2" : "dt 1", keys[k]);
	}
	if (!nkeys)
		fprintf(gp, "NaN title \"no successful run\"");
	fputc('\n', gp);
	free(pts);
	if (fclose(f) != 0)
		return ferr_sys(errno, "cannot write %s", path);
	return 0;
}

/* The successful ferry run with the most iterations: the liveliest timeline. */
static const struct bench_result *pick_timeline(const struct bench_result *r, unsigned nr)
{
	const struct bench_result *best = NULL;

	for (unsigned i = 0; i < nr; i++)
		if (r[i].ok && r[i].engine == BENCH_FERRY && json_array_size(r[i].iterations) &&
		    (!best || json_array_size(r[i].iterations) > json_array_size(best->iterations)))
			best = &r[i];
	return best;
}

static int timeline_data(const char *dir, const struct bench_cfg *cfgs,
			 const struct bench_result *run, FILE *gp)
{
	char path[512], label[96];
	json_t *it;
	size_t i;
	FILE *f;

	snprintf(path, sizeof(path), "%s/timeline.dat", dir);
	f = fopen(path, "we");
	if (!f)
		return ferr_sys(errno, "cannot create %s", path);
	fputs("# iteration start_ms duration_ms dirty_pages pages_sent wire_bytes throttle_pct "
	      "left_after\n", f);
	json_array_foreach(run->iterations, i, it) {
		json_t *next = json_array_get(run->iterations, i + 1);

		/* What is left when an iteration ends is what the next one collects. */
		fprintf(f, "%lld %.3f %.3f %lld %lld %lld %lld %lld\n",
			json_integer_value(json_object_get(it, "iteration")),
			json_number_value(json_object_get(it, "start_ms")),
			json_number_value(json_object_get(it, "duration_ms")),
			json_integer_value(json_object_get(it, "dirty_pages")),
			json_integer_value(json_object_get(it, "pages_sent")),
			json_integer_value(json_object_get(it, "wire_bytes")),
			json_integer_value(json_object_get(it, "throttle_pct")),
			next ? json_integer_value(json_object_get(next, "dirty_pages")) : 0ll);
	}
	if (fclose(f) != 0)
		return ferr_sys(errno, "cannot write %s", path);
	fprintf(gp,
		"set output 'timeline.png'\n"
		"set title \"One migration: %s, run %u (downtime %.2f ms, total %.1f ms)\"\n"
		"set xlabel 'iteration (the last one is sent while the VM is stopped)'\n"
		"set ylabel 'pages'\nset logscale y\nunset logscale x\n"
		"set y2label 'vCPU throttle, %%'\nset y2range [0:100]\nset y2tics\n"
		"set xtics 1\nset key inside right top\nset style fill solid 0.5\nset boxwidth 0.6\n"
		"plot 'timeline.dat' using 1:5 with boxes title 'pages sent in the iteration', \\\n"
		"     'timeline.dat' using 1:($8 > 0 ? $8 : NaN) with linespoints lw 2 pt 7 "
		"title 'dirty pages left when it ended', \\\n"
		"     'timeline.dat' using 1:7 axes x1y2 with steps dt 2 title 'throttle %%'\n",
		bench_cfg_label(&cfgs[run->cfg], label, sizeof(label)), run->rep,
		run->v[BM_DOWNTIME], run->v[BM_TOTAL]);
	return 0;
}

int bench_plot(const char *dir, const struct bench_cfg *cfgs, unsigned ncfg,
	       const struct bench_result *r, unsigned nr)
{
	const struct bench_result *run = pick_timeline(r, nr);
	char path[512], log[512];
	char *argv[] = { "/usr/bin/gnuplot", "plots.gp", NULL };
	struct bench_child ch;
	FILE *gp;
	int rc;

	snprintf(path, sizeof(path), "%s/plots.gp", dir);
	gp = fopen(path, "we");
	if (!gp)
		return ferr_sys(errno, "cannot create %s", path);
	fputs("# Written by ferry bench; run `gnuplot plots.gp` in this directory.\n"
	      "set terminal pngcairo size 1100,700 noenhanced font ',10'\n"
	      "set output 'downtime.png'\n"
	      "set title 'Downtime against the guest dirty rate during the migration (medians)'\n"
	      "set xlabel 'guest dirty rate, MB/s (idle drawn at 1)'\n"
	      "set ylabel 'downtime, ms'\nset logscale x\nset grid\n"
	      "set key outside right top\n", gp);
	rc = downtime_data(dir, cfgs, ncfg, r, nr, gp);
	if (!rc && run)
		rc = timeline_data(dir, cfgs, run, gp);
	if (fclose(gp) != 0 && !rc)
		rc = ferr_sys(errno, "cannot write %s", path);
	if (rc)
		return rc;
	if (access(argv[0], X_OK) != 0)
		return ferr(ENOENT, "gnuplot is not installed (apt-get install gnuplot-nox); "
			    "the data and %s are written", path);
	snprintf(log, sizeof(log), "%s/gnuplot.log", dir);
	/* gnuplot reads its data files relative to its working directory;
	 * dir and so log are absolute (cmd_bench makes them so). */
	{
		char cwd[4096];

		if (!getcwd(cwd, sizeof(cwd)) || chdir(dir) < 0)
			return ferr_sys(errno, "cannot change to %s", dir);
		rc = bench_spawn(argv, log, &ch);
		if (chdir(cwd) < 0 && !rc)
			rc = ferr_sys(errno, "cannot change back to %s", cwd);
	}
	if (rc)
		return rc;
	if (!bench_wait(&ch, 60000)) {
		bench_kill(&ch);
		return ferr(ETIMEDOUT, "gnuplot did not finish within 60 s");
	}
	if (ch.status != 0)
		return ferr(EIO, "gnuplot failed with status %d (see %s)", ch.status, log);
	return 0;
}
