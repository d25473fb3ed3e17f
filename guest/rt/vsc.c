/*
 * The three clients on top of vmbus.c: console, heartbeat and storage.
 * Each keeps its channel in a static (console, heartbeat) or in the
 * caller's struct (storage).  Waiting spins a little first: a sleep in the
 * host costs an exit (tens of microseconds here) and the host usually
 * answers sooner.
 */
#include "vmbus.h"

#define CON_RING 4096u
#define HB_RING 4096u
#define STOR_OUT_RING (64u << 10)
#define STOR_IN_RING (16u << 10)
#define SPIN_US 50u

static struct vmbus_chan con, hb;
static char con_in[VCON_MAX_DATA];
static uint32_t con_in_len, con_in_pos;
static bool con_eof;
static uint64_t hb_seq, hb_last_tsc, hb_every_tsc;

static uint64_t wait_budget(uint64_t left_us);

/* ---- console ---- */

int vcon_open(void)
{
	return vmbus_open(&con, VMBUS_TYPE_CONSOLE, 0, VCON_VERSION, VCON_VERSION, CON_RING,
			  CON_RING);
}

bool vcon_is_open(void)
{
	return con.open;
}

static void wait_out_room(struct vmbus_chan *c)
{
	/* The host drains the ring on its own thread; a doorbell wakes it. */
	vmbus_doorbell(c->id);
	ghalt_us(100);
}

void vcon_write(const char *s, size_t n)
{
	while (n && con.open) {
		uint32_t k = n < VCON_MAX_DATA ? (uint32_t)n : VCON_MAX_DATA;
		int rc = vmbus_send(&con, VCON_DATA, 0, s, k, NULL, 0);

		if (rc == -VMBUS_EAGAIN) {
			wait_out_room(&con);
			continue;
		}
		if (rc < 0)
			return;
		s += k;
		n -= k;
	}
	vmbus_notify(&con);
}

void vcon_printf(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = gvsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	vcon_write(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void vcon_flush(void)
{
	while (con.open && !vmbus_drained(&con) && !vmbus_host_closed(&con))
		wait_out_room(&con);
}

int vcon_read(char *buf, size_t max, uint64_t timeout_us)
{
	uint64_t start = gtime_us();
	struct vmbus_chan *c = &con;

	for (;;) {
		if (con_in_pos < con_in_len) {
			size_t n = con_in_len - con_in_pos;

			n = n < max ? n : max;
			memcpy(buf, con_in + con_in_pos, n);
			con_in_pos += (uint32_t)n;
			return (int)n;
		}
		if (con_eof)
			return -1;
		if (con.open) {
			struct vmbus_pkt pkt;
			int rc = vmbus_recv(&con, &pkt, con_in, sizeof(con_in));

			if (rc < 0)
				return rc;
			if (rc > 0) {
				con_in_pos = 0;
				con_in_len = pkt.type == VCON_DATA ? pkt.len : 0;
				con_eof = pkt.type == VCON_EOF;
				continue;
			}
		}
		if (gtime_us() - start >= timeout_us)
			return 0;
		vhb_tick();
		vmbus_wait(&c, 1, wait_budget(timeout_us - (gtime_us() - start)));
	}
}

/* ---- heartbeat ---- */

int vhb_open(void)
{
	int rc = vmbus_open(&hb, VMBUS_TYPE_HEARTBEAT, 0, VHB_VERSION, VHB_VERSION, HB_RING,
			    HB_RING);

	if (rc == 0) {
		hb_every_tsc = hb.info[0] * gboot()->tsc_khz;
		hb_last_tsc = 0;
		vhb_tick();
	}
	return rc;
}

void vhb_tick(void)
{
	struct vhb_beat beat;
	uint64_t now;

	if (!hb.open)
		return;
	now = grdtsc();
	if (hb_last_tsc && now - hb_last_tsc < hb_every_tsc)
		return;
	beat.seq = hb_seq + 1;
	beat.guest_us = gtime_us();
	if (vmbus_send(&hb, VHB_BEAT, beat.seq, &beat, sizeof(beat), NULL, 0) == 0) {
		hb_seq++;
		hb_last_tsc = now;
		vmbus_notify(&hb);
	}
}

uint64_t vhb_beats(void)
{
	return hb_seq;
}

uint64_t vhb_interval_us(void)
{
	return hb.open ? hb.info[0] * 1000 : 0;
}

/* How long a wait may last so that the next beat is not late. */
static uint64_t wait_budget(uint64_t left_us)
{
	uint64_t khz = gboot()->tsc_khz, since, due_us;

	if (!hb.open || !hb_last_tsc)
		return left_us;
	since = grdtsc() - hb_last_tsc;
	due_us = since >= hb_every_tsc ? 0 : (hb_every_tsc - since) * 1000 / khz;
	return due_us < left_us ? due_us + 1 : left_us;
}

/* ---- storage ---- */

int vstor_open(struct vstor *d, uint32_t instance)
{
	int rc = vmbus_open(&d->ch, VMBUS_TYPE_STORAGE, instance, VSTOR_VERSION, VSTOR_VERSION,
			    STOR_OUT_RING, STOR_IN_RING);

	if (rc < 0)
		return rc;
	d->sectors = d->ch.info[0];
	d->readonly = d->ch.info[1] & VSTOR_F_READONLY;
	d->max_xfer = (uint32_t)d->ch.info[2];
	d->max_inflight = (uint32_t)d->ch.info[3];
	d->inflight = 0;
	return 0;
}

int vstor_submit(struct vstor *d, uint16_t op, uint64_t id, uint64_t sector,
		 const struct vstor_seg *segs, uint32_t nseg)
{
	struct vstor_req req = { .sector = sector, .nseg = nseg };
	int rc;

	if (d->inflight >= d->max_inflight)
		return -VMBUS_EAGAIN;
	rc = vmbus_send(&d->ch, op, id, &req, sizeof(req), segs,
			nseg * (uint32_t)sizeof(struct vstor_seg));
	if (rc == 0)
		d->inflight++;
	return rc;
}

int vstor_poll(struct vstor *d, uint64_t *id, uint32_t *status, uint32_t *bytes)
{
	struct vstor_done done;
	struct vmbus_pkt pkt;
	int rc = vmbus_recv(&d->ch, &pkt, &done, sizeof(done));

	if (rc <= 0)
		return rc;
	if (pkt.type != VSTOR_DONE || pkt.len != sizeof(done))
		return -VMBUS_EIO;
	*id = pkt.id;
	*status = done.status;
	*bytes = done.bytes;
	d->inflight--;
	return 1;
}

void vstor_wait(struct vstor *d, uint64_t us)
{
	struct vmbus_chan *c = &d->ch;
	uint64_t start = grdtsc(), spin = SPIN_US * gboot()->tsc_khz / 1000;

	vmbus_notify(c);
	while (grdtsc() - start < spin)
		if (vmbus_has_data(c) || vmbus_host_closed(c))
			return;
		else
			gpause();
	vhb_tick();
	vmbus_wait(&c, 1, wait_budget(us));
}
