/*
 * Guest side of the channel: control calls, ring allocation and the ring
 * protocol.  The host checks everything this code writes; this code trusts
 * the host but still refuses a packet larger than the caller's buffer.
 */
#include "vmbus.h"

#define PKT_HDR ((uint32_t)sizeof(struct vmbus_pkt))
#define ALIGN8(x) (((x) + 7u) & ~7u)
#define DEVICE_AREA_END (FERRY_DEVICE_GPA + 0x100000ull)

static uint64_t next_ring_gpa = FERRY_DEVICE_GPA;

static inline void out32(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void full_fence(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

int vmbus_control(struct vmbus_msg *m)
{
	m->abi_version = VMBUS_ABI_VERSION;
	out32(FERRY_PORT_VMBUS, (uint32_t)(uintptr_t)m);
	return m->status;
}

void vmbus_doorbell(uint32_t id)
{
	out32(FERRY_PORT_DOORBELL, id);
}

int vmbus_query(struct vmbus_offer *offers, unsigned max)
{
	struct vmbus_msg m = {
		.op = VMBUS_OP_QUERY, .buf_gpa = (uintptr_t)offers,
		.buf_len = (uint32_t)(max * sizeof(*offers)),
	};
	int rc = vmbus_control(&m);

	return rc < 0 ? rc : (int)m.count;
}

static void *alloc_ring(uint32_t size)
{
	uint64_t len = VMBUS_RING_HDR_SIZE + size;
	uint64_t gpa = __atomic_fetch_add(&next_ring_gpa, len, __ATOMIC_RELAXED);

	if (gpa + len > DEVICE_AREA_END)
		return NULL;
	return (void *)(uintptr_t)gpa;
}

int vmbus_open(struct vmbus_chan *c, uint32_t type, uint32_t instance, uint32_t version_min,
	       uint32_t version_max, uint32_t out_size, uint32_t in_size)
{
	struct vmbus_offer offers[VMBUS_MAX_CHANNELS];
	struct vmbus_msg m = { .op = VMBUS_OP_OPEN };
	int n = vmbus_query(offers, VMBUS_MAX_CHANNELS), rc;
	unsigned i;

	memset(c, 0, sizeof(*c));
	if (n < 0)
		return n;
	for (i = 0; i < (unsigned)n && i < VMBUS_MAX_CHANNELS; i++)
		if (offers[i].type == type && offers[i].instance == instance)
			break;
	if (i == (unsigned)n || i == VMBUS_MAX_CHANNELS)
		return -VMBUS_ENOENT;
	c->out = alloc_ring(out_size);
	c->in = alloc_ring(in_size);
	if (!c->out || !c->in)
		return -VMBUS_ENOMEM;
	m.channel = offers[i].channel;
	m.version_min = version_min;
	m.version_max = version_max;
	m.out_ring_gpa = (uintptr_t)c->out;
	m.in_ring_gpa = (uintptr_t)c->in;
	m.out_ring_size = out_size;
	m.in_ring_size = in_size;
	rc = vmbus_control(&m);
	if (rc < 0)
		return rc;
	c->id = offers[i].channel;
	c->type = type;
	c->instance = instance;
	c->version = m.version;
	memcpy(c->info, offers[i].info, sizeof(c->info));
	c->out_data = (uint8_t *)c->out + VMBUS_RING_HDR_SIZE;
	c->in_data = (uint8_t *)c->in + VMBUS_RING_HDR_SIZE;
	c->out_size = out_size;
	c->in_size = in_size;
	c->open = true;
	return 0;
}

int vmbus_close(struct vmbus_chan *c)
{
	struct vmbus_msg m = { .op = VMBUS_OP_CLOSE, .channel = c->id };

	c->open = false;
	return vmbus_control(&m);
}

static void ring_put(uint8_t *data, uint32_t size, uint32_t idx, const void *src, uint32_t n)
{
	uint32_t off = idx & (size - 1), first = n < size - off ? n : size - off;

	memcpy(data + off, src, first);
	memcpy(data, (const uint8_t *)src + first, n - first);
}

static void ring_get(const uint8_t *data, uint32_t size, uint32_t idx, void *dst, uint32_t n)
{
	uint32_t off = idx & (size - 1), first = n < size - off ? n : size - off;

	memcpy(dst, data + off, first);
	memcpy((uint8_t *)dst + first, data, n - first);
}

int vmbus_send(struct vmbus_chan *c, uint16_t type, uint64_t id, const void *p1, uint32_t n1,
	       const void *p2, uint32_t n2)
{
	struct vmbus_pkt pkt = { .len = n1 + n2, .type = type, .id = id };
	uint32_t cons, used, need = PKT_HDR + ALIGN8(n1 + n2);

	if (!c->open || c->out->host_closed)
		return -VMBUS_EPIPE;
	cons = __atomic_load_n(&c->out->cons, __ATOMIC_ACQUIRE);
	used = c->out_prod - cons;
	if (used > c->out_size)
		return -VMBUS_EIO;
	if (need > c->out_size - used)
		return -VMBUS_EAGAIN;
	ring_put(c->out_data, c->out_size, c->out_prod, &pkt, PKT_HDR);
	ring_put(c->out_data, c->out_size, c->out_prod + PKT_HDR, p1, n1);
	if (n2)
		ring_put(c->out_data, c->out_size, c->out_prod + PKT_HDR + n1, p2, n2);
	c->out_prod += need;
	__atomic_store_n(&c->out->prod, c->out_prod, __ATOMIC_RELEASE);
	return 0;
}

void vmbus_notify(struct vmbus_chan *c)
{
	full_fence();
	if (__atomic_load_n(&c->out->need_signal, __ATOMIC_ACQUIRE))
		vmbus_doorbell(c->id);
}

bool vmbus_has_data(const struct vmbus_chan *c)
{
	return __atomic_load_n(&c->in->prod, __ATOMIC_ACQUIRE) != c->in_cons;
}

bool vmbus_host_closed(const struct vmbus_chan *c)
{
	return c->in->host_closed || c->out->host_closed;
}

bool vmbus_drained(const struct vmbus_chan *c)
{
	return __atomic_load_n(&c->out->cons, __ATOMIC_ACQUIRE) == c->out_prod;
}

int vmbus_recv(struct vmbus_chan *c, struct vmbus_pkt *pkt, void *buf, uint32_t max)
{
	uint32_t prod, avail, total, pending;

	if (!c->open)
		return -VMBUS_EPIPE;
	prod = __atomic_load_n(&c->in->prod, __ATOMIC_ACQUIRE);
	avail = prod - c->in_cons;
	if (avail == 0)
		return vmbus_host_closed(c) ? -VMBUS_EPIPE : 0;
	if (avail > c->in_size || avail < PKT_HDR)
		return -VMBUS_EIO;
	ring_get(c->in_data, c->in_size, c->in_cons, pkt, PKT_HDR);
	total = PKT_HDR + ALIGN8(pkt->len);
	if (pkt->len > max || total > avail)
		return -VMBUS_EIO;
	ring_get(c->in_data, c->in_size, c->in_cons + PKT_HDR, buf, pkt->len);
	c->in_cons += total;
	__atomic_store_n(&c->in->cons, c->in_cons, __ATOMIC_RELEASE);
	/* The host waits for room: tell it once there is enough. */
	full_fence();
	pending = __atomic_load_n(&c->in->pending_send, __ATOMIC_ACQUIRE);
	if (pending && c->in_size - (prod - c->in_cons) >= pending)
		vmbus_doorbell(c->id);
	return 1;
}

void vmbus_wait(struct vmbus_chan *const *chans, unsigned n, uint64_t us)
{
	struct vmbus_msg m = { .op = VMBUS_OP_WAIT, .wait_us = us };
	bool ready = false;

	for (unsigned i = 0; i < n; i++) {
		chans[i]->in->need_signal = 1;
		m.wait_mask |= 1ull << chans[i]->id;
	}
	full_fence();
	for (unsigned i = 0; i < n && !ready; i++)
		ready = vmbus_has_data(chans[i]) || vmbus_host_closed(chans[i]);
	if (!ready)
		vmbus_control(&m);
	for (unsigned i = 0; i < n; i++)
		chans[i]->in->need_signal = 0;
}
