/*
 * Scanning guest RAM without touching what was never written.  Guest RAM is
 * a memfd: pages the guest never wrote are holes, and reading them would
 * allocate memory for nothing.  lseek(SEEK_DATA/SEEK_HOLE) finds the
 * written extents instead.
 */
#ifndef FERRY_MIG_RAMSCAN_H
#define FERRY_MIG_RAMSCAN_H

#include <stdint.h>

#include "../core/dbuf.h"
#include "../core/memory.h"

/*
 * Sets in `bitmap` every page that lies in a written extent of guest RAM
 * (a partly written page counts); *pages (if not NULL) gets their number.
 */
int mig_mark_written(const struct guest_mem *m, uint64_t *bitmap, uint64_t *pages);

/* Clears in `bitmap` every page that lies in a hole of guest RAM. */
int mig_clear_holes(const struct guest_mem *m, uint64_t *bitmap);

/*
 * Appends the written extents of guest RAM as (u64 first page, u64 page
 * count) pairs, ascending.  Returns the number of extents or -errno.
 */
int mig_ram_extents(const struct guest_mem *m, struct dbuf *out);

/*
 * XXH3-64 digest of every page of guest RAM into out[npages] (holes get the
 * digest of a zero page without being read).  Uses `threads` threads.
 */
int mig_digest_ram(const struct guest_mem *m, uint64_t *out, unsigned threads);

#endif
