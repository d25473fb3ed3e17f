#include "ramscan.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "../core/util.h"

/* Calls fn(first_page, count) for each written extent of guest RAM. */
static int for_each_extent(const struct guest_mem *m,
			   void (*fn)(uint64_t first, uint64_t count, void *arg), void *arg)
{
	off_t pos = 0, end = (off_t)m->size;

	while (pos < end) {
		off_t data = lseek(m->fd, pos, SEEK_DATA), hole;

		if (data < 0 && errno == ENXIO)
			break;
		if (data < 0)
			return ferr_sys(errno, "SEEK_DATA on guest RAM");
		hole = lseek(m->fd, data, SEEK_HOLE);
		if (hole < 0)
			return ferr_sys(errno, "SEEK_HOLE on guest RAM");
		hole = MIN(hole, end);
		fn((uint64_t)data >> GMEM_PAGE_SHIFT,
		   (uint64_t)(hole - data + (off_t)GMEM_PAGE_SIZE - 1) >> GMEM_PAGE_SHIFT, arg);
		pos = hole;
	}
	return 0;
}

static void set_range(uint64_t *bm, uint64_t first, uint64_t count)
{
	for (uint64_t p = first; p < first + count; p++)
		bm[p / 64] |= 1ull << (p % 64);
}

struct mark_ctx {
	uint64_t *bm, pages;
};

static void mark_data(uint64_t first, uint64_t count, void *arg)
{
	struct mark_ctx *c = arg;

	set_range(c->bm, first, count);
	c->pages += count;
}

int mig_mark_written(const struct guest_mem *m, uint64_t *bitmap, uint64_t *pages)
{
	struct mark_ctx c = { .bm = bitmap };
	int rc = for_each_extent(m, mark_data, &c);

	if (!rc && pages)
		*pages = c.pages;
	return rc;
}

int mig_clear_holes(const struct guest_mem *m, uint64_t *bitmap)
{
	uint64_t words = DIV_ROUND_UP(m->npages, 64);
	uint64_t *data = calloc(words, sizeof(uint64_t));
	int rc;

	if (!data)
		return -ENOMEM;
	rc = mig_mark_written(m, data, NULL);
	if (!rc)
		for (uint64_t i = 0; i < words; i++)
			bitmap[i] &= data[i];
	free(data);
	return rc;
}

struct extent_list {
	struct dbuf *out;
	int count;
};

static void add_extent(uint64_t first, uint64_t count, void *arg)
{
	struct extent_list *l = arg;

	dbuf_put_le64(l->out, first);
	dbuf_put_le64(l->out, count);
	l->count++;
}

int mig_ram_extents(const struct guest_mem *m, struct dbuf *out)
{
	struct extent_list l = { .out = out };
	int rc = for_each_extent(m, add_extent, &l);

	if (rc)
		return rc;
	return out->failed ? -ENOMEM : l.count;
}

struct digest_job {
	const struct guest_mem *m;
	const uint64_t *data;     /* bitmap of pages in written extents */
	uint64_t *out;
	uint64_t first, count;
	uint64_t zero_digest;
};

static void *digest_range(void *arg)
{
	struct digest_job *j = arg;

	for (uint64_t p = j->first; p < j->first + j->count; p++)
		j->out[p] = (j->data[p / 64] >> (p % 64)) & 1
				    ? XXH3_64bits(j->m->hva + (p << GMEM_PAGE_SHIFT), GMEM_PAGE_SIZE)
				    : j->zero_digest;
	return NULL;
}

int mig_digest_ram(const struct guest_mem *m, uint64_t *out, unsigned threads)
{
	uint64_t words = DIV_ROUND_UP(m->npages, 64), per;
	uint64_t *data = calloc(words, sizeof(uint64_t));
	static const uint8_t zero[GMEM_PAGE_SIZE];
	struct digest_job jobs[8];
	pthread_t th[8];
	int rc;

	if (!data)
		return -ENOMEM;
	rc = mig_mark_written(m, data, NULL);
	if (rc)
		goto out;
	threads = MAX(1u, MIN(threads, 8u));
	per = DIV_ROUND_UP(m->npages, threads);
	for (unsigned t = 0; t < threads; t++) {
		uint64_t first = MIN(t * per, m->npages);

		jobs[t] = (struct digest_job){
			.m = m, .data = data, .out = out, .first = first,
			.count = MIN(per, m->npages - first),
			.zero_digest = XXH3_64bits(zero, sizeof(zero)),
		};
		th[t] = 0;
		if (t > 0 && pthread_create(&th[t], NULL, digest_range, &jobs[t]) != 0) {
			th[t] = 0;
			digest_range(&jobs[t]);
		}
	}
	digest_range(&jobs[0]);
	for (unsigned t = 1; t < threads; t++)
		if (th[t])
			pthread_join(th[t], NULL);
out:
	free(data);
	return rc;
}
