/*
 * Convergence policy for pre-copy.
 *
 * After each collection the rest of the dirty memory would take
 *     pages / (pages applied per second in a recent iteration) + fixed cost
 * to send with the VM stopped.  The page rate is measured from collection to
 * the destination's ITER_DONE, so it includes whatever limits it: the link,
 * compression, or the CPU cost of copying and applying pages (with sparse
 * pages a byte rate is far too optimistic: 10 bytes on the wire can cost
 * 3 µs of copying).  Until a rate is known the byte rate stands in.  Once that fits the downtime target, the
 * migration switches over.  The fixed cost covers the vCPU and device state,
 * the LOADED/COMMIT/RUNNING exchange and the destination's restore: about
 * 1 ms on loopback (measured; see docs/migration.md).  A dirty set of a few
 * pages also ends pre-copy: another pass cannot make it smaller.
 *
 * When the dirty set stops shrinking (the guest dirties more than half of
 * what an iteration sends, twice in a row, with more than a few MiB left),
 * the vCPUs that dirty most are throttled: 20% first, then 10 points more
 * each time, up to the limit.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/util.h"
#include "../guest/abi.h"
#include "sender_int.h"

#define FIXED_COST_NS 1000000ull       /* state + handshake + restore */
#define FLOOR_PAGES 64ull               /* too few to be worth a pass */
#define STRIKE_MIN_PAGES 1024ull        /* 4 MiB: less is not a trend */
#define THROTTLE_FIRST 20u
#define THROTTLE_STEP 10u

bool mig_converged(struct mig_out *m, struct mig_converge *c, uint64_t dirty_pages)
{
	uint64_t bw, target, expected;

	pthread_mutex_lock(&m->lock);
	bw = m->bandwidth_bps;
	target = m->p.downtime_ns;
	if (!c->wire_per_page)
		c->wire_per_page = GMEM_PAGE_SIZE + 8;
	if (c->pages_per_sec)
		expected = (uint64_t)((double)dirty_pages * 1e9 / (double)c->pages_per_sec);
	else if (bw)
		expected = (uint64_t)((double)dirty_pages * (double)c->wire_per_page * 1e9 /
				      (double)bw);
	else
		expected = UINT64_MAX / 2;
	expected += FIXED_COST_NS;
	m->expected_downtime_ns = expected;
	m->pages_remaining = dirty_pages;
	pthread_mutex_unlock(&m->lock);
	return ((bw || c->pages_per_sec) && expected <= target) || dirty_pages <= FLOOR_PAGES;
}

static int cmp_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

void mig_auto_converge(struct mig_out *m, struct mig_converge *c, uint64_t dirty_pages)
{
	struct vm *vm = m->vm;
	uint64_t counts[FERRY_MAX_VCPUS], sorted[FERRY_MAX_VCPUS], cut;
	unsigned limit, pct;

	if (c->prev_sent_pages && dirty_pages > STRIKE_MIN_PAGES &&
	    dirty_pages * 2 > c->prev_sent_pages)
		c->strikes++;
	else
		c->strikes = 0;
	c->prev_sent_pages = dirty_pages;
	pthread_mutex_lock(&m->lock);
	limit = m->p.throttle_max_pct;
	pthread_mutex_unlock(&m->lock);
	if (c->strikes < 2 || c->throttle_pct >= limit)
		return;
	c->strikes = 0;
	if (dlog_vcpu_counts(m->dlog, counts) < 0)
		return;
	memcpy(sorted, counts, vm->ncpus * sizeof(uint64_t));
	qsort(sorted, vm->ncpus, sizeof(uint64_t), cmp_desc);
	/* The heaviest writers: at least half the rate of the heaviest. */
	cut = MAX(sorted[0] / 2, 1);
	pct = c->throttle_pct ? c->throttle_pct + THROTTLE_STEP : THROTTLE_FIRST;
	c->throttle_pct = MIN(pct, limit);
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (counts[i] >= cut)
			vm_throttle_set(vm, i, c->throttle_pct);
	flog("migration: the guest dirties memory faster than it can be sent; "
	     "throttling its busiest vCPUs to %u%%", c->throttle_pct);
}

void mig_update_compression(struct mig_out *m, uint64_t bw)
{
	uint64_t raw = atomic_load(&m->probe_raw), comp = atomic_load(&m->probe_comp);
	uint64_t ns = atomic_load(&m->probe_ns);
	double ratio, speed, with, without;

	if (m->p.compress != MIG_COMPRESS_AUTO || raw < (4u << 20) || !ns || !comp || !bw)
		return;
	/*
	 * Raw, the link carries bw bytes of pages per second.  Compressed, it
	 * carries bw / ratio, but no more than the workers can compress.
	 */
	ratio = (double)comp / (double)raw;
	speed = (double)raw / ((double)ns / 1e9) * m->nworkers;
	without = (double)bw;
	with = MIN(speed, (double)bw / ratio);
	atomic_store(&m->compress_now, with > without * 1.1);
}
