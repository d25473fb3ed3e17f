/*
 * The two engines behind blkio.h.  io_uring submits a batch in one system
 * call and the kernel completes buffered reads from the page cache inline;
 * the thread pool is the fallback for kernels that refuse io_uring
 * (kernel.io_uring_disabled, seccomp).  A short read or write counts as an
 * I/O error: requests are checked to lie inside the disk, so on a regular
 * file or block device it only happens when the host's storage fails.
 */
#include "blkio.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/util.h"

#define POOL_THREADS 4

struct job {
	struct blkio_req r;
	int64_t res;
};

struct blkio {
	char path[256];
	bool readonly;
	int fd;
	int efd;
	uint64_t size;
	unsigned depth, inflight, queued;
	bool uring;
	struct io_uring ring;
	/* Thread pool. */
	pthread_t threads[POOL_THREADS];
	unsigned nthreads;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	struct job *todo, *done;      /* (lock) arrays of depth */
	unsigned ntodo, ndone;        /* (lock) */
	struct job *staged;           /* queued, not yet submitted (owner) */
};

static int64_t run_job(struct blkio *b, const struct blkio_req *r)
{
	ssize_t n;
	size_t want = 0;

	if (r->op == BLKIO_FLUSH)
		return fdatasync(b->fd) < 0 ? -errno : 0;
	for (unsigned i = 0; i < r->niov; i++)
		want += r->iov[i].iov_len;
	do
		n = r->op == BLKIO_READ ? preadv(b->fd, r->iov, (int)r->niov, (off_t)r->offset)
					: pwritev(b->fd, r->iov, (int)r->niov, (off_t)r->offset);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == want ? n : -EIO;
}

static void *pool_thread(void *arg)
{
	struct blkio *b = arg;

	pthread_setname_np(pthread_self(), "vsp-blkio");
	pthread_mutex_lock(&b->lock);
	for (;;) {
		struct job j;

		while (!b->stop && !b->ntodo)
			pthread_cond_wait(&b->cond, &b->lock);
		if (b->stop)
			break;
		j = b->todo[--b->ntodo];
		pthread_mutex_unlock(&b->lock);
		j.res = run_job(b, &j.r);
		pthread_mutex_lock(&b->lock);
		b->done[b->ndone++] = j;
		(void)eventfd_write(b->efd, 1);
	}
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

static int open_file(struct blkio *b)
{
	struct stat st;
	int fd = open(b->path, (b->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);

	if (fd < 0)
		return ferr_sys(errno, "cannot open disk %s", b->path);
	if (fstat(fd, &st) < 0) {
		close(fd);
		return ferr_sys(errno, "cannot stat disk %s", b->path);
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &b->size) < 0) {
			close(fd);
			return ferr_sys(errno, "cannot size block device %s", b->path);
		}
	} else if (S_ISREG(st.st_mode)) {
		b->size = (uint64_t)st.st_size;
	} else {
		close(fd);
		return ferr(EINVAL, "disk %s is neither a regular file nor a block device", b->path);
	}
	if (b->fd >= 0)
		close(b->fd);
	b->fd = fd;
	return 0;
}

int blkio_open(const char *path, bool readonly, unsigned depth, bool force_threads,
	       struct blkio **out)
{
	struct blkio *b = calloc(1, sizeof(*b));
	int rc;

	if (!b)
		return -ENOMEM;
	snprintf(b->path, sizeof(b->path), "%s", path);
	b->readonly = readonly;
	b->fd = -1;
	b->depth = depth;
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->cond, NULL);
	b->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	b->todo = calloc(depth, sizeof(*b->todo));
	b->done = calloc(depth, sizeof(*b->done));
	b->staged = calloc(depth, sizeof(*b->staged));
	if (b->efd < 0 || !b->todo || !b->done || !b->staged) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = open_file(b);
	if (rc)
		goto fail;
	if (!force_threads && io_uring_queue_init(depth, &b->ring, 0) == 0) {
		if (io_uring_register_eventfd(&b->ring, b->efd) == 0)
			b->uring = true;
		else
			io_uring_queue_exit(&b->ring);
	}
	if (!b->uring)
		for (; b->nthreads < POOL_THREADS; b->nthreads++) {
			rc = pthread_create(&b->threads[b->nthreads], NULL, pool_thread, b);
			if (rc) {
				rc = ferr_sys(rc, "cannot start a disk I/O thread");
				goto fail;
			}
		}
	*out = b;
	return 0;
fail:
	blkio_close(b);
	return rc;
}

void blkio_close(struct blkio *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	b->stop = true;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
	for (unsigned i = 0; i < b->nthreads; i++)
		pthread_join(b->threads[i], NULL);
	if (b->uring)
		io_uring_queue_exit(&b->ring);
	if (b->fd >= 0)
		close(b->fd);
	if (b->efd >= 0)
		close(b->efd);
	free(b->todo);
	free(b->done);
	free(b->staged);
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->cond);
	free(b);
}

uint64_t blkio_size(const struct blkio *b) { return b->size; }
const char *blkio_engine(const struct blkio *b) { return b->uring ? "io_uring" : "threads"; }
int blkio_event_fd(const struct blkio *b) { return b->efd; }
unsigned blkio_inflight(const struct blkio *b) { return b->inflight; }

int blkio_queue(struct blkio *b, const struct blkio_req *r)
{
	if (b->inflight + b->queued >= b->depth)
		return -EBUSY;
	if (b->uring) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);

		if (!sqe)
			return -EBUSY;
		if (r->op == BLKIO_FLUSH)
			io_uring_prep_fsync(sqe, b->fd, IORING_FSYNC_DATASYNC);
		else if (r->op == BLKIO_READ)
			io_uring_prep_readv(sqe, b->fd, r->iov, r->niov, r->offset);
		else
			io_uring_prep_writev(sqe, b->fd, r->iov, r->niov, r->offset);
		io_uring_sqe_set_data64(sqe, r->tag);
	} else {
		b->staged[b->queued] = (struct job){ .r = *r };
	}
	b->queued++;
	return 0;
}

int blkio_submit(struct blkio *b)
{
	int rc = 0;

	if (!b->queued)
		return 0;
	if (b->uring) {
		rc = io_uring_submit(&b->ring);
		if (rc < 0)
			return ferr(rc, "io_uring_submit failed: %s", strerror(-rc));
		b->inflight += (unsigned)rc;
		b->queued -= MIN((unsigned)rc, b->queued);
		return 0;
	}
	pthread_mutex_lock(&b->lock);
	for (unsigned i = 0; i < b->queued; i++)
		b->todo[b->ntodo++] = b->staged[i];
	b->inflight += b->queued;
	b->queued = 0;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
	return rc;
}

unsigned blkio_reap(struct blkio *b, blkio_done_fn done, void *arg)
{
	unsigned n = 0;

	/* No system call here: the owner clears the eventfd when poll() says
	 * it is readable, and reaps before it sleeps. */
	if (b->uring) {
		struct io_uring_cqe *cqe;

		while (io_uring_peek_cqe(&b->ring, &cqe) == 0) {
			uint64_t tag = io_uring_cqe_get_data64(cqe);
			int64_t res = cqe->res;

			io_uring_cqe_seen(&b->ring, cqe);
			b->inflight--;
			n++;
			done(arg, tag, res);
		}
		return n;
	}
	for (;;) {
		struct job j;

		pthread_mutex_lock(&b->lock);
		if (!b->ndone) {
			pthread_mutex_unlock(&b->lock);
			break;
		}
		j = b->done[--b->ndone];
		pthread_mutex_unlock(&b->lock);
		b->inflight--;
		n++;
		done(arg, j.r.tag, j.res);
	}
	return n;
}

int blkio_drain(struct blkio *b, unsigned timeout_ms, blkio_done_fn done, void *arg)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000;

	if (blkio_submit(b) < 0)
		return -EIO;
	while (b->inflight) {
		struct pollfd p = { .fd = b->efd, .events = POLLIN };

		eventfd_t v;

		if (now_ns() >= deadline)
			return ferr(ETIMEDOUT, "%u disk requests still in flight after %u ms",
				    b->inflight, timeout_ms);
		(void)eventfd_read(b->efd, &v);
		if (!blkio_reap(b, done, arg))
			poll(&p, 1, 10);
	}
	return 0;
}

int blkio_sync(struct blkio *b)
{
	if (!b->readonly && fdatasync(b->fd) < 0)
		return ferr_sys(errno, "fdatasync of disk %s failed", b->path);
	return 0;
}

int blkio_reopen(struct blkio *b)
{
	if (b->inflight || b->queued)
		return ferr(EBUSY, "disk %s has requests in flight", b->path);
	return open_file(b);
}
