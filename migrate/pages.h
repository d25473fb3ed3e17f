/*
 * Page batches: the unit in which guest RAM travels.  A PAGES section's
 * payload is a 32-byte batch header, a list of page entries and the page
 * data:
 *
 *   u64 iteration, u32 npages, u32 flags, u32 data_len, u32 raw_len,
 *   u64 checksum                                       (batch header)
 *   u64 entry[npages]     bits 0-51 the page frame number; bit 63 ZERO:
 *                         the page is all zeros and has no data
 *   data_len bytes        the non-zero pages in entry order, raw_len bytes
 *                         in all, zstd-compressed when flags has COMPRESSED
 *
 * checksum is XXH3-64 over the raw page data, seeded with XXH3-64 of the
 * entry list, so it covers exactly what lands in guest memory; the receiver
 * checks it after decompressing and before writing anything.
 */
#ifndef FERRY_MIG_PAGES_H
#define FERRY_MIG_PAGES_H

#include <stdbool.h>
#include <stdint.h>
#include <zstd.h>

#include "../core/memory.h"

#define MIG_BATCH_PAGES      256u
#define MIG_BATCH_HDR_SIZE   32u
#define MIG_BATCH_COMPRESSED 0x1u
#define MIG_ENTRY_ZERO       (1ull << 63)
#define MIG_ENTRY_PFN_MASK   ((1ull << 52) - 1)

/* A batch being built by one sender worker. */
struct mig_batch {
	uint64_t iteration;
	uint32_t npages;
	uint32_t nonzero;
	uint64_t entries[MIG_BATCH_PAGES];
	uint8_t *raw;          /* MIG_BATCH_PAGES pages */
	uint8_t *comp;         /* ZSTD_compressBound of raw */
	size_t comp_cap;
	ZSTD_CCtx *cctx;
	/* Filled by mig_batch_seal(): */
	uint8_t hdr[MIG_BATCH_HDR_SIZE];
	const uint8_t *data;
	size_t data_len;
	size_t comp_len;       /* compressed size when compression was tried */
	uint64_t compress_ns;  /* time spent compressing this batch */
};

int mig_batch_init(struct mig_batch *b);
void mig_batch_free(struct mig_batch *b);
void mig_batch_reset(struct mig_batch *b, uint64_t iteration);

static inline bool mig_batch_full(const struct mig_batch *b)
{
	return b->npages == MIG_BATCH_PAGES;
}

/*
 * Adds page `pfn`, copying it out of guest RAM first so that what is
 * checksummed is what is sent even while the guest writes.  Zero pages get
 * a marker, or nothing at all when skip_zero (the first pass: the
 * destination's RAM starts zeroed).  Returns true if the page was added.
 */
bool mig_batch_add(struct mig_batch *b, const struct guest_mem *m, uint64_t pfn,
		   bool skip_zero);

/* Computes the checksum and header; compresses if `compress` and it pays. */
void mig_batch_seal(struct mig_batch *b, bool compress);

/* True when a 4 KiB page is all zeros. */
bool mig_page_is_zero(const void *page);

/* Receiver side: per-thread scratch for decoding batches. */
struct mig_batch_rx {
	uint8_t *raw;
	ZSTD_DCtx *dctx;
};

int mig_batch_rx_init(struct mig_batch_rx *rx);
void mig_batch_rx_free(struct mig_batch_rx *rx);

/*
 * Checks a PAGES payload completely (sizes, frame numbers inside RAM,
 * decompressed size, checksum) and only then writes its pages into `m`.
 * *iteration receives the batch's iteration.  -EBADMSG with a message.
 */
int mig_batch_apply(struct mig_batch_rx *rx, struct guest_mem *m, const uint8_t *payload,
		    size_t len, uint64_t *iteration, uint64_t *pages);

#endif
