/*
 * The `ring` backend: KVM's per-vCPU dirty ring.  Each first write to a
 * page after it was (re-)protected appends {slot, offset} to the ring of
 * the vCPU that wrote it, so the ring gives exact per-vCPU counts and the
 * work per collection follows the number of dirty pages, not the size of
 * RAM.
 *
 * Protocol (Documentation/virt/kvm/api.rst, KVM_CAP_DIRTY_LOG_RING):
 *   - an entry is free (flags 00), dirty (01, written by KVM) or harvested
 *     (1x, written by us); KVM turns harvested entries back into free ones
 *     in KVM_RESET_DIRTY_RINGS, which also write-protects their pages;
 *   - entries are harvested strictly in order from our index
 *     (vcpu->dirty_ring_next), stopping at the first that is not dirty;
 *   - the flags are read with acquire (so slot/offset are read after KVM
 *     published them) and written with release (so KVM sees the entry
 *     consumed only after we read it).  x86 would order these anyway; the
 *     ACQ_REL capability makes the contract explicit, and we keep it;
 *   - KVM_RESET_DIRTY_RINGS comes before anyone reads the pages: a write
 *     after the reset is logged again, a write before it is in what the
 *     caller reads.  dlog_collect() returns only after the reset;
 *   - a full ring stops its vCPU with KVM_EXIT_DIRTY_RING_FULL, and the
 *     ring must be harvested and reset before that vCPU re-enters.
 * Entries come from the kernel, but each is still checked: a slot other
 * than 0 or an offset past the end of RAM cannot be turned into a page, so
 * it makes this collection report every page rather than lose a write.
 *
 * Who resets.  KVM_RESET_DIRTY_RINGS is never issued from a vCPU thread.
 * Measured on kvm_pvm: when the ring-full handler reset the rings itself,
 * on the vCPU's own thread between two KVM_RUNs, about one harvested page
 * in 10^5 stayed writable and its later writes were never logged (the
 * stamp test caught it in 4 runs out of 5); issuing the very same ioctl
 * from another thread made every run exact.  So a full ring is handed to a
 * reaper thread owned by the dlog, and the vCPU thread waits for it; the
 * controller's collections reset from the controller thread.
 *
 * Locking: d->lock serialises harvesting (vcpu->dirty_ring_next,
 * d->ring_pending, the counts) between the controller and the reaper, and
 * carries the reaper's request/done sequence numbers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../core/util.h"
#include "internal.h"

static uint32_t ring_entries_of(const struct vm *vm)
{
	return vm->dirty_ring_bytes / (uint32_t)sizeof(struct kvm_dirty_gfn);
}

/*
 * Harvests v's ring from its next index until an entry that is not dirty
 * (or a whole ring's worth).  Valid pages go into `bits` (NULL: discard);
 * returns how many entries were consumed, *valid how many named RAM.
 */
static uint32_t harvest_ring(struct vm *vm, struct vcpu *v, uint64_t *bits,
			     uint32_t *valid)
{
	struct kvm_dirty_gfn *ring = v->dirty_ring;
	uint32_t n = 0, mask = ring_entries_of(vm) - 1, good = 0;

	while (ring && n <= mask) {
		struct kvm_dirty_gfn *e = &ring[v->dirty_ring_next & mask];
		uint32_t flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);
		uint32_t slot;
		uint64_t off;

		/* Only "dirty, not yet harvested" is ours to take. */
		if ((flags & KVM_DIRTY_GFN_F_MASK) != KVM_DIRTY_GFN_F_DIRTY)
			break;
		slot = e->slot;
		off = e->offset;
		if (slot == 0 && off < vm->mem.npages) {
			if (bits)
				bits[off / 64] |= 1ull << (off % 64);
			good++;
		}
		__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		v->dirty_ring_next++;
		n++;
	}
	*valid = good;
	return n;
}

/* Not on a vCPU thread (see the head of this file). */
static int reset_rings(struct vm *vm)
{
	while (ioctl(vm->fd, KVM_RESET_DIRTY_RINGS, 0) < 0)
		if (errno != EINTR)
			return ferr_sys(errno, "KVM_RESET_DIRTY_RINGS failed");
	return 0;
}

/* Caller holds d->lock.  Accounts one harvest of vCPU v's ring. */
static void account_locked(struct dlog *d, struct vcpu *v, uint32_t n, uint32_t valid)
{
	d->ring_counts[v->index] += valid;
	d->stats.ring_entries += n;
	if (n == valid)
		return;
	d->stats.ring_bad_entries += n - valid;
	d->report_all = true;
	if (!d->ring_warned) {
		d->ring_warned = true;
		flog("dirty ring of vCPU %u held %u entries outside guest RAM; "
		     "reporting every page once", v->index, n - valid);
	}
}

/* Caller holds d->lock.  Harvests every vCPU's ring, then resets. */
static int harvest_all_locked(struct dlog *d, uint64_t *bits)
{
	struct vm *vm = d->vm;
	uint64_t t0 = now_ns(), total = 0;
	int rc = 0;

	for (unsigned i = 0; i < vm->ncpus; i++) {
		uint32_t valid, n = harvest_ring(vm, &vm->vcpus[i], bits, &valid);

		if (bits)
			account_locked(d, &vm->vcpus[i], n, valid);
		total += n;
	}
	if (total) {
		rc = reset_rings(vm);
		d->stats.ring_resets++;
	}
	d->stats.ring_harvest_ns += now_ns() - t0;
	return rc;
}

/*
 * The reaper: harvests and resets whenever a vCPU thread reports a full
 * ring, then wakes the waiting vCPU threads.  One per ring session.
 */
static void *reaper_main(void *arg)
{
	struct dlog *d = arg;

	pthread_setname_np(pthread_self(), "ferry-dlog-reap");
	pthread_mutex_lock(&d->lock);
	for (;;) {
		uint64_t target;

		while (!d->reaper_quit && d->reap_done == d->reap_req)
			pthread_cond_wait(&d->reap_cond, &d->lock);
		if (d->reaper_quit)
			break;
		target = d->reap_req;
		d->reap_rc = harvest_all_locked(d, d->ring_pending);
		d->reap_done = target;
		pthread_cond_broadcast(&d->reaped_cond);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

void dlog_ring_harvest_full(struct dlog *d, struct vcpu *v)
{
	uint64_t ticket;
	int rc;

	pthread_mutex_lock(&d->lock);
	ticket = ++d->reap_req;
	d->stats.ring_full_exits++;
	pthread_cond_signal(&d->reap_cond);
	while (d->reap_done < ticket)
		pthread_cond_wait(&d->reaped_cond, &d->lock);
	rc = d->reap_rc;
	pthread_mutex_unlock(&d->lock);
	if (rc)
		vm_end(d->vm, 1, "vCPU %u: dirty ring full and cannot be reset: %s",
		       v->index, ferr_msg(rc));
}

/*
 * No ring session: nobody needs the entries, nor the protection a reset
 * restores (a new session write-protects all of RAM when it starts), so
 * this may run on the vCPU thread.
 */
void dlog_ring_discard(struct vcpu *v)
{
	uint32_t valid;
	int rc;

	harvest_ring(v->vm, v, NULL, &valid);
	rc = reset_rings(v->vm);
	if (rc)
		vm_end(v->vm, 1, "vCPU %u: dirty ring full and cannot be reset: %s",
		       v->index, ferr_msg(rc));
}

static void stop_reaper(struct dlog *d)
{
	if (!d->reaper_running)
		return;
	pthread_mutex_lock(&d->lock);
	d->reaper_quit = true;
	pthread_cond_signal(&d->reap_cond);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->reaper, NULL);
	d->reaper_running = false;
}

static int ring_start(struct dlog *d)
{
	struct vm *vm = d->vm;
	uint32_t entries = ring_entries_of(vm);
	int rc;

	if (!vm->dirty_ring_bytes)
		return ferr(ENOTSUP, "the 'ring' dirty log needs a VM created with a dirty ring "
			    "(dlog_prepare before vm_create)");
	if (entries < 2 || (entries & (entries - 1)))
		return ferr(EINVAL, "a dirty ring of %u bytes is not a power-of-two number of entries",
			    vm->dirty_ring_bytes);
	d->ring_entries = entries;
	d->ring_pending = calloc(d->nwords, sizeof(uint64_t));
	d->ring_counts = calloc(vm->ncpus, sizeof(uint64_t));
	if (!d->ring_pending || !d->ring_counts)
		return -ENOMEM;
	rc = pthread_create(&d->reaper, NULL, reaper_main, d);
	if (rc)
		return ferr_sys(rc, "cannot start the dirty-ring reaper thread");
	d->reaper_running = true;
	dlog_install_ring_handler(vm);
	/* Anything left from an earlier session is not ours to report (the
	 * first collection reports every page anyway). */
	pthread_mutex_lock(&d->lock);
	rc = harvest_all_locked(d, NULL);
	pthread_mutex_unlock(&d->lock);
	if (!rc)
		rc = vm_set_memslot_flags(vm, KVM_MEM_LOG_DIRTY_PAGES);
	if (rc)
		stop_reaper(d);
	return rc;
}

static int ring_collect(struct dlog *d)
{
	uint64_t *swap;
	int rc;

	pthread_mutex_lock(&d->lock);
	rc = harvest_all_locked(d, d->ring_pending);
	if (!rc) {
		/* d->found gets what was harvested since the last collect, by
		 * the reaper or just now; pending starts empty again. */
		swap = d->found;
		d->found = d->ring_pending;
		d->ring_pending = swap;
		memset(d->ring_pending, 0, d->nwords * sizeof(uint64_t));
		memcpy(d->vcpu_counts, d->ring_counts, d->vm->ncpus * sizeof(uint64_t));
		memset(d->ring_counts, 0, d->vm->ncpus * sizeof(uint64_t));
	}
	pthread_mutex_unlock(&d->lock);
	return rc;
}

static void ring_stop(struct dlog *d)
{
	int rc = vm_set_memslot_flags(d->vm, 0);

	/* No new entries from here on; leave the rings empty so that no
	 * ring-full exit can come from this session. */
	pthread_mutex_lock(&d->lock);
	if (!rc)
		rc = harvest_all_locked(d, NULL);
	pthread_mutex_unlock(&d->lock);
	if (rc)
		flog("dirty log: %s", ferr_msg(rc));
}

/* After dlog_stop() made d unreachable: no vCPU can be waiting on it. */
static void ring_release(struct dlog *d)
{
	stop_reaper(d);
}

static const struct dlog_ops ring_ops = {
	.backend = DLOG_RING,
	.exact_vcpu_counts = true,
	.start = ring_start,
	.collect = ring_collect,
	.rearm = NULL,                  /* collect re-arms (the reset) */
	.stop = ring_stop,
	.release = ring_release,
};

const struct dlog_ops *dlog_ring_ops(void)
{
	return &ring_ops;
}
