/*
 * The sender's worker pool.  For each iteration the migration thread fills
 * the dirty bitmap and hands it out in chunks of MIG_CHUNK_PAGES; each
 * worker takes chunks, re-arms dirty tracking for a chunk just before
 * reading it (the clear backend needs this order), copies its dirty pages
 * into a batch, compresses and checksums the batch and sends it on its
 * channel.  Compression and checksumming thus run on as many threads as
 * there are workers, not on one core.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/util.h"
#include "sender_int.h"
#include "stream.h"

#define PROBE_EVERY 16
#define DECIDE_EVERY 32     /* batches between compression decisions */

/* Waits until `bytes` more may leave under the bandwidth limit. */
static void rate_limit(struct mig_out *m, size_t bytes)
{
	uint64_t now, start, wait_ns = 0, bw;

	pthread_mutex_lock(&m->lock);
	bw = m->p.max_bandwidth;
	if (bw) {
		now = now_ns();
		start = MAX(now, m->rate_next_ns);
		m->rate_next_ns = start + (uint64_t)bytes * 1000000000ull / bw;
		wait_ns = start > now ? start - now : 0;
	}
	pthread_mutex_unlock(&m->lock);
	while (wait_ns && !atomic_load(&m->abort)) {
		uint64_t step = MIN(wait_ns, 50000000ull);
		struct timespec ts = { (time_t)(step / 1000000000ull), (long)(step % 1000000000ull) };

		nanosleep(&ts, NULL);
		wait_ns -= step;
	}
}

static bool want_compress(struct mig_worker *w)
{
	switch (w->m->p.compress) {
	case MIG_COMPRESS_ZSTD:
		return true;
	case MIG_COMPRESS_NONE:
		return false;
	case MIG_COMPRESS_AUTO:
		break;
	}
	/* Probe now and then so the auto decision follows the data. */
	return atomic_load(&w->m->compress_now) || w->batches % PROBE_EVERY == 0;
}

static int flush_batch(struct mig_worker *w)
{
	struct mig_out *m = w->m;
	struct mig_batch *b = &w->batch;
	unsigned ch = w->index % m->nch;
	struct mig_section s = {
		.type = MIG_SEC_PAGES, .id = ch, .version = 1, .flags = MIG_SECF_NO_CSUM,
	};
	uint8_t hdr[MIG_SECTION_HDR_SIZE];
	struct iovec iov[4];
	int rc;

	if (b->npages == 0)
		return 0;
	mig_batch_seal(b, want_compress(w));
	if (b->comp_len) {
		atomic_fetch_add(&m->probe_raw, (uint64_t)b->nonzero * GMEM_PAGE_SIZE);
		atomic_fetch_add(&m->probe_comp, b->comp_len);
		atomic_fetch_add(&m->probe_ns, b->compress_ns);
	}
	s.length = MIG_BATCH_HDR_SIZE + (uint64_t)b->npages * 8 + b->data_len;
	mig_section_encode(&s, hdr);
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ b->hdr, MIG_BATCH_HDR_SIZE };
	iov[2] = (struct iovec){ b->entries, (size_t)b->npages * 8 };
	iov[3] = (struct iovec){ (void *)b->data, b->data_len };
	rate_limit(m, sizeof(hdr) + s.length);
	pthread_mutex_lock(&m->ch_lock[ch]);
	rc = xport_sendv(m->ch[ch], iov, 4);
	pthread_mutex_unlock(&m->ch_lock[ch]);
	if (rc)
		return ferr_sys(rc, "sending pages on channel %u", ch);
	atomic_fetch_add(&m->pages_sent, b->nonzero);
	atomic_fetch_add(&m->zero_pages, b->npages - b->nonzero);
	atomic_fetch_add(&m->batches, 1);
	if (b->data != b->raw)
		atomic_fetch_add(&m->comp_batches, 1);
	w->batches++;
	mig_batch_reset(b, m->job_iteration);
	/* Decide early, not only at iteration ends: a first pass is long. */
	if (m->p.compress == MIG_COMPRESS_AUTO && w->batches % DECIDE_EVERY == 0) {
		uint64_t dt = now_ns() - m->job_t0;

		if (dt > 1000000)
			mig_update_compression(m, (uint64_t)((double)(mig_out_wire_bytes(m) -
								      m->job_wire0) * 1e9 / (double)dt));
	}
	return 0;
}

/*
 * The overall timeout, checked per chunk so that a long first pass cannot
 * outlive it.  With --on-timeout switchover, pre-copy stops taking chunks
 * and the pages it did not send stay in the bitmap for stop-copy.
 */
static int check_timeout(struct mig_out *m)
{
	enum mig_state state;

	if (!m->p.timeout_ns || now_ns() - m->t_start <= m->p.timeout_ns)
		return 0;
	pthread_mutex_lock(&m->lock);
	state = m->state;
	pthread_mutex_unlock(&m->lock);
	if (state != MIG_ACTIVE)
		return 0;   /* stop-copy finishes what it started */
	if (m->p.timeout_switchover) {
		atomic_store(&m->cut_short, true);
		return 1;
	}
	return ferr(ETIMEDOUT, "the migration did not converge within %llu s",
		    (unsigned long long)(m->p.timeout_ns / 1000000000ull));
}

static int run_job(struct mig_worker *w)
{
	struct mig_out *m = w->m;
	uint64_t npages = m->vm->mem.npages, c;
	int rc;

	mig_batch_reset(&w->batch, m->job_iteration);
	while ((c = atomic_fetch_add(&m->job_next, 1)) < m->job_chunks) {
		uint64_t first = c * MIG_CHUNK_PAGES;
		uint64_t count = MIN(MIG_CHUNK_PAGES, npages - first);
		bool any = false;

		if (atomic_load(&m->abort))
			return -ECANCELED;
		rc = check_timeout(m);
		if (rc < 0)
			return rc;
		if (rc > 0)
			break;
		for (uint64_t wd = first / 64; wd < (first + count + 63) / 64 && !any; wd++)
			any = m->bitmap[wd] != 0;
		if (!any)
			continue;
		rc = dlog_rearm(m->dlog, m->bitmap, first, DIV_ROUND_UP(count, 64) * 64);
		if (rc)
			return rc;
		for (uint64_t wd = first / 64; wd < (first + count + 63) / 64; wd++) {
			uint64_t bits = m->bitmap[wd];

			while (bits) {
				uint64_t pfn = wd * 64 + (uint64_t)__builtin_ctzll(bits);

				bits &= bits - 1;
				if (!mig_batch_add(&w->batch, &m->vm->mem, pfn, m->job_skip_zero))
					continue;
				if (mig_batch_full(&w->batch) && (rc = flush_batch(w)))
					return rc;
			}
		}
	}
	return flush_batch(w);
}

static void *worker_main(void *arg)
{
	struct mig_worker *w = arg;
	struct mig_out *m = w->m;
	char name[16];

	snprintf(name, sizeof(name), "ferry-mig-w%u", w->index);
	pthread_setname_np(pthread_self(), name);
	for (;;) {
		int rc;

		pthread_mutex_lock(&m->lock);
		while (w->seen_gen == m->job_gen && !m->workers_stop)
			pthread_cond_wait(&m->job_cond, &m->lock);
		if (m->workers_stop) {
			pthread_mutex_unlock(&m->lock);
			return NULL;
		}
		w->seen_gen = m->job_gen;
		pthread_mutex_unlock(&m->lock);

		ferr_clear();
		rc = run_job(w);

		pthread_mutex_lock(&m->lock);
		if (rc && !m->job_error) {
			m->job_error = rc;
			snprintf(m->job_msg, sizeof(m->job_msg), "%s", ferr_msg(rc));
		}
		m->job_done++;
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
	}
}

int mig_workers_start(struct mig_out *m)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	/* At least one worker per channel, and enough to use the cores. */
	m->nworkers = MAX(m->nch, (unsigned)MIN(MAX(cores, 1), 4));
	m->workers = calloc(m->nworkers, sizeof(*m->workers));
	if (!m->workers)
		return -ENOMEM;
	for (unsigned i = 0; i < m->nworkers; i++) {
		struct mig_worker *w = &m->workers[i];
		int rc;

		w->m = m;
		w->index = i;
		rc = mig_batch_init(&w->batch);
		if (rc)
			return rc;
		rc = pthread_create(&w->thread, NULL, worker_main, w);
		if (rc)
			return ferr_sys(rc, "cannot start migration worker %u", i);
		w->started = true;
	}
	return 0;
}

void mig_workers_stop(struct mig_out *m)
{
	if (!m->workers)
		return;
	pthread_mutex_lock(&m->lock);
	m->workers_stop = true;
	pthread_cond_broadcast(&m->job_cond);
	pthread_mutex_unlock(&m->lock);
	for (unsigned i = 0; i < m->nworkers; i++) {
		if (m->workers[i].started)
			pthread_join(m->workers[i].thread, NULL);
		mig_batch_free(&m->workers[i].batch);
	}
	free(m->workers);
	m->workers = NULL;
}

int mig_send_iteration(struct mig_out *m, uint64_t iter, bool skip_zero)
{
	uint8_t end[8];
	int rc = 0;

	pthread_mutex_lock(&m->lock);
	m->job_iteration = iter;
	m->job_skip_zero = skip_zero;
	m->job_chunks = DIV_ROUND_UP(m->vm->mem.npages, MIG_CHUNK_PAGES);
	m->job_t0 = now_ns();
	m->job_wire0 = mig_out_wire_bytes(m);
	atomic_store(&m->job_next, 0);
	m->job_done = 0;
	m->job_error = 0;
	m->job_gen++;
	pthread_cond_broadcast(&m->job_cond);
	while (m->job_done < m->nworkers)
		pthread_cond_wait(&m->cond, &m->lock);
	if (m->job_error)
		rc = ferr(m->job_error, "%s", m->job_msg);
	pthread_mutex_unlock(&m->lock);
	if (rc)
		return rc;
	/* Each channel says it has sent everything of this iteration. */
	put_le64(end, iter);
	for (unsigned ch = 0; ch < m->nch; ch++) {
		pthread_mutex_lock(&m->ch_lock[ch]);
		rc = mig_send_section(m->ch[ch], MIG_SEC_ITER_END, ch, 1, 0, end, sizeof(end));
		pthread_mutex_unlock(&m->ch_lock[ch]);
		if (rc)
			return ferr_sys(rc, "sending the end of iteration %llu", (unsigned long long)iter);
	}
	return 0;
}
