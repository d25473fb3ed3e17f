#include "pages.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../core/dbuf.h"
#include "../core/util.h"

#define ZSTD_LEVEL 1

bool mig_page_is_zero(const void *page)
{
	const uint64_t *w = page;

	/* Eight independent lanes let the compiler vectorise the scan. */
	for (size_t i = 0; i < GMEM_PAGE_SIZE / 8; i += 8)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
			return false;
	return true;
}

int mig_batch_init(struct mig_batch *b)
{
	memset(b, 0, sizeof(*b));
	b->raw = malloc(MIG_BATCH_PAGES * GMEM_PAGE_SIZE);
	b->comp_cap = ZSTD_compressBound(MIG_BATCH_PAGES * GMEM_PAGE_SIZE);
	b->comp = malloc(b->comp_cap);
	b->cctx = ZSTD_createCCtx();
	if (!b->raw || !b->comp || !b->cctx) {
		mig_batch_free(b);
		return -ENOMEM;
	}
	ZSTD_CCtx_setParameter(b->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
	return 0;
}

void mig_batch_free(struct mig_batch *b)
{
	free(b->raw);
	free(b->comp);
	ZSTD_freeCCtx(b->cctx);
	memset(b, 0, sizeof(*b));
}

void mig_batch_reset(struct mig_batch *b, uint64_t iteration)
{
	b->iteration = iteration;
	b->npages = 0;
	b->nonzero = 0;
	b->compress_ns = 0;
	b->comp_len = 0;
}

bool mig_batch_add(struct mig_batch *b, const struct guest_mem *m, uint64_t pfn,
		   bool skip_zero)
{
	uint8_t *dst = b->raw + (size_t)b->nonzero * GMEM_PAGE_SIZE;

	memcpy(dst, m->hva + (pfn << GMEM_PAGE_SHIFT), GMEM_PAGE_SIZE);
	if (mig_page_is_zero(dst)) {
		if (skip_zero)
			return false;
		b->entries[b->npages++] = pfn | MIG_ENTRY_ZERO;
		return true;
	}
	b->entries[b->npages++] = pfn;
	b->nonzero++;
	return true;
}

void mig_batch_seal(struct mig_batch *b, bool compress)
{
	size_t raw_len = (size_t)b->nonzero * GMEM_PAGE_SIZE;
	uint64_t seed = XXH3_64bits(b->entries, b->npages * sizeof(uint64_t));
	uint32_t flags = 0;

	/* The entries go out as they are in memory: little-endian on x86. */
	b->data = b->raw;
	b->data_len = raw_len;
	if (compress && raw_len) {
		uint64_t t0 = now_ns();
		size_t n = ZSTD_compress2(b->cctx, b->comp, b->comp_cap, b->raw, raw_len);

		b->compress_ns = now_ns() - t0;
		b->comp_len = ZSTD_isError(n) ? raw_len : n;
		/* Only worth it if it saves at least an eighth. */
		if (!ZSTD_isError(n) && n < raw_len - raw_len / 8) {
			b->data = b->comp;
			b->data_len = n;
			flags |= MIG_BATCH_COMPRESSED;
		}
	}
	put_le64(b->hdr, b->iteration);
	put_le32(b->hdr + 8, b->npages);
	put_le32(b->hdr + 12, flags);
	put_le32(b->hdr + 16, (uint32_t)b->data_len);
	put_le32(b->hdr + 20, (uint32_t)raw_len);
	put_le64(b->hdr + 24, XXH3_64bits_withSeed(b->raw, raw_len, seed));
}

int mig_batch_rx_init(struct mig_batch_rx *rx)
{
	rx->raw = malloc(MIG_BATCH_PAGES * GMEM_PAGE_SIZE);
	rx->dctx = ZSTD_createDCtx();
	if (!rx->raw || !rx->dctx) {
		mig_batch_rx_free(rx);
		return -ENOMEM;
	}
	return 0;
}

void mig_batch_rx_free(struct mig_batch_rx *rx)
{
	free(rx->raw);
	ZSTD_freeDCtx(rx->dctx);
	rx->raw = NULL;
	rx->dctx = NULL;
}

int mig_batch_apply(struct mig_batch_rx *rx, struct guest_mem *m, const uint8_t *p,
		    size_t len, uint64_t *iteration, uint64_t *pages)
{
	uint32_t npages, flags, data_len, raw_len, nonzero = 0;
	const uint8_t *entries, *data, *raw;
	uint64_t csum;

	if (len < MIG_BATCH_HDR_SIZE)
		return ferr(EBADMSG, "page batch shorter than its header");
	*iteration = get_le64(p);
	npages = get_le32(p + 8);
	flags = get_le32(p + 12);
	data_len = get_le32(p + 16);
	raw_len = get_le32(p + 20);
	csum = get_le64(p + 24);
	if (npages == 0 || npages > MIG_BATCH_PAGES)
		return ferr(EBADMSG, "page batch claims %u pages (1 to %u allowed)", npages,
			    MIG_BATCH_PAGES);
	if (flags & ~MIG_BATCH_COMPRESSED)
		return ferr(EBADMSG, "page batch has unknown flags %#x", flags);
	if ((uint64_t)MIG_BATCH_HDR_SIZE + (uint64_t)npages * 8 + data_len != len)
		return ferr(EBADMSG, "page batch of %zu bytes does not match its %u entries "
			    "and %u data bytes", len, npages, data_len);
	entries = p + MIG_BATCH_HDR_SIZE;
	data = entries + (size_t)npages * 8;
	for (uint32_t i = 0; i < npages; i++) {
		uint64_t e = get_le64(entries + i * 8);
		uint64_t pfn = e & MIG_ENTRY_PFN_MASK;

		if ((e & ~(MIG_ENTRY_PFN_MASK | MIG_ENTRY_ZERO)) || pfn >= m->npages)
			return ferr(EBADMSG, "page batch entry %u names page %#llx, outside the "
				    "%llu pages of guest RAM", i, (unsigned long long)pfn,
				    (unsigned long long)m->npages);
		if (!(e & MIG_ENTRY_ZERO))
			nonzero++;
	}
	if ((uint64_t)nonzero * GMEM_PAGE_SIZE != raw_len)
		return ferr(EBADMSG, "page batch: %u data pages but %u raw bytes", nonzero, raw_len);
	if (flags & MIG_BATCH_COMPRESSED) {
		unsigned long long want = ZSTD_getFrameContentSize(data, data_len);
		size_t n;

		if (want != raw_len)
			return ferr(EBADMSG, "page batch frame declares %llu bytes, expected %u",
				    want, raw_len);
		n = ZSTD_decompressDCtx(rx->dctx, rx->raw, MIG_BATCH_PAGES * GMEM_PAGE_SIZE,
					data, data_len);
		if (ZSTD_isError(n))
			return ferr(EBADMSG, "page batch does not decompress: %s",
				    ZSTD_getErrorName(n));
		if (n != raw_len)
			return ferr(EBADMSG, "page batch decompressed to %zu bytes, expected %u",
				    n, raw_len);
		raw = rx->raw;
	} else {
		if (data_len != raw_len)
			return ferr(EBADMSG, "uncompressed page batch has %u bytes for %u",
				    data_len, raw_len);
		raw = data;
	}
	if (XXH3_64bits_withSeed(raw, raw_len, XXH3_64bits(entries, (size_t)npages * 8)) != csum)
		return ferr(EBADMSG, "page batch checksum mismatch (iteration %llu): "
			    "the data was corrupted on the way", (unsigned long long)*iteration);

	for (uint32_t i = 0, d = 0; i < npages; i++) {
		uint64_t e = get_le64(entries + i * 8);
		uint8_t *dst = m->hva + ((e & MIG_ENTRY_PFN_MASK) << GMEM_PAGE_SHIFT);

		if (e & MIG_ENTRY_ZERO) {
			memset(dst, 0, GMEM_PAGE_SIZE);
		} else {
			memcpy(dst, raw + (size_t)d * GMEM_PAGE_SIZE, GMEM_PAGE_SIZE);
			d++;
		}
	}
	*pages = npages;
	return 0;
}
