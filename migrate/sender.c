/*
 * The migration source: one thread that runs a migration from start to end.
 *
 *   setup      connect channel 0, send the VM description, wait for READY
 *              (a REJECT ends it before any RAM moves); open the other
 *              channels; start dirty tracking and the workers.
 *   pre-copy   iteration 1 sends all written, non-zero memory; each later
 *              iteration sends what was dirtied meanwhile, until the rest
 *              fits the downtime target (converge.c).
 *   stop-copy  pause the vCPUs, send the last dirty pages, the vCPU, VM and
 *              device state (and page digests with --verify), then END.
 *   commit     wait for LOADED; send COMMIT; wait for RUNNING.
 *
 * Anything that fails before COMMIT leaves the source as it was: tracking
 * and throttling stop and the vCPUs resume if the migration paused them.
 * After COMMIT the source never runs the VM again by itself.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/cpustate.h"
#include "../core/util.h"
#include "codec.h"
#include "ramscan.h"
#include "sender_int.h"
#include "stream.h"

#define CONNECT_TIMEOUT_MS 10000
#define LOADED_TIMEOUT_MS 120000
#define RUNNING_TIMEOUT_MS 10000
#define DIGESTS_PER_SECTION (512u * 1024)
#define MAX_EXTENTS (1u << 20)       /* 16 MiB of hint, well under a section's cap */

const char *mig_state_name(enum mig_state s)
{
	static const char *const names[] = {
		[MIG_NONE] = "none", [MIG_SETUP] = "setup", [MIG_ACTIVE] = "active",
		[MIG_STOP_COPY] = "stop-copy", [MIG_COMPLETING] = "completing",
		[MIG_COMPLETED] = "completed", [MIG_FAILED] = "failed",
		[MIG_CANCELLED] = "cancelled", [MIG_UNCONFIRMED] = "unconfirmed",
	};

	return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "unknown";
}

int mig_compress_parse(const char *s, enum mig_compress *out)
{
	if (strcmp(s, "auto") == 0)
		*out = MIG_COMPRESS_AUTO;
	else if (strcmp(s, "zstd") == 0)
		*out = MIG_COMPRESS_ZSTD;
	else if (strcmp(s, "none") == 0)
		*out = MIG_COMPRESS_NONE;
	else
		return ferr(EINVAL, "compression '%s' is not auto, zstd or none", s);
	return 0;
}

const char *mig_compress_name(enum mig_compress c)
{
	return c == MIG_COMPRESS_ZSTD ? "zstd" : c == MIG_COMPRESS_NONE ? "none" : "auto";
}

uint64_t mig_out_wire_bytes(struct mig_out *m)
{
	uint64_t n = m->closed_wire_bytes;

	for (unsigned i = 0; i < m->nch; i++)
		if (m->ch[i])
			n += __atomic_load_n(&m->ch[i]->bytes_sent, __ATOMIC_RELAXED);
	return n;
}

static void abort_io_locked(struct mig_out *m)
{
	atomic_store(&m->abort, true);
	for (unsigned i = 0; i < m->nch; i++)
		if (m->ch[i])
			xport_abort(m->ch[i]);
	pthread_cond_broadcast(&m->cond);
}

void mig_out_fail(struct mig_out *m, int err, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&m->lock);
	if (!m->error[0]) {
		va_start(ap, fmt);
		vsnprintf(m->error, sizeof(m->error), fmt, ap);
		va_end(ap);
	}
	(void)err;
	abort_io_locked(m);
	pthread_mutex_unlock(&m->lock);
}

bool mig_out_should_stop(struct mig_out *m)
{
	return atomic_load(&m->abort);
}

static void set_state(struct mig_out *m, enum mig_state s)
{
	pthread_mutex_lock(&m->lock);
	m->state = s;
	pthread_mutex_unlock(&m->lock);
}

/*
 * Reads the destination's replies on channel 0 for the whole migration:
 * LOADED, RUNNING, or ERROR at any time.  Each is remembered by type, so a
 * close right after RUNNING cannot hide it.
 */
static void *reply_thread(void *arg)
{
	struct mig_out *m = arg;
	struct mig_section s;
	struct dbuf buf;
	char text[400];
	int rc;

	pthread_setname_np(pthread_self(), "ferry-mig-reply");
	dbuf_init(&buf);
	for (;;) {
		rc = mig_recv_section(m->ch[0], &s, &buf);
		pthread_mutex_lock(&m->lock);
		if (rc) {
			if (!atomic_load(&m->abort) && !m->error[0] && !m->got_running)
				snprintf(m->error, sizeof(m->error),
					 "lost the destination: %s", ferr_msg(rc));
			m->reply_eof = true;
			if (!m->committed)
				abort_io_locked(m);
			pthread_cond_broadcast(&m->cond);
			pthread_mutex_unlock(&m->lock);
			break;
		}
		switch (s.type) {
		case MIG_SEC_LOADED:
			m->got_loaded = true;
			break;
		case MIG_SEC_ITER_DONE:
			if (buf.len == 8)
				m->iter_done = MAX(m->iter_done, get_le64(buf.data));
			break;
		case MIG_SEC_RUNNING:
			if (buf.len == 24) {
				m->running_at_ns = get_le64(buf.data);
				memcpy(m->running_boot_id, buf.data + 8, 16);
			}
			m->got_running = true;
			break;
		case MIG_SEC_ERROR:
			mig_text(buf.data, buf.len, text, sizeof(text));
			if (!m->error[0])
				snprintf(m->error, sizeof(m->error), "the destination failed: %s", text);
			if (!m->committed)
				abort_io_locked(m);
			break;
		default:
			if (!m->error[0])
				snprintf(m->error, sizeof(m->error), "the destination sent an "
					 "unexpected %s section", mig_section_name(s.type));
			if (!m->committed)
				abort_io_locked(m);
			break;
		}
		pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
	}
	dbuf_free(&buf);
	return NULL;
}

/* Waits for *flag; 0, or -ECANCELED (error or close) or -ETIMEDOUT. */
static int wait_reply(struct mig_out *m, const bool *flag, unsigned timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000;
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / 1000000000ull),
		.tv_nsec = (long)(deadline % 1000000000ull),
	};
	int rc = 0;

	pthread_mutex_lock(&m->lock);
	while (!*flag && !m->reply_eof && !atomic_load(&m->abort) && rc == 0)
		rc = pthread_cond_timedwait(&m->cond, &m->lock, &ts);
	if (*flag)
		rc = 0;
	else
		rc = rc == ETIMEDOUT ? -ETIMEDOUT : -ECANCELED;
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* Waits until the destination has applied iteration `iter` everywhere. */
static int wait_iteration_applied(struct mig_out *m, uint64_t iter)
{
	int rc = 0;

	pthread_mutex_lock(&m->lock);
	while (m->iter_done < iter && !m->reply_eof && !atomic_load(&m->abort))
		pthread_cond_wait(&m->cond, &m->lock);
	if (m->iter_done < iter)
		rc = -ECANCELED;
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static int send_ch0(struct mig_out *m, uint32_t type, uint32_t id, uint32_t version,
		    const void *p, size_t len)
{
	int rc;

	pthread_mutex_lock(&m->ch_lock[0]);
	rc = mig_send_section(m->ch[0], type, id, version, 0, p, len);
	pthread_mutex_unlock(&m->ch_lock[0]);
	return rc ? ferr_sys(rc, "sending %s", mig_section_name(type)) : 0;
}

static int setup(struct mig_out *m)
{
	uint8_t pre[MIG_PREAMBLE_SIZE];
	struct mig_vmdesc *d;
	struct mig_section s;
	struct dbuf buf;
	int rc;

	rc = xport_connect(m->p.uri, CONNECT_TIMEOUT_MS, &m->ch[0]);
	if (rc)
		return rc;
	m->nch = 1;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	mig_vmdesc_from_vm(m->vm, d);
	d->nchannels = m->p.channels;
	d->flags = (m->p.verify ? MIG_FLAG_VERIFY : 0) |
		   (m->p.compress != MIG_COMPRESS_NONE ? MIG_FLAG_COMPRESS : 0);
	snprintf(d->dirty_log, sizeof(d->dirty_log), "%s", dlog_name(m->p.dirty_log));
	dbuf_init(&buf);
	mig_vmdesc_encode(d, &buf);
	free(d);
	mig_preamble_encode(pre);
	rc = xport_send(m->ch[0], pre, sizeof(pre));
	if (!rc)
		rc = buf.failed ? -ENOMEM : mig_send_section(m->ch[0], MIG_SEC_VMDESC, 0,
							       MIG_VMDESC_VERSION, 0, buf.data, buf.len);
	if (rc) {
		rc = ferr_sys(rc, "sending the VM description to %s", m->p.uri);
		goto out;
	}
	rc = mig_recv_section(m->ch[0], &s, &buf);
	if (rc) {
		rc = ferr(rc, "no answer from the destination: %s", ferr_msg(rc));
		goto out;
	}
	if (s.type == MIG_SEC_REJECT) {
		char text[400];

		mig_text(buf.data, buf.len, text, sizeof(text));
		rc = ferr(EPROTO, "the destination refused the VM: %s", text);
		goto out;
	}
	if (s.type != MIG_SEC_READY) {
		rc = ferr(EPROTO, "the destination answered %s instead of READY",
			  mig_section_name(s.type));
		goto out;
	}
	for (unsigned i = 1; i < m->p.channels; i++) {
		uint8_t hello[20];

		rc = xport_connect(m->p.uri, CONNECT_TIMEOUT_MS, &m->ch[i]);
		if (rc)
			goto out;
		m->nch = i + 1;
		memcpy(hello, m->vm->uuid, 16);
		put_le32(hello + 16, i);
		rc = xport_send(m->ch[i], pre, sizeof(pre));
		if (!rc)
			rc = mig_send_section(m->ch[i], MIG_SEC_CHANNEL, i, 1, 0, hello, sizeof(hello));
		if (rc) {
			rc = ferr_sys(rc, "opening channel %u", i);
			goto out;
		}
	}
	/* Tell the destination where the data is, so it can allocate those
	 * pages ahead of their arrival (a hint it may ignore).  A memory too
	 * fragmented to describe in MAX_EXTENTS goes without the hint. */
	dbuf_reset(&buf);
	rc = mig_ram_extents(&m->vm->mem, &buf);
	if (rc > (int)MAX_EXTENTS)
		rc = 0;
	else if (rc >= 0)
		rc = mig_send_section(m->ch[0], MIG_SEC_EXTENTS, 0, 1, MIG_SECF_OPTIONAL,
				      buf.data, buf.len);
	if (rc) {
		rc = ferr_sys(rc, "sending the RAM extents");
		goto out;
	}
	rc = pthread_create(&m->reader, NULL, reply_thread, m);
	if (rc) {
		rc = ferr_sys(rc, "cannot start the reply thread");
		goto out;
	}
	m->reader_started = true;
	rc = dlog_start(m->vm, m->p.dirty_log, &m->dlog);
	if (rc)
		goto out;
	m->bitmap_words = DIV_ROUND_UP(m->vm->mem.npages, 64);
	m->bitmap = calloc(m->bitmap_words, sizeof(uint64_t));
	if (!m->bitmap) {
		rc = -ENOMEM;
		goto out;
	}
	rc = mig_workers_start(m);
out:
	dbuf_free(&buf);
	return rc;
}

static uint64_t popcount_bitmap(const uint64_t *bm, uint64_t words)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < words; i++)
		n += (uint64_t)__builtin_popcountll(bm[i]);
	return n;
}

/*
 * ORs the pages dirtied since the last collection into m->bitmap.  The
 * caller clears the bitmap only once everything in it has been sent: the
 * bitmap and ring backends re-protect pages as they report them, so a page
 * dropped from the bitmap would never be reported again.
 */
static int collect(struct mig_out *m, uint64_t *count)
{
	int rc;

	rc = dlog_collect(m->dlog, m->bitmap, count);
	return rc ? ferr(rc, "collecting dirty pages: %s", ferr_msg(rc)) : 0;
}

static bool timed_out(struct mig_out *m)
{
	return m->p.timeout_ns && now_ns() - m->t_start > m->p.timeout_ns;
}

/* Keeps the figures of one iteration for the timeline in query-migrate. */
static void record_iteration(struct mig_out *m, uint64_t iter, uint64_t t_start,
			     uint64_t dirty, uint64_t sent, uint64_t wire)
{
	struct mig_iteration *h;
	unsigned pct = 0;

	for (unsigned i = 0; i < m->vm->ncpus; i++)
		pct = MAX(pct, vm_throttle_get(m->vm, i));
	pthread_mutex_lock(&m->lock);
	if (m->nhistory < MIG_HISTORY_MAX) {
		h = &m->history[m->nhistory++];
		h->iteration = (uint32_t)iter;
		h->throttle_pct = pct;
		h->start_ns = t_start - m->t_start;
		h->duration_ns = now_ns() - t_start;
		h->dirty_pages = dirty;
		h->pages_sent = sent;
		h->wire_bytes = wire;
	}
	pthread_mutex_unlock(&m->lock);
}

/* Pre-copy; returns the number of the next iteration (the final one). */
static int precopy(struct mig_out *m, uint64_t *next_iter)
{
	struct mig_converge cv = { 0 };
	uint64_t iter, dirty, t_prev = 0;
	int rc;

	set_state(m, MIG_ACTIVE);
	for (iter = 1;; iter++) {
		uint64_t t0 = now_ns(), t_collect, wire0, pages0, dt, wire, sent;

		if (mig_out_should_stop(m))
			return -ECANCELED;
		/* The previous iteration sent every page in the bitmap. */
		memset(m->bitmap, 0, m->bitmap_words * sizeof(uint64_t));
		rc = collect(m, &dirty);
		if (rc)
			return rc;
		if (iter == 1) {
			/*
			 * Every page is reported the first time.  Re-arm them all
			 * before looking for holes: a page the guest writes after
			 * the re-arm is logged, so one found empty below and
			 * skipped cannot be lost; and holes left un-armed would be
			 * reported (and read, allocating them) again next time.
			 */
			rc = dlog_rearm(m->dlog, m->bitmap, 0,
					DIV_ROUND_UP(m->vm->mem.npages, 64) * 64);
			if (!rc)
				rc = mig_clear_holes(&m->vm->mem, m->bitmap);
			if (rc)
				return rc;
			dirty = popcount_bitmap(m->bitmap, m->bitmap_words);
		} else {
			pthread_mutex_lock(&m->lock);
			m->dirty_rate_pps = dirty * 1000000000ull / MAX(now_ns() - t_prev, 1);
			pthread_mutex_unlock(&m->lock);
			if (mig_converged(m, &cv, dirty))
				break;
			if (timed_out(m)) {
				if (m->p.timeout_switchover) {
					flog("migration: timeout reached; switching over with %llu pages left",
					     (unsigned long long)dirty);
					break;
				}
				return ferr(ETIMEDOUT, "the migration did not converge within %llu s",
					    (unsigned long long)(m->p.timeout_ns / 1000000000ull));
			}
			mig_auto_converge(m, &cv, dirty);
		}
		pthread_mutex_lock(&m->lock);
		m->iteration = iter;
		m->pages_remaining = dirty;
		pthread_mutex_unlock(&m->lock);

		t_collect = t0;
		t0 = t_prev = now_ns();
		wire0 = mig_out_wire_bytes(m);
		pages0 = atomic_load(&m->pages_sent) + atomic_load(&m->zero_pages);
		pthread_mutex_lock(&m->lock);
		m->iter_t0 = t0;
		m->iter_pages0 = pages0;
		m->iter_wire0 = wire0;
		pthread_mutex_unlock(&m->lock);
		rc = mig_send_iteration(m, iter, iter == 1);
		if (!rc)
			rc = wait_iteration_applied(m, iter);
		if (rc)
			return rc;
		if (atomic_load(&m->cut_short)) {
			flog("migration: timeout reached in iteration %llu; switching over",
			     (unsigned long long)iter);
			iter++;
			break;
		}
		dt = MAX(now_ns() - t0, 1);
		wire = mig_out_wire_bytes(m) - wire0;
		sent = atomic_load(&m->pages_sent) + atomic_load(&m->zero_pages) - pages0;
		pthread_mutex_lock(&m->lock);
		m->iter_t0 = 0;
		/* Small iterations measure latency more than bandwidth. */
		if (wire >= (1u << 20) || !m->bandwidth_bps)
			m->bandwidth_bps = (uint64_t)((double)wire * 1e9 / (double)dt);
		if (iter == 1) {
			m->first_pass_bps = (uint64_t)((double)wire * 1e9 / (double)dt);
			m->first_pass_bytes = wire;
		}
		m->pages_remaining = 0;
		pthread_mutex_unlock(&m->lock);
		if (sent)
			cv.wire_per_page = MAX(wire / sent, 64);
		/* Tiny iterations measure latency, not throughput. */
		if (sent >= 1024 || !cv.pages_per_sec)
			cv.pages_per_sec = (uint64_t)((double)sent * 1e9 / (double)dt);
		record_iteration(m, iter, t_collect, dirty, sent, wire);
		mig_update_compression(m, m->bandwidth_bps);
	}
	*next_iter = iter;
	return 0;
}

static int send_state(struct mig_out *m)
{
	struct vm *vm = m->vm;
	struct vm_state st;
	struct dbuf buf;
	int rc;

	rc = vm_state_alloc(&st, vm->ncpus);
	if (rc)
		return rc;
	dbuf_init(&buf);
	rc = vm_capture(vm, &st);
	if (rc)
		goto out;
	mig_vm_state_encode(&st, &buf);
	rc = send_ch0(m, MIG_SEC_VM_STATE, 0, MIG_STATE_VERSION, buf.data, buf.len);
	for (unsigned i = 0; i < vm->ncpus && !rc; i++) {
		dbuf_reset(&buf);
		mig_vcpu_state_encode(&st.vcpus[i], &buf);
		rc = buf.failed ? -ENOMEM :
				  send_ch0(m, MIG_SEC_VCPU_STATE, i, MIG_STATE_VERSION, buf.data, buf.len);
	}
	for (unsigned i = 0; i < vm->ndevices && !rc; i++) {
		const struct vm_device *dev = &vm->devices[i];

		dbuf_reset(&buf);
		dbuf_put_str(&buf, dev->ops->name, VM_DEVICE_NAME_MAX);
		rc = dev->ops->save(dev->opaque, &buf);
		if (rc) {
			rc = ferr(rc, "saving device %s: %s", dev->ops->name, ferr_msg(rc));
			break;
		}
		rc = buf.failed ? -ENOMEM :
				  send_ch0(m, MIG_SEC_DEVICE, i, dev->ops->version, buf.data, buf.len);
	}
out:
	dbuf_free(&buf);
	vm_state_free(&st);
	return rc;
}

static int send_digests(struct mig_out *m)
{
	uint64_t npages = m->vm->mem.npages;
	uint64_t *dig = malloc(npages * sizeof(uint64_t));
	struct dbuf buf;
	int rc;

	if (!dig)
		return -ENOMEM;
	rc = mig_digest_ram(&m->vm->mem, dig, m->nworkers);
	dbuf_init(&buf);
	for (uint64_t first = 0; first < npages && !rc; first += DIGESTS_PER_SECTION) {
		uint64_t n = MIN(DIGESTS_PER_SECTION, npages - first);

		dbuf_reset(&buf);
		dbuf_put_le64(&buf, first);
		dbuf_put_le64(&buf, n);
		for (uint64_t i = 0; i < n; i++)
			dbuf_put_le64(&buf, dig[first + i]);
		rc = buf.failed ? -ENOMEM : send_ch0(m, MIG_SEC_DIGEST, 0, 1, buf.data, buf.len);
	}
	dbuf_free(&buf);
	free(dig);
	return rc;
}

static int stop_and_copy(struct mig_out *m, uint64_t iter)
{
	uint8_t sw[40];
	uint64_t dirty, wire0, pages0;
	bool user_paused;
	int rc;

	set_state(m, MIG_STOP_COPY);
	m->t_pause_req = now_ns();
	/* A VM its operator paused stays paused, here on failure and there. */
	user_paused = vm_run_state(m->vm) == VM_PAUSED;
	vm_pause(m->vm, NULL);
	m->paused_vm = !user_paused;
	m->t_stop = now_ns();
	put_le64(sw, m->t_stop);
	mig_boot_id(sw + 8);
	put_le64(sw + 24, iter);
	put_le64(sw + 32, user_paused ? MIG_SWITCHOVER_PAUSED : 0);
	rc = send_ch0(m, MIG_SEC_SWITCHOVER, 0, 1, sw, sizeof(sw));
	/* On top of the converged collection that pre-copy did not send. */
	if (!rc)
		rc = collect(m, &dirty);
	if (rc)
		return rc;
	dirty = popcount_bitmap(m->bitmap, m->bitmap_words);
	pthread_mutex_lock(&m->lock);
	m->iteration = iter;
	m->pages_remaining = dirty;
	pthread_mutex_unlock(&m->lock);
	wire0 = mig_out_wire_bytes(m);
	pages0 = atomic_load(&m->pages_sent) + atomic_load(&m->zero_pages);
	rc = mig_send_iteration(m, iter, false);
	m->t_pages_done = now_ns();
	record_iteration(m, iter, m->t_stop, dirty, atomic_load(&m->pages_sent) +
			 atomic_load(&m->zero_pages) - pages0, mig_out_wire_bytes(m) - wire0);
	if (!rc)
		rc = send_state(m);
	if (!rc && m->p.verify)
		rc = send_digests(m);
	m->t_state_done = now_ns();
	pthread_mutex_lock(&m->lock);
	m->pages_remaining = 0;
	pthread_mutex_unlock(&m->lock);
	if (!rc)
		rc = send_ch0(m, MIG_SEC_END, 0, 1, NULL, 0);
	if (rc)
		return rc;

	set_state(m, MIG_COMPLETING);
	rc = wait_reply(m, &m->got_loaded, LOADED_TIMEOUT_MS);
	if (rc == -ETIMEDOUT)
		return ferr(ETIMEDOUT, "the destination did not load the VM within %u s",
			    LOADED_TIMEOUT_MS / 1000);
	if (rc)
		return ferr(EPROTO, "the destination did not load the VM");
	m->t_loaded = now_ns();

	/* The point of no return. */
	pthread_mutex_lock(&m->lock);
	if (m->cancel_req) {
		pthread_mutex_unlock(&m->lock);
		return -ECANCELED;
	}
	m->committed = true;
	pthread_mutex_unlock(&m->lock);
	rc = send_ch0(m, MIG_SEC_COMMIT, 0, 1, NULL, 0);
	if (!rc)
		rc = wait_reply(m, &m->got_running, RUNNING_TIMEOUT_MS);
	pthread_mutex_lock(&m->lock);
	if (rc == 0) {
		uint8_t here[16];

		m->t_running = now_ns();
		mig_boot_id(here);
		/* One host, one CLOCK_MONOTONIC: stop and start compare directly. */
		if (memcmp(here, m->running_boot_id, 16) == 0 && m->running_at_ns > m->t_stop)
			m->downtime_ns = m->running_at_ns - m->t_stop;
		else
			m->downtime_ns = now_ns() - m->t_stop;
		m->dst_downtime_ns = m->downtime_ns;
		m->state = MIG_COMPLETED;
		m->t_end = now_ns();
		pthread_mutex_unlock(&m->lock);
		return 0;
	}
	m->state = MIG_UNCONFIRMED;
	m->t_end = now_ns();
	snprintf(m->error, sizeof(m->error),
		 "COMMIT was sent but the destination never confirmed it runs the VM; "
		 "the VM stays paused here. Check the destination: if it is not running "
		 "the VM, use migrate-recover to resume it here");
	pthread_mutex_unlock(&m->lock);
	return -EPROTO;
}

/* Puts the source back as it was before the migration. */
static void roll_back(struct mig_out *m)
{
	pthread_mutex_lock(&m->lock);
	abort_io_locked(m);
	pthread_mutex_unlock(&m->lock);
	mig_workers_stop(m);
	if (m->reader_started) {
		pthread_join(m->reader, NULL);
		m->reader_started = false;
	}
	for (unsigned i = 0; i < m->vm->ncpus; i++)
		vm_throttle_set(m->vm, i, 0);
	if (m->dlog) {
		dlog_stop(m->dlog);
		m->dlog = NULL;
	}
	if (m->paused_vm) {
		vm_resume(m->vm);
		m->paused_vm = false;
	}
}

static void close_channels(struct mig_out *m)
{
	pthread_mutex_lock(&m->lock);
	m->closed_wire_bytes = mig_out_wire_bytes(m);
	for (unsigned i = 0; i < m->nch; i++) {
		xport_close(m->ch[i]);
		m->ch[i] = NULL;
	}
	m->nch = 0;
	pthread_mutex_unlock(&m->lock);
}

static void *migration_thread(void *arg)
{
	struct mig_out *m = arg;
	uint64_t final_iter = 0;
	int rc;

	pthread_setname_np(pthread_self(), "ferry-migrate");
	ferr_clear();
	rc = setup(m);
	if (!rc) {
		m->t_setup_done = now_ns();
		rc = precopy(m, &final_iter);
	}
	if (!rc)
		rc = stop_and_copy(m, final_iter);
	if (rc == 0) {
		char uri[sizeof(m->p.uri)];

		/* Done: the destination runs the VM; this one ends for good. */
		for (unsigned i = 0; i < m->vm->ncpus; i++)
			vm_throttle_set(m->vm, i, 0);
		dlog_stop(m->dlog);
		m->dlog = NULL;
		snprintf(uri, sizeof(uri), "%s", m->p.uri);
		vm_end(m->vm, 0, "the VM migrated to %s", uri);
		pthread_mutex_lock(&m->lock);
		abort_io_locked(m);
		pthread_mutex_unlock(&m->lock);
		mig_workers_stop(m);
		if (m->reader_started)
			pthread_join(m->reader, NULL);
		m->reader_started = false;
		close_channels(m);
		return NULL;
	}

	pthread_mutex_lock(&m->lock);
	if (m->state == MIG_UNCONFIRMED) {
		/* Never resume on our own: the destination may be running it. */
		while (!m->recover_req)
			pthread_cond_wait(&m->cond, &m->lock);
		m->committed = false;
		pthread_mutex_unlock(&m->lock);
		roll_back(m);
		close_channels(m);
		set_state(m, MIG_FAILED);
		return NULL;
	}
	if (!m->error[0]) {
		if (m->cancel_req)
			snprintf(m->error, sizeof(m->error), "cancelled");
		else
			snprintf(m->error, sizeof(m->error), "%s", ferr_msg(rc));
	}
	pthread_mutex_unlock(&m->lock);
	/* Tell the destination why, if it can still hear us. */
	if (m->nch && m->ch[0] && !atomic_load(&m->abort)) {
		pthread_mutex_lock(&m->ch_lock[0]);
		mig_send_text(m->ch[0], MIG_SEC_ABORT, m->error);
		pthread_mutex_unlock(&m->ch_lock[0]);
	}
	roll_back(m);
	close_channels(m);
	pthread_mutex_lock(&m->lock);
	m->state = m->cancel_req ? MIG_CANCELLED : MIG_FAILED;
	m->t_end = now_ns();
	pthread_mutex_unlock(&m->lock);
	flog("migration to %s %s: %s", m->p.uri, mig_state_name(m->state), m->error);
	return NULL;
}

int mig_out_start(struct vm *vm, const struct mig_params *p, struct mig_out **out)
{
	pthread_condattr_t ca;
	struct mig_out *m;
	int rc;

	if (p->channels == 0 || p->channels > MIG_MAX_CHANNELS)
		return ferr(EINVAL, "channels must be 1 to %u", MIG_MAX_CHANNELS);
	if (vm_run_state(vm) == VM_ENDED)
		return ferr(EINVAL, "the VM has ended");
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->vm = vm;
	m->p = *p;
	m->state = MIG_SETUP;
	m->t_start = now_ns();
	pthread_mutex_init(&m->lock, NULL);
	/* wait_reply() uses CLOCK_MONOTONIC deadlines. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&m->job_cond, NULL);
	for (unsigned i = 0; i < MIG_MAX_CHANNELS; i++)
		pthread_mutex_init(&m->ch_lock[i], NULL);
	rc = pthread_create(&m->thread, NULL, migration_thread, m);
	if (rc) {
		free(m);
		return ferr_sys(rc, "cannot start the migration thread");
	}
	*out = m;
	return 0;
}

void mig_out_query(struct mig_out *m, struct mig_stats *st)
{
	uint64_t now = now_ns(), end;

	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&m->lock);
	st->state = m->state;
	st->iteration = m->iteration;
	st->ram_bytes = m->vm->mem.size;
	end = m->t_end ? m->t_end : now;
	st->total_ns = end - m->t_start;
	st->setup_ns = m->t_setup_done ? m->t_setup_done - m->t_start : 0;
	st->downtime_ns = m->downtime_ns;
	st->dst_downtime_ns = m->dst_downtime_ns;
	st->expected_downtime_ns = m->expected_downtime_ns;
	st->pages_remaining = m->pages_remaining;
	st->dirty_rate_pps = m->dirty_rate_pps;
	st->bandwidth_bps = m->bandwidth_bps;
	st->first_pass_bps = m->first_pass_bps;
	st->first_pass_bytes = m->first_pass_bytes;
	st->channels = m->p.channels;
	if (m->t_stop) {
		st->sw_paused_ns = m->t_stop - m->t_pause_req;
		st->sw_pages_ns = m->t_pages_done ? m->t_pages_done - m->t_stop : 0;
		st->sw_state_ns = m->t_state_done ? m->t_state_done - m->t_stop : 0;
		st->sw_loaded_ns = m->t_loaded ? m->t_loaded - m->t_stop : 0;
		st->sw_running_ns = m->t_running ? m->t_running - m->t_stop : 0;
	}
	snprintf(st->error, sizeof(st->error), "%s", m->error);
	st->nhistory = m->nhistory;
	memcpy(st->history, m->history, m->nhistory * sizeof(m->history[0]));
	st->bytes_wire = mig_out_wire_bytes(m);
	pthread_mutex_unlock(&m->lock);
	st->pages_sent = atomic_load(&m->pages_sent);
	st->zero_pages = atomic_load(&m->zero_pages);
	/*
	 * Within an iteration, what is left shrinks as pages go, and until the
	 * first iteration has measured a bandwidth, the rate so far stands in.
	 */
	pthread_mutex_lock(&m->lock);
	if (m->iter_t0 && st->state == MIG_ACTIVE) {
		uint64_t done = st->pages_sent + st->zero_pages - m->iter_pages0;
		uint64_t dt = now - m->iter_t0;

		st->pages_remaining = st->pages_remaining > done ? st->pages_remaining - done : 0;
		if (!st->bandwidth_bps && dt > 10000000)
			st->bandwidth_bps = (uint64_t)((double)(st->bytes_wire - m->iter_wire0) * 1e9 /
						       (double)dt);
	}
	pthread_mutex_unlock(&m->lock);
	st->batches = atomic_load(&m->batches);
	st->compressed_batches = atomic_load(&m->comp_batches);
	st->compressing = m->p.compress == MIG_COMPRESS_ZSTD || atomic_load(&m->compress_now);
	st->throughput_bps = st->total_ns ? (uint64_t)((double)st->bytes_wire * 1e9 /
						       (double)st->total_ns) : 0;
	if (st->bandwidth_bps && st->state == MIG_ACTIVE)
		st->eta_ns = (uint64_t)((double)st->pages_remaining * GMEM_PAGE_SIZE * 1e9 /
					(double)st->bandwidth_bps) + st->expected_downtime_ns;
	for (unsigned i = 0; i < m->vm->ncpus; i++)
		st->throttle_pct = MAX(st->throttle_pct, vm_throttle_get(m->vm, i));
}

int mig_out_cancel(struct mig_out *m)
{
	int rc = 0;

	pthread_mutex_lock(&m->lock);
	if (m->committed)
		rc = ferr(EINVAL, "too late to cancel: the destination owns the VM now");
	else if (m->state >= MIG_COMPLETED)
		rc = ferr(EINVAL, "the migration has already %s", mig_state_name(m->state));
	else {
		m->cancel_req = true;
		if (!m->error[0])
			snprintf(m->error, sizeof(m->error), "cancelled");
		abort_io_locked(m);
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int mig_out_set_params(struct mig_out *m, uint64_t downtime_ns, uint64_t max_bandwidth)
{
	pthread_mutex_lock(&m->lock);
	if (downtime_ns != UINT64_MAX)
		m->p.downtime_ns = downtime_ns;
	if (max_bandwidth != UINT64_MAX)
		m->p.max_bandwidth = max_bandwidth;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int mig_out_recover(struct mig_out *m)
{
	int rc = 0;

	pthread_mutex_lock(&m->lock);
	if (m->state != MIG_UNCONFIRMED)
		rc = ferr(EINVAL, "migrate-recover is only for an unconfirmed migration (this one is %s)",
			  mig_state_name(m->state));
	else {
		m->recover_req = true;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

bool mig_out_finished(struct mig_out *m)
{
	enum mig_state s;

	pthread_mutex_lock(&m->lock);
	s = m->state;
	pthread_mutex_unlock(&m->lock);
	return s == MIG_COMPLETED || s == MIG_FAILED || s == MIG_CANCELLED;
}

void mig_out_free(struct mig_out *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	if (m->state == MIG_UNCONFIRMED) {
		/* ferry is exiting: leave the VM stopped, as promised. */
		m->recover_req = true;
		m->paused_vm = false;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
	pthread_join(m->thread, NULL);
	free(m->bitmap);
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->cond);
	pthread_cond_destroy(&m->job_cond);
	for (unsigned i = 0; i < MIG_MAX_CHANNELS; i++)
		pthread_mutex_destroy(&m->ch_lock[i]);
	free(m);
}
