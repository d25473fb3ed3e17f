/*
 * Page batches: what the sender seals the receiver applies bit for bit,
 * and nothing damaged is ever written into guest memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "core/dbuf.h"
#include "core/util.h"
#include "migrate/pages.h"

#define MEM (8ull << 20)

static struct guest_mem src, dst;
static struct mig_batch b;
static struct mig_batch_rx rx;
static uint8_t *payload;
static size_t payload_len;

static void setup(void)
{
	cr_assert_eq(gmem_create(&src, MEM), 0);
	cr_assert_eq(gmem_create(&dst, MEM), 0);
	cr_assert_eq(mig_batch_init(&b), 0);
	cr_assert_eq(mig_batch_rx_init(&rx), 0);
	/* Pages 10..40: half random-ish (incompressible), half a pattern. */
	for (uint64_t p = 10; p < 40; p++)
		for (uint64_t i = 0; i < GMEM_PAGE_SIZE / 8; i++)
			((uint64_t *)(src.hva + p * GMEM_PAGE_SIZE))[i] =
				p < 25 ? (p * 0x9e3779b97f4a7c15ull) ^ (i * 0xbf58476d1ce4e5b9ull) : p;
}

static void teardown(void)
{
	free(payload);
	payload = NULL;
	mig_batch_rx_free(&rx);
	mig_batch_free(&b);
	gmem_destroy(&src);
	gmem_destroy(&dst);
}

TestSuite(pages, .init = setup, .fini = teardown);

/* Builds a batch of pages 5..44 (some zero) into `payload`. */
static void build(bool compress)
{
	mig_batch_reset(&b, 7);
	for (uint64_t p = 5; p < 45; p++)
		mig_batch_add(&b, &src, p, false);
	mig_batch_seal(&b, compress);
	free(payload);
	payload_len = MIG_BATCH_HDR_SIZE + b.npages * 8 + b.data_len;
	payload = malloc(payload_len);
	memcpy(payload, b.hdr, MIG_BATCH_HDR_SIZE);
	memcpy(payload + MIG_BATCH_HDR_SIZE, b.entries, b.npages * 8);
	memcpy(payload + MIG_BATCH_HDR_SIZE + b.npages * 8, b.data, b.data_len);
}

static void expect_reject(const char *needle)
{
	uint64_t iter, n;
	int rc = mig_batch_apply(&rx, &dst, payload, payload_len, &iter, &n);
	static const uint8_t zero[MEM / 8];

	cr_assert_lt(rc, 0, "a damaged batch was applied (wanted '%s')", needle);
	cr_assert(strstr(ferr_msg(rc), needle), "'%s' lacks '%s'", ferr_msg(rc), needle);
	cr_assert_eq(memcmp(dst.hva, zero, sizeof(zero)), 0, "guest memory was written");
}

Test(pages, round_trip_raw_and_compressed)
{
	for (int compress = 0; compress < 2; compress++) {
		uint64_t iter = 0, n = 0;

		memset(dst.hva + 5 * GMEM_PAGE_SIZE, 0xee, 40 * GMEM_PAGE_SIZE);
		build(compress);
		cr_assert_eq(b.npages, 40u);
		cr_assert_eq(b.nonzero, 30u, "zero pages must be markers");
		cr_assert_eq(mig_batch_apply(&rx, &dst, payload, payload_len, &iter, &n), 0,
			     "%s", ferr_msg(-1));
		cr_assert_eq(iter, 7);
		cr_assert_eq(n, 40);
		cr_assert_eq(memcmp(src.hva, dst.hva, MEM), 0, "memory differs (compress=%d)", compress);
	}
	cr_assert(b.data != b.raw, "the patterned half should have compressed");
}

Test(pages, first_pass_skips_zero_pages)
{
	mig_batch_reset(&b, 1);
	for (uint64_t p = 0; p < 10; p++)
		cr_assert_not(mig_batch_add(&b, &src, p, true));
	cr_assert(mig_batch_add(&b, &src, 10, true));
	cr_assert_eq(b.npages, 1u);
}

Test(pages, rejects_bad_headers)
{
	build(false);
	put_le32(payload + 8, 0);
	expect_reject("claims 0 pages");
	build(false);
	put_le32(payload + 8, MIG_BATCH_PAGES + 1);
	expect_reject("claims 257 pages");
	build(false);
	put_le32(payload + 12, 0x80);
	expect_reject("unknown flags");
	build(false);
	payload_len--;
	expect_reject("does not match");
	build(false);
	put_le32(payload + 20, get_le32(payload + 20) - GMEM_PAGE_SIZE);
	expect_reject("data pages but");
}

Test(pages, rejects_pages_outside_ram)
{
	build(false);
	put_le64(payload + MIG_BATCH_HDR_SIZE + 8 * 3, MEM / GMEM_PAGE_SIZE);
	expect_reject("outside the 2048 pages of guest RAM");
	build(false);
	put_le64(payload + MIG_BATCH_HDR_SIZE, 1ull << 62);
	expect_reject("outside");
}

Test(pages, rejects_corrupt_data)
{
	/* A flipped bit anywhere in entries or data fails the checksum. */
	for (size_t at = MIG_BATCH_HDR_SIZE; at < 60000; at += 4099) {
		build(false);
		payload[at] ^= 0x01;
		expect_reject(at < MIG_BATCH_HDR_SIZE + 40 * 8 ? "" : "checksum mismatch");
	}
	build(false);
	put_le64(payload + 24, get_le64(payload + 24) ^ 1);
	expect_reject("checksum mismatch");
}

Test(pages, rejects_bad_compressed_frames)
{
	build(true);
	cr_assert(get_le32(payload + 12) & MIG_BATCH_COMPRESSED);
	payload[MIG_BATCH_HDR_SIZE + 40 * 8 + 20] ^= 0xff;
	expect_reject("");
	build(true);
	/* Claim fewer raw bytes than the frame holds. */
	put_le32(payload + 20, get_le32(payload + 20) - GMEM_PAGE_SIZE);
	expect_reject("");
}
