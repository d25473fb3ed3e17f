/*
 * Setting up and tearing down the lazy loader, and what other threads ask
 * of it.  A restore calls sf_lazy_prepare() as soon as the file is checked,
 * so that the loader reads the first blocks the vCPUs will need while the
 * VM is being created, then sf_lazy_attach() once guest RAM exists and
 * before any vCPU runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../core/util.h"
#include "lazy_int.h"

/*
 * The block buffers.  Their first use faults their memory in, which costs
 * ~4 us per 4 KiB page here (mostly clearing it): 2 ms per 2 MiB buffer,
 * on the path of the very first guest faults.  Backed by transparent huge
 * pages when the host allows, each buffer is one fault instead of 512.
 */
static int alloc_slots(struct sf_lazy *lz)
{
	uint8_t *p, *aligned;

	lz->slab_len = (size_t)(CACHE_SLOTS + 1) * SF_BLOCK_SIZE;
	p = mmap(NULL, lz->slab_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	lz->slab = p;
	aligned = (uint8_t *)(((uintptr_t)p + SF_BLOCK_SIZE - 1) & ~(uintptr_t)(SF_BLOCK_SIZE - 1));
	(void)madvise(aligned, (size_t)CACHE_SLOTS * SF_BLOCK_SIZE, MADV_HUGEPAGE);
	for (unsigned i = 0; i < CACHE_SLOTS; i++) {
		lz->slots[i].block = -1;
		lz->slots[i].buf = aligned + (size_t)i * SF_BLOCK_SIZE;
	}
	return 0;
}

static int open_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK), dev;

	if (fd >= 0)
		return fd;
	/* Without the privilege for the syscall, /dev/userfaultfd may allow it. */
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		close(dev);
		if (fd >= 0)
			return fd;
	}
	return ferr_sys(errno, "--lazy needs userfaultfd, which this process may not use "
			"(see /proc/sys/vm/unprivileged_userfaultfd)");
}

/* Registers each run of blocks that the file holds data for. */
static int register_ranges(struct sf_lazy *lz)
{
	const struct sf_file *f = lz->f;
	struct uffdio_api api = { .api = UFFD_API };

	if (ioctl(lz->uffd, UFFDIO_API, &api) < 0)
		return ferr_sys(errno, "UFFDIO_API");
	for (uint32_t b = 0; b < f->nblocks;) {
		struct uffdio_register reg;
		uint32_t e;

		if (!f->block_pages[b]) {
			b++;
			continue;
		}
		for (e = b + 1; e < f->nblocks && f->block_pages[e]; e++)
			;
		reg = (struct uffdio_register){
			.range = { .start = (uint64_t)(uintptr_t)(lz->hva + sf_block_gpa(b)),
				   .len = (uint64_t)(e - b) * SF_BLOCK_SIZE },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		if (ioctl(lz->uffd, UFFDIO_REGISTER, &reg) < 0)
			return ferr_sys(errno, "registering guest RAM with userfaultfd");
		if (!(reg.ioctls & (1ull << _UFFDIO_COPY)))
			return ferr(ENOTSUP, "userfaultfd cannot copy into guest RAM here");
		b = e;
	}
	return 0;
}

int sf_lazy_prepare(struct sf_file *f, struct sf_lazy **out)
{
	struct sf_lazy *lz = calloc(1, sizeof(*lz));
	int rc;

	if (!lz) {
		sf_free(f);
		return -ENOMEM;
	}
	lz->f = f;
	lz->uffd = lz->stopfd = -1;
	lz->t_start = now_ns();
	lz->data_blocks = f->data_blocks;
	lz->npages = f->ram_size >> GMEM_PAGE_SHIFT;
	pthread_mutex_init(&lz->lock, NULL);
	pthread_cond_init(&lz->cond, NULL);
	lz->present = calloc(DIV_ROUND_UP(lz->npages, 64), sizeof(uint64_t));
	lz->block_present = calloc(f->nblocks, sizeof(uint16_t));
	rc = alloc_slots(lz);
	if (rc || !lz->present || !lz->block_present) {
		rc = -ENOMEM;
		goto fail;
	}
	lz->stopfd = eventfd(0, EFD_CLOEXEC);
	if (lz->stopfd < 0) {
		rc = ferr_sys(errno, "eventfd");
		goto fail;
	}
	rc = pthread_create(&lz->thread, NULL, sf_lazy_thread, lz);
	if (rc) {
		rc = ferr_sys(rc, "cannot start the lazy loader thread");
		goto fail;
	}
	lz->thread_started = true;
	*out = lz;
	return 0;
fail:
	sf_lazy_free(lz);
	return rc;
}

int sf_lazy_attach(struct sf_lazy *lz, struct vm *vm)
{
	int rc;

	if (vm->mem.size != lz->f->ram_size)
		return ferr(EINVAL, "guest RAM is %llu bytes, %s holds %llu",
			    (unsigned long long)vm->mem.size, lz->f->path,
			    (unsigned long long)lz->f->ram_size);
	/* The hot blocks must have passed their checks before the VM may run. */
	pthread_mutex_lock(&lz->lock);
	while (!lz->prepared)
		pthread_cond_wait(&lz->cond, &lz->lock);
	rc = lz->prepare_rc;
	pthread_mutex_unlock(&lz->lock);
	if (rc)
		return ferr(rc, "%s", lz->error);
	lz->vm = vm;
	lz->hva = vm->mem.hva;
	if (!lz->data_blocks) {
		/* Nothing to load: RAM is all zeros, which the memfd gives anyway. */
		pthread_mutex_lock(&lz->lock);
		lz->complete = true;
		lz->complete_ns = 1;
		close(lz->f->fd);
		lz->f->fd = -1;
		lz->stopping = true;
		pthread_cond_broadcast(&lz->cond);
		pthread_mutex_unlock(&lz->lock);
		return 0;
	}
	rc = open_uffd();
	if (rc < 0)
		return rc;
	lz->uffd = rc;
	rc = register_ranges(lz);
	if (!rc)
		rc = sf_lazy_copy_hot(lz);
	if (rc)
		return rc;
	pthread_mutex_lock(&lz->lock);
	lz->attached = true;
	pthread_cond_broadcast(&lz->cond);
	pthread_mutex_unlock(&lz->lock);
	return 0;
}

int sf_lazy_start(struct sf_file *f, struct vm *vm, struct sf_lazy **out)
{
	struct sf_lazy *lz;
	int rc = sf_lazy_prepare(f, &lz);

	if (rc)
		return rc;
	rc = sf_lazy_attach(lz, vm);
	if (rc) {
		sf_lazy_free(lz);
		return rc;
	}
	*out = lz;
	return 0;
}

void sf_lazy_query(struct sf_lazy *lz, struct sf_lazy_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&lz->lock);
	st->complete = lz->complete;
	st->failed = lz->failed;
	snprintf(st->error, sizeof(st->error), "%s", lz->error);
	pthread_mutex_unlock(&lz->lock);
	st->data_blocks = lz->data_blocks;
	st->blocks_done = atomic_load(&lz->blocks_done);
	st->faults = atomic_load(&lz->faults);
	st->fault_max_ns = atomic_load(&lz->fault_max_ns);
	st->first_fault_ns = atomic_load(&lz->first_fault_ns);
	st->complete_ns = atomic_load(&lz->complete_ns);
	st->bytes_read = atomic_load(&lz->bytes_read);
	st->hot_read_bytes = atomic_load(&lz->hot_read_bytes);
}

int sf_lazy_wait(struct sf_lazy *lz, const _Atomic bool *cancel)
{
	int rc = 0;

	pthread_mutex_lock(&lz->lock);
	while (!lz->complete && !lz->failed && !(cancel && atomic_load(cancel))) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&lz->cond, &lz->lock, &ts);
	}
	if (lz->failed)
		rc = ferr(EIO, "%s", lz->error);
	else if (!lz->complete)
		rc = ferr(ECANCELED, "cancelled while waiting for the lazy restore to finish");
	pthread_mutex_unlock(&lz->lock);
	return rc;
}

void sf_lazy_free(struct sf_lazy *lz)
{
	uint64_t one = 1;

	if (!lz)
		return;
	if (lz->thread_started) {
		pthread_mutex_lock(&lz->lock);
		lz->stopping = true;
		pthread_cond_broadcast(&lz->cond);
		pthread_mutex_unlock(&lz->lock);
		if (write(lz->stopfd, &one, sizeof(one)) != sizeof(one))
			flog("lazy restore: cannot signal the loader thread");
		pthread_join(lz->thread, NULL);
	}
	sf_lazy_free_hot(lz);
	if (lz->uffd >= 0)
		close(lz->uffd);
	if (lz->stopfd >= 0)
		close(lz->stopfd);
	sf_free(lz->f);
	if (lz->slab)
		munmap(lz->slab, lz->slab_len);
	free(lz->present);
	free(lz->block_present);
	pthread_mutex_destroy(&lz->lock);
	pthread_cond_destroy(&lz->cond);
	free(lz);
}
