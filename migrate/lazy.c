/*
 * The lazy loader thread: it serves userfaultfd faults on guest RAM from a
 * save file and, between faults, brings in the rest of memory.
 *
 * It starts while the VM is still being created: it reads and checks the
 * pieces holding the pages the vCPUs will touch first (savefile_hot.c; each
 * against its own checksum when the file lists it in HOT_PIECES), then
 * waits to be attached to the VM's RAM (attach copies those pieces in).
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
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../core/util.h"
#include "lazy_int.h"

#define MAX_MSGS 16

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

/*
 * Copies the pages [p0, p1) that are not present yet from data, which holds
 * guest page data_first onwards.
 */
static int copy_pages(struct sf_lazy *lz, uint64_t p0, uint64_t p1, const uint8_t *data,
		      uint64_t data_first)
{
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
			.src = (uint64_t)(uintptr_t)(data + ((p - data_first) << GMEM_PAGE_SHIFT)),
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

		*rc = copy_pages(lz, base, base + SF_BLOCK_PAGES, victim->buf, base);
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
	rc = copy_pages(lz, p0, p0 + FAULT_PAGES, data, (uint64_t)b * SF_BLOCK_PAGES);
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

/*
 * Before the VM exists: the verified piece holding page p, read if need be.
 * A piece the file lists in HOT_PIECES is read alone and checked against
 * its own checksum.  Any other (a file without the section, or a walk that
 * strays from the writer's) is checked with its whole block, read
 * SF_PIECE_SIZE bytes at a time.  The block buffers stay untouched until
 * the VM runs: their first use faults in 2 MiB of fresh memory (costly on
 * this host, and a huge page may first need compaction), which on this
 * path delayed the first guest instruction by up to 30 ms.  NULL with
 * *rc == 0 once the store is full: the walk is a hint and may stop there.
 */
_Static_assert(FAULT_PAGES * GMEM_PAGE_SIZE == SF_PIECE_SIZE,
	       "a hot piece is what a fault copies in");

static const uint8_t *hot_piece(struct sf_lazy *lz, uint64_t p, int *rc)
{
	uint64_t first = p / FAULT_PAGES * FAULT_PAGES;
	struct hot_piece *hp;
	int listed;

	for (unsigned i = 0; i < lz->npieces; i++)
		if (lz->pieces[i].first == first)
			return lz->pieces[i].buf;
	if (lz->npieces == MAX_HOT)
		return NULL;
	hp = &lz->pieces[lz->npieces];
	hp->buf = malloc(SF_PIECE_SIZE);
	if (!hp->buf) {
		*rc = -ENOMEM;
		return NULL;
	}
	listed = sf_hot_find(lz->f, first << GMEM_PAGE_SHIFT);
	if (listed >= 0)
		*rc = sf_read_hot_piece(lz->f, (unsigned)listed, hp->buf);
	else
		*rc = sf_read_block_piece(lz->f, (uint32_t)(p / SF_BLOCK_PAGES),
					  (uint32_t)(first % SF_BLOCK_PAGES / FAULT_PAGES), hp->buf);
	if (*rc) {
		free(hp->buf);
		hp->buf = NULL;
		return NULL;
	}
	atomic_fetch_add(&lz->hot_read_bytes, listed >= 0 ? SF_PIECE_SIZE : SF_BLOCK_SIZE);
	hp->first = first;
	lz->npieces++;
	return hp->buf;
}

static const uint8_t *hot_page(void *opaque, uint64_t gpa, int *rc)
{
	static const uint8_t zero[GMEM_PAGE_SIZE];
	struct sf_lazy *lz = opaque;
	uint64_t p = gpa >> GMEM_PAGE_SHIFT;
	const uint8_t *data;

	if (!lz->f->block_pages[gpa >> SF_BLOCK_SHIFT])
		return zero;
	data = hot_piece(lz, p, rc);
	return data ? data + ((p % FAULT_PAGES) << GMEM_PAGE_SHIFT) : NULL;
}

void sf_lazy_free_hot(struct sf_lazy *lz)
{
	for (unsigned i = 0; i < lz->npieces; i++)
		free(lz->pieces[i].buf);
	lz->npieces = 0;
}

int sf_lazy_copy_hot(struct sf_lazy *lz)
{
	int rc = 0;

	for (unsigned i = 0; i < lz->npieces && !rc; i++)
		rc = copy_pages(lz, lz->pieces[i].first, lz->pieces[i].first + FAULT_PAGES,
				lz->pieces[i].buf, lz->pieces[i].first);
	sf_lazy_free_hot(lz);
	return rc;
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
		*rc = copy_pages(lz, p, MIN(p + FILL_PAGES, base + SF_BLOCK_PAGES), data, base);
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

/* Phase 1: the hot pieces, then wait for attach.  False: stop now. */
static bool prepare(struct sf_lazy *lz)
{
	bool go;
	int rc;

	/*
	 * The walk reads the listed pieces one after another, each chosen by
	 * the one before; with a cold cache that would be one disk wait per
	 * page-table level.  Ask for all of them first, so the disk reads them
	 * together.
	 */
	for (unsigned i = 0; i < lz->f->nhot; i++)
		(void)posix_fadvise(lz->f->fd, (off_t)(lz->f->ram_off + lz->f->hot_gpa[i]),
				    SF_PIECE_SIZE, POSIX_FADV_WILLNEED);
	rc = sf_hot_pages(&lz->f->st, lz->f->desc.ncpus, lz->f->ram_size, hot_page, lz, lz->hot,
			      MAX_HOT);

	/* The walk read the tables; read and check the pages' own pieces too. */
	for (int i = 0; i < rc; i++) {
		int err = 0;

		if (!hot_page(lz, lz->hot[i], &err) && err) {
			rc = err;
			break;
		}
	}

	pthread_mutex_lock(&lz->lock);
	lz->prepared = true;
	if (rc < 0) {
		lz->prepare_rc = rc;
		snprintf(lz->error, sizeof(lz->error), "%s", ferr_msg(rc));
	}
	pthread_cond_broadcast(&lz->cond);
	while (!lz->attached && !lz->stopping)
		pthread_cond_wait(&lz->cond, &lz->lock);
	go = lz->attached && !lz->stopping && !lz->prepare_rc;
	pthread_mutex_unlock(&lz->lock);
	return go;
}

void *sf_lazy_thread(void *arg)
{
	struct sf_lazy *lz = arg;
	bool more = true;
	int rc = 0;

	pthread_setname_np(pthread_self(), "ferry-lazy");
	ferr_clear();
	if (!prepare(lz))
		return NULL;
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

