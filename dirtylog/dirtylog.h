/*
 * Dirty-page tracking: which guest pages changed since we last looked.
 *
 * One interface, three KVM backends behind a static const ops table:
 *   bitmap  KVM_GET_DIRTY_LOG, which returns and re-protects in one call;
 *   clear   KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: KVM_GET_DIRTY_LOG returns
 *           the bits, and KVM_CLEAR_DIRTY_LOG re-protects chunk by chunk,
 *           just before the caller sends those pages;
 *   ring    the per-vCPU dirty ring (KVM_CAP_DIRTY_LOG_RING[_ACQ_REL]),
 *           harvested into a bitmap, then KVM_RESET_DIRTY_RINGS.
 * Every collection also merges the pages ferry itself wrote into guest RAM
 * (guest_mem's VMM dirty bitmap), which KVM never sees.
 *
 * Bitmaps have one bit per guest page (bit p%64 of word p/64), covering
 * vm->mem.npages pages.
 *
 * Threads: dlog_start/collect/rearm/stop/vcpu_counts are called by one
 * controller thread (a migration), while the vCPUs run.  The ring backend
 * also harvests when a ring fills (KVM_EXIT_DIRTY_RING_FULL): the vCPU's
 * thread hands the ring to the session's reaper thread and waits for it.
 * One VM has at most one active struct dlog at a time (-EBUSY otherwise):
 * two collectors would each take bits the other never sees.
 *
 * Errors are 0 or -errno with a ferr() message; nothing here exits.
 * docs/dirtylog.md explains the backends, the ordering rules and the costs.
 */
#ifndef FERRY_DIRTYLOG_H
#define FERRY_DIRTYLOG_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/vm.h"

enum dlog_backend {
	DLOG_AUTO,
	DLOG_BITMAP,
	DLOG_CLEAR,
	DLOG_RING,
};

struct dlog;

/* "auto", "bitmap", "clear", "ring" <-> enum; -EINVAL for anything else.
 * Any thread. */
int dlog_parse(const char *name, enum dlog_backend *out);
const char *dlog_name(enum dlog_backend b);

/*
 * Resolves `want` to a backend this host supports (auto picks the best),
 * and fills what must be decided before the VM exists: the dirty ring is
 * enabled at VM creation, so the ring backend sets cfg->dirty_ring_bytes
 * and cfg->dirty_ring_acq_rel (the others clear them).  -ENOTSUP with a
 * message if `want` is not available here.  Main thread, before vm_create.
 */
int dlog_prepare(enum dlog_backend want, struct vm_config *cfg,
		 enum dlog_backend *chosen);

/*
 * Call right after vm_create() with what dlog_prepare() chose: records the
 * name in vm->dirty_log (so `status` can show it and a later
 * dlog_start(vm, DLOG_AUTO) honours it) and, on a VM with a dirty ring,
 * installs a ring-full handler that harvests and discards, so a VM that
 * has a ring always has a handler.  Main thread, before vm_start().
 */
void dlog_attach(struct vm *vm, enum dlog_backend chosen);

/*
 * Starts tracking every memslot.  The first dlog_collect() after a start
 * reports every page of guest RAM as dirty, so a migration's first pass is
 * simply "collect and send" like every later one.
 *
 * DLOG_AUTO means: the backend recorded by dlog_attach() if any, else the
 * ring when the VM has one, else the best bitmap backend of this host.
 * -ENOTSUP when the VM cannot use `b` (the ring needs a VM created with a
 * ring; with a ring, KVM has no dirty bitmap for the other two).  For the
 * bitmap backends a running VM is paused once, briefly, to open the vCPUs'
 * statistics (vCPU ioctls run on vCPU threads); see dlog_vcpu_counts().
 * Controller thread, never a vCPU thread.
 */
int dlog_start(struct vm *vm, enum dlog_backend b, struct dlog **out);

/*
 * ORs into `bitmap` the pages dirtied since the previous collection (or all
 * pages, the first time) and sets *count to how many pages were newly
 * reported, i.e. bits this call set that were clear in `bitmap` before
 * (with a zeroed bitmap: the number of dirty pages).  Includes the pages
 * ferry itself wrote (gmem_take_vmm_dirty).  For bitmap and ring, those
 * pages are tracked again from now on, so read their contents only after
 * this returns; for clear they stay unprotected (and keep being reported)
 * until dlog_rearm().  Controller thread; the VM may run or be paused.
 */
int dlog_collect(struct dlog *d, uint64_t *bitmap, uint64_t *count);

/*
 * Re-arms tracking for the pages set in `bitmap` within
 * [first_page, first_page + npages), both multiples of 64: call it just
 * before reading and sending those pages.  Only the clear backend does
 * anything here (KVM_CLEAR_DIRTY_LOG); the others re-arm in collect.
 * -EINVAL for a misaligned range or one outside RAM.  Several threads may
 * re-arm disjoint ranges at once (e.g. send workers), but not while a
 * dlog_collect() is running.
 */
int dlog_rearm(struct dlog *d, const uint64_t *bitmap, uint64_t first_page,
	       uint64_t npages);

/*
 * Pages each vCPU dirtied during the last collection interval: exact for
 * the ring (a page first written by two vCPUs counts for both), estimated
 * for the bitmap backends by splitting the interval's dirty pages in
 * proportion to each vCPU's write faults (see dirtylog.md).  VMM-side
 * writes belong to no vCPU.  `counts` has vm->ncpus entries.  -ENOTSUP
 * when this host gives no way to estimate.  Controller thread.
 */
int dlog_vcpu_counts(struct dlog *d, uint64_t *counts);

/* The backend d uses (DLOG_AUTO resolved).  Any thread. */
enum dlog_backend dlog_backend_of(const struct dlog *d);

/* Cumulative figures since dlog_start, for benchmarks and diagnostics. */
struct dlog_stats {
	uint64_t collections;
	uint64_t pages_reported;    /* sum of *count over collections */
	uint64_t vmm_pages;         /* pages the VMM-side bitmap contributed */
	uint64_t collect_ns;        /* wall time inside dlog_collect */
	uint64_t kvm_ns;            /* of which: the backend's KVM work */
	uint64_t rearm_calls;
	uint64_t rearm_ioctls;      /* KVM_CLEAR_DIRTY_LOG calls */
	uint64_t rearm_ns;
	uint64_t ring_entries;      /* ring: entries harvested, anywhere */
	uint64_t ring_full_exits;   /* ring: KVM_EXIT_DIRTY_RING_FULL handled */
	uint64_t ring_harvest_ns;   /* ring: harvest + reset time, anywhere */
	uint64_t ring_resets;       /* ring: KVM_RESET_DIRTY_RINGS calls */
	uint64_t ring_bad_entries;  /* ring: entries naming no page of RAM */
};

/* Copies the figures out.  Controller thread. */
void dlog_get_stats(struct dlog *d, struct dlog_stats *out);

/* Stops tracking and frees d (NULL is a no-op).  The VM keeps running
 * normally and is never paused for this.  Controller thread. */
void dlog_stop(struct dlog *d);

#endif
