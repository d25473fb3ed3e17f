/*
 * Live migration, source side: `migrate` starts a migration thread that
 * streams a running VM to a destination ferry and, once the destination has
 * loaded and verified everything, hands the VM over.  Until that commit the
 * source VM keeps running (or is resumed) exactly as before; after it, the
 * source never runs the VM again.
 *
 * The control API drives it: mig_out_start, mig_out_query, mig_out_cancel,
 * mig_out_set_params, mig_out_recover.  All are safe from any thread.
 */
#ifndef FERRY_MIGRATE_H
#define FERRY_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/vm.h"
#include "../dirtylog/dirtylog.h"

enum mig_compress { MIG_COMPRESS_AUTO, MIG_COMPRESS_ZSTD, MIG_COMPRESS_NONE };

#define MIG_DEFAULT_DOWNTIME_MS 10
#define MIG_MAX_CHANNELS 16

struct mig_params {
	char uri[128];
	uint64_t downtime_ns;        /* switch over when the rest fits this */
	unsigned channels;           /* 1 to MIG_MAX_CHANNELS */
	enum mig_compress compress;
	uint64_t max_bandwidth;      /* bytes per second; 0: no limit */
	uint64_t timeout_ns;         /* 0: no overall timeout */
	bool timeout_switchover;     /* on timeout, force the switchover */
	bool verify;                 /* send a digest of every page */
	unsigned throttle_max_pct;   /* auto-converge never goes above this */
	enum dlog_backend dirty_log;
};

enum mig_state {
	MIG_NONE,
	MIG_SETUP,        /* connecting, checking the VM description */
	MIG_ACTIVE,       /* pre-copy iterations, the VM running */
	MIG_STOP_COPY,    /* vCPUs stopped, sending the rest */
	MIG_COMPLETING,   /* waiting for the destination to load it */
	MIG_COMPLETED,    /* the destination runs the VM */
	MIG_FAILED,
	MIG_CANCELLED,
	MIG_UNCONFIRMED,  /* committed, but the destination never said it runs */
};

const char *mig_state_name(enum mig_state s);
int mig_compress_parse(const char *s, enum mig_compress *out);
const char *mig_compress_name(enum mig_compress c);

#define MIG_HISTORY_MAX 64

/* One pre-copy iteration (or the final one), for timelines. */
struct mig_iteration {
	uint32_t iteration;
	uint32_t throttle_pct;
	uint64_t start_ns;            /* since the migration started */
	uint64_t duration_ns;         /* from its collection until ITER_DONE */
	uint64_t dirty_pages;         /* collected for it */
	uint64_t pages_sent;          /* pages and zero markers sent */
	uint64_t wire_bytes;
};

struct mig_stats {
	enum mig_state state;
	uint64_t iteration;
	uint64_t ram_bytes;
	uint64_t total_ns;            /* so far, or in all once finished */
	uint64_t setup_ns;
	uint64_t downtime_ns;         /* source view: stop to destination running */
	uint64_t dst_downtime_ns;     /* destination's own measurement */
	uint64_t expected_downtime_ns;
	uint64_t bytes_wire;          /* everything sent on all channels */
	uint64_t pages_sent;          /* non-zero pages sent */
	uint64_t zero_pages;          /* zero-page markers sent */
	uint64_t pages_remaining;     /* dirty at the last collection, not yet sent */
	uint64_t dirty_rate_pps;
	uint64_t bandwidth_bps;       /* wire bytes per second, recent */
	uint64_t throughput_bps;      /* wire bytes per second, whole migration */
	uint64_t first_pass_bps;      /* wire bytes per second of iteration 1 */
	uint64_t first_pass_bytes;
	uint64_t eta_ns;
	uint64_t compressed_batches;
	uint64_t batches;
	unsigned throttle_pct;        /* the highest vCPU throttle in force */
	unsigned channels;
	bool compressing;
	/* Where the downtime went: from the vCPUs stopping to each mark. */
	uint64_t sw_paused_ns;        /* all vCPUs out of KVM_RUN */
	uint64_t sw_pages_ns;         /* final dirty pages sent */
	uint64_t sw_state_ns;         /* vCPU, VM and device state sent (+digests) */
	uint64_t sw_loaded_ns;        /* destination said LOADED */
	uint64_t sw_running_ns;       /* destination said RUNNING */
	unsigned nhistory;
	struct mig_iteration history[MIG_HISTORY_MAX];
	char error[512];
};

struct mig_out;

/*
 * Starts migrating `vm`.  Returns at once; the work happens on a thread.
 * -EBUSY if a migration of this VM is already running.
 */
int mig_out_start(struct vm *vm, const struct mig_params *p, struct mig_out **out);
void mig_out_query(struct mig_out *m, struct mig_stats *st);
/* Cancels unless already committed: -EINVAL with a message if too late. */
int mig_out_cancel(struct mig_out *m);
/* Changes the downtime target and/or bandwidth limit (UINT64_MAX: keep). */
int mig_out_set_params(struct mig_out *m, uint64_t downtime_ns, uint64_t max_bandwidth);
/*
 * After MIG_UNCONFIRMED, when the operator has made sure the destination is
 * not running the VM: resume it here.  -EINVAL in any other state.
 */
int mig_out_recover(struct mig_out *m);
bool mig_out_finished(struct mig_out *m);
/* Waits for the migration thread and frees everything. */
void mig_out_free(struct mig_out *m);

#endif
