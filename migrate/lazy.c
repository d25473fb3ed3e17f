/*
 * The lazy loader: one thread that serves userfaultfd faults on guest RAM
 * from a save file and, between faults, brings in the rest of memory.
 *
 * Only this thread copies pages into the registered ranges, so its own
 * bitmap of present pages is exact and needs no lock.  A fault copies the
 * 64 KiB around the touched page from the block's verified copy, which wakes
 * the faulting thread as soon as possible.  Between faults, the background
 * fill copies 256 KiB at a time: first the rest of the blocks that faults
 * have already read and verified (the most recent first), then every other
 * block in order.  A verified copy is only dropped once its block is
 * complete (if need be, the loader completes it first), so every block is
 * read and checked exactly once, however the guest touches memory, and a
 * fault waits at most one fill step or one block completion.
 */
#include "lazy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
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

#define CACHE_SLOTS 16          /* 32 MiB of verified blocks */
#define FAULT_PAGES 16u         /* 64 KiB around a fault */
#define FILL_PAGES 64u          /* 256 KiB per background step */
#define MAX_MSGS 16
/* The background fill waits for the first fault or this long, see below. */
#define FILL_DELAY_MS 20

struct slot {
	int64_t block;              /* -1: empty */
	uint64_t last_use;
	uint8_t *buf;
};

struct sf_lazy {
	struct sf_file *f;
	struct vm *vm;
	uint8_t *hva;
	int uffd;
	int stopfd;
	pthread_t thread;
	bool thread_started;
	uint64_t t_start;

	uint64_t *present;          /* (loader) one bit per guest page */
	uint16_t *block_present;    /* (loader) pages present per block */
	uint32_t fill_cursor;       /* (loader) next block to fill */
	uint64_t data_blocks;
	struct slot slots[CACHE_SLOTS];
	uint8_t *slab;              /* the slots' buffers, one mapping */
	size_t slab_len;
	uint64_t use_clock;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool complete, failed;      /* (lock) */
	char error[512];            /* (lock) */
	_Atomic uint64_t blocks_done, faults, fault_max_ns, first_fault_ns, complete_ns;
	_Atomic uint64_t bytes_read;
};

static bool page_present(const struct sf_lazy *lz, uint64_t p)
{
	return (lz->present[p / 64] >> (p % 64)) & 1;
}

static void mark_present(struct sf_lazy *lz, uint64_t p)
{
	uint32_t b = (uint32_t)(p / SF_BLOCK_PAGES);

	if (page_present(lz, p))
		return;
	lz->present[p / 64] |= 1ull << (p % 64);
	if (++lz->block_present[b] == SF_BLOCK_PAGES)
		atomic_fetch_add(&lz->blocks_done, 1);
}

/* Loading cannot go on: end the VM, then let every waiter through. */
static void fail(struct sf_lazy *lz, int rc)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "%s", ferr_msg(rc));
	/* End the VM first, so no vCPU runs on what the waiters get now. */
	vm_end(lz->vm, 1, "lazy restore failed after the VM started: %s", msg);
	pthread_mutex_lock(&lz->lock);
	lz->failed = true;
	snprintf(lz->error, sizeof(lz->error), "%s", msg);
	pthread_cond_broadcast(&lz->cond);
	pthread_mutex_unlock(&lz->lock);
	/* Closing userfaultfd wakes every fault; the pages read as zeros. */
	close(lz->uffd);
	lz->uffd = -1;
	flog("lazy restore: %s; the VM was stopped", msg);
}

/* Copies pages [p0, p1) of block b that are not present yet. */
static int copy_pages(struct sf_lazy *lz, uint32_t b, uint64_t p0, uint64_t p1,
		      const uint8_t *data)
{
	uint64_t base = (uint64_t)b * SF_BLOCK_PAGES;

	for (uint64_t p = p0; p < p1;) {
		struct uffdio_copy c;
		uint64_t q;

		if (page_present(lz, p)) {
			p++;
			continue;
		}
		for (q = p + 1; q < p1 && !page_present(lz, q); q++)
			;
		c = (struct uffdio_copy){
			.dst = (uint64_t)(uintptr_t)(lz->hva + (p << GMEM_PAGE_SHIFT)),
			.src = (uint64_t)(uintptr_t)(data + ((p - base) << GMEM_PAGE_SHIFT)),
			.len = (q - p) << GMEM_PAGE_SHIFT,
		};
		if (ioctl(lz->uffd, UFFDIO_COPY, &c) == 0) {
			for (; p < q; p++)
				mark_present(lz, p);
			continue;
		}
		if (errno == EAGAIN && c.copy > 0) {
			/* Part went in; carry on after it. */
			for (uint64_t n = (uint64_t)c.copy >> GMEM_PAGE_SHIFT; n; n--)
				mark_present(lz, p++);
			continue;
		}
		if (errno == EEXIST || errno == EAGAIN) {
			/* Something is there already: take the run a page at a time. */
			c.len = GMEM_PAGE_SIZE;
			if (ioctl(lz->uffd, UFFDIO_COPY, &c) == 0 || errno == EEXIST) {
				mark_present(lz, p++);
				continue;
			}
		}
		return ferr_sys(errno, "UFFDIO_COPY of guest-physical %#llx",
				(unsigned long long)(p << GMEM_PAGE_SHIFT));
	}
	return 0;
}

static bool block_complete(const struct sf_lazy *lz, int64_t b)
{
	return b >= 0 && lz->block_present[b] == SF_BLOCK_PAGES;
}

/*
 * The verified contents of block b, read from the file if not cached.  A
 * slot is reused in this order: empty, holding a block already complete,
 * least recently used.
 */
static const uint8_t *block_data(struct sf_lazy *lz, uint32_t b, int *rc)
{
	struct slot *victim = NULL;
	int victim_rank = 3;

	for (unsigned i = 0; i < CACHE_SLOTS; i++) {
		struct slot *s = &lz->slots[i];
		int rank = s->block < 0 ? 0 : block_complete(lz, s->block) ? 1 : 2;

		if (s->block == (int64_t)b) {
			s->last_use = ++lz->use_clock;
			return s->buf;
		}
		if (rank < victim_rank || (rank == victim_rank && s->last_use < victim->last_use)) {
			victim = s;
			victim_rank = rank;
		}
	}
	if (victim_rank == 2) {
		/* Finish the block before dropping its verified copy, so that no
		 * block is ever read and checked twice. */
		uint64_t base = (uint64_t)victim->block * SF_BLOCK_PAGES;

		*rc = copy_pages(lz, (uint32_t)victim->block, base, base + SF_BLOCK_PAGES,
				 victim->buf);
		if (*rc)
			return NULL;
	}
	victim->block = -1;
	*rc = sf_read_block(lz->f, b, victim->buf);
	if (*rc)
		return NULL;
	atomic_fetch_add(&lz->bytes_read, SF_BLOCK_SIZE);
	victim->block = b;
	victim->last_use = ++lz->use_clock;
	return victim->buf;
}

static int serve_fault(struct sf_lazy *lz, uint64_t addr)
{
	uint64_t t0 = now_ns(), off = addr - (uint64_t)(uintptr_t)lz->hva, p, p0, dt, max;
	const uint8_t *data;
	uint32_t b;
	int rc = 0;

	if (addr < (uint64_t)(uintptr_t)lz->hva || off >= lz->vm->mem.size)
		return ferr(EFAULT, "a fault at %#llx outside guest RAM", (unsigned long long)addr);
	p = off >> GMEM_PAGE_SHIFT;
	b = (uint32_t)(p / SF_BLOCK_PAGES);
	if (page_present(lz, p)) {
		/* Raced with a copy that already woke it; wake again to be sure. */
		struct uffdio_range r = { .start = addr & ~(GMEM_PAGE_SIZE - 1),
					  .len = GMEM_PAGE_SIZE };

		ioctl(lz->uffd, UFFDIO_WAKE, &r);
		return 0;
	}
	data = block_data(lz, b, &rc);
	if (!data)
		return rc;
	p0 = p / FAULT_PAGES * FAULT_PAGES;
	rc = copy_pages(lz, b, p0, p0 + FAULT_PAGES, data);
	if (rc)
		return rc;
	if (!atomic_load(&lz->first_fault_ns))
		atomic_store(&lz->first_fault_ns, MAX(now_ns() - lz->t_start, 1));
	atomic_fetch_add(&lz->faults, 1);
	dt = now_ns() - t0;
	max = atomic_load(&lz->fault_max_ns);
	if (dt > max)
		atomic_store(&lz->fault_max_ns, dt);
	return 0;
}

/* Reads and serves every pending fault message.  -errno on failure. */
static int serve_faults(struct sf_lazy *lz)
{
	struct uffd_msg msgs[MAX_MSGS];

	for (;;) {
		ssize_t n = read(lz->uffd, msgs, sizeof(msgs));

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (n < 0)
			return ferr_sys(errno, "reading userfaultfd");
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
			int rc;

			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			rc = serve_fault(lz, msgs[i].arg.pagefault.address);
			if (rc)
				return rc;
		}
	}
}

/* The block to fill next: the latest cached incomplete one, else in order. */
static int64_t next_fill_block(struct sf_lazy *lz)
{
	const struct sf_file *f = lz->f;
	const struct slot *best = NULL;

	for (unsigned i = 0; i < CACHE_SLOTS; i++) {
		const struct slot *s = &lz->slots[i];

		if (s->block >= 0 && !block_complete(lz, s->block) &&
		    (!best || s->last_use > best->last_use))
			best = s;
	}
	if (best)
		return best->block;
	while (lz->fill_cursor < f->nblocks &&
	       (!f->block_pages[lz->fill_cursor] || block_complete(lz, lz->fill_cursor)))
		lz->fill_cursor++;
	return lz->fill_cursor < f->nblocks ? (int64_t)lz->fill_cursor : -1;
}

/* One background step; false when every block is present. */
static bool fill_step(struct sf_lazy *lz, int *rc)
{
	int64_t b = next_fill_block(lz);
	const uint8_t *data;
	uint64_t base, p;

	if (b < 0)
		return false;
	base = (uint64_t)b * SF_BLOCK_PAGES;
	for (p = base; page_present(lz, p); p++)
		;
	data = block_data(lz, (uint32_t)b, rc);
	if (data)
		*rc = copy_pages(lz, (uint32_t)b, p, MIN(p + FILL_PAGES, base + SF_BLOCK_PAGES), data);
	return true;
}

static void finish(struct sf_lazy *lz)
{
	/* Closing unregisters every range: from now on RAM is plain memfd. */
	close(lz->uffd);
	lz->uffd = -1;
	pthread_mutex_lock(&lz->lock);
	lz->complete = true;
	atomic_store(&lz->complete_ns, MAX(now_ns() - lz->t_start, 1));
	/* Release the file; the rest of f stays for whoever still reads it. */
	close(lz->f->fd);
	lz->f->fd = -1;
	pthread_cond_broadcast(&lz->cond);
	pthread_mutex_unlock(&lz->lock);
}

/*
 * The background fill keeps a core busy.  Right after a restore that core
 * is better left to the vCPUs and to the faults on their way to the first
 * guest instruction, so the fill starts only once the first fault has been
 * served (the VM is running), or after FILL_DELAY_MS whatever happens (a VM
 * restored paused must still get all of its memory).
 */
static int poll_timeout(struct sf_lazy *lz, bool more)
{
	uint64_t since;

	if (!more)
		return -1;
	if (atomic_load(&lz->faults))
		return 0;
	since = (now_ns() - lz->t_start) / 1000000;
	return since >= FILL_DELAY_MS ? 0 : (int)(FILL_DELAY_MS - since);
}

static void *loader_thread(void *arg)
{
	struct sf_lazy *lz = arg;
	bool more = true;
	int rc = 0;

	pthread_setname_np(pthread_self(), "ferry-lazy");
	ferr_clear();
	while (!rc) {
		struct pollfd pfd[2] = {
			{ .fd = lz->uffd, .events = POLLIN },
			{ .fd = lz->stopfd, .events = POLLIN },
		};
		int timeout = poll_timeout(lz, more);

		if (poll(pfd, 2, timeout) < 0 && errno != EINTR) {
			rc = ferr_sys(errno, "poll on userfaultfd");
			break;
		}
		if (pfd[1].revents)
			return NULL;
		if (pfd[0].revents & POLLIN) {
			rc = serve_faults(lz);
			continue;
		}
		if (pfd[0].revents & (POLLERR | POLLHUP)) {
			rc = ferr(EIO, "userfaultfd reported an error");
			break;
		}
		if (poll_timeout(lz, more) > 0)
			continue;
		more = fill_step(lz, &rc);
		if (!more && !rc && atomic_load(&lz->blocks_done) == lz->data_blocks) {
			finish(lz);
			return NULL;
		}
	}
	fail(lz, rc);
	return NULL;
}

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

int sf_lazy_start(struct sf_file *f, struct vm *vm, struct sf_lazy **out)
{
	struct sf_lazy *lz = calloc(1, sizeof(*lz));
	int rc = 0;

	if (!lz) {
		sf_free(f);
		return -ENOMEM;
	}
	lz->f = f;
	lz->vm = vm;
	lz->hva = vm->mem.hva;
	lz->uffd = lz->stopfd = -1;
	lz->t_start = now_ns();
	lz->data_blocks = f->data_blocks;
	pthread_mutex_init(&lz->lock, NULL);
	pthread_cond_init(&lz->cond, NULL);
	if (vm->mem.size != f->ram_size) {
		rc = ferr(EINVAL, "guest RAM is %llu bytes, %s holds %llu",
			  (unsigned long long)vm->mem.size, f->path, (unsigned long long)f->ram_size);
		goto fail;
	}
	lz->present = calloc(DIV_ROUND_UP(vm->mem.npages, 64), sizeof(uint64_t));
	lz->block_present = calloc(f->nblocks, sizeof(uint16_t));
	rc = alloc_slots(lz);
	if (rc || !lz->present || !lz->block_present) {
		rc = -ENOMEM;
		goto fail;
	}
	if (!f->data_blocks) {
		/* Nothing to load: RAM is all zeros, which the memfd gives anyway. */
		lz->complete = true;
		lz->complete_ns = 1;
		close(f->fd);
		f->fd = -1;
		*out = lz;
		return 0;
	}
	lz->stopfd = eventfd(0, EFD_CLOEXEC);
	if (lz->stopfd < 0) {
		rc = ferr_sys(errno, "eventfd");
		goto fail;
	}
	rc = open_uffd();
	if (rc < 0)
		goto fail;
	lz->uffd = rc;
	rc = register_ranges(lz);
	if (rc)
		goto fail;
	rc = pthread_create(&lz->thread, NULL, loader_thread, lz);
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
		if (write(lz->stopfd, &one, sizeof(one)) != sizeof(one))
			flog("lazy restore: cannot signal the loader thread");
		pthread_join(lz->thread, NULL);
	}
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
