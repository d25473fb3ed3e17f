/*
 * The VMBus-style channel against a simulated guest.  The test plays the
 * guest: it writes control messages and rings into guest memory and calls
 * the bus's port handlers (as a vCPU's OUT would) while a real VM runs the
 * `idle` program, so the providers' threads see a running VM.  The hostile
 * cases write bad indices, lengths and addresses: the channel must close
 * with a message saying why, and ferry and the other channels must go on.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guest/vmbus_abi.h"
#include "helpers.h"
#include "vsp/vsp.h"

#define MB (1ull << 20)
#define CTL_GPA 0x1f0000ull         /* control message (device area) */
#define BUF_GPA 0x2000000ull        /* data buffers, past idle's 4 MiB */
#define DISK_BYTES (1ull << 20)
#define RING 4096u

enum { CH_CONSOLE = 0, CH_HEARTBEAT = 1, CH_STORAGE = 2 };

struct tg {
	struct vm *vm;
	struct vsp_bus *bus;
	char disk[64];
};

/* A guest ring pair seen from the test. */
struct tring {
	uint32_t id;
	uint64_t out_gpa, in_gpa;
	struct vmbus_ring_hdr *out, *in;
	uint8_t *out_data, *in_data;
	uint32_t out_prod, in_cons;
};

static void tg_start(struct tg *g, bool readonly)
{
	struct vsp_config cfg = { .ndisks = 1, .console_in_fd = -1, .heartbeat_ms = 50 };
	const char *const args[] = { "interval_ms=2", NULL };
	int fd, rc;

	snprintf(g->disk, sizeof(g->disk), "/tmp/ferry-vsp-test-XXXXXX");
	fd = mkstemp(g->disk);
	cr_assert(fd >= 0);
	cr_assert_eq(ftruncate(fd, DISK_BYTES), 0);
	close(fd);
	snprintf(cfg.disks[0].path, sizeof(cfg.disks[0].path), "%s", g->disk);
	cfg.disks[0].readonly = readonly;
	g->vm = tvm_create(1, 64 * MB);
	rc = vsp_bus_create(g->vm, &cfg, &g->bus);
	cr_assert_eq(rc, 0, "%s", ferr_msg(rc));
	tvm_boot(g->vm, "idle", args);
	cr_assert_eq(vsp_bus_start(g->bus), 0);
	cr_assert_eq(vm_start(g->vm), 0);
}

static void tg_stop(struct tg *g)
{
	vm_end(g->vm, 0, "test over");
	vsp_bus_destroy(g->bus);
	vm_destroy(g->vm);
	unlink(g->disk);
}

static void port_out(struct tg *g, uint16_t port, uint32_t value)
{
	const struct io_range *r = iotable_find(&g->vm->pio, port, 4);
	uint8_t data[4];

	cr_assert_not_null(r, "no handler on port %#x", port);
	memcpy(data, &value, 4);
	r->fn(&g->vm->vcpus[0], port, true, data, 4, r->opaque);
}

static int control(struct tg *g, struct vmbus_msg *m)
{
	m->abi_version = VMBUS_ABI_VERSION;
	cr_assert_eq(gmem_write(&g->vm->mem, CTL_GPA, m, sizeof(*m)), 0);
	port_out(g, FERRY_PORT_VMBUS, (uint32_t)CTL_GPA);
	cr_assert_eq(gmem_read(&g->vm->mem, CTL_GPA, m, sizeof(*m)), 0);
	return m->status;
}

static int open_rings(struct tg *g, uint32_t id, uint64_t out_gpa, uint32_t out_size,
		      uint64_t in_gpa, uint32_t in_size, uint32_t vmin, uint32_t vmax)
{
	struct vmbus_msg m = {
		.op = VMBUS_OP_OPEN, .channel = id, .version_min = vmin, .version_max = vmax,
		.out_ring_gpa = out_gpa, .out_ring_size = out_size,
		.in_ring_gpa = in_gpa, .in_ring_size = in_size,
	};

	return control(g, &m);
}

static void topen(struct tg *g, struct tring *r, uint32_t id, uint64_t gpa)
{
	uint32_t ver = id == CH_STORAGE ? VSTOR_VERSION : VMBUS_VERSION(1, 0);

	memset(r, 0, sizeof(*r));
	r->id = id;
	r->out_gpa = gpa;
	r->in_gpa = gpa + VMBUS_RING_HDR_SIZE + RING;
	cr_assert_eq(open_rings(g, id, r->out_gpa, RING, r->in_gpa, RING, ver, ver), 0);
	r->out = gmem_ptr(&g->vm->mem, r->out_gpa, VMBUS_RING_HDR_SIZE);
	r->in = gmem_ptr(&g->vm->mem, r->in_gpa, VMBUS_RING_HDR_SIZE);
	r->out_data = (uint8_t *)r->out + VMBUS_RING_HDR_SIZE;
	r->in_data = (uint8_t *)r->in + VMBUS_RING_HDR_SIZE;
}

static void put(uint8_t *data, uint32_t idx, const void *src, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		data[(idx + i) % RING] = ((const uint8_t *)src)[i];
}

static void get(const uint8_t *data, uint32_t idx, void *dst, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		((uint8_t *)dst)[i] = data[(idx + i) % RING];
}

/* Writes a packet as the guest would (len_override: a lying header). */
static void tsend_raw(struct tg *g, struct tring *r, uint16_t type, uint64_t id,
		      const void *p, uint32_t n, uint32_t len_override)
{
	struct vmbus_pkt pkt = { .len = len_override ? len_override : n, .type = type, .id = id };

	put(r->out_data, r->out_prod, &pkt, sizeof(pkt));
	put(r->out_data, r->out_prod + sizeof(pkt), p, n);
	r->out_prod += sizeof(pkt) + ((n + 7) & ~7u);
	__atomic_store_n(&r->out->prod, r->out_prod, __ATOMIC_RELEASE);
	port_out(g, FERRY_PORT_DOORBELL, r->id);
}

static void tsend(struct tg *g, struct tring *r, uint16_t type, uint64_t id, const void *p,
		  uint32_t n)
{
	tsend_raw(g, r, type, id, p, n, 0);
}

/* Waits for one packet from the host; fails the test after 3 s. */
static void trecv(struct tring *r, struct vmbus_pkt *pkt, void *buf, uint32_t max)
{
	uint64_t deadline = now_ns() + 3000000000ull;

	while (__atomic_load_n(&r->in->prod, __ATOMIC_ACQUIRE) == r->in_cons) {
		cr_assert(now_ns() < deadline, "no packet from the host on channel %u", r->id);
		tsleep_ms(1);
	}
	get(r->in_data, r->in_cons, pkt, sizeof(*pkt));
	cr_assert_leq(pkt->len, max);
	get(r->in_data, r->in_cons + sizeof(*pkt), buf, pkt->len);
	r->in_cons += sizeof(*pkt) + ((pkt->len + 7) & ~7u);
	__atomic_store_n(&r->in->cons, r->in_cons, __ATOMIC_RELEASE);
}

static struct vsp_chan_info query(struct tg *g, unsigned ch)
{
	struct vsp_chan_info info;

	cr_assert_eq(vsp_bus_query(g->bus, ch, &info), 0);
	return info;
}

static uint64_t stat_of(const struct vsp_chan_info *in, const char *key)
{
	for (unsigned i = 0; i < in->nstats; i++)
		if (strcmp(in->stats[i].key, key) == 0)
			return in->stats[i].value;
	cr_assert_fail("no stat %s", key);
	return 0;
}

/* Waits until channel `ch` has failed; returns its error text. */
static struct vsp_chan_info expect_failed(struct tg *g, unsigned ch)
{
	uint64_t deadline = now_ns() + 3000000000ull;
	struct vsp_chan_info in;

	for (;;) {
		in = query(g, ch);
		if (strcmp(in.state, "failed") == 0)
			return in;
		cr_assert(now_ns() < deadline, "channel %u did not close (%s)", ch, in.state);
		tsleep_ms(2);
	}
}

struct xfer {
	struct vstor_req req;
	struct vstor_seg seg[2];
};

/* One storage request through the ring; returns the DONE status. */
static uint32_t tio(struct tg *g, struct tring *r, uint16_t op, uint64_t id, uint64_t sector,
		    uint64_t gpa, uint32_t len)
{
	struct xfer x = { .req = { .sector = sector, .nseg = op == VSTOR_FLUSH ? 0 : 1 },
			  .seg = { { .gpa = gpa, .len = len } } };
	struct vstor_done d;
	struct vmbus_pkt pkt;

	tsend(g, r, op, id, &x, sizeof(x.req) + x.req.nseg * sizeof(struct vstor_seg));
	trecv(r, &pkt, &d, sizeof(d));
	cr_assert_eq(pkt.type, VSTOR_DONE);
	cr_assert_eq(pkt.id, id, "DONE for id %lu, expected %lu", (unsigned long)pkt.id,
		     (unsigned long)id);
	return d.status;
}

/* The console still carries output: the other channel is unharmed. */
static void console_still_works(struct tg *g)
{
	struct tring con;
	uint64_t deadline = now_ns() + 3000000000ull;

	topen(g, &con, CH_CONSOLE, 0x100000);
	tsend(g, &con, VCON_DATA, 0, "ok\n", 3);
	for (;;) {
		struct vsp_chan_info in = query(g, CH_CONSOLE);

		if (stat_of(&in, "bytes_out") == 3)
			break;
		cr_assert(now_ns() < deadline, "console output did not arrive");
		tsleep_ms(2);
	}
	cr_assert_eq(vm_run_state(g->vm), VM_RUNNING);
}

Test(vsp, offers_and_version_negotiation)
{
	struct vmbus_offer offers[VMBUS_MAX_CHANNELS];
	struct vmbus_msg m = { .op = VMBUS_OP_QUERY, .buf_gpa = BUF_GPA,
			       .buf_len = sizeof(offers) };
	struct tg g;

	tg_start(&g, false);
	cr_assert_eq(control(&g, &m), 0);
	cr_assert_eq(m.count, 3);
	gmem_read(&g.vm->mem, BUF_GPA, offers, sizeof(offers));
	cr_assert_eq(offers[CH_CONSOLE].type, VMBUS_TYPE_CONSOLE);
	cr_assert_eq(offers[CH_HEARTBEAT].type, VMBUS_TYPE_HEARTBEAT);
	cr_assert_eq(offers[CH_HEARTBEAT].info[0], 50);
	cr_assert_eq(offers[CH_STORAGE].type, VMBUS_TYPE_STORAGE);
	cr_assert_eq(offers[CH_STORAGE].info[0], DISK_BYTES / VSTOR_SECTOR);
	/* A guest that only speaks 2.x gets no channel; 1.0 to 1.9 gets 1.0. */
	cr_assert_eq(open_rings(&g, CH_STORAGE, 0x100000, RING, 0x102000, RING,
				VMBUS_VERSION(2, 0), VMBUS_VERSION(2, 5)), -EPROTONOSUPPORT);
	cr_assert_eq(open_rings(&g, CH_STORAGE, 0x100000, RING, 0x102000, RING,
				VMBUS_VERSION(1, 0), VMBUS_VERSION(1, 9)), 0);
	cr_assert_eq(query(&g, CH_STORAGE).version, VSTOR_VERSION);
	cr_assert_eq(open_rings(&g, CH_STORAGE, 0x104000, RING, 0x106000, RING,
				VSTOR_VERSION, VSTOR_VERSION), -EBUSY, "opened twice");
	m = (struct vmbus_msg){ .op = VMBUS_OP_OPEN, .channel = 99 };
	cr_assert_eq(control(&g, &m), -ENOENT);
	m = (struct vmbus_msg){ .op = 77 };
	cr_assert_eq(control(&g, &m), -EOPNOTSUPP);
	tg_stop(&g);
}

Test(vsp, open_rejects_bad_ring_placement)
{
	struct tg g;
	uint64_t top = 64 * MB;

	tg_start(&g, false);
	/* Outside RAM, straddling its end, below the device area, unaligned,
	 * not a power of two, too big, overlapping each other. */
	cr_assert_eq(open_rings(&g, CH_STORAGE, top, RING, 0x102000, RING, 0x10000, 0x10000),
		     -EFAULT);
	cr_assert_eq(open_rings(&g, CH_STORAGE, top - 4096, RING, 0x102000, RING, 0x10000,
				0x10000), -EFAULT);
	cr_assert_eq(open_rings(&g, CH_STORAGE, 0x8000, RING, 0x102000, RING, 0x10000, 0x10000),
		     -EINVAL);
	cr_assert_eq(open_rings(&g, CH_STORAGE, 0x100010, RING, 0x102000, RING, 0x10000, 0x10000),
		     -EINVAL);
	cr_assert_eq(open_rings(&g, CH_STORAGE, 0x100000, 5000, 0x104000, RING, 0x10000, 0x10000),
		     -EINVAL);
	cr_assert_eq(open_rings(&g, CH_STORAGE, 0x100000, 2u << 20, 0x104000, RING, 0x10000,
				0x10000), -EINVAL);
	cr_assert_eq(open_rings(&g, CH_STORAGE, 0x100000, RING, 0x101000, RING, 0x10000, 0x10000),
		     -EINVAL);
	cr_assert_str_eq(query(&g, CH_STORAGE).state, "offered");
	/* Another channel's rings are off limits. */
	cr_assert_eq(open_rings(&g, CH_CONSOLE, 0x100000, RING, 0x102000, RING, 0x10000, 0x10000),
		     0);
	cr_assert_eq(open_rings(&g, CH_STORAGE, 0x103000, RING, 0x110000, RING, 0x10000, 0x10000),
		     -EADDRINUSE);
	tg_stop(&g);
}

Test(vsp, storage_write_read_flush_and_errors)
{
	static uint8_t pattern[8192], back[8192];
	struct tring r;
	struct tg g;

	for (unsigned i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 7 + 3);
	tg_start(&g, false);
	topen(&g, &r, CH_STORAGE, 0x100000);
	gmem_write(&g.vm->mem, BUF_GPA, pattern, sizeof(pattern));
	cr_assert_eq(tio(&g, &r, VSTOR_WRITE, 1, 8, BUF_GPA, 8192), VSTOR_OK);
	cr_assert_eq(tio(&g, &r, VSTOR_FLUSH, 2, 0, 0, 0), VSTOR_OK);
	cr_assert_eq(tio(&g, &r, VSTOR_READ, 3, 8, BUF_GPA + 65536, 8192), VSTOR_OK);
	gmem_read(&g.vm->mem, BUF_GPA + 65536, back, sizeof(back));
	cr_assert_eq(memcmp(back, pattern, sizeof(back)), 0, "read back differs");
	/* Errors a well-formed request can get: no violation. */
	cr_assert_eq(tio(&g, &r, VSTOR_READ, 4, DISK_BYTES / 512 - 1, BUF_GPA, 1024),
		     VSTOR_ERR_RANGE);
	cr_assert_eq(tio(&g, &r, VSTOR_READ, 5, UINT64_MAX - 1, BUF_GPA, 512), VSTOR_ERR_RANGE);
	cr_assert_eq(tio(&g, &r, VSTOR_WRITE, 6, 0, BUF_GPA, 100), VSTOR_ERR_ALIGN);
	cr_assert_str_eq(query(&g, CH_STORAGE).state, "open");
	cr_assert_eq(stat_of(&(struct vsp_chan_info[]){ query(&g, CH_STORAGE) }[0], "errors"), 3);
	tg_stop(&g);
}

Test(vsp, readonly_disk_refuses_writes)
{
	struct tring r;
	struct tg g;

	tg_start(&g, true);
	topen(&g, &r, CH_STORAGE, 0x100000);
	cr_assert_eq(tio(&g, &r, VSTOR_WRITE, 1, 0, BUF_GPA, 4096), VSTOR_ERR_READONLY);
	cr_assert_eq(tio(&g, &r, VSTOR_READ, 2, 0, BUF_GPA, 4096), VSTOR_OK);
	tg_stop(&g);
}

Test(vsp, hostile_producer_index_closes_only_that_channel)
{
	struct vsp_chan_info in;
	struct tring r;
	struct tg g;

	tg_start(&g, false);
	topen(&g, &r, CH_STORAGE, 0x104000);
	r.out->prod = RING * 3;                 /* far past anything written */
	port_out(&g, FERRY_PORT_DOORBELL, CH_STORAGE);
	in = expect_failed(&g, CH_STORAGE);
	cr_assert(strstr(in.error, "producer index"), "error: %s", in.error);
	cr_assert_eq(r.in->host_closed, 1);
	console_still_works(&g);
	/* The guest may close it and start again. */
	cr_assert_eq(control(&g, &(struct vmbus_msg){ .op = VMBUS_OP_CLOSE,
						       .channel = CH_STORAGE }), 0);
	topen(&g, &r, CH_STORAGE, 0x104000);
	cr_assert_eq(tio(&g, &r, VSTOR_READ, 9, 0, BUF_GPA, 512), VSTOR_OK);
	tg_stop(&g);
}

Test(vsp, hostile_packet_lengths)
{
	struct vsp_chan_info in;
	uint8_t junk[64] = { 0 };
	struct tring r;
	struct tg g;

	tg_start(&g, false);
	/* A header that claims more bytes than were published. */
	topen(&g, &r, CH_STORAGE, 0x104000);
	tsend_raw(&g, &r, VSTOR_READ, 1, junk, 16, 200);
	in = expect_failed(&g, CH_STORAGE);
	cr_assert(strstr(in.error, "runs past") || strstr(in.error, "exceeds"), "%s", in.error);
	control(&g, &(struct vmbus_msg){ .op = VMBUS_OP_CLOSE, .channel = CH_STORAGE });
	/* A packet larger than any request. */
	topen(&g, &r, CH_STORAGE, 0x104000);
	tsend_raw(&g, &r, VSTOR_READ, 1, junk, 16, 100000);
	in = expect_failed(&g, CH_STORAGE);
	cr_assert(strstr(in.error, "exceeds"), "%s", in.error);
	control(&g, &(struct vmbus_msg){ .op = VMBUS_OP_CLOSE, .channel = CH_STORAGE });
	/* A request whose length does not match its segment count. */
	topen(&g, &r, CH_STORAGE, 0x104000);
	((struct vstor_req *)junk)->nseg = 3;
	tsend(&g, &r, VSTOR_WRITE, 1, junk, 32);
	in = expect_failed(&g, CH_STORAGE);
	cr_assert(strstr(in.error, "does not match"), "%s", in.error);
	control(&g, &(struct vmbus_msg){ .op = VMBUS_OP_CLOSE, .channel = CH_STORAGE });
	/* Published bytes that are not whole packets. */
	topen(&g, &r, CH_STORAGE, 0x104000);
	r.out->prod = 12;
	port_out(&g, FERRY_PORT_DOORBELL, CH_STORAGE);
	in = expect_failed(&g, CH_STORAGE);
	cr_assert(strstr(in.error, "not whole packets"), "%s", in.error);
	console_still_works(&g);
	tg_stop(&g);
}

Test(vsp, hostile_buffer_addresses)
{
	struct vsp_chan_info in;
	struct xfer x = { .req = { .nseg = 2 } };
	struct tring r;
	struct tg g;

	tg_start(&g, false);
	topen(&g, &r, CH_STORAGE, 0x104000);
	x.seg[0] = (struct vstor_seg){ .gpa = BUF_GPA, .len = 512 };
	x.seg[1] = (struct vstor_seg){ .gpa = 64 * MB - 512, .len = 1024 };   /* past RAM */
	tsend(&g, &r, VSTOR_READ, 1, &x, sizeof(x));
	in = expect_failed(&g, CH_STORAGE);
	cr_assert(strstr(in.error, "outside guest RAM"), "%s", in.error);
	control(&g, &(struct vmbus_msg){ .op = VMBUS_OP_CLOSE, .channel = CH_STORAGE });
	topen(&g, &r, CH_STORAGE, 0x104000);
	x.seg[1] = (struct vstor_seg){ .gpa = UINT64_MAX - 100, .len = 512 };  /* wraps */
	tsend(&g, &r, VSTOR_WRITE, 2, &x, sizeof(x));
	expect_failed(&g, CH_STORAGE);
	console_still_works(&g);
	tg_stop(&g);
}

Test(vsp, hostile_consumer_index_and_unknown_packets)
{
	struct vsp_chan_info in;
	struct tring r, hb;
	struct tg g;

	tg_start(&g, false);
	topen(&g, &r, CH_STORAGE, 0x104000);
	/* The guest claims to have consumed completions never written. */
	r.in->cons = 0x80000000u;
	tsend(&g, &r, VSTOR_FLUSH, 1, &(struct vstor_req){ 0 }, sizeof(struct vstor_req));
	in = expect_failed(&g, CH_STORAGE);
	cr_assert(strstr(in.error, "consumer index"), "%s", in.error);
	/* A heartbeat channel fed a packet of another type. */
	topen(&g, &hb, CH_HEARTBEAT, 0x110000);
	tsend(&g, &hb, VSTOR_FLUSH, 1, &(struct vhb_beat){ 0 }, sizeof(struct vhb_beat));
	in = expect_failed(&g, CH_HEARTBEAT);
	cr_assert(strstr(in.error, "not a BEAT"), "%s", in.error);
	cr_assert_str_eq(in.health, "failed");
	console_still_works(&g);
	tg_stop(&g);
}

Test(vsp, heartbeat_health_follows_pause)
{
	struct vsp_chan_info in;
	struct vhb_beat beat = { .seq = 1 };
	struct tring hb;
	struct tg g;

	tg_start(&g, false);
	cr_assert_str_eq(query(&g, CH_HEARTBEAT).health, "no-client");
	topen(&g, &hb, CH_HEARTBEAT, 0x110000);
	cr_assert_str_eq(query(&g, CH_HEARTBEAT).health, "waiting");
	tsend(&g, &hb, VHB_BEAT, 1, &beat, sizeof(beat));
	for (uint64_t deadline = now_ns() + 3000000000ull;;) {
		in = query(&g, CH_HEARTBEAT);
		if (stat_of(&in, "seq") == 1)
			break;
		cr_assert(now_ns() < deadline, "the beat never arrived");
		tsleep_ms(1);
	}
	cr_assert_str_eq(in.health, "healthy");
	vm_pause(g.vm, NULL);
	cr_assert_str_eq(query(&g, CH_HEARTBEAT).health, "paused");
	vm_resume(g.vm);
	tsleep_ms(400);                         /* 8 intervals without a beat */
	cr_assert_str_eq(query(&g, CH_HEARTBEAT).health, "unresponsive");
	tg_stop(&g);
}

Test(vsp, device_state_round_trip_and_garbage)
{
	const struct vm_device *dev;
	struct dbuf b;
	struct tring r;
	struct tg g, h;

	tg_start(&g, false);
	tg_start(&h, false);
	topen(&g, &r, CH_STORAGE, 0x104000);
	cr_assert_eq(tio(&g, &r, VSTOR_READ, 1, 0, BUF_GPA, 512), VSTOR_OK);
	vm_pause(g.vm, NULL);
	vm_pause(h.vm, NULL);
	dev = vm_device_find(g.vm, "vsp-storage0");
	cr_assert_not_null(dev);
	dbuf_init(&b);
	cr_assert_eq(dev->ops->save(dev->opaque, &b), 0);
	cr_assert_not(b.failed);
	/* Into the other VM: same disk size, so it loads; the ring follows. */
	dev = vm_device_find(h.vm, "vsp-storage0");
	cr_assert_eq(dev->ops->load(dev->opaque, dev->ops->version, b.data, b.len), 0,
		     "%s", ferr_msg(-EINVAL));
	cr_assert_str_eq(query(&h, CH_STORAGE).state, "open");
	/* Every truncation and a flipped byte anywhere: an error, never a crash. */
	for (size_t n = 0; n < b.len; n++)
		cr_assert_neq(dev->ops->load(dev->opaque, dev->ops->version, b.data, n), 0,
			      "a %zu-byte prefix loaded", n);
	for (size_t i = 0; i < b.len; i++) {
		b.data[i] ^= 0xa5;
		(void)dev->ops->load(dev->opaque, dev->ops->version, b.data, b.len);
		b.data[i] ^= 0xa5;
	}
	dbuf_free(&b);
	tg_stop(&g);
	tg_stop(&h);
}
