/*
 * The `bitmap` backend: KVM_GET_DIRTY_LOG, which hands back the bits set
 * since the previous call and write-protects those pages again in the same
 * call, under KVM's mmu_lock.  One ioctl per collection, no re-arm step.
 *
 * It is also where the dirty-bitmap ioctl itself lives, because the clear
 * backend collects with the same call (KVM then leaves the bits and the
 * protection alone; see clear.c).
 */
#include <errno.h>
#include <sys/ioctl.h>

#include "../core/util.h"
#include "internal.h"

int dlog_kvm_get_log(struct dlog *d)
{
	struct kvm_dirty_log log = {
		.slot = 0,
		.dirty_bitmap = d->found,
	};

	/* KVM writes ALIGN(npages, 64) / 8 bytes: d->found is that size. */
	if (ioctl(d->vm->fd, KVM_GET_DIRTY_LOG, &log) < 0)
		return ferr_sys(errno, "KVM_GET_DIRTY_LOG failed");
	return 0;
}

/*
 * A VM with a dirty ring has no KVM dirty bitmap (KVM_GET_DIRTY_LOG fails
 * with ENXIO there), so say so up front rather than at the first collect.
 */
int dlog_refuse_ring_vm(const struct dlog *d)
{
	if (d->vm->dirty_ring_bytes)
		return ferr(ENOTSUP,
			    "the '%s' dirty log cannot run on a VM created with a dirty ring; use 'ring'",
			    dlog_name(d->ops->backend));
	return 0;
}

static int bitmap_start(struct dlog *d)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 };
	int rc = dlog_refuse_ring_vm(d);

	if (rc)
		return rc;
	/*
	 * If manual protection was left on (by a clear session that could not
	 * turn it off), KVM_GET_DIRTY_LOG would stop re-protecting and this
	 * backend would miss every second write.  Turning it off is harmless
	 * where it was off, and fails only where the host lacks it.
	 */
	if (ioctl(d->vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) > 0 &&
	    ioctl(d->vm->fd, KVM_ENABLE_CAP, &cap) < 0)
		return ferr_sys(errno, "cannot turn KVM's manual dirty-log protection off");
	return vm_set_memslot_flags(d->vm, KVM_MEM_LOG_DIRTY_PAGES);
}

static int bitmap_collect(struct dlog *d)
{
	return dlog_kvm_get_log(d);
}

static void bitmap_stop(struct dlog *d)
{
	int rc = vm_set_memslot_flags(d->vm, 0);

	if (rc)
		flog("dirty log: %s", ferr_msg(rc));
}

static const struct dlog_ops bitmap_ops = {
	.backend = DLOG_BITMAP,
	.exact_vcpu_counts = false,
	.start = bitmap_start,
	.collect = bitmap_collect,
	.rearm = NULL,                  /* collect re-arms */
	.stop = bitmap_stop,
};

const struct dlog_ops *dlog_bitmap_ops(void)
{
	return &bitmap_ops;
}
