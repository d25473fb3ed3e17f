/*
 * Dirty-page tracking, the common part: backend names, choosing a backend
 * for this host, the life cycle of a struct dlog, and what every collection
 * does whatever the backend (merge the VMM-side bitmap, report everything
 * the first time, count, per-vCPU figures).  The KVM work is in bitmap.c,
 * clear.c and ring.c behind a static const ops table each.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../core/util.h"
#include "internal.h"

/* How often dlog_with_vcpus_parked() retries when a controller resumed
 * the VM between our pause and our work. */
#define PARKED_RETRIES 100

static const char *const backend_names[] = {
	[DLOG_AUTO] = "auto",
	[DLOG_BITMAP] = "bitmap",
	[DLOG_CLEAR] = "clear",
	[DLOG_RING] = "ring",
};

/*
 * Every active dlog, so that a VM gets at most one and so that ring-full
 * handlers can find theirs.  Written (start, stop) under the write lock;
 * handlers hold the read lock for as long as they use the dlog they found.
 */
static pthread_rwlock_t active_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct dlog *active_head;

int dlog_parse(const char *name, enum dlog_backend *out)
{
	if (!name)
		return -EINVAL;
	for (unsigned i = 0; i < ARRAY_SIZE(backend_names); i++)
		if (strcmp(name, backend_names[i]) == 0) {
			*out = (enum dlog_backend)i;
			return 0;
		}
	return ferr(EINVAL, "unknown dirty-log backend '%s' (auto, bitmap, clear or ring)",
		    name);
}

const char *dlog_name(enum dlog_backend b)
{
	if ((unsigned)b < ARRAY_SIZE(backend_names))
		return backend_names[b];
	return "unknown";
}

/* What this host's KVM offers, read from /dev/kvm (no VM needed). */
struct host_caps {
	bool clear;
	uint32_t ring_max_bytes;
	bool ring_acq_rel;
};

static int probe_host(struct host_caps *h)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int acq, ring, manual;

	memset(h, 0, sizeof(*h));
	if (fd < 0)
		return ferr_sys(errno, "cannot open /dev/kvm (is KVM available to this user?)");
	manual = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	acq = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
	ring = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
	close(fd);
	h->clear = manual > 0 && (manual & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
	/* Both report the largest ring in bytes; ACQ_REL is the one to use
	 * where offered (the ordering contract we follow anyway). */
	h->ring_acq_rel = acq > 0;
	h->ring_max_bytes = (uint32_t)(acq > 0 ? acq : ring > 0 ? ring : 0);
	return 0;
}

/*
 * auto: clear, then bitmap, then ring.  Why that order is in
 * docs/dirtylog.md ("Choosing a backend"): on the measured hosts clear
 * costs the least per pass and starts in constant time, and the ring binds
 * the VM to itself for its whole life.
 */
static bool host_has(const struct host_caps *h, enum dlog_backend b)
{
	switch (b) {
	case DLOG_BITMAP:
		return true;                /* KVM_GET_DIRTY_LOG is basic */
	case DLOG_CLEAR:
		return h->clear;
	case DLOG_RING:
		return h->ring_max_bytes >= 4096;
	case DLOG_AUTO:
		break;
	}
	return false;
}

int dlog_prepare(enum dlog_backend want, struct vm_config *cfg,
		 enum dlog_backend *chosen)
{
	static const enum dlog_backend order[] = { DLOG_CLEAR, DLOG_BITMAP, DLOG_RING };
	struct host_caps h;
	enum dlog_backend b = want;
	int rc;

	if ((unsigned)want >= ARRAY_SIZE(backend_names))
		return ferr(EINVAL, "dirty-log backend %d does not exist", (int)want);
	rc = probe_host(&h);
	if (rc)
		return rc;
	if (want == DLOG_AUTO) {
		for (unsigned i = 0; i < ARRAY_SIZE(order) && b == DLOG_AUTO; i++)
			if (host_has(&h, order[i]))
				b = order[i];
	} else if (!host_has(&h, want)) {
		return ferr(ENOTSUP, "this host's KVM does not offer the '%s' dirty log (%s)",
			    dlog_name(want),
			    want == DLOG_CLEAR ? "no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2"
					       : "no KVM_CAP_DIRTY_LOG_RING");
	}
	cfg->dirty_ring_bytes = 0;
	cfg->dirty_ring_acq_rel = false;
	if (b == DLOG_RING) {
		/* A power of two no larger than the host allows. */
		uint32_t bytes = DLOG_RING_BYTES;

		while (bytes > h.ring_max_bytes)
			bytes >>= 1;
		cfg->dirty_ring_bytes = bytes;
		cfg->dirty_ring_acq_rel = h.ring_acq_rel;
	}
	*chosen = b;
	return 0;
}

/* Caller holds active_lock (either way). */
static struct dlog *find_active_locked(const struct vm *vm)
{
	for (struct dlog *a = active_head; a; a = a->next_active)
		if (a->vm == vm)
			return a;
	return NULL;
}

/* KVM_EXIT_DIRTY_RING_FULL, on the vCPU's thread (see internal.h). */
static void ring_full_handler(struct vcpu *v, void *opaque)
{
	struct dlog *d;

	(void)opaque;
	pthread_rwlock_rdlock(&active_lock);
	d = find_active_locked(v->vm);
	if (d && d->ops->backend == DLOG_RING)
		dlog_ring_harvest_full(d, v);
	else
		dlog_ring_discard(v);
	pthread_rwlock_unlock(&active_lock);
}

/*
 * Safe while vCPUs run: a ring-full exit needs ring entries, and there are
 * none before the memslot has KVM_MEM_LOG_DIRTY_PAGES, which is set after.
 */
void dlog_install_ring_handler(struct vm *vm)
{
	__atomic_store_n(&vm->dirty_ring_opaque, NULL, __ATOMIC_RELEASE);
	__atomic_store_n(&vm->dirty_ring_full, ring_full_handler, __ATOMIC_RELEASE);
}

void dlog_attach(struct vm *vm, enum dlog_backend chosen)
{
	snprintf(vm->dirty_log, sizeof(vm->dirty_log), "%s", dlog_name(chosen));
	if (vm->dirty_ring_bytes)
		dlog_install_ring_handler(vm);
}

enum dlog_backend dlog_backend_of(const struct dlog *d)
{
	return d->ops->backend;
}

static enum dlog_backend resolve_auto(struct vm *vm)
{
	enum dlog_backend b = DLOG_AUTO;
	struct host_caps h;

	if (vm->dirty_log[0] && dlog_parse(vm->dirty_log, &b) == 0 && b != DLOG_AUTO)
		return b;
	if (vm->dirty_ring_bytes)
		return DLOG_RING;
	if (probe_host(&h) == 0 && h.clear)
		return DLOG_CLEAR;
	return DLOG_BITMAP;
}

static const struct dlog_ops *ops_for(enum dlog_backend b)
{
	switch (b) {
	case DLOG_BITMAP:
		return dlog_bitmap_ops();
	case DLOG_CLEAR:
		return dlog_clear_ops();
	case DLOG_RING:
		return dlog_ring_ops();
	case DLOG_AUTO:
		break;
	}
	return NULL;
}

/* Adds d to the active list unless its VM already has a dlog. */
static int claim_vm(struct dlog *d)
{
	struct dlog *other;
	int rc = 0;

	pthread_rwlock_wrlock(&active_lock);
	other = find_active_locked(d->vm);
	if (other) {
		rc = ferr(EBUSY, "this VM already has active dirty-page tracking (%s)",
			  dlog_name(other->ops->backend));
	} else {
		d->next_active = active_head;
		active_head = d;
	}
	pthread_rwlock_unlock(&active_lock);
	return rc;
}

/* When this returns, no ring-full handler is using d any more. */
static void release_vm(struct dlog *d)
{
	pthread_rwlock_wrlock(&active_lock);
	for (struct dlog **p = &active_head; *p; p = &(*p)->next_active)
		if (*p == d) {
			*p = d->next_active;
			break;
		}
	pthread_rwlock_unlock(&active_lock);
}

static void free_dlog(struct dlog *d)
{
	dlog_pf_close(d);
	free(d->found);
	free(d->vcpu_counts);
	free(d->ring_pending);
	free(d->ring_counts);
	pthread_cond_destroy(&d->reap_cond);
	pthread_cond_destroy(&d->reaped_cond);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

int dlog_start(struct vm *vm, enum dlog_backend b, struct dlog **out)
{
	struct dlog *d;
	int rc;

	*out = NULL;
	if ((unsigned)b >= ARRAY_SIZE(backend_names))
		return ferr(EINVAL, "dirty-log backend %d does not exist", (int)b);
	if (b == DLOG_AUTO)
		b = resolve_auto(vm);
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->reap_cond, NULL);
	pthread_cond_init(&d->reaped_cond, NULL);
	d->vm = vm;
	d->ops = ops_for(b);
	d->npages = vm->mem.npages;
	d->nwords = DIV_ROUND_UP(d->npages, 64);
	d->report_all = true;
	d->found = calloc(d->nwords, sizeof(uint64_t));
	d->vcpu_counts = calloc(vm->ncpus, sizeof(uint64_t));
	if (!d->found || !d->vcpu_counts) {
		free_dlog(d);
		return -ENOMEM;
	}
	rc = claim_vm(d);
	if (rc) {
		free_dlog(d);
		return rc;
	}
	if (!d->ops->exact_vcpu_counts) {
		rc = dlog_pf_open(d);
		if (rc)
			goto unclaim;
	}
	rc = d->ops->start(d);
	if (rc)
		goto unclaim;
	*out = d;
	return 0;

unclaim:
	release_vm(d);
	free_dlog(d);
	return rc;
}

/*
 * Bitmap backends: split the pages KVM reported among the vCPUs in
 * proportion to the write faults each took (see dirtylog.md).  The faults
 * include a few that are not first writes (the guest's page tables,
 * pages touched for the first time), so the shares are normalised to what
 * the log actually found instead of being reported raw.
 */
static void estimate_vcpu_counts(struct dlog *d, uint64_t kvm_pages)
{
	unsigned n = d->vm->ncpus;
	uint64_t total = 0, given = 0;

	if (!d->pf) {
		memset(d->vcpu_counts, 0, n * sizeof(uint64_t));
		return;
	}
	dlog_pf_sample(d, d->vcpu_counts);
	for (unsigned i = 0; i < n; i++)
		total += d->vcpu_counts[i];
	for (unsigned i = 0; i < n; i++) {
		uint64_t share = 0;

		if (total)
			share = (uint64_t)((unsigned __int128)kvm_pages * d->vcpu_counts[i] / total);
		d->vcpu_counts[i] = share;
		given += share;
	}
	/* Rounding leftovers go to the busiest vCPU. */
	if (total && given < kvm_pages) {
		unsigned top = 0;

		for (unsigned i = 1; i < n; i++)
			if (d->vcpu_counts[i] > d->vcpu_counts[top])
				top = i;
		d->vcpu_counts[top] += kvm_pages - given;
	}
}

static uint64_t popcount_words(const uint64_t *w, uint64_t n)
{
	uint64_t c = 0;

	for (uint64_t i = 0; i < n; i++)
		c += (uint64_t)__builtin_popcountll(w[i]);
	return c;
}

/*
 * Order matters for exactness: the backend re-arms (bitmap, ring) before
 * the VMM bits are taken, and the caller reads page contents only after we
 * return, so a write that lands after the re-arm is either in what the
 * caller reads now or logged for the next collection.
 */
int dlog_collect(struct dlog *d, uint64_t *bitmap, uint64_t *count)
{
	uint64_t t0 = now_ns(), t1, kvm_pages = 0, vmm, fresh = 0;
	bool all;
	int rc;

	rc = d->ops->collect(d);
	if (rc)
		return rc;
	t1 = now_ns();
	if (!d->ops->exact_vcpu_counts) {
		kvm_pages = popcount_words(d->found, d->nwords);
		estimate_vcpu_counts(d, kvm_pages);
	}
	vmm = gmem_take_vmm_dirty(&d->vm->mem, d->found);

	pthread_mutex_lock(&d->lock);
	all = d->report_all;
	d->report_all = false;
	pthread_mutex_unlock(&d->lock);
	if (all) {
		memset(d->found, 0xff, d->nwords * sizeof(uint64_t));
		if (d->npages % 64)
			d->found[d->nwords - 1] = (1ull << (d->npages % 64)) - 1;
	}
	for (uint64_t i = 0; i < d->nwords; i++) {
		uint64_t f = d->found[i];

		fresh += (uint64_t)__builtin_popcountll(f & ~bitmap[i]);
		bitmap[i] |= f;
	}
	*count = fresh;

	pthread_mutex_lock(&d->lock);
	d->stats.collections++;
	d->stats.pages_reported += fresh;
	d->stats.vmm_pages += vmm;
	d->stats.kvm_ns += t1 - t0;
	d->stats.collect_ns += now_ns() - t0;
	pthread_mutex_unlock(&d->lock);
	return 0;
}

int dlog_rearm(struct dlog *d, const uint64_t *bitmap, uint64_t first_page,
	       uint64_t npages)
{
	uint64_t t0 = now_ns();
	int rc;

	if (first_page % 64 || npages % 64)
		return ferr(EINVAL, "dlog_rearm: pages [%llu, +%llu) are not 64-page aligned",
			    (unsigned long long)first_page, (unsigned long long)npages);
	if (first_page > d->npages || npages > d->npages - first_page)
		return ferr(EINVAL, "dlog_rearm: pages [%llu, +%llu) lie outside the %llu pages of RAM",
			    (unsigned long long)first_page, (unsigned long long)npages,
			    (unsigned long long)d->npages);
	if (npages == 0 || !d->ops->rearm)
		return 0;
	rc = d->ops->rearm(d, bitmap, first_page, npages);
	pthread_mutex_lock(&d->lock);
	d->stats.rearm_calls++;
	d->stats.rearm_ns += now_ns() - t0;
	pthread_mutex_unlock(&d->lock);
	return rc;
}

int dlog_vcpu_counts(struct dlog *d, uint64_t *counts)
{
	if (!d->ops->exact_vcpu_counts && !d->pf)
		return ferr(ENOTSUP, "no per-vCPU dirty counts: this KVM exports no vCPU fault statistics");
	memcpy(counts, d->vcpu_counts, d->vm->ncpus * sizeof(uint64_t));
	return 0;
}

void dlog_get_stats(struct dlog *d, struct dlog_stats *out)
{
	pthread_mutex_lock(&d->lock);
	*out = d->stats;
	pthread_mutex_unlock(&d->lock);
}

void dlog_stop(struct dlog *d)
{
	if (!d)
		return;
	d->ops->stop(d);
	release_vm(d);
	if (d->ops->release)
		d->ops->release(d);
	free_dlog(d);
}

struct parked_call {
	int (*fn)(struct vcpu *vcpu, void *arg);
	void *arg;
};

static int run_parked(struct vcpu *v, void *arg)
{
	struct parked_call *c = arg;

	return c->fn(v, c->arg);
}

int dlog_with_vcpus_parked(struct vm *vm, int (*fn)(struct vcpu *vcpu, void *arg),
			   void *arg)
{
	struct parked_call call = { fn, arg };
	int rc = -EBUSY;

	for (unsigned tries = 0; tries < PARKED_RETRIES && rc == -EBUSY; tries++) {
		bool paused_here = false;

		/* vm_exec_all() runs only when every vCPU is parked and holds
		 * the controllers' lock meanwhile; -EBUSY means the VM runs. */
		rc = vm_exec_all(vm, run_parked, &call);
		if (rc != -EBUSY)
			break;
		if (vm_run_state(vm) == VM_RUNNING) {
			vm_pause(vm, NULL);
			paused_here = true;
		}
		rc = vm_exec_all(vm, run_parked, &call);
		if (paused_here)
			vm_resume(vm);
	}
	return rc;
}
