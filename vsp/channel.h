/*
 * Internal to vsp/: one channel of the bus and its two rings in guest
 * memory, and the ops table each service provider fills in.
 *
 * Trust.  Everything in the rings is written by the guest and is hostile:
 * the host keeps its own copy of the index it owns (the consumer index of
 * the guest->host ring, the producer index of the host->guest ring), reads
 * the guest's index once per use and checks it against that copy, copies a
 * packet out of the ring before it looks at it, and closes the channel with
 * a message naming the violation.  No ring state outlives its channel.
 *
 * Threads and locks.  Each channel has a thread of its own that runs the
 * provider's work().  ch->lock protects the channel; vCPU threads take it
 * for OPEN and CLOSE.  Guest memory is written only between
 * vsp_vm_enter() and vsp_vm_leave(), which hold vm->lock and succeed only
 * while the VM runs: a pause (and so a migration's last dirty-page pass)
 * waits for a host write in progress, and no host write happens after it.
 * Lock order: ch->lock, then vm->lock.
 */
#ifndef FERRY_VSP_CHANNEL_H
#define FERRY_VSP_CHANNEL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/dbuf.h"
#include "../core/devices.h"
#include "../core/vm.h"
#include "../guest/vmbus_abi.h"
#include "vsp.h"

struct vsp_chan;

struct vsp_ring {
	struct vmbus_ring_hdr *hdr;   /* host pointers into guest RAM */
	uint8_t *data;
	uint64_t gpa;                 /* of the header page */
	uint32_t size;                /* data bytes, a power of two */
	uint32_t shadow;              /* the host's own index */
};

struct vsp_provider_ops {
	const char *kind;
	uint32_t type;
	uint32_t version;             /* highest; the lowest is major.0 */
	uint32_t max_payload;         /* largest packet the guest may send */
	uint32_t state_version;       /* of the device section */
	/*
	 * Does the provider's work with ch->lock held, on the channel thread.
	 * Returns how many ms the thread may sleep (0: call again at once).
	 */
	int (*work)(struct vsp_chan *ch);
	void (*opened)(struct vsp_chan *ch);    /* ch->lock held */
	void (*closed)(struct vsp_chan *ch);    /* ch->lock held */
	int (*save)(struct vsp_chan *ch, struct dbuf *out);
	int (*load)(struct vsp_chan *ch, struct dreader *r, uint32_t version);
	void (*query)(struct vsp_chan *ch, struct vsp_chan_info *out);
	void (*destroy)(struct vsp_chan *ch);
};

enum vsp_chan_state { VSP_CH_OFFERED, VSP_CH_OPEN, VSP_CH_FAILED };

struct vsp_chan {
	struct vsp_bus *bus;
	struct vm *vm;
	const struct vsp_provider_ops *ops;
	void *priv;
	struct vmbus_offer offer;
	char name[VM_DEVICE_NAME_MAX];
	struct vm_device_ops dev_ops;

	pthread_mutex_t lock;
	enum vsp_chan_state state;    /* (lock) */
	uint32_t version;             /* (lock) negotiated */
	struct vsp_ring out;          /* (lock) guest -> host */
	struct vsp_ring in;           /* (lock) host -> guest */
	char error[192];              /* (lock) */
	/* The host->guest ring header for WAIT, NULL unless open. */
	_Atomic(struct vmbus_ring_hdr *) wait_hdr;

	int doorbell_fd;              /* eventfd: KVM ioeventfd or the port */
	int kick_fd;                  /* eventfd: open, input, stop */
	int extra_fd;                 /* the provider's own eventfd, or -1 */
	pthread_t thread;
	bool thread_started;
	_Atomic bool stop;
	_Atomic uint64_t doorbells;
	_Atomic uint64_t signals;
	uint64_t idle_since_ns;       /* (lock) last time work was found */
};

/* Holds vm->lock and returns true while the VM runs; false (unlocked) else. */
bool vsp_vm_enter(struct vm *vm);
void vsp_vm_leave(struct vm *vm);

/*
 * Takes the next packet of the guest->host ring: 1 with *pkt and up to
 * max_payload bytes of payload copied out, 0 when empty, -EPROTO after a
 * violation (the channel is closed).  Inside vsp_vm_enter().
 */
int vsp_ring_pop(struct vsp_chan *ch, struct vmbus_pkt *pkt, void *payload, uint32_t max);
/* True when the guest->host ring holds unread bytes (a racy peek). */
bool vsp_ring_has_data(struct vsp_chan *ch);
/* Publishes the consumer index of the guest->host ring. */
void vsp_ring_consumed(struct vsp_chan *ch);
/*
 * Writes one packet to the host->guest ring: 0, -EAGAIN when it has no room
 * yet (pending_send is set so the guest signals), -EPROTO on a violation.
 * Call vsp_ring_flush() after a batch.  Inside vsp_vm_enter().
 */
int vsp_ring_push(struct vsp_chan *ch, uint16_t type, uint64_t id,
		  const void *payload, uint32_t len);
/* Publishes what vsp_ring_push wrote and wakes a waiting guest if asked. */
void vsp_ring_flush(struct vsp_chan *ch);
/*
 * Before the channel thread sleeps: asks the guest to ring the doorbell and
 * returns true if the ring is still empty (false: go on working).  Inside
 * vsp_vm_enter().
 */
bool vsp_chan_arm(struct vsp_chan *ch);
void vsp_chan_disarm(struct vsp_chan *ch);
/* Closes the channel for a protocol violation (ch->lock held). */
void vsp_chan_fail(struct vsp_chan *ch, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Wakes the channel thread (any thread). */
void vsp_chan_kick(struct vsp_chan *ch);

/* The bus calls these (channel.c). */
int vsp_chan_init(struct vsp_chan *ch, struct vsp_bus *bus, struct vm *vm,
		  const struct vsp_provider_ops *ops, uint32_t id, uint32_t instance,
		  const char *name);
int vsp_chan_start(struct vsp_chan *ch);
void vsp_chan_fini(struct vsp_chan *ch);
/* OPEN and CLOSE for the control port (vCPU thread); -errno for the guest. */
int vsp_chan_open(struct vsp_chan *ch, struct vmbus_msg *m);
int vsp_chan_close(struct vsp_chan *ch);
/* Checks requested ring placement against guest RAM and open channels. */
int vsp_bus_check_rings(struct vsp_bus *bus, struct vsp_chan *self,
			uint64_t out_gpa, uint32_t out_size, uint64_t in_gpa, uint32_t in_size);
void vsp_bus_release_rings(struct vsp_bus *bus, struct vsp_chan *self);
/* The channel part of a device section. */
void vsp_chan_save_common(struct vsp_chan *ch, struct dbuf *out);
int vsp_chan_load_common(struct vsp_chan *ch, struct dreader *r);
/* Fills the common part of a query. */
void vsp_chan_query_common(struct vsp_chan *ch, struct vsp_chan_info *out);

/* Providers' constructors (console.c, storage.c, heartbeat.c). */
extern const struct vsp_provider_ops vsp_console_ops;
extern const struct vsp_provider_ops vsp_storage_ops;
extern const struct vsp_provider_ops vsp_heartbeat_ops;
int vsp_console_init(struct vsp_chan *ch, int input_fd);
int vsp_console_queue(struct vsp_chan *ch, const void *data, size_t len);
int vsp_storage_init(struct vsp_chan *ch, const struct vsp_disk_cfg *cfg);
int vsp_heartbeat_init(struct vsp_chan *ch, uint32_t interval_ms);

#endif
