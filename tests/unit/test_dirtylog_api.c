/*
 * The dirty log's interface: names, choosing a backend, refusing what a VM
 * cannot do, VMM-side writes reported by every backend, and stopping
 * tracking without disturbing the guest.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dirtylog/dirtylog.h"
#include "helpers.h"

#define MB (1ull << 20)
#define PAGE 4096ull

static const enum dlog_backend all_backends[] = { DLOG_BITMAP, DLOG_CLEAR, DLOG_RING };

static struct vm *create_for(enum dlog_backend b, unsigned ncpus, uint64_t mem)
{
	struct vm_config cfg = { .mem_size = mem, .ncpus = ncpus };
	enum dlog_backend chosen;
	struct vm *vm;
	int rc = dlog_prepare(b, &cfg, &chosen);

	cr_assert_eq(rc, 0, "dlog_prepare(%s): %s", dlog_name(b), ferr_msg(rc));
	vm = tvm_create_cfg(&cfg);
	dlog_attach(vm, chosen);
	return vm;
}

static bool test_bit(const uint64_t *bm, uint64_t p)
{
	return (bm[p / 64] >> (p % 64)) & 1;
}

Test(dirtylog_api, parse_and_name_round_trip)
{
	static const char *const names[] = { "auto", "bitmap", "clear", "ring" };
	enum dlog_backend b;

	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(dlog_parse(names[i], &b), 0, "%s", names[i]);
		cr_assert_eq((unsigned)b, i);
		cr_assert_str_eq(dlog_name(b), names[i]);
	}
	cr_assert_str_eq(dlog_name((enum dlog_backend)42), "unknown");
}

Test(dirtylog_api, parse_rejects_bad_names)
{
	static const char *const bad[] = { "", "Ring", "bitmap ", " clear", "rings", "none",
					   "auto\n", "bit map", "dirty-ring" };
	enum dlog_backend b = DLOG_RING;

	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		ferr_clear();
		cr_assert_eq(dlog_parse(bad[i], &b), -EINVAL, "'%s' accepted", bad[i]);
		cr_assert_eq(b, DLOG_RING, "a rejected name changed the output");
		cr_assert(strstr(ferr_msg(-EINVAL), "auto, bitmap, clear or ring"),
			  "unhelpful message: %s", ferr_msg(-EINVAL));
	}
	cr_assert_eq(dlog_parse(NULL, &b), -EINVAL);
}

Test(dirtylog_api, prepare_sets_the_ring_only_for_ring)
{
	for (unsigned i = 0; i < ARRAY_SIZE(all_backends); i++) {
		struct vm_config cfg = { .mem_size = 64 * MB, .ncpus = 1,
					 .dirty_ring_bytes = 12345 };
		enum dlog_backend chosen;

		cr_assert_eq(dlog_prepare(all_backends[i], &cfg, &chosen), 0, "%s: %s",
			     dlog_name(all_backends[i]), ferr_msg(-1));
		cr_assert_eq(chosen, all_backends[i]);
		if (chosen == DLOG_RING) {
			cr_assert_gt(cfg.dirty_ring_bytes, 0);
			cr_assert_eq(cfg.dirty_ring_bytes & (cfg.dirty_ring_bytes - 1), 0,
				     "ring of %u bytes is not a power of two", cfg.dirty_ring_bytes);
		} else {
			cr_assert_eq(cfg.dirty_ring_bytes, 0);
		}
	}
}

Test(dirtylog_api, auto_picks_a_real_backend_and_bad_enums_fail)
{
	struct vm_config cfg = { .mem_size = 64 * MB, .ncpus = 1 };
	enum dlog_backend chosen = DLOG_AUTO;

	cr_assert_eq(dlog_prepare(DLOG_AUTO, &cfg, &chosen), 0);
	cr_assert_neq(chosen, DLOG_AUTO);
	cr_assert_eq(dlog_prepare((enum dlog_backend)9, &cfg, &chosen), -EINVAL);
}

Test(dirtylog_api, backends_refuse_the_wrong_kind_of_vm)
{
	struct vm *plain = create_for(DLOG_BITMAP, 1, 64 * MB);
	struct vm *ringed = create_for(DLOG_RING, 1, 64 * MB);
	struct dlog *d = (struct dlog *)1;

	cr_assert_eq(dlog_start(plain, DLOG_RING, &d), -ENOTSUP);
	cr_assert_null(d);
	cr_assert_eq(dlog_start(ringed, DLOG_BITMAP, &d), -ENOTSUP);
	cr_assert_eq(dlog_start(ringed, DLOG_CLEAR, &d), -ENOTSUP);
	cr_assert_eq(dlog_start(plain, (enum dlog_backend)7, &d), -EINVAL);
	/* A failed start leaves the VM free for a good one. */
	cr_assert_eq(dlog_start(ringed, DLOG_RING, &d), 0, "%s", ferr_msg(-1));
	dlog_stop(d);
	vm_destroy(plain);
	vm_destroy(ringed);
}

Test(dirtylog_api, one_active_log_per_vm_and_auto_follows_attach)
{
	struct vm *vm = create_for(DLOG_BITMAP, 1, 64 * MB);
	struct dlog *d, *second;

	cr_assert_str_eq(vm->dirty_log, "bitmap");
	cr_assert_eq(dlog_start(vm, DLOG_AUTO, &d), 0, "%s", ferr_msg(-1));
	cr_assert_eq(dlog_backend_of(d), DLOG_BITMAP);
	cr_assert_eq(dlog_start(vm, DLOG_CLEAR, &second), -EBUSY);
	dlog_stop(d);
	cr_assert_eq(dlog_start(vm, DLOG_CLEAR, &second), 0, "%s", ferr_msg(-1));
	dlog_stop(second);
	dlog_stop(NULL);
	vm_destroy(vm);
}

Test(dirtylog_api, rearm_checks_its_range)
{
	struct vm *vm = create_for(DLOG_CLEAR, 1, 64 * MB);
	uint64_t words = vm->mem.npages / 64, count;
	uint64_t *bm = calloc(words, sizeof(uint64_t));
	struct dlog *d;

	cr_assert_eq(dlog_start(vm, DLOG_CLEAR, &d), 0);
	cr_assert_eq(dlog_collect(d, bm, &count), 0);
	cr_assert_eq(dlog_rearm(d, bm, 1, 64), -EINVAL);
	cr_assert_eq(dlog_rearm(d, bm, 64, 63), -EINVAL);
	cr_assert_eq(dlog_rearm(d, bm, 0, vm->mem.npages + 64), -EINVAL);
	cr_assert_eq(dlog_rearm(d, bm, vm->mem.npages, 64), -EINVAL);
	cr_assert_eq(dlog_rearm(d, bm, UINT64_MAX - 63, 64), -EINVAL);
	cr_assert_eq(dlog_rearm(d, bm, 0, vm->mem.npages), 0, "%s", ferr_msg(-1));
	cr_assert_eq(dlog_rearm(d, bm, vm->mem.npages, 0), 0);
	dlog_stop(d);
	vm_destroy(vm);
	free(bm);
}

/*
 * Pages ferry writes through gmem_write/gmem_mark_dirty are invisible to
 * KVM; every backend must report them anyway, and only them when the
 * guest writes nothing (the VM has not started).
 */
Test(dirtylog_api, vmm_writes_are_reported_by_every_backend)
{
	static const uint64_t gpas[] = { 0x2000000, 0x2001ff8 /* spans 2 pages */,
					 0x3000000 + 17, 0x3ff0000, 0x3ffc000 };
	uint8_t buf[64];

	memset(buf, 0xa5, sizeof(buf));
	for (unsigned i = 0; i < ARRAY_SIZE(all_backends); i++) {
		enum dlog_backend b = all_backends[i];
		struct vm *vm = create_for(b, 1, 64 * MB);
		uint64_t words = vm->mem.npages / 64, count;
		uint64_t *bm = calloc(words, sizeof(uint64_t));
		struct dlog *d;

		cr_assert_eq(dlog_start(vm, b, &d), 0, "%s: %s", dlog_name(b), ferr_msg(-1));
		cr_assert_eq(dlog_collect(d, bm, &count), 0);
		cr_assert_eq(count, vm->mem.npages);
		cr_assert_eq(dlog_rearm(d, bm, 0, vm->mem.npages), 0);
		for (int round = 0; round < 3; round++) {
			memset(bm, 0, words * sizeof(uint64_t));
			for (unsigned k = 0; k < ARRAY_SIZE(gpas); k++)
				cr_assert_eq(gmem_write(&vm->mem, gpas[k] + round * PAGE, buf,
							sizeof(buf)), 0);
			/* A device writing through a pointer, then marking. */
			memset(vm->mem.hva + 0x2800000, round, 3 * PAGE);
			gmem_mark_dirty(&vm->mem, 0x2800000, 3 * PAGE);
			cr_assert_eq(dlog_collect(d, bm, &count), 0);
			for (unsigned k = 0; k < ARRAY_SIZE(gpas); k++) {
				uint64_t p = (gpas[k] + round * PAGE) / PAGE;

				cr_assert(test_bit(bm, p), "%s: VMM page %#lx not reported",
					  dlog_name(b), (unsigned long)p);
			}
			cr_assert(test_bit(bm, 0x2002 + round) && test_bit(bm, 0x2801) &&
				  test_bit(bm, 0x2802), "second page of a spanning write missed");
			/* 5 writes, one spanning two pages, plus 3 marked pages. */
			cr_assert_eq(count, 9, "%s: %lu pages reported, 9 written",
				     dlog_name(b), (unsigned long)count);
			cr_assert_eq(dlog_rearm(d, bm, 0, vm->mem.npages), 0);
		}
		dlog_stop(d);
		vm_destroy(vm);
		free(bm);
	}
}

/*
 * The same while the guest runs: host writes to a part of RAM the guest
 * never touches are reported, and nothing else of that part is.
 */
Test(dirtylog_api, vmm_writes_beside_a_running_guest)
{
	const char *const args[] = { "wss=8M", "pattern=random", NULL };
	const uint64_t quiet0 = (32 * MB) / PAGE;

	for (unsigned i = 0; i < ARRAY_SIZE(all_backends); i++) {
		enum dlog_backend b = all_backends[i];
		struct vm *vm = create_for(b, 2, 64 * MB);
		uint64_t words = vm->mem.npages / 64, count, seq;
		uint64_t *bm = calloc(words, sizeof(uint64_t));
		struct dlog *d;
		char msg[256];

		tvm_boot(vm, "dirty", args);
		vm_start(vm);
		cr_assert_eq(dlog_start(vm, b, &d), 0, "%s: %s", dlog_name(b), ferr_msg(-1));
		cr_assert_eq(dlog_collect(d, bm, &count), 0);
		cr_assert_eq(dlog_rearm(d, bm, 0, vm->mem.npages), 0);
		for (seq = 1; seq <= 5; seq++) {
			uint64_t p = quiet0 + seq * 97;

			memset(bm, 0, words * sizeof(uint64_t));
			cr_assert_eq(gmem_write(&vm->mem, p * PAGE + 8, &seq, sizeof(seq)), 0);
			tsleep_ms(5);
			cr_assert_eq(dlog_collect(d, bm, &count), 0);
			for (uint64_t q = quiet0; q < vm->mem.npages; q++)
				cr_assert_eq(test_bit(bm, q), q == p, "%s: page %#lx %s",
					     dlog_name(b), (unsigned long)q,
					     q == p ? "written by the host, not reported"
						    : "reported, nobody wrote it");
			cr_assert_eq(dlog_rearm(d, bm, 0, vm->mem.npages), 0);
		}
		dlog_stop(d);
		tvm_request_stop(vm);
		cr_assert_eq(tvm_wait_end(vm, 30000, msg, sizeof(msg)), 0, "%s: %s",
			     dlog_name(b), msg);
		vm_destroy(vm);
		free(bm);
	}
}

/*
 * dlog_stop while the guest runs, more running, a second session, a second
 * stop: the guest's own verification must still pass at the end.
 */
static void stop_keeps_guest_running(enum dlog_backend b)
{
	const char *const args[] = { "wss=16M", "pattern=increment", "report_ms=20", NULL };
	struct vm *vm = create_for(b, 2, 64 * MB);
	uint64_t words = vm->mem.npages / 64, count;
	uint64_t *bm = calloc(words, sizeof(uint64_t));
	uint64_t before;
	struct dlog *d;
	char msg[256];

	tvm_boot(vm, "dirty", args);
	vm_start(vm);
	for (int session = 0; session < 2; session++) {
		cr_assert_eq(dlog_start(vm, b, &d), 0, "%s: %s", dlog_name(b), ferr_msg(-1));
		for (int k = 0; k < 3; k++) {
			memset(bm, 0, words * sizeof(uint64_t));
			cr_assert_eq(dlog_collect(d, bm, &count), 0);
			if (k == 0)
				cr_assert_eq(count, vm->mem.npages, "a new session's first collection");
			cr_assert_eq(dlog_rearm(d, bm, 0, vm->mem.npages), 0);
			tsleep_ms(10);
		}
		dlog_stop(d);
		before = tvm_progress(vm, 0, "pass") + tvm_progress(vm, 1, "pass");
		tsleep_ms(150);
		cr_assert_eq(vm_run_state(vm), VM_RUNNING, "%s: the VM stopped running",
			     dlog_name(b));
		cr_assert_gt(tvm_progress(vm, 0, "pass") + tvm_progress(vm, 1, "pass"), before,
			     "%s: the guest made no progress after dlog_stop", dlog_name(b));
	}
	tvm_request_stop(vm);
	cr_assert_eq(tvm_wait_end(vm, 30000, msg, sizeof(msg)), 0, "%s: %s", dlog_name(b), msg);
	vm_destroy(vm);
	free(bm);
}

Test(dirtylog_api, stop_bitmap_keeps_the_guest_running) { stop_keeps_guest_running(DLOG_BITMAP); }
Test(dirtylog_api, stop_clear_keeps_the_guest_running) { stop_keeps_guest_running(DLOG_CLEAR); }
Test(dirtylog_api, stop_ring_keeps_the_guest_running) { stop_keeps_guest_running(DLOG_RING); }
