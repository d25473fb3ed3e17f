/*
 * A channel: its rings in guest memory (every guest-written index and length
 * checked on every use), its open/close, its thread, and the part of its
 * migration state that every provider shares.
 */
#include "channel.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "../core/util.h"

#define PKT_HDR ((uint32_t)sizeof(struct vmbus_pkt))
#define ALIGN8(x) (((x) + 7u) & ~7u)

bool vsp_vm_enter(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->state == VM_RUNNING && !atomic_load(&vm->pause_req) && !vm->ended &&
	    !atomic_load(&vm->stopping))
		return true;
	pthread_mutex_unlock(&vm->lock);
	return false;
}

void vsp_vm_leave(struct vm *vm)
{
	pthread_mutex_unlock(&vm->lock);
}

static void ring_copy_out(const struct vsp_ring *r, uint32_t idx, void *dst, uint32_t n)
{
	uint32_t off = idx & (r->size - 1), first = MIN(n, r->size - off);

	memcpy(dst, r->data + off, first);
	memcpy((uint8_t *)dst + first, r->data, n - first);
}

static void ring_copy_in(struct vsp_chan *ch, struct vsp_ring *r, uint32_t idx,
			 const void *src, uint32_t n)
{
	uint32_t off = idx & (r->size - 1), first = MIN(n, r->size - off);
	struct guest_mem *m = &ch->vm->mem;

	if (n == 0)
		return;
	memcpy(r->data + off, src, first);
	memcpy(r->data, (const uint8_t *)src + first, n - first);
	gmem_mark_dirty(m, r->gpa + VMBUS_RING_HDR_SIZE + off, first);
	if (n > first)
		gmem_mark_dirty(m, r->gpa + VMBUS_RING_HDR_SIZE, n - first);
}

/* A store of the host into a ring header: a guest-memory write. */
static void hdr_store(struct vsp_chan *ch, struct vsp_ring *r, volatile uint32_t *field,
		      uint32_t v)
{
	__atomic_store_n(field, v, __ATOMIC_RELEASE);
	gmem_mark_dirty(&ch->vm->mem, r->gpa, VMBUS_RING_HDR_SIZE);
}

void vsp_chan_fail(struct vsp_chan *ch, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ch->error, sizeof(ch->error), fmt, ap);
	va_end(ap);
	flog("%s: channel %u closed: %s", ch->name, ch->offer.channel, ch->error);
	ch->state = VSP_CH_FAILED;
	atomic_store(&ch->wait_hdr, NULL);
	/* Tell the guest, in both rings (their placement was checked at open). */
	hdr_store(ch, &ch->out, &ch->out.hdr->host_closed, 1);
	hdr_store(ch, &ch->in, &ch->in.hdr->host_closed, 1);
	if (ch->ops->closed)
		ch->ops->closed(ch);
}

bool vsp_ring_has_data(struct vsp_chan *ch)
{
	return ch->state == VSP_CH_OPEN &&
	       __atomic_load_n(&ch->out.hdr->prod, __ATOMIC_ACQUIRE) != ch->out.shadow;
}

int vsp_ring_pop(struct vsp_chan *ch, struct vmbus_pkt *pkt, void *payload, uint32_t max)
{
	struct vsp_ring *r = &ch->out;
	uint32_t prod, avail, total;

	if (ch->state != VSP_CH_OPEN)
		return 0;
	prod = __atomic_load_n(&r->hdr->prod, __ATOMIC_ACQUIRE);
	avail = prod - r->shadow;
	if (avail == 0)
		return 0;
	if (avail > r->size) {
		vsp_chan_fail(ch, "guest->host ring: producer index %" PRIu32 " is %" PRIu32
			      " bytes past the consumer (%" PRIu32 "); the ring holds %" PRIu32,
			      prod, avail, r->shadow, r->size);
		return -EPROTO;
	}
	if (avail % VMBUS_PKT_ALIGN || avail < PKT_HDR) {
		vsp_chan_fail(ch, "guest->host ring: %" PRIu32 " bytes published, not whole packets",
			      avail);
		return -EPROTO;
	}
	ring_copy_out(r, r->shadow, pkt, PKT_HDR);
	if (pkt->len > ch->ops->max_payload || pkt->len > max) {
		vsp_chan_fail(ch, "guest->host ring: packet of %" PRIu32 " bytes exceeds the %"
			      PRIu32 "-byte limit", pkt->len, MIN(ch->ops->max_payload, max));
		return -EPROTO;
	}
	total = PKT_HDR + ALIGN8(pkt->len);
	if (total > avail) {
		vsp_chan_fail(ch, "guest->host ring: packet of %" PRIu32 " bytes runs past the %"
			      PRIu32 " bytes published", total, avail);
		return -EPROTO;
	}
	ring_copy_out(r, r->shadow + PKT_HDR, payload, pkt->len);
	r->shadow += total;
	/* Draining: the guest need not ring until we arm again before sleeping. */
	if (r->hdr->need_signal)
		hdr_store(ch, r, &r->hdr->need_signal, 0);
	return 1;
}

void vsp_ring_consumed(struct vsp_chan *ch)
{
	if (ch->state == VSP_CH_OPEN && ch->out.hdr->cons != ch->out.shadow)
		hdr_store(ch, &ch->out, &ch->out.hdr->cons, ch->out.shadow);
}

int vsp_ring_push(struct vsp_chan *ch, uint16_t type, uint64_t id,
		  const void *payload, uint32_t len)
{
	struct vsp_ring *r = &ch->in;
	struct vmbus_pkt pkt = { .len = len, .type = type, .id = id };
	static const uint8_t zeros[VMBUS_PKT_ALIGN];
	uint32_t cons, used, need = PKT_HDR + ALIGN8(len);

	if (ch->state != VSP_CH_OPEN)
		return -EPROTO;
	cons = __atomic_load_n(&r->hdr->cons, __ATOMIC_ACQUIRE);
	used = r->shadow - cons;
	if (used > r->size) {
		vsp_chan_fail(ch, "host->guest ring: consumer index %" PRIu32 " is outside the %"
			      PRIu32 " bytes the host wrote up to %" PRIu32, cons, r->size, r->shadow);
		return -EPROTO;
	}
	if (need > r->size - used) {
		if (r->hdr->pending_send != need)
			hdr_store(ch, r, &r->hdr->pending_send, need);
		return -EAGAIN;
	}
	ring_copy_in(ch, r, r->shadow, &pkt, PKT_HDR);
	ring_copy_in(ch, r, r->shadow + PKT_HDR, payload, len);
	if (ALIGN8(len) != len)
		ring_copy_in(ch, r, r->shadow + PKT_HDR + len, zeros, ALIGN8(len) - len);
	r->shadow += need;
	if (r->hdr->pending_send)
		hdr_store(ch, r, &r->hdr->pending_send, 0);
	return 0;
}

void vsp_ring_flush(struct vsp_chan *ch)
{
	struct vsp_ring *r = &ch->in;

	if (ch->state != VSP_CH_OPEN || r->hdr->prod == r->shadow)
		return;
	hdr_store(ch, r, &r->hdr->prod, r->shadow);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	/* A guest in WAIT sleeps on vcpu_cond; we hold vm->lock. */
	if (__atomic_load_n(&r->hdr->need_signal, __ATOMIC_ACQUIRE)) {
		atomic_fetch_add(&ch->signals, 1);
		pthread_cond_broadcast(&ch->vm->vcpu_cond);
	}
}

bool vsp_chan_arm(struct vsp_chan *ch)
{
	struct vsp_ring *r = &ch->out;

	if (ch->state != VSP_CH_OPEN)
		return true;
	if (r->hdr->need_signal != 1)
		hdr_store(ch, r, &r->hdr->need_signal, 1);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&r->hdr->prod, __ATOMIC_ACQUIRE) == r->shadow)
		return true;
	vsp_chan_disarm(ch);
	return false;
}

void vsp_chan_disarm(struct vsp_chan *ch)
{
	if (ch->state == VSP_CH_OPEN && ch->out.hdr->need_signal != 0)
		hdr_store(ch, &ch->out, &ch->out.hdr->need_signal, 0);
}

void vsp_chan_kick(struct vsp_chan *ch)
{
	if (ch->kick_fd >= 0)
		(void)eventfd_write(ch->kick_fd, 1);
}

static void ring_attach(struct vsp_chan *ch, struct vsp_ring *r, uint64_t gpa,
			uint32_t size, uint32_t shadow)
{
	r->gpa = gpa;
	r->size = size;
	r->hdr = gmem_ptr(&ch->vm->mem, gpa, VMBUS_RING_HDR_SIZE);
	r->data = (uint8_t *)r->hdr + VMBUS_RING_HDR_SIZE;
	r->shadow = shadow;
}

int vsp_chan_open(struct vsp_chan *ch, struct vmbus_msg *m)
{
	uint32_t lowest = ch->ops->version & 0xffff0000u, chosen;
	struct vmbus_ring_hdr zero;
	int rc;

	pthread_mutex_lock(&ch->lock);
	if (ch->state != VSP_CH_OFFERED) {
		rc = -EBUSY;
		goto unlock;
	}
	chosen = MIN(m->version_max, ch->ops->version);
	if (m->version_min > m->version_max || chosen < m->version_min || chosen < lowest) {
		rc = -EPROTONOSUPPORT;
		goto unlock;
	}
	rc = vsp_bus_check_rings(ch->bus, ch, m->out_ring_gpa, m->out_ring_size,
				 m->in_ring_gpa, m->in_ring_size);
	if (rc)
		goto unlock;
	/* Fresh rings: the host owns their state from here on. */
	memset(&zero, 0, sizeof(zero));
	gmem_write(&ch->vm->mem, m->out_ring_gpa, &zero, sizeof(zero));
	gmem_write(&ch->vm->mem, m->in_ring_gpa, &zero, sizeof(zero));
	ring_attach(ch, &ch->out, m->out_ring_gpa, m->out_ring_size, 0);
	ring_attach(ch, &ch->in, m->in_ring_gpa, m->in_ring_size, 0);
	ch->version = chosen;
	ch->error[0] = 0;
	ch->state = VSP_CH_OPEN;
	if (ch->ops->opened)
		ch->ops->opened(ch);
	atomic_store(&ch->wait_hdr, ch->in.hdr);
	m->version = chosen;
unlock:
	pthread_mutex_unlock(&ch->lock);
	if (!rc)
		vsp_chan_kick(ch);
	return rc;
}

int vsp_chan_close(struct vsp_chan *ch)
{
	int rc = 0;

	pthread_mutex_lock(&ch->lock);
	if (ch->state == VSP_CH_OFFERED) {
		rc = -ENOTCONN;
	} else {
		if (ch->state == VSP_CH_OPEN && ch->ops->closed)
			ch->ops->closed(ch);
		ch->state = VSP_CH_OFFERED;
		ch->version = 0;
		atomic_store(&ch->wait_hdr, NULL);
		vsp_bus_release_rings(ch->bus, ch);
		memset(&ch->out, 0, sizeof(ch->out));
		memset(&ch->in, 0, sizeof(ch->in));
	}
	pthread_mutex_unlock(&ch->lock);
	return rc;
}

static void drain_eventfd(int fd, _Atomic uint64_t *count)
{
	eventfd_t v;

	if (fd >= 0 && eventfd_read(fd, &v) == 0 && count)
		atomic_fetch_add(count, v);
}

/* The channel thread: the provider's work, then sleep until a signal. */
static void *chan_thread(void *arg)
{
	struct vsp_chan *ch = arg;
	struct pollfd fds[3];
	char name[16];
	nfds_t n = 2;

	snprintf(name, sizeof(name), "vsp-%s%u", ch->ops->kind, ch->offer.instance);
	pthread_setname_np(pthread_self(), name);
	fds[0] = (struct pollfd){ .fd = ch->doorbell_fd, .events = POLLIN };
	fds[1] = (struct pollfd){ .fd = ch->kick_fd, .events = POLLIN };
	if (ch->extra_fd >= 0)
		fds[n++] = (struct pollfd){ .fd = ch->extra_fd, .events = POLLIN };
	while (!atomic_load(&ch->stop)) {
		int ms;

		pthread_mutex_lock(&ch->lock);
		ms = ch->ops->work(ch);
		pthread_mutex_unlock(&ch->lock);
		if (ms == 0)
			continue;
		if (poll(fds, n, ms) <= 0)
			continue;
		if (fds[0].revents)
			drain_eventfd(ch->doorbell_fd, &ch->doorbells);
		if (fds[1].revents)
			drain_eventfd(ch->kick_fd, NULL);
		if (n > 2 && fds[2].revents)
			drain_eventfd(ch->extra_fd, NULL);
	}
	return NULL;
}

int vsp_chan_init(struct vsp_chan *ch, struct vsp_bus *bus, struct vm *vm,
		  const struct vsp_provider_ops *ops, uint32_t id, uint32_t instance,
		  const char *name)
{
	memset(ch, 0, sizeof(*ch));
	ch->bus = bus;
	ch->vm = vm;
	ch->ops = ops;
	ch->extra_fd = -1;
	ch->offer = (struct vmbus_offer){
		.channel = id, .type = ops->type, .instance = instance, .version = ops->version,
	};
	snprintf(ch->name, sizeof(ch->name), "%s", name);
	pthread_mutex_init(&ch->lock, NULL);
	ch->doorbell_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ch->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ch->doorbell_fd < 0 || ch->kick_fd < 0)
		return ferr_sys(errno, "cannot create the eventfds of %s", name);
	return 0;
}

int vsp_chan_start(struct vsp_chan *ch)
{
	int rc = pthread_create(&ch->thread, NULL, chan_thread, ch);

	if (rc)
		return ferr_sys(rc, "cannot start the thread of %s", ch->name);
	ch->thread_started = true;
	return 0;
}

void vsp_chan_fini(struct vsp_chan *ch)
{
	if (ch->thread_started) {
		atomic_store(&ch->stop, true);
		vsp_chan_kick(ch);
		pthread_join(ch->thread, NULL);
		ch->thread_started = false;
	}
	if (ch->ops && ch->ops->destroy)
		ch->ops->destroy(ch);
	if (ch->doorbell_fd > 0)
		close(ch->doorbell_fd);
	if (ch->kick_fd > 0)
		close(ch->kick_fd);
	ch->doorbell_fd = ch->kick_fd = -1;
	pthread_mutex_destroy(&ch->lock);
}

/*
 * Channel state in a device section: the state, the negotiated version, the
 * rings' placement and the host's own indices.  The ring contents travel
 * with guest memory.
 */
void vsp_chan_save_common(struct vsp_chan *ch, struct dbuf *out)
{
	dbuf_put_le32(out, ch->offer.type);
	dbuf_put_le32(out, ch->offer.instance);
	dbuf_put_le32(out, ch->state);
	dbuf_put_le32(out, ch->version);
	dbuf_put_le64(out, ch->out.gpa);
	dbuf_put_le32(out, ch->out.size);
	dbuf_put_le32(out, ch->out.shadow);
	dbuf_put_le64(out, ch->in.gpa);
	dbuf_put_le32(out, ch->in.size);
	dbuf_put_le32(out, ch->in.shadow);
	dbuf_put_str(out, ch->error, sizeof(ch->error));
	dbuf_put_le64(out, atomic_load(&ch->doorbells));
	dbuf_put_le64(out, atomic_load(&ch->signals));
}

int vsp_chan_load_common(struct vsp_chan *ch, struct dreader *r)
{
	uint32_t type = dreader_le32(r), instance = dreader_le32(r);
	uint32_t state = dreader_le32(r), version = dreader_le32(r);
	uint64_t out_gpa = dreader_le64(r);
	uint32_t out_size = dreader_le32(r), out_shadow = dreader_le32(r);
	uint64_t in_gpa = dreader_le64(r);
	uint32_t in_size = dreader_le32(r), in_shadow = dreader_le32(r);
	char error[sizeof(ch->error)];
	uint64_t doorbells, signals;
	int rc;

	dreader_str(r, error, sizeof(error));
	doorbells = dreader_le64(r);
	signals = dreader_le64(r);
	if (!dreader_ok(r))
		return ferr(EBADMSG, "%s: the channel state is truncated", ch->name);
	if (type != ch->offer.type || instance != ch->offer.instance)
		return ferr(EINVAL, "%s: the source offered type %u instance %u here, this VM "
			    "type %u instance %u", ch->name, type, instance, ch->offer.type,
			    ch->offer.instance);
	if (state > VSP_CH_FAILED)
		return ferr(EINVAL, "%s: channel state %u is unknown", ch->name, state);
	pthread_mutex_lock(&ch->lock);
	ch->state = VSP_CH_OFFERED;
	atomic_store(&ch->wait_hdr, NULL);
	rc = 0;
	if (state != VSP_CH_OFFERED) {
		if (version > ch->ops->version || version < (ch->ops->version & 0xffff0000u))
			rc = ferr(EINVAL, "%s: negotiated version %#x is not one this ferry speaks",
				  ch->name, version);
		else
			rc = vsp_bus_check_rings(ch->bus, ch, out_gpa, out_size, in_gpa, in_size);
	}
	if (!rc && state != VSP_CH_OFFERED) {
		ring_attach(ch, &ch->out, out_gpa, out_size, out_shadow);
		ring_attach(ch, &ch->in, in_gpa, in_size, in_shadow);
		ch->version = version;
		ch->state = (enum vsp_chan_state)state;
		if (state == VSP_CH_OPEN)
			atomic_store(&ch->wait_hdr, ch->in.hdr);
	}
	snprintf(ch->error, sizeof(ch->error), "%s", error);
	atomic_store(&ch->doorbells, doorbells);
	atomic_store(&ch->signals, signals);
	pthread_mutex_unlock(&ch->lock);
	return rc;
}

void vsp_chan_query_common(struct vsp_chan *ch, struct vsp_chan_info *out)
{
	static const char *const states[] = { "offered", "open", "failed" };

	snprintf(out->name, sizeof(out->name), "%s", ch->name);
	out->kind = ch->ops->kind;
	out->channel = ch->offer.channel;
	out->instance = ch->offer.instance;
	out->version = ch->state == VSP_CH_OPEN ? ch->version : 0;
	out->state = states[ch->state];
	snprintf(out->error, sizeof(out->error), "%s", ch->error);
	out->doorbells = atomic_load(&ch->doorbells);
	out->signals = atomic_load(&ch->signals);
	out->last_beat_ms = -1;
}
