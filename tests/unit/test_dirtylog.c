/*
 * The dirty log is exact: every page whose content changed is reported.
 *
 * Modelled on the idea of KVM's dirty_log_test (a guest stamps an iteration
 * number into random pages; the host checks its log against memory), but
 * with a memory oracle instead of the stamps: the test keeps a host copy of
 * guest RAM as of the previous collection, exactly what a migration
 * destination would hold, and updates it only from the pages the log
 * reports.  Any page whose bytes differ from the copy but was not reported
 * is a miss, and a miss here is silent corruption after a migration.
 * Reported pages that did not change are false positives: allowed, counted
 * and printed.
 *
 * The guest is `dirty pattern=stamp`, whose iteration is host_seq; the test
 * bumps host_seq through gmem_write between iterations, which is itself a
 * VMM-side write the log must report.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirtylog/dirtylog.h"
#include "helpers.h"

#define MB (1ull << 20)
#define PAGE 4096ull
#define ITERATIONS 30
#define WSS_PAGES ((32 * MB) / PAGE)
#define REARM_CHUNK 4096u           /* pages per dlog_rearm in the tests */

static struct vm *create_for(enum dlog_backend b, unsigned ncpus, uint64_t mem,
			     uint32_t ring_bytes)
{
	struct vm_config cfg = { .mem_size = mem, .ncpus = ncpus };
	enum dlog_backend chosen;
	struct vm *vm;
	int rc = dlog_prepare(b, &cfg, &chosen);

	cr_assert_eq(rc, 0, "dlog_prepare(%s): %s", dlog_name(b), ferr_msg(rc));
	if (b != DLOG_AUTO)
		cr_assert_eq(chosen, b);
	if (ring_bytes && cfg.dirty_ring_bytes)
		cfg.dirty_ring_bytes = ring_bytes;      /* a small ring fills often */
	vm = tvm_create_cfg(&cfg);
	dlog_attach(vm, chosen);
	return vm;
}

static void set_host_seq(struct vm *vm, uint64_t seq)
{
	cr_assert_eq(gmem_write(&vm->mem, FERRY_BOOTINFO_GPA +
				offsetof(struct ferry_bootinfo, host_seq),
				&seq, sizeof(seq)), 0);
}

static bool test_bit(const uint64_t *bm, uint64_t p)
{
	return (bm[p / 64] >> (p % 64)) & 1;
}

static uint64_t popcount_bm(const uint64_t *bm, uint64_t words)
{
	uint64_t c = 0;

	for (uint64_t i = 0; i < words; i++)
		c += (uint64_t)__builtin_popcountll(bm[i]);
	return c;
}

/*
 * What a migration does with a collection: for clear, re-arm each chunk
 * just before reading it; then copy the reported pages to the destination.
 */
static void send_reported(struct dlog *d, struct vm *vm, const uint64_t *bm, uint8_t *copy)
{
	uint64_t npages = vm->mem.npages;

	for (uint64_t first = 0; first < npages; first += REARM_CHUNK) {
		uint64_t n = MIN((uint64_t)REARM_CHUNK, npages - first);
		int rc = dlog_rearm(d, bm, first, n);

		cr_assert_eq(rc, 0, "dlog_rearm: %s", ferr_msg(rc));
		for (uint64_t p = first; p < first + n; p++)
			if (test_bit(bm, p))
				memcpy(copy + p * PAGE, vm->mem.hva + p * PAGE, PAGE);
	}
}

struct tally {
	uint64_t changed, reported, false_pos;
};

/*
 * Compares RAM with the copy: returns the misses, and counts changed and
 * falsely reported pages, and per vCPU the changed pages of its slice.
 */
static uint64_t check_against_copy(struct vm *vm, const uint64_t *bm, const uint8_t *copy,
				   struct tally *t, uint64_t *slice_changed, uint64_t *first_miss)
{
	uint64_t misses = 0, data0 = FERRY_DATA_GPA / PAGE;
	uint64_t per = WSS_PAGES / vm->ncpus;

	for (uint64_t p = 0; p < vm->mem.npages; p++) {
		bool changed = memcmp(copy + p * PAGE, vm->mem.hva + p * PAGE, PAGE) != 0;
		bool reported = test_bit(bm, p);

		if (changed && !reported && misses++ == 0)
			*first_miss = p;
		t->changed += changed;
		t->reported += reported;
		t->false_pos += reported && !changed;
		if (changed && p >= data0 && p < data0 + WSS_PAGES) {
			uint64_t cpu = (p - data0) / per;

			slice_changed[MIN(cpu, (uint64_t)vm->ncpus - 1)]++;
		}
	}
	return misses;
}

static void run_stamp(enum dlog_backend b, unsigned ncpus, uint32_t ring_bytes)
{
	const uint64_t mem = 64 * MB;
	const char *const args[] = { "pattern=stamp", "wss=32M", "report_ms=20", "seed=7", NULL };
	struct vm *vm = create_for(b, ncpus, mem, ring_bytes);
	uint64_t words = DIV_ROUND_UP(vm->mem.npages, 64), count, first_miss = 0;
	uint64_t *bm = calloc(words, sizeof(uint64_t));
	uint8_t *copy = malloc(mem);
	uint64_t counts[4], slice_changed[4], est_total[4] = { 0 }, act_total[4] = { 0 };
	struct tally t = { 0 };
	struct dlog_stats st;
	struct dlog *d;
	char msg[256];
	int rc;

	cr_assert(bm && copy);
	tvm_boot(vm, "dirty", args);
	set_host_seq(vm, 1);
	vm_start(vm);
	tsleep_ms(20);
	rc = dlog_start(vm, b, &d);                 /* while the guest runs */
	cr_assert_eq(rc, 0, "dlog_start(%s): %s", dlog_name(b), ferr_msg(rc));
	cr_assert_eq(dlog_backend_of(d), b);
	tsleep_ms(10);

	vm_pause(vm, NULL);
	cr_assert_eq(dlog_collect(d, bm, &count), 0);
	cr_assert_eq(count, vm->mem.npages, "the first collection reported %lu of %lu pages",
		     (unsigned long)count, (unsigned long)vm->mem.npages);
	send_reported(d, vm, bm, copy);

	for (unsigned it = 1; it <= ITERATIONS; it++) {
		uint64_t misses;

		set_host_seq(vm, it + 1);
		vm_resume(vm);
		tsleep_ms(5 + it % 4 * 5);
		vm_pause(vm, NULL);
		memset(bm, 0, words * sizeof(uint64_t));
		rc = dlog_collect(d, bm, &count);
		cr_assert_eq(rc, 0, "dlog_collect: %s", ferr_msg(rc));
		cr_assert_eq(count, popcount_bm(bm, words));
		memset(slice_changed, 0, sizeof(slice_changed));
		misses = check_against_copy(vm, bm, copy, &t, slice_changed, &first_miss);
		cr_assert_eq(misses, 0,
			     "%s, %u vCPUs, iteration %u: %lu changed pages not reported (first: page %#lx)",
			     dlog_name(b), ncpus, it, (unsigned long)misses,
			     (unsigned long)first_miss);
		cr_assert(test_bit(bm, FERRY_BOOTINFO_GPA / PAGE),
			  "the host_seq write (VMM side) was not reported");
		cr_assert_eq(dlog_vcpu_counts(d, counts), 0);
		for (unsigned i = 0; i < ncpus; i++) {
			/* The ring is exact: each changed page of a vCPU's slice
			 * was first written by that vCPU since the last reset. */
			if (b == DLOG_RING)
				cr_assert_geq(counts[i], slice_changed[i],
					      "iteration %u: vCPU %u ring count %lu < %lu pages it changed",
					      it, i, (unsigned long)counts[i],
					      (unsigned long)slice_changed[i]);
			est_total[i] += counts[i];
			act_total[i] += slice_changed[i];
		}
		send_reported(d, vm, bm, copy);
	}
	dlog_get_stats(d, &st);
	if (ring_bytes)
		cr_assert_gt(st.ring_full_exits, 0, "a %u-byte ring never filled", ring_bytes);
	fprintf(stderr, "dirtylog %-6s %u vCPU%s: %u iterations, %lu pages changed, %lu reported, "
		"%lu false positives, %lu full-ring exits; per vCPU (counted/changed in slice):",
		dlog_name(b), ncpus, ncpus > 1 ? "s" : "", ITERATIONS, (unsigned long)t.changed,
		(unsigned long)t.reported, (unsigned long)t.false_pos,
		(unsigned long)st.ring_full_exits);
	for (unsigned i = 0; i < ncpus; i++)
		fprintf(stderr, " %lu/%lu", (unsigned long)est_total[i], (unsigned long)act_total[i]);
	fprintf(stderr, "\n");

	dlog_stop(d);
	vm_resume(vm);
	tvm_request_stop(vm);
	cr_assert_eq(tvm_wait_end(vm, 30000, msg, sizeof(msg)), 0, "%s", msg);
	vm_destroy(vm);
	free(copy);
	free(bm);
}

Test(dirtylog, stamp_bitmap_1_vcpu) { run_stamp(DLOG_BITMAP, 1, 0); }
Test(dirtylog, stamp_bitmap_2_vcpus) { run_stamp(DLOG_BITMAP, 2, 0); }
Test(dirtylog, stamp_bitmap_4_vcpus) { run_stamp(DLOG_BITMAP, 4, 0); }
Test(dirtylog, stamp_clear_1_vcpu) { run_stamp(DLOG_CLEAR, 1, 0); }
Test(dirtylog, stamp_clear_2_vcpus) { run_stamp(DLOG_CLEAR, 2, 0); }
Test(dirtylog, stamp_clear_4_vcpus) { run_stamp(DLOG_CLEAR, 4, 0); }
Test(dirtylog, stamp_ring_1_vcpu) { run_stamp(DLOG_RING, 1, 0); }
Test(dirtylog, stamp_ring_2_vcpus) { run_stamp(DLOG_RING, 2, 0); }
Test(dirtylog, stamp_ring_4_vcpus) { run_stamp(DLOG_RING, 4, 0); }
/* 256 entries per ring: full-ring exits all the time, harvested by the
 * reaper while the vCPUs wait, between the test's own collections. */
Test(dirtylog, stamp_small_ring_2_vcpus) { run_stamp(DLOG_RING, 2, 4096); }

/*
 * Pre-copy as a migration does it: collect and copy while the guest runs
 * (for clear, re-arm each chunk just before copying it), then pause, do a
 * last round, and require the copy to equal guest RAM byte for byte.  Pages
 * copied while the guest was writing them are torn, which is fine only if
 * the log reports them again: the final comparison proves it did.
 */
static void run_precopy(enum dlog_backend b, uint32_t ring_bytes)
{
	const uint64_t mem = 64 * MB;
	const char *const args[] = { "pattern=random", "wss=32M", "report_ms=20", "seed=3", NULL };
	struct vm *vm = create_for(b, 2, mem, ring_bytes);
	uint64_t words = DIV_ROUND_UP(vm->mem.npages, 64), count, differ = 0, first = 0;
	uint64_t *bm = calloc(words, sizeof(uint64_t));
	uint8_t *copy = calloc(1, mem);
	struct dlog *d;
	char msg[256];
	int rc;

	cr_assert(bm && copy);
	tvm_boot(vm, "dirty", args);
	vm_start(vm);
	tsleep_ms(20);
	rc = dlog_start(vm, b, &d);
	cr_assert_eq(rc, 0, "dlog_start(%s): %s", dlog_name(b), ferr_msg(rc));
	for (unsigned round = 0; round < 15; round++) {
		memset(bm, 0, words * sizeof(uint64_t));
		cr_assert_eq(dlog_collect(d, bm, &count), 0);
		send_reported(d, vm, bm, copy);
		tsleep_ms(5 + round % 3 * 5);
	}
	vm_pause(vm, NULL);
	memset(bm, 0, words * sizeof(uint64_t));
	cr_assert_eq(dlog_collect(d, bm, &count), 0);
	send_reported(d, vm, bm, copy);
	for (uint64_t p = 0; p < vm->mem.npages; p++)
		if (memcmp(copy + p * PAGE, vm->mem.hva + p * PAGE, PAGE) && differ++ == 0)
			first = p;
	cr_assert_eq(differ, 0, "%s: after pre-copy %lu pages differ from guest RAM (first: %#lx)",
		     dlog_name(b), (unsigned long)differ, (unsigned long)first);
	dlog_stop(d);
	vm_resume(vm);
	tvm_request_stop(vm);
	cr_assert_eq(tvm_wait_end(vm, 30000, msg, sizeof(msg)), 0, "%s", msg);
	vm_destroy(vm);
	free(copy);
	free(bm);
}

Test(dirtylog, precopy_bitmap) { run_precopy(DLOG_BITMAP, 0); }
Test(dirtylog, precopy_clear) { run_precopy(DLOG_CLEAR, 0); }
Test(dirtylog, precopy_ring) { run_precopy(DLOG_RING, 0); }
Test(dirtylog, precopy_small_ring) { run_precopy(DLOG_RING, 4096); }
