/*
 * Asynchronous block I/O on a host file or block device for the storage
 * provider: io_uring (liburing) where the kernel allows it, otherwise a
 * small pool of worker threads doing preadv/pwritev/fdatasync.  Both
 * signal completions on an eventfd and hand them back through reap().
 *
 * One owner thread calls queue/submit/reap/drain (the storage channel's
 * thread, or the migration thread while that one is blocked on the
 * channel lock); open and close on the main thread.
 */
#ifndef FERRY_VSP_BLKIO_H
#define FERRY_VSP_BLKIO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct blkio;

enum blkio_op { BLKIO_READ = 1, BLKIO_WRITE, BLKIO_FLUSH };

struct blkio_req {
	enum blkio_op op;
	uint64_t offset;
	const struct iovec *iov;      /* must stay valid until completion */
	unsigned niov;
	uint64_t tag;
};

/* res: bytes transferred (0 for a flush) or -errno. */
typedef void (*blkio_done_fn)(void *arg, uint64_t tag, int64_t res);

/* depth: most requests in flight.  force_threads skips io_uring. */
int blkio_open(const char *path, bool readonly, unsigned depth, bool force_threads,
	       struct blkio **out);
void blkio_close(struct blkio *b);
uint64_t blkio_size(const struct blkio *b);
const char *blkio_engine(const struct blkio *b);
int blkio_event_fd(const struct blkio *b);
unsigned blkio_inflight(const struct blkio *b);
/* Queues one request (-EBUSY when depth are in flight); submit() sends them. */
int blkio_queue(struct blkio *b, const struct blkio_req *r);
int blkio_submit(struct blkio *b);
/*
 * Hands every finished request to done; never blocks and makes no system
 * call.  The event fd stays readable until its owner reads it (after poll).
 */
unsigned blkio_reap(struct blkio *b, blkio_done_fn done, void *arg);
/* Waits until nothing is in flight (reaping as it goes); -ETIMEDOUT. */
int blkio_drain(struct blkio *b, unsigned timeout_ms, blkio_done_fn done, void *arg);
/* fdatasync on the caller's thread. */
int blkio_sync(struct blkio *b);
/* Reopens the path (a destination taking over shared storage). */
int blkio_reopen(struct blkio *b);

#endif
