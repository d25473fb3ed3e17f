/*
 * Guest RAM: one memfd, mapped shared into ferry and registered with KVM as
 * memslot 0 at guest-physical address 0.  Pages are allocated lazily by the
 * kernel on first touch, so a 16 GiB guest costs only what it uses.
 *
 * Every host-side write into guest RAM goes through gmem_write() or is
 * followed by gmem_mark_dirty(): KVM's dirty log sees only guest writes, and
 * migration must also resend pages that ferry itself changed.  The VMM dirty
 * bitmap is updated with atomic ORs and may be marked from any thread.
 */
#ifndef FERRY_MEMORY_H
#define FERRY_MEMORY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define GMEM_PAGE_SHIFT 12
#define GMEM_PAGE_SIZE  (1ull << GMEM_PAGE_SHIFT)

struct guest_mem {
	int fd;
	uint8_t *hva;
	uint64_t size;
	uint64_t npages;
	_Atomic uint64_t *vmm_dirty;   /* one bit per page the VMM wrote */
};

int gmem_create(struct guest_mem *m, uint64_t size);
void gmem_destroy(struct guest_mem *m);

/* True when [gpa, gpa+len) lies inside guest RAM (overflow-safe). */
static inline bool gmem_range_ok(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	return gpa <= m->size && len <= m->size - gpa;
}

/* Host pointer for [gpa, gpa+len), or NULL when any of it is outside RAM. */
static inline void *gmem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	return gmem_range_ok(m, gpa, len) ? m->hva + gpa : (void *)0;
}

void gmem_mark_dirty(struct guest_mem *m, uint64_t gpa, uint64_t len);
/* Copies into guest RAM and marks the pages; -EFAULT when out of range. */
int gmem_write(struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
/* Copies out of guest RAM; -EFAULT when out of range. */
int gmem_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);

/*
 * Moves the VMM dirty bits into `bitmap` (ORed in, one bit per page, 64-bit
 * words) and clears them.  Returns how many pages were set.
 */
uint64_t gmem_take_vmm_dirty(struct guest_mem *m, uint64_t *bitmap);

#endif
