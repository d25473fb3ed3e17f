/*
 * The guest side of ferry's VMBus-style channels (VSCs), for ring-3 guest
 * programs: enumerate the host's offers, open a channel with two rings,
 * send and receive packets, ring the doorbell only when the host asked for
 * it, and sleep in the host until a ring has news.  Then the three clients:
 * console (vcon_*), heartbeat (vhb_*) and storage (vstor_*).
 *
 * Rings come from the device area (FERRY_DEVICE_GPA, 1 MiB) and are never
 * given back.  A channel belongs to one vCPU at a time: these functions
 * take no locks.  The protocol is in guest/vmbus_abi.h; docs/vsp.md.
 */
#ifndef FERRY_GUEST_VMBUS_H
#define FERRY_GUEST_VMBUS_H

#include "../vmbus_abi.h"
#include "ferry_guest.h"

/* errno values the host returns (Linux numbers). */
#define VMBUS_EAGAIN 11
#define VMBUS_ENOMEM 12
#define VMBUS_EIO    5
#define VMBUS_ENOENT 2
#define VMBUS_EPIPE  32

struct vmbus_chan {
	uint32_t id, type, instance, version;
	uint64_t info[4];
	struct vmbus_ring_hdr *out, *in;
	uint8_t *out_data, *in_data;
	uint32_t out_size, in_size;
	uint32_t out_prod, in_cons;       /* this side's own indices */
	bool open;
};

/* Copies up to max offers; returns how many the host has, or -errno. */
int vmbus_query(struct vmbus_offer *offers, unsigned max);
/* Finds the offer and opens it with rings of the given data sizes. */
int vmbus_open(struct vmbus_chan *c, uint32_t type, uint32_t instance, uint32_t version_min,
	       uint32_t version_max, uint32_t out_size, uint32_t in_size);
int vmbus_close(struct vmbus_chan *c);
/* Queues one packet (payload p1 then p2); -VMBUS_EAGAIN when full. */
int vmbus_send(struct vmbus_chan *c, uint16_t type, uint64_t id, const void *p1, uint32_t n1,
	       const void *p2, uint32_t n2);
/* Rings the doorbell if the host asked for a signal. */
void vmbus_notify(struct vmbus_chan *c);
/* Takes one packet: 1, 0 when empty, -errno (too big, host closed it). */
int vmbus_recv(struct vmbus_chan *c, struct vmbus_pkt *pkt, void *buf, uint32_t max);
bool vmbus_has_data(const struct vmbus_chan *c);
bool vmbus_host_closed(const struct vmbus_chan *c);
/* True when the host has read everything this side sent. */
bool vmbus_drained(const struct vmbus_chan *c);
/* Sleeps in the host until one of the channels has data, or us pass. */
void vmbus_wait(struct vmbus_chan *const *chans, unsigned n, uint64_t us);
/* Raw control call (tests): the message goes to the host as it is. */
int vmbus_control(struct vmbus_msg *m);
/* Low-level: ring the doorbell for channel id unconditionally. */
void vmbus_doorbell(uint32_t id);

/* ---- console ---- */
int vcon_open(void);
bool vcon_is_open(void);
void vcon_write(const char *s, size_t n);
void vcon_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Waits until the host has taken everything written. */
void vcon_flush(void);
/* Reads input: bytes (>0), 0 on timeout, -1 at the host's EOF, -errno. */
int vcon_read(char *buf, size_t max, uint64_t timeout_us);

/* ---- heartbeat ---- */
int vhb_open(void);
/* Beats if an interval has passed since the last beat. */
void vhb_tick(void);
uint64_t vhb_beats(void);
uint64_t vhb_interval_us(void);

/* ---- storage ---- */
struct vstor {
	struct vmbus_chan ch;
	uint64_t sectors;
	bool readonly;
	uint32_t max_xfer, max_inflight;
	uint32_t inflight;
};
int vstor_open(struct vstor *d, uint32_t instance);
/* Queues a request (READ/WRITE with segments, FLUSH with none); -EAGAIN. */
int vstor_submit(struct vstor *d, uint16_t op, uint64_t id, uint64_t sector,
		 const struct vstor_seg *segs, uint32_t nseg);
/* Takes one completion: 1 with id/status/bytes, 0 when none, -errno. */
int vstor_poll(struct vstor *d, uint64_t *id, uint32_t *status, uint32_t *bytes);
/* Spins briefly, then sleeps in the host until a completion arrives. */
void vstor_wait(struct vstor *d, uint64_t us);

#endif
