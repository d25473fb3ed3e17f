#include "memory.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util.h"

int gmem_create(struct guest_mem *m, uint64_t size)
{
	int rc;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (size == 0 || size % GMEM_PAGE_SIZE)
		return ferr(EINVAL, "guest memory size %llu is not a whole number of pages",
			    (unsigned long long)size);
	m->fd = memfd_create("ferry-guest-ram", MFD_CLOEXEC);
	if (m->fd < 0)
		return ferr_sys(errno, "memfd_create for guest RAM failed");
	if (ftruncate(m->fd, (off_t)size) < 0) {
		rc = ferr_sys(errno, "cannot size guest RAM to %llu bytes",
			      (unsigned long long)size);
		goto close_fd;
	}
	m->hva = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
		      m->fd, 0);
	if (m->hva == MAP_FAILED) {
		rc = ferr_sys(errno, "cannot map %llu bytes of guest RAM",
			      (unsigned long long)size);
		m->hva = NULL;
		goto close_fd;
	}
	m->size = size;
	m->npages = size >> GMEM_PAGE_SHIFT;
	m->vmm_dirty = calloc(DIV_ROUND_UP(m->npages, 64), sizeof(uint64_t));
	if (!m->vmm_dirty) {
		rc = -ENOMEM;
		goto unmap;
	}
	return 0;

unmap:
	munmap(m->hva, size);
	m->hva = NULL;
close_fd:
	close(m->fd);
	m->fd = -1;
	return rc;
}

void gmem_destroy(struct guest_mem *m)
{
	if (m->hva)
		munmap(m->hva, m->size);
	if (m->fd >= 0)
		close(m->fd);
	free(m->vmm_dirty);
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

void gmem_mark_dirty(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	uint64_t first, last;

	if (len == 0 || !gmem_range_ok(m, gpa, len))
		return;
	first = gpa >> GMEM_PAGE_SHIFT;
	last = (gpa + len - 1) >> GMEM_PAGE_SHIFT;
	for (uint64_t pfn = first; pfn <= last; pfn++)
		atomic_fetch_or_explicit(&m->vmm_dirty[pfn / 64], 1ull << (pfn % 64),
					 memory_order_relaxed);
}

int gmem_write(struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *dst = gmem_ptr(m, gpa, len);

	if (!dst)
		return -EFAULT;
	memcpy(dst, src, len);
	gmem_mark_dirty(m, gpa, len);
	return 0;
}

int gmem_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	const void *src = gmem_ptr(m, gpa, len);

	if (!src)
		return -EFAULT;
	memcpy(dst, src, len);
	return 0;
}

uint64_t gmem_take_vmm_dirty(struct guest_mem *m, uint64_t *bitmap)
{
	uint64_t words = DIV_ROUND_UP(m->npages, 64), count = 0;

	for (uint64_t i = 0; i < words; i++) {
		uint64_t bits;

		if (!atomic_load_explicit(&m->vmm_dirty[i], memory_order_relaxed))
			continue;
		bits = atomic_exchange_explicit(&m->vmm_dirty[i], 0, memory_order_acq_rel);
		bitmap[i] |= bits;
		count += (uint64_t)__builtin_popcountll(bits);
	}
	return count;
}
