/*
 * bench/dirtylog: what dirty-page tracking costs, per backend and size,
 * reported per GiB like KVM's dirty_log_perf_test.
 *
 * For each backend and guest size, a fresh VM runs `dirty pattern=increment`
 * on 2 vCPUs over all of its data area (so every page is touched, then
 * rewritten pass after pass).  Measured:
 *   warm-up     first touch of every page (no tracking);
 *   rate off    pages the guest dirties per second, tracking off;
 *   start       dlog_start() on the running guest;
 *   collect     dlog_collect() with every page dirty, VM paused (as the KVM
 *               selftest measures it: vCPUs not in the guest);
 *   re-arm      dlog_rearm() over all of RAM in 64-page-aligned chunks of
 *               64 Ki pages, as a migration re-arms before sending (only the
 *               clear backend does work here);
 *   empty       collect + re-arm right after another one: the floor;
 *   rate on     pages per second while every first write faults;
 *   ring        harvest+reset cost per 64 Ki entries, from dlog_get_stats
 *               (includes the reaper's work on full rings), and per GiB
 *               dirtied (one entry per page: 4 x 64 Ki entries).
 * A "pass" is: resume, wait until every vCPU has rewritten its whole slice
 * since the last collection (its pass counter, as first reported after the
 * resume, advanced twice), pause, collect, re-arm.
 *
 * usage: bench/dirtylog [--quick] [--sizes G,G,...] [--backends b,b,...]
 *                       [--cpus N] [--passes N]
 *   --quick   1 GiB only, one pass per backend (well under a minute)
 * Default: 1, 4 and 16 GiB; 3 passes at 1 GiB, 2 at 4 GiB, 1 at 16 GiB.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/boot.h"
#include "core/loader.h"
#include "core/util.h"
#include "core/vm.h"
#include "dirtylog/dirtylog.h"

#define GIB (1ull << 30)
#define MAX_CPUS 16
#define REARM_CHUNK (64u * 1024)
#define PROGRESS_TIMEOUT_NS (900ull * 1000000000)

struct opts {
	unsigned sizes[8], nsizes;
	enum dlog_backend backends[3];
	unsigned nbackends;
	unsigned cpus;
	unsigned passes;            /* 0: by size */
};

struct result {
	double warm_s, rate_off, start_ms, collect_ms, rearm_ms, empty_us, rate_on;
	double ring_ms_per_64k, pages_per_collect;
	uint64_t full_exits;
};

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/*
 * Profiling hook: with FERRY_PERF_CTL (and FERRY_PERF_ACK) naming the
 * fifos of `perf record --control fifo:CTL,ACK -D -1`, only the collections
 * and re-arms of the tracked passes are recorded.
 */
static void perf_ctl(const char *cmd)
{
	const char *ctl = getenv("FERRY_PERF_CTL"), *ack = getenv("FERRY_PERF_ACK");
	char buf[16];
	FILE *f;

	if (!ctl || !(f = fopen(ctl, "w")))
		return;
	fprintf(f, "%s\n", cmd);
	fclose(f);
	if (ack && (f = fopen(ack, "r"))) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = 0;
		fclose(f);
	}
}


/* vCPU cpu's last reported pass counter, and when it was reported. */
static uint64_t pass_of_at(struct vm *vm, unsigned cpu, uint64_t *when)
{
	struct vcpu_progress p[VCPU_PROGRESS_MAX];
	unsigned n = vm_progress_get(vm, cpu, p, VCPU_PROGRESS_MAX);

	for (unsigned i = 0; i < n; i++)
		if (strcmp(p[i].key, "pass") == 0) {
			if (when)
				*when = p[i].updated_ns;
			return p[i].value;
		}
	if (when)
		*when = 0;
	return 0;
}

static uint64_t pass_of(struct vm *vm, unsigned cpu)
{
	return pass_of_at(vm, cpu, NULL);
}

/*
 * Pass counters as of a report made after `since`: a report is stale by up
 * to report_ms, which for a fast vCPU is many passes.
 */
static int fresh_passes(struct vm *vm, uint64_t since, uint64_t *out)
{
	uint64_t deadline = now_ns() + PROGRESS_TIMEOUT_NS;

	for (unsigned i = 0; i < vm->ncpus; i++) {
		uint64_t when = 0;

		while ((out[i] = pass_of_at(vm, i, &when)), when <= since) {
			if (vm_run_state(vm) == VM_ENDED || now_ns() > deadline)
				return -1;
			sleep_ms(1);
		}
	}
	return 0;
}

/* Waits until every vCPU's pass counter reached base[i] + ahead. */
static int wait_passes(struct vm *vm, const uint64_t *base, uint64_t ahead)
{
	uint64_t deadline = now_ns() + PROGRESS_TIMEOUT_NS;

	for (;;) {
		bool all = true;

		for (unsigned i = 0; i < vm->ncpus; i++)
			if (pass_of(vm, i) < base[i] + ahead)
				all = false;
		if (all)
			return 0;
		if (vm_run_state(vm) == VM_ENDED || now_ns() > deadline)
			return -1;
		sleep_ms(2);
	}
}

static void passes_now(struct vm *vm, uint64_t *out)
{
	for (unsigned i = 0; i < vm->ncpus; i++)
		out[i] = pass_of(vm, i);
}

static int boot_dirty(struct vm *vm, uint64_t wss)
{
	char wss_arg[48];
	char *args[] = { wss_arg, "pattern=increment", "report_ms=20" };

	snprintf(wss_arg, sizeof(wss_arg), "wss=%" PRIu64 "M", wss >> 20);
	return boot_program(vm, "dirty", args, 3);
}

static int rearm_all(struct dlog *d, const uint64_t *bm, uint64_t npages)
{
	for (uint64_t first = 0; first < npages; first += REARM_CHUNK) {
		int rc = dlog_rearm(d, bm, first, MIN((uint64_t)REARM_CHUNK, npages - first));

		if (rc)
			return rc;
	}
	return 0;
}

/* Pages dirtied per second over `ms` milliseconds, from pass counters. */
static double measure_rate(struct vm *vm, uint64_t slice_pages, unsigned ms)
{
	uint64_t a[MAX_CPUS], b[MAX_CPUS], t0, t1, passes = 0;

	passes_now(vm, a);
	t0 = now_ns();
	sleep_ms(ms);
	passes_now(vm, b);
	t1 = now_ns();
	for (unsigned i = 0; i < vm->ncpus; i++)
		passes += b[i] - a[i];
	return (double)passes * (double)slice_pages * 1e9 / (double)(t1 - t0);
}

#define FAIL(...) do { fprintf(stderr, "bench/dirtylog: " __VA_ARGS__); goto out; } while (0)

static int run_one(enum dlog_backend b, unsigned gib, unsigned cpus, unsigned passes,
		   struct result *res)
{
	uint64_t wss = (uint64_t)gib * GIB, words, count, base[MAX_CPUS], t0;
	uint64_t collect_ns = 0, rearm_ns = 0, pass_ns = 0, pages = 0;
	struct vm_config cfg = { .mem_size = wss + (16ull << 20), .ncpus = cpus };
	struct dlog_stats st;
	enum dlog_backend chosen;
	struct dlog *d = NULL;
	struct vm *vm = NULL;
	uint64_t *bm = NULL;
	int rc, status = -1;

	memset(res, 0, sizeof(*res));
	rc = dlog_prepare(b, &cfg, &chosen);
	if (!rc)
		rc = vm_create(&vm, &cfg);
	if (rc)
		FAIL("%s, %u GiB: %s\n", dlog_name(b), gib, ferr_msg(rc));
	dlog_attach(vm, chosen);
	vm->console_fd = 2;
	rc = boot_dirty(vm, wss);
	if (rc)
		FAIL("cannot boot the guest: %s\n", ferr_msg(rc));
	words = DIV_ROUND_UP(vm->mem.npages, 64);
	bm = calloc(words, sizeof(uint64_t));
	if (!bm)
		FAIL("out of memory\n");

	/* Warm-up: every page touched once, then the untracked rate. */
	passes_now(vm, base);
	t0 = now_ns();
	vm_start(vm);
	if (wait_passes(vm, base, 1))
		FAIL("the guest did not finish its first pass\n");
	res->warm_s = (double)(now_ns() - t0) / 1e9;
	res->rate_off = measure_rate(vm, wss / 4096 / cpus, 1000);

	t0 = now_ns();
	rc = dlog_start(vm, b, &d);
	res->start_ms = (double)(now_ns() - t0) / 1e6;
	if (rc)
		FAIL("dlog_start: %s\n", ferr_msg(rc));

	/* The first collection reports every page; send it. */
	vm_pause(vm, NULL);
	if (dlog_collect(d, bm, &count) || rearm_all(d, bm, vm->mem.npages))
		FAIL("first collection: %s\n", ferr_msg(-1));

	for (unsigned p = 0; p < passes; p++) {
		t0 = now_ns();
		vm_resume(vm);
		/* From the first report after resuming: +2, because the pass
		 * under way then covers only part of the slice. */
		if (fresh_passes(vm, t0, base) || wait_passes(vm, base, 2))
			FAIL("the guest stalled under tracking\n");
		vm_pause(vm, NULL);
		pass_ns += now_ns() - t0;
		memset(bm, 0, words * sizeof(uint64_t));
		perf_ctl("enable");
		t0 = now_ns();
		rc = dlog_collect(d, bm, &count);
		collect_ns += now_ns() - t0;
		t0 = now_ns();
		if (!rc)
			rc = rearm_all(d, bm, vm->mem.npages);
		rearm_ns += now_ns() - t0;
		perf_ctl("disable");
		if (rc)
			FAIL("collect/re-arm: %s\n", ferr_msg(rc));
		pages += count;
	}
	res->collect_ms = (double)collect_ns / passes / 1e6;
	res->rearm_ms = (double)rearm_ns / passes / 1e6;
	res->pages_per_collect = (double)pages / passes;
	res->rate_on = (double)pages * 1e9 / (double)pass_ns;

	/* Nothing dirtied since: the floor of a collection. */
	memset(bm, 0, words * sizeof(uint64_t));
	t0 = now_ns();
	rc = dlog_collect(d, bm, &count);
	if (!rc)
		rc = rearm_all(d, bm, vm->mem.npages);
	res->empty_us = (double)(now_ns() - t0) / 1e3;
	if (rc)
		FAIL("empty collection: %s\n", ferr_msg(rc));

	dlog_get_stats(d, &st);
	res->full_exits = st.ring_full_exits;
	if (st.ring_entries)
		res->ring_ms_per_64k = (double)st.ring_harvest_ns / (double)st.ring_entries *
				       65536.0 / 1e6;
	status = 0;
out:
	dlog_stop(d);
	if (vm) {
		vm_end(vm, 0, "benchmark done");
		vm_destroy(vm);
	}
	free(bm);
	return status;
}

static int parse_list(const char *s, struct opts *o, bool backends)
{
	char buf[128], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", s);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (backends) {
			enum dlog_backend b;

			if (o->nbackends == 3 || dlog_parse(t, &b) || b == DLOG_AUTO)
				return -1;
			o->backends[o->nbackends++] = b;
		} else {
			uint64_t v;

			if (o->nsizes == 8 || parse_u64(t, &v) || v == 0 || v > 48)
				return -1;
			o->sizes[o->nsizes++] = (unsigned)v;
		}
	}
	return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	bool quick = false;
	uint64_t v;

	*o = (struct opts){ .cpus = 2 };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--quick") == 0) {
			quick = true;
		} else if (strcmp(a, "--sizes") == 0 && val) {
			if (parse_list(val, o, false))
				return -1;
			i++;
		} else if (strcmp(a, "--backends") == 0 && val) {
			if (parse_list(val, o, true))
				return -1;
			i++;
		} else if (strcmp(a, "--cpus") == 0 && val && !parse_u64(val, &v) && v &&
			   v <= MAX_CPUS) {
			o->cpus = (unsigned)v;
			i++;
		} else if (strcmp(a, "--passes") == 0 && val && !parse_u64(val, &v) && v &&
			   v <= 100) {
			o->passes = (unsigned)v;
			i++;
		} else {
			return -1;
		}
	}
	if (!o->nsizes) {
		static const unsigned def[] = { 1, 4, 16 };

		for (unsigned i = 0; i < (quick ? 1u : 3u); i++)
			o->sizes[o->nsizes++] = def[i];
	}
	if (quick && !o->passes)
		o->passes = 1;
	if (!o->nbackends) {
		o->backends[0] = DLOG_BITMAP;
		o->backends[1] = DLOG_CLEAR;
		o->backends[2] = DLOG_RING;
		o->nbackends = 3;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	int failures = 0;

	if (parse_opts(argc, argv, &o)) {
		fprintf(stderr, "usage: bench/dirtylog [--quick] [--sizes G,G,...] "
			"[--backends bitmap,clear,ring] [--cpus N] [--passes N]\n");
		return 2;
	}
	printf("| backend | GiB | passes | pages/collect | warm-up s | rate off Mpages/s | start ms/GiB | "
	       "collect ms/GiB | re-arm ms/GiB | collect+re-arm ms/GiB | empty pass µs/GiB | "
	       "rate on kpages/s | ring ms/64k entries | ring harvest+reset ms/GiB | "
	       "full-ring exits |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
	fflush(stdout);
	for (unsigned s = 0; s < o.nsizes; s++) {
		for (unsigned k = 0; k < o.nbackends; k++) {
			unsigned gib = o.sizes[s];
			unsigned passes = o.passes ? o.passes : gib >= 16 ? 1 : gib >= 4 ? 2 : 3;
			struct result r;
			char ring[32] = "–", ring_gib[32] = "–";

			if (run_one(o.backends[k], gib, o.cpus, passes, &r)) {
				failures++;
				continue;
			}
			if (o.backends[k] == DLOG_RING) {
				snprintf(ring, sizeof(ring), "%.2f", r.ring_ms_per_64k);
				/* 1 GiB is 4 x 64 Ki pages, one entry per dirty page. */
				snprintf(ring_gib, sizeof(ring_gib), "%.2f", 4 * r.ring_ms_per_64k);
			}
			printf("| %s | %u | %u | %.0f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.0f | "
			       "%.0f | %s | %s | %" PRIu64 " |\n",
			       dlog_name(o.backends[k]), gib, passes, r.pages_per_collect, r.warm_s,
			       r.rate_off / 1e6,
			       r.start_ms / gib, r.collect_ms / gib, r.rearm_ms / gib,
			       (r.collect_ms + r.rearm_ms) / gib, r.empty_us / gib,
			       r.rate_on / 1e3, ring, ring_gib, r.full_exits);
			fflush(stdout);
		}
	}
	return failures ? 1 : 0;
}
