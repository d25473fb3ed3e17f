/*
 * The VMBus-style channel protocol between ferry's service providers (VSPs,
 * host side, vsp/) and the clients in guest programs (VSCs, guest/rt/).
 * Compiled into both, so fixed-width types only.  docs/vsp.md explains it.
 *
 * Control.  A guest program OUTs (32-bit) the guest-physical address of a
 * struct vmbus_msg to FERRY_PORT_VMBUS.  The host handles it on that vCPU
 * before the OUT returns and writes `status` (and the outputs) back:
 *   QUERY  copies the offers (struct vmbus_offer) into buf_gpa/buf_len.
 *   OPEN   opens `channel` with the guest's two rings and version range;
 *          the host writes the negotiated version.
 *   CLOSE  closes it (in-flight work is dropped; rings are the guest's again).
 *   WAIT   blocks the vCPU until a ring of a channel in wait_mask has
 *          something for the guest (and the guest asked for a signal by
 *          setting need_signal), or wait_us passes, or the VM pauses.  This
 *          is ferry's host-to-guest interrupt: see docs/vsp.md for why.
 *
 * Doorbell.  A 32-bit OUT of the channel id to FERRY_PORT_DOORBELL tells
 * the host that the guest->host ring of that channel has new packets.  The
 * guest rings only when the host set need_signal in that ring.
 *
 * Rings.  Each direction has one ring: a 4 KiB header page followed by
 * `size` bytes of data (a power of two).  prod and cons are free-running
 * byte counters; the data at (index & (size-1)).  A packet is a 16-byte
 * struct vmbus_pkt and its payload, padded to 8 bytes, and may wrap.
 */
#ifndef FERRY_VMBUS_ABI_H
#define FERRY_VMBUS_ABI_H

#include <stdint.h>

#include "abi.h"

#define VMBUS_ABI_VERSION      1u
#define VMBUS_MAX_CHANNELS     16u
#define VMBUS_RING_HDR_SIZE    4096u
#define VMBUS_RING_MIN         4096u
#define VMBUS_RING_MAX         (1u << 20)
#define VMBUS_PKT_ALIGN        8u

/* Versions are major << 16 | minor. */
#define VMBUS_VERSION(maj, min) ((uint32_t)(maj) << 16 | (uint32_t)(min))

enum vmbus_op {
	VMBUS_OP_QUERY = 1,
	VMBUS_OP_OPEN,
	VMBUS_OP_CLOSE,
	VMBUS_OP_WAIT,
};

/* Provider types (the offer's type id). */
enum vmbus_type {
	VMBUS_TYPE_CONSOLE = 1,
	VMBUS_TYPE_STORAGE = 2,
	VMBUS_TYPE_HEARTBEAT = 3,
};

struct vmbus_offer {
	uint32_t channel;       /* the id OPEN, CLOSE and the doorbell use */
	uint32_t type;          /* enum vmbus_type */
	uint32_t instance;      /* which one of its type (disk 0, disk 1...) */
	uint32_t version;       /* highest version the host speaks */
	uint64_t info[4];       /* type specific, below */
};

struct vmbus_msg {
	uint32_t op;
	int32_t status;         /* host: 0 or -errno */
	uint32_t abi_version;   /* guest: VMBUS_ABI_VERSION */
	uint32_t channel;
	uint32_t version_min;   /* OPEN: the guest's range */
	uint32_t version_max;
	uint32_t version;       /* OPEN: host, the version chosen */
	uint32_t count;         /* QUERY: host, how many offers exist */
	uint64_t out_ring_gpa;  /* OPEN: guest->host ring */
	uint64_t in_ring_gpa;   /* OPEN: host->guest ring */
	uint32_t out_ring_size; /* data bytes, a power of two */
	uint32_t in_ring_size;
	uint64_t buf_gpa;       /* QUERY: where the offers go */
	uint32_t buf_len;
	uint32_t reserved;
	uint64_t wait_mask;     /* WAIT: bit n = channel n */
	uint64_t wait_us;       /* WAIT: at most (capped at 1 s) */
};

struct vmbus_ring_hdr {
	volatile uint32_t prod;          /* written by the producer only */
	uint32_t pad0[15];
	volatile uint32_t cons;          /* written by the consumer only */
	uint32_t pad1[15];
	volatile uint32_t need_signal;   /* consumer: 1 = signal me on new data */
	volatile uint32_t pending_send;  /* producer: bytes it waits to write */
	volatile uint32_t host_closed;   /* host: the channel was closed (violation) */
};

struct vmbus_pkt {
	uint32_t len;           /* payload bytes, not counting this header */
	uint16_t type;          /* per provider, below */
	uint16_t flags;
	uint64_t id;            /* the guest's transaction id, echoed back */
};

/* ---- console (type 1), version 1.0 ---- */
#define VCON_VERSION           VMBUS_VERSION(1, 0)
#define VCON_MAX_DATA          1024u   /* payload bytes per packet */
enum vcon_pkt { VCON_DATA = 1, VCON_EOF = 2 };

/* ---- heartbeat (type 3), version 1.0; info[0] = interval in ms ---- */
#define VHB_VERSION            VMBUS_VERSION(1, 0)
enum vhb_pkt { VHB_BEAT = 1 };
struct vhb_beat {
	uint64_t seq;           /* 1, 2, 3... */
	uint64_t guest_us;      /* the guest's clock */
};

/*
 * ---- storage (type 2), version 1.0 ----
 * info[0] = capacity in 512-byte sectors, info[1] = VSTOR_F_* flags,
 * info[2] = largest transfer in bytes, info[3] = most requests in flight.
 * A request is a READ, WRITE or FLUSH packet whose payload is a struct
 * vstor_req with nseg segments (none for FLUSH); the host answers each with
 * one VSTOR_DONE packet carrying the same id and a struct vstor_done.
 */
#define VSTOR_VERSION          VMBUS_VERSION(1, 0)
#define VSTOR_SECTOR           512u
#define VSTOR_MAX_SEGS         32u
#define VSTOR_MAX_XFER         (1u << 20)
#define VSTOR_MAX_INFLIGHT     128u
#define VSTOR_F_READONLY       1u
enum vstor_pkt { VSTOR_READ = 1, VSTOR_WRITE = 2, VSTOR_FLUSH = 3, VSTOR_DONE = 16 };
enum vstor_status {
	VSTOR_OK = 0,
	VSTOR_ERR_IO = 1,        /* the host's I/O failed */
	VSTOR_ERR_RANGE = 2,     /* beyond the end of the disk */
	VSTOR_ERR_ALIGN = 3,     /* a length not a multiple of 512, or too long */
	VSTOR_ERR_READONLY = 4,  /* a write to a read-only disk */
};
struct vstor_seg {
	uint64_t gpa;
	uint32_t len;
	uint32_t reserved;
};
struct vstor_req {
	uint64_t sector;
	uint32_t nseg;
	uint32_t reserved;
	struct vstor_seg seg[];
};
struct vstor_done {
	uint32_t status;        /* enum vstor_status */
	uint32_t bytes;         /* transferred */
};

#endif
