/*
 * The `clear` backend: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2.  KVM_GET_DIRTY_LOG
 * then only reports; the bits stay set and the pages stay writable until
 * KVM_CLEAR_DIRTY_LOG clears the bits and write-protects the pages again.
 * The caller does that with dlog_rearm() just before it reads and sends a
 * chunk, so a page the guest rewrites between the collection and the send
 * costs no second fault and no second send.
 *
 * The one rule: clear only bits whose pages the caller is about to read.
 * A bit cleared without the page being read afterwards is a write that
 * nobody will ever send.  dlog_rearm() therefore clears exactly the bits
 * set in the caller's bitmap (the pages it is about to send), never a
 * whole range, and KVM ignores bits that are not set on its side.
 *
 * With KVM_DIRTY_LOG_INITIALLY_SET, turning logging on does not
 * write-protect all of RAM at once: every bit starts set, and protection
 * arrives chunk by chunk with the first round of clears.  So starting is
 * cheap, and the first collection reports every page by itself.
 */
#include <errno.h>
#include <sys/ioctl.h>

#include "../core/util.h"
#include "internal.h"

static int set_manual_protect(struct dlog *d, uint64_t flags)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
		.args = { flags },
	};

	if (ioctl(d->vm->fd, KVM_ENABLE_CAP, &cap) < 0)
		return ferr_sys(errno, "cannot set KVM's manual dirty-log protection to %#llx",
				(unsigned long long)flags);
	return 0;
}

static int clear_start(struct dlog *d)
{
	int offered, rc;
	uint64_t flags = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;

	rc = dlog_refuse_ring_vm(d);
	if (rc)
		return rc;
	offered = ioctl(d->vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	if (offered <= 0)
		return ferr(ENOTSUP, "this KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (the 'clear' dirty log)");
	flags |= (uint64_t)offered & KVM_DIRTY_LOG_INITIALLY_SET;
	/* Must precede the memslot flag: KVM allocates (and, with
	 * INITIALLY_SET, fills) the slot's bitmap when the flag is set. */
	rc = set_manual_protect(d, flags);
	if (rc)
		return rc;
	rc = vm_set_memslot_flags(d->vm, KVM_MEM_LOG_DIRTY_PAGES);
	if (rc)
		goto manual_off;
	return 0;

manual_off:
	set_manual_protect(d, 0);
	return rc;
}

static int clear_collect(struct dlog *d)
{
	return dlog_kvm_get_log(d);
}

static int clear_range(struct dlog *d, const uint64_t *bitmap, uint64_t w0, uint64_t w1)
{
	struct kvm_clear_dirty_log log = {
		.slot = 0,
		.first_page = w0 * 64,
		/* KVM only reads the bitmap; its field is not const. */
		.dirty_bitmap = (void *)(uintptr_t)(bitmap + w0),
	};
	uint64_t n = (w1 - w0) * 64;

	/* KVM accepts a count that is not a multiple of 64 only when it ends
	 * at the slot's end, which is what clamping gives. */
	if (n > d->npages - log.first_page)
		n = d->npages - log.first_page;
	log.num_pages = (uint32_t)n;
	if (ioctl(d->vm->fd, KVM_CLEAR_DIRTY_LOG, &log) < 0)
		return ferr_sys(errno, "KVM_CLEAR_DIRTY_LOG of pages [%llu, +%llu) failed",
				(unsigned long long)log.first_page, (unsigned long long)n);
	return 0;
}

/*
 * Issues one KVM_CLEAR_DIRTY_LOG per run of words that holds set bits,
 * each at most DLOG_CLEAR_CHUNK_PAGES long, skipping empty stretches: KVM
 * flushes TLBs once per call that cleared something, so fewer, denser calls
 * are cheaper, while the chunk cap bounds how long KVM holds mmu_lock.
 */
static int clear_rearm(struct dlog *d, const uint64_t *bitmap, uint64_t first_page,
		       uint64_t npages)
{
	const uint64_t chunk_words = DLOG_CLEAR_CHUNK_PAGES / 64;
	uint64_t w = first_page / 64, end = DIV_ROUND_UP(first_page + npages, 64);
	uint64_t ioctls = 0;
	int rc = 0;

	while (w < end && !rc) {
		uint64_t stop, last;

		while (w < end && !bitmap[w])
			w++;
		if (w == end)
			break;
		stop = MIN(end, w + chunk_words);
		last = w;
		for (uint64_t i = w; i < stop; i++)
			if (bitmap[i])
				last = i;
		rc = clear_range(d, bitmap, w, last + 1);
		ioctls++;
		w = last + 1;
	}
	pthread_mutex_lock(&d->lock);
	d->stats.rearm_ioctls += ioctls;
	pthread_mutex_unlock(&d->lock);
	return rc;
}

static void clear_stop(struct dlog *d)
{
	int rc = vm_set_memslot_flags(d->vm, 0);

	/* Manual protection off again, so that a later bitmap session on
	 * this VM gets KVM_GET_DIRTY_LOG's own re-protection back. */
	if (!rc)
		rc = set_manual_protect(d, 0);
	if (rc)
		flog("dirty log: %s", ferr_msg(rc));
}

static const struct dlog_ops clear_ops = {
	.backend = DLOG_CLEAR,
	.exact_vcpu_counts = false,
	.start = clear_start,
	.collect = clear_collect,
	.rearm = clear_rearm,
	.stop = clear_stop,
};

const struct dlog_ops *dlog_clear_ops(void)
{
	return &clear_ops;
}
