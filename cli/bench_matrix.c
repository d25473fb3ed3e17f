/*
 * The configurations `ferry bench` runs.  The full matrix crosses memory
 * size, workload, vCPUs, channels and compression at the default downtime
 * target, then adds a downtime-target sweep and a dirty-rate sweep around
 * the 1 GiB baseline.  --quick keeps the 256 MiB and 1 GiB baselines, the
 * dirty-rate sweep that the downtime plot needs, and one variation of each
 * other dimension, so it fits in a few minutes on a 2-core machine.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/util.h"
#include "bench.h"

#define MAX_CFGS 256

static void add(struct bench_cfg *v, unsigned *n, struct bench_cfg c)
{
	/* A configuration reached by two routes runs once. */
	for (unsigned i = 0; i < *n; i++)
		if (memcmp(&v[i], &c, sizeof(c)) == 0)
			return;
	if (*n < MAX_CFGS)
		v[(*n)++] = c;
}

static struct bench_cfg base(unsigned mem_mib, enum bench_workload w, unsigned rate)
{
	struct bench_cfg c;

	memset(&c, 0, sizeof(c));   /* padding too: add() compares bytes */
	c.mem_mib = mem_mib;
	c.workload = w;
	c.rate_mbs = rate;
	c.vcpus = 1;
	c.channels = 1;
	c.downtime_ms = 10;
	return c;
}

static void quick_matrix(struct bench_cfg *v, unsigned *n)
{
	static const unsigned rates[] = { 50, 200 };
	struct bench_cfg c;

	add(v, n, base(256, BW_IDLE, 0));
	add(v, n, base(256, BW_INCREMENT, 0));
	add(v, n, base(1024, BW_IDLE, 0));
	add(v, n, base(1024, BW_INCREMENT, 0));
	for (unsigned i = 0; i < ARRAY_SIZE(rates); i++)
		add(v, n, base(1024, BW_RANDOM, rates[i]));
	c = base(1024, BW_INCREMENT, 0);
	c.vcpus = 2;
	add(v, n, c);
	c = base(1024, BW_RANDOM, 200);
	c.channels = 2;
	add(v, n, c);
	c = base(1024, BW_RANDOM, 200);
	c.compress_none = true;
	add(v, n, c);
	c = base(1024, BW_INCREMENT, 0);
	c.downtime_ms = 2;
	add(v, n, c);
}

static void full_matrix(struct bench_cfg *v, unsigned *n)
{
	static const unsigned mems[] = { 256, 1024, 4096 };
	static const struct { enum bench_workload w; unsigned rate; } loads[] = {
		{ BW_IDLE, 0 }, { BW_INCREMENT, 0 }, { BW_RANDOM, 50 }, { BW_RANDOM, 200 },
	};
	static const unsigned rates[] = { 25, 100, 400 }, downtimes[] = { 2, 50 };

	for (unsigned m = 0; m < ARRAY_SIZE(mems); m++)
		for (unsigned l = 0; l < ARRAY_SIZE(loads); l++)
			for (unsigned cpus = 1; cpus <= 2; cpus++)
				for (unsigned ch = 1; ch <= 2; ch++)
					for (unsigned z = 0; z < 2; z++) {
						struct bench_cfg c = base(mems[m], loads[l].w,
									  loads[l].rate);

						c.vcpus = cpus;
						c.channels = ch;
						c.compress_none = z;
						add(v, n, c);
					}
	for (unsigned r = 0; r < ARRAY_SIZE(rates); r++)
		for (unsigned ch = 1; ch <= 2; ch++) {
			struct bench_cfg c = base(1024, BW_RANDOM, rates[r]);

			c.channels = ch;
			add(v, n, c);
		}
	for (unsigned d = 0; d < ARRAY_SIZE(downtimes); d++) {
		struct bench_cfg c = base(1024, BW_INCREMENT, 0);

		c.downtime_ms = downtimes[d];
		add(v, n, c);
		c = base(1024, BW_RANDOM, 200);
		c.downtime_ms = downtimes[d];
		add(v, n, c);
	}
}

int bench_matrix(bool quick, struct bench_cfg **out, unsigned *n)
{
	struct bench_cfg *v = calloc(MAX_CFGS, sizeof(*v));

	if (!v)
		return -ENOMEM;
	*n = 0;
	if (quick)
		quick_matrix(v, n);
	else
		full_matrix(v, n);
	*out = v;
	return 0;
}

const char *bench_workload_name(const struct bench_cfg *c, char *buf, size_t len)
{
	if (c->workload == BW_IDLE)
		snprintf(buf, len, "idle");
	else if (c->workload == BW_INCREMENT)
		snprintf(buf, len, "increment");
	else if (c->rate_mbs)
		snprintf(buf, len, "random-%uMBps", c->rate_mbs);
	else
		snprintf(buf, len, "random");
	return buf;
}

const char *bench_cfg_label(const struct bench_cfg *c, char *buf, size_t len)
{
	char w[32], mem[16];

	if (c->mem_mib % 1024 == 0)
		snprintf(mem, sizeof(mem), "%uG", c->mem_mib / 1024);
	else
		snprintf(mem, sizeof(mem), "%uM", c->mem_mib);
	snprintf(buf, len, "%s %s %ucpu %uch %s %ums", mem, bench_workload_name(c, w, sizeof(w)),
		 c->vcpus, c->channels, c->compress_none ? "none" : "auto", c->downtime_ms);
	if (c->wss_mib) {
		size_t l = strlen(buf);

		snprintf(buf + l, len - l, " wss %uM", c->wss_mib);
	}
	return buf;
}

uint64_t bench_wss(const struct bench_cfg *c)
{
	if (c->wss_mib)
		return (uint64_t)c->wss_mib << 20;
	/* idle fills a little memory, like a booted but quiet guest; dirty
	 * takes its default, all of the data area above 16 MiB. */
	if (c->workload == BW_IDLE)
		return 4ull << 20;
	return ((uint64_t)c->mem_mib - 16) << 20;
}

/*
 * Measured on this machine: a first touch of a guest page costs ~20 us, so
 * the warm-up pass dominates; the migration moves ~0.3-1 GB/s; start-up,
 * the settle time and the guest's final verification take ~1.5 s.
 */
double bench_estimate_s(const struct bench_cfg *c)
{
	double pages = (double)bench_wss(c) / 4096, s = 1.5;

	if (c->workload == BW_INCREMENT)
		s += pages * 20e-6 / c->vcpus + (double)bench_wss(c) / 500e6;
	else if (c->workload == BW_RANDOM)
		s += 2.0 + 1.0;
	return s;
}

bool bench_qemu_can_run(const struct bench_cfg *c)
{
	/* The boot-sector guest runs on the boot CPU only, without compression
	 * settings to compare: it does idle and increment. */
	return c->vcpus == 1 && !c->compress_none && c->workload != BW_RANDOM;
}

static int parse_field(const char *k, const char *v, struct bench_cfg *c)
{
	uint64_t n;

	if (strcmp(k, "mem") == 0) {
		if (parse_size(v, &n) < 0 || n % (2ull << 20) || n < (64ull << 20) || n > (64ull << 30))
			return ferr(EINVAL, "mem=%s must be 64M to 64G, a multiple of 2M", v);
		c->mem_mib = (unsigned)(n >> 20);
	} else if (strcmp(k, "wss") == 0) {
		if (parse_size(v, &n) < 0 || n % (1ull << 20) || n == 0 || n > (64ull << 30))
			return ferr(EINVAL, "wss=%s must be whole MiB, at least 1M", v);
		c->wss_mib = (unsigned)(n >> 20);
	} else if (strcmp(k, "workload") == 0) {
		if (strcmp(v, "idle") == 0)
			c->workload = BW_IDLE;
		else if (strcmp(v, "increment") == 0)
			c->workload = BW_INCREMENT;
		else if (strcmp(v, "random") == 0)
			c->workload = BW_RANDOM;
		else
			return ferr(EINVAL, "workload=%s must be idle, increment or random", v);
	} else if (strcmp(k, "compress") == 0) {
		if (strcmp(v, "auto") != 0 && strcmp(v, "none") != 0)
			return ferr(EINVAL, "compress=%s must be auto or none", v);
		c->compress_none = strcmp(v, "none") == 0;
	} else {
		static const struct { const char *key; unsigned max; size_t off; } nums[] = {
			{ "rate", 100000, offsetof(struct bench_cfg, rate_mbs) },
			{ "cpus", 16, offsetof(struct bench_cfg, vcpus) },
			{ "channels", 16, offsetof(struct bench_cfg, channels) },
			{ "downtime", 60000, offsetof(struct bench_cfg, downtime_ms) },
		};
		unsigned i;

		for (i = 0; i < ARRAY_SIZE(nums) && strcmp(k, nums[i].key) != 0; i++)
			;
		if (i == ARRAY_SIZE(nums))
			return ferr(EINVAL, "unknown key '%s' (mem, workload, rate, cpus, channels, "
				    "compress, downtime, wss)", k);
		if (parse_u64(v, &n) < 0 || n > nums[i].max || (n == 0 && i > 0))
			return ferr(EINVAL, "%s=%s must be %u to %u", k, v, i > 0, nums[i].max);
		*(unsigned *)((char *)c + nums[i].off) = (unsigned)n;
	}
	return 0;
}

int bench_parse_cfg(const char *spec, struct bench_cfg *c)
{
	char buf[256], *save = NULL, *tok;

	*c = base(1024, BW_INCREMENT, 0);
	if (strlen(spec) >= sizeof(buf))
		return ferr(EINVAL, "the configuration '%.32s...' is too long", spec);
	strcpy(buf, spec);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		int rc;

		if (!eq || eq == tok)
			return ferr(EINVAL, "'%s' is not KEY=VALUE", tok);
		*eq = 0;
		if ((rc = parse_field(tok, eq + 1, c)) < 0)
			return rc;
	}
	if (c->workload != BW_RANDOM && c->rate_mbs)
		return ferr(EINVAL, "rate applies to workload=random only");
	if (c->wss_mib && (uint64_t)c->wss_mib + 16 > c->mem_mib)
		return ferr(EINVAL, "wss=%uM does not fit above the first 16 MiB of mem=%uM",
			    c->wss_mib, c->mem_mib);
	return 0;
}
