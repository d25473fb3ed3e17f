/*
 * The ferry migration stream: ferry's own format, shared by live migration
 * (over a transport) and quick migration (in a file).  docs/stream-format.md
 * describes it field by field; this header is the single source of the
 * numbers.  All fields are fixed-size and little-endian.
 *
 *   preamble  "FERRYMIG", u32 version, u32 flags                (16 bytes)
 *   sections  header (32 bytes) + payload, until an END section
 *
 * A section header:
 *   u32 type, u32 id, u32 version, u32 flags, u64 length,
 *   u32 payload checksum (XXH32, seed 0; 0 when flags has NO_CSUM),
 *   u32 header checksum (XXH32 of the 28 bytes before it)
 *
 * A reader skips a section of unknown type only if it carries the OPTIONAL
 * flag; any other unknown section, a bad checksum, or a length over the cap
 * is an error naming the section.
 */
#ifndef FERRY_MIG_STREAM_H
#define FERRY_MIG_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/dbuf.h"

struct xport;

#define MIG_MAGIC           "FERRYMIG"
#define MIG_VERSION         1u
#define MIG_PREAMBLE_SIZE   16u
#define MIG_SECTION_HDR_SIZE 32u
#define MIG_MAX_SECTION     (64u << 20)

enum mig_section_type {
	/* source -> destination: the VM */
	MIG_SEC_VMDESC = 1,      /* the VM description, first on channel 0   */
	MIG_SEC_CHANNEL = 2,     /* hello on each extra channel              */
	MIG_SEC_PAGES = 3,       /* a batch of guest pages                   */
	MIG_SEC_ITER_END = 4,    /* a channel finished an iteration          */
	MIG_SEC_SWITCHOVER = 5,  /* the source has stopped its vCPUs         */
	MIG_SEC_VM_STATE = 6,    /* kvmclock, irqchips                       */
	MIG_SEC_VCPU_STATE = 7,  /* one vCPU (id = index)                    */
	MIG_SEC_DEVICE = 8,      /* one device's state                       */
	MIG_SEC_DIGEST = 9,      /* page digests for --verify                */
	MIG_SEC_END = 10,        /* end of the VM's state                    */
	MIG_SEC_ABORT = 11,      /* the source gave up (text)                */
	MIG_SEC_RAM_MAP = 12,    /* save files: which pages the RAM area holds */
	MIG_SEC_EXTENTS = 13,    /* hint: which guest pages hold any data    */
	MIG_SEC_HOT_PIECES = 14, /* save files (hint): the first pieces a restore needs */
	/* handshake replies and commands */
	MIG_SEC_READY = 32,      /* dst: the description is acceptable       */
	MIG_SEC_REJECT = 33,     /* dst: it is not (text)                    */
	MIG_SEC_LOADED = 34,     /* dst: everything loaded and verified      */
	MIG_SEC_ERROR = 35,      /* dst: failed (text)                       */
	MIG_SEC_COMMIT = 36,     /* src: you own the VM now; run it          */
	MIG_SEC_RUNNING = 37,    /* dst: vCPUs resumed                       */
	MIG_SEC_ITER_DONE = 38,  /* dst: every channel applied an iteration  */
};

/* SWITCHOVER flags */
#define MIG_SWITCHOVER_PAUSED 0x1ull    /* the VM was paused: keep it so */

#define MIG_SECF_OPTIONAL 0x1u   /* a reader may skip it if unknown */
#define MIG_SECF_NO_CSUM  0x2u   /* payload has its own checksum     */

struct mig_section {
	uint32_t type;
	uint32_t id;
	uint32_t version;
	uint32_t flags;
	uint64_t length;
	uint32_t payload_csum;
};

const char *mig_section_name(uint32_t type);

/* Encodes/decodes the 32-byte section header. */
void mig_section_encode(const struct mig_section *s, uint8_t out[MIG_SECTION_HDR_SIZE]);
/* -EBADMSG with a message on a bad checksum or an over-long section. */
int mig_section_decode(const uint8_t in[MIG_SECTION_HDR_SIZE], struct mig_section *s);

void mig_preamble_encode(uint8_t out[MIG_PREAMBLE_SIZE]);
/* Checks magic and version; a clear message for a foreign or future stream. */
int mig_preamble_check(const uint8_t in[MIG_PREAMBLE_SIZE]);

uint32_t mig_csum32(const void *p, size_t len);

/* Sends a section (header + payload) over a transport.  Thread-safe only
 * if the caller serialises sends on that transport. */
int mig_send_section(struct xport *x, uint32_t type, uint32_t id, uint32_t version,
		     uint32_t flags, const void *payload, size_t len);
/* Sends a section whose payload is a short text (REJECT, ERROR, ABORT). */
int mig_send_text(struct xport *x, uint32_t type, const char *text);

/*
 * Receives one section: header into *s, payload into buf (resized; capped
 * at MIG_MAX_SECTION).  Verifies both checksums.
 */
int mig_recv_section(struct xport *x, struct mig_section *s, struct dbuf *buf);

/* Copies a text payload into out as a safe, printable string. */
void mig_text(const uint8_t *p, size_t len, char *out, size_t olen);

#endif
