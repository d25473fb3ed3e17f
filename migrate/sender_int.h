/* Internal to the migration source (sender*.c, converge.c). */
#ifndef FERRY_MIG_SENDER_INT_H
#define FERRY_MIG_SENDER_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "../transport/xport.h"
#include "migrate.h"
#include "pages.h"

#define MIG_CHUNK_PAGES 512u   /* work unit: 2 MiB, a multiple of 64 */

struct mig_worker {
	struct mig_out *m;
	unsigned index;
	pthread_t thread;
	bool started;
	uint64_t seen_gen;
	uint64_t batches;
	struct mig_batch batch;
};

struct mig_out {
	struct vm *vm;
	pthread_t thread;

	pthread_mutex_t lock;          /* everything below marked (L) */
	pthread_cond_t cond;
	struct mig_params p;           /* (L) downtime/bandwidth may change */
	enum mig_state state;          /* (L) */
	char error[512];               /* (L) */
	bool cancel_req;               /* (L) */
	bool committed;                /* (L) past the point of no return */
	bool recover_req;              /* (L) */
	bool paused_vm;                /* the migration paused the VM */
	_Atomic bool abort;            /* stop all I/O now */

	/* Channels: channel 0 carries control; all carry pages. */
	unsigned nch;
	struct xport *ch[MIG_MAX_CHANNELS];
	pthread_mutex_t ch_lock[MIG_MAX_CHANNELS];

	/* Replies from the destination, read by the reply thread. (L) */
	pthread_t reader;
	bool reader_started;
	bool got_loaded, got_running, reply_eof;
	uint64_t iter_done;            /* last iteration the destination applied */
	uint64_t running_at_ns;        /* the destination's resume time */
	uint8_t running_boot_id[16];

	/* Dirty tracking and the per-iteration job for the workers. */
	struct dlog *dlog;
	uint64_t *bitmap;
	uint64_t bitmap_words;
	unsigned nworkers;
	struct mig_worker *workers;
	pthread_cond_t job_cond;       /* with lock */
	uint64_t job_gen;              /* (L) */
	uint64_t job_iteration;
	bool job_skip_zero;
	uint64_t job_chunks;
	uint64_t job_t0, job_wire0;    /* when and where the iteration began */
	_Atomic uint64_t job_next;
	_Atomic bool cut_short;        /* the timeout ended pre-copy mid-iteration */
	unsigned job_done;             /* (L) */
	int job_error;                 /* (L) */
	char job_msg[256];             /* (L) */
	bool workers_stop;             /* (L) */

	/* Rate limiting (L). */
	uint64_t rate_next_ns;

	/* Compression: probes feed the auto decision. */
	_Atomic bool compress_now;
	_Atomic uint64_t probe_raw, probe_comp, probe_ns;

	/* Counters, updated by workers. */
	_Atomic uint64_t pages_sent, zero_pages, batches, comp_batches;

	/* Figures for query-migrate (L). */
	uint64_t iteration;
	uint64_t pages_remaining;      /* dirty at the last collection */
	uint64_t iter_t0, iter_pages0, iter_wire0;  /* where this iteration began */
	uint64_t dirty_rate_pps;
	uint64_t bandwidth_bps;
	uint64_t first_pass_bps, first_pass_bytes;
	uint64_t expected_downtime_ns;
	uint64_t t_start, t_setup_done, t_stop, t_end;
	uint64_t downtime_ns, dst_downtime_ns;
	uint64_t closed_wire_bytes;    /* sent on channels already closed */
	uint64_t t_pause_req, t_pages_done, t_state_done, t_loaded, t_running;
	unsigned nhistory;             /* (L) */
	struct mig_iteration history[MIG_HISTORY_MAX];
};

uint64_t mig_out_wire_bytes(struct mig_out *m);
/* Sets the error (first wins) and aborts all I/O.  Any thread. */
void mig_out_fail(struct mig_out *m, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
bool mig_out_should_stop(struct mig_out *m);

/* send_workers.c */
int mig_workers_start(struct mig_out *m);
void mig_workers_stop(struct mig_out *m);
/* Sends every page set in m->bitmap as iteration `iter`; then ITER_END. */
int mig_send_iteration(struct mig_out *m, uint64_t iter, bool skip_zero);

/* converge.c */
struct mig_converge {
	uint64_t prev_sent_pages;
	unsigned strikes;
	unsigned throttle_pct;
	uint64_t wire_per_page;       /* bytes on the wire per dirty page */
	uint64_t pages_per_sec;       /* pages applied per second, recent */
};
/* Decides after a collection whether the rest fits the downtime target. */
bool mig_converged(struct mig_out *m, struct mig_converge *c, uint64_t dirty_pages);
/* Throttles the vCPUs that dirty most when iterations stop shrinking. */
void mig_auto_converge(struct mig_out *m, struct mig_converge *c, uint64_t dirty_pages);
/*
 * Chooses whether workers compress (for --compress auto), given the link's
 * bandwidth in bytes per second.  Any thread.
 */
void mig_update_compression(struct mig_out *m, uint64_t bw);

#endif
