/*
 * Private to dirtylog/: the tracking state shared by the common code
 * (dirtylog.c) and the backends (bitmap.c, clear.c, ring.c), the backend
 * ops table, and the per-vCPU fault counters (vcpu_stats.c).
 *
 * Division of work.  A backend's collect() overwrites d->found with the
 * pages KVM reports since its previous collect(); the common code then adds
 * the VMM-side bits, applies "report everything" when due, and ORs the
 * result into the caller's bitmap.  So every backend gets VMM merging and
 * first-collection semantics for free and cannot forget them.
 */
#ifndef FERRY_DIRTYLOG_INTERNAL_H
#define FERRY_DIRTYLOG_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dirtylog.h"

/* Ring size asked of KVM: 64 Ki entries of 16 bytes per vCPU (1 MiB). */
#define DLOG_RING_BYTES (1u << 20)
/*
 * Largest KVM_CLEAR_DIRTY_LOG issued at once: 64 Ki pages (256 MiB of RAM,
 * 8 KiB of bitmap).  KVM holds mmu_lock for the whole call, and a vCPU that
 * faults meanwhile waits for it.
 */
#define DLOG_CLEAR_CHUNK_PAGES (64u * 1024)

struct dlog;

struct dlog_ops {
	enum dlog_backend backend;
	/*
	 * Per-vCPU counts come from the backend itself (the ring) rather than
	 * from the fault counters.
	 */
	bool exact_vcpu_counts;
	/* Sets up KVM-side tracking, including the memslot flag. */
	int (*start)(struct dlog *d);
	/*
	 * Overwrites d->found with the pages KVM reports since the previous
	 * call; an exact backend also fills d->vcpu_counts.  Holds d->lock
	 * when it touches state a vCPU thread shares.
	 */
	int (*collect)(struct dlog *d);
	/* Arguments already checked by dlog_rearm(). */
	int (*rearm)(struct dlog *d, const uint64_t *bitmap, uint64_t first_page,
		     uint64_t npages);
	/* Undoes start(); the VM keeps running. */
	void (*stop)(struct dlog *d);
	/* Optional: frees what start() made, once d is off the active list
	 * (so no vCPU thread can reach it any more). */
	void (*release)(struct dlog *d);
};

/* Fault counters of one vCPU, read from its KVM binary statistics file. */
struct dlog_pf {
	int fd;                 /* -1: not available */
	uint64_t data_offset;   /* where the values start in the file */
	uint64_t data_len;      /* bytes to read to cover the counters used */
	uint32_t off[3];        /* byte offsets of pf_fixed, pf_fast, pf_spurious */
	uint64_t last;          /* their sum at the previous sample */
};

struct dlog {
	struct vm *vm;
	const struct dlog_ops *ops;
	uint64_t npages;
	uint64_t nwords;            /* 64-bit words in a bitmap of npages */
	uint64_t *found;            /* this collection's pages (backend fills) */
	uint64_t *vcpu_counts;      /* last interval, vm->ncpus entries */
	struct dlog_pf *pf;         /* bitmap backends: per vCPU, or NULL */
	struct dlog *next_active;   /* the list of active dlogs (dirtylog.c) */

	/*
	 * d->lock guards what vCPU threads share with the controller: the
	 * ring state below, report_all and stats.  Never held across a pause.
	 */
	pthread_mutex_t lock;
	bool report_all;            /* next collection reports every page */
	struct dlog_stats stats;

	/* ring only */
	uint64_t *ring_pending;     /* harvested but not yet collected */
	uint64_t *ring_counts;      /* per vCPU, entries since the last collect */
	uint32_t ring_entries;      /* entries per ring, a power of two */
	bool ring_warned;           /* bad-entry message already logged */
	pthread_t reaper;           /* resets full rings for vCPU threads */
	bool reaper_running;
	bool reaper_quit;           /* under d->lock, like the fields below */
	pthread_cond_t reap_cond;   /* vCPU thread -> reaper */
	pthread_cond_t reaped_cond; /* reaper -> vCPU threads */
	uint64_t reap_req, reap_done;
	int reap_rc;
};

const struct dlog_ops *dlog_bitmap_ops(void);
const struct dlog_ops *dlog_clear_ops(void);
const struct dlog_ops *dlog_ring_ops(void);

/*
 * Ring-full exits.  One handler is installed for the VM's whole life
 * (dlog_install_ring_handler); on a vCPU thread it looks up the VM's active
 * dlog under the active-list read lock and calls dlog_ring_harvest_full(),
 * or dlog_ring_discard() when no ring session is active.  Holding that lock
 * while harvesting is what lets dlog_stop() free d without pausing the VM:
 * once d is off the list, no handler can be using it.
 */
void dlog_install_ring_handler(struct vm *vm);
void dlog_ring_harvest_full(struct dlog *d, struct vcpu *vcpu);
void dlog_ring_discard(struct vcpu *vcpu);

/*
 * KVM_GET_DIRTY_LOG of memslot 0 into d->found (bitmap and clear share it).
 * Controller thread.
 */
int dlog_kvm_get_log(struct dlog *d);
/* -ENOTSUP with a message when d's VM has a dirty ring (no KVM bitmap). */
int dlog_refuse_ring_vm(const struct dlog *d);

/*
 * Runs fn with every vCPU parked and the VM's controllers locked out,
 * pausing a running VM for that long and resuming it after.  For work that
 * must happen on vCPU threads, or must know that no vCPU is inside a
 * handler that uses d.  Controller thread.
 */
int dlog_with_vcpus_parked(struct vm *vm, int (*fn)(struct vcpu *vcpu, void *arg),
			   void *arg);

/* vcpu_stats.c: per-vCPU write-fault counters (bitmap backends). */
int dlog_pf_open(struct dlog *d);
/* Stores each vCPU's fault count since the previous sample in counts[]. */
void dlog_pf_sample(struct dlog *d, uint64_t *counts);
void dlog_pf_close(struct dlog *d);

#endif
