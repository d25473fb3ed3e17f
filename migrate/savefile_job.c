/*
 * A save running on its own thread, so that the control API can start it,
 * follow it with query-save and cancel it.  The thread owns the VM's run
 * state for the duration: it pauses the VM, and afterwards either resumes
 * it (`resume`, for a checkpoint), leaves it paused (for moving it), or,
 * when the save failed, puts it back the way it was.
 */
#include "savefile.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/util.h"
#include "lazy.h"

struct sf_job {
	struct vm *vm;
	struct sf_job_params p;
	struct sf_lazy *lazy;
	struct sf_progress pr;
	pthread_t thread;

	pthread_mutex_t lock;
	enum sf_job_state state;        /* (lock) */
	char error[512];                /* (lock) */
	uint64_t t_start, t_end;        /* (lock) */
	uint64_t t_paused, t_unpaused;  /* (lock) */
	struct sf_save_result res;      /* (lock) */
};

const char *sf_job_state_name(enum sf_job_state s)
{
	static const char *const names[] = {
		[SF_JOB_WAITING] = "waiting", [SF_JOB_SAVING] = "saving",
		[SF_JOB_COMPLETED] = "completed", [SF_JOB_FAILED] = "failed",
		[SF_JOB_CANCELLED] = "cancelled",
	};

	return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "unknown";
}

const char *sf_phase_name(enum sf_phase p)
{
	static const char *const names[] = {
		[SF_PHASE_STATE] = "state", [SF_PHASE_RAM] = "ram",
		[SF_PHASE_SYNC] = "sync", [SF_PHASE_DONE] = "done",
	};

	return (unsigned)p < ARRAY_SIZE(names) ? names[p] : "unknown";
}

static void set_state(struct sf_job *j, enum sf_job_state s)
{
	pthread_mutex_lock(&j->lock);
	j->state = s;
	pthread_mutex_unlock(&j->lock);
}

static void *save_thread(void *arg)
{
	struct sf_job *j = arg;
	enum vm_run_state before;
	struct sf_save_result res = { 0 };
	bool resume;
	int rc = 0;

	pthread_setname_np(pthread_self(), "ferry-save");
	ferr_clear();
	/* Before pausing: RAM must be all there, and waiting costs no downtime. */
	if (j->lazy)
		rc = sf_lazy_wait(j->lazy, &j->pr.cancel);
	before = vm_run_state(j->vm);
	if (!rc && before == VM_ENDED)
		rc = ferr(EINVAL, "the VM has ended");
	if (!rc && atomic_load(&j->pr.cancel))
		rc = ferr(ECANCELED, "the save was cancelled");
	if (!rc) {
		set_state(j, SF_JOB_SAVING);
		vm_pause(j->vm, NULL);
		pthread_mutex_lock(&j->lock);
		j->t_paused = now_ns();
		pthread_mutex_unlock(&j->lock);
		rc = sf_save(j->vm, j->p.path, j->p.max_bandwidth, &j->pr, &res);
		/*
		 * Resume after a checkpoint, or after a failure if it was running;
		 * never when someone else ran or ended it meanwhile (-ESTALE).
		 */
		resume = rc == 0 ? j->p.resume : rc != -ESTALE && before == VM_RUNNING;
		if (resume)
			vm_resume(j->vm);
		pthread_mutex_lock(&j->lock);
		j->t_unpaused = now_ns();
		pthread_mutex_unlock(&j->lock);
	}
	pthread_mutex_lock(&j->lock);
	j->t_end = now_ns();
	j->res = res;
	if (rc) {
		snprintf(j->error, sizeof(j->error), "%s", ferr_msg(rc));
		j->state = rc == -ECANCELED ? SF_JOB_CANCELLED : SF_JOB_FAILED;
	} else {
		j->state = SF_JOB_COMPLETED;
	}
	pthread_mutex_unlock(&j->lock);
	if (rc)
		flog("save %s: %s", sf_job_state_name(j->state), j->error);
	return NULL;
}

int sf_job_start(struct vm *vm, const struct sf_job_params *p, struct sf_lazy *lazy,
		 struct sf_job **out)
{
	struct sf_job *j;
	int rc;

	if (vm_run_state(vm) == VM_ENDED)
		return ferr(EINVAL, "the VM has ended");
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->vm = vm;
	j->p = *p;
	j->lazy = lazy;
	j->state = lazy ? SF_JOB_WAITING : SF_JOB_SAVING;
	j->t_start = now_ns();
	pthread_mutex_init(&j->lock, NULL);
	rc = pthread_create(&j->thread, NULL, save_thread, j);
	if (rc) {
		pthread_mutex_destroy(&j->lock);
		free(j);
		return ferr_sys(rc, "cannot start the save thread");
	}
	*out = j;
	return 0;
}

void sf_job_query(struct sf_job *j, struct sf_job_stats *st)
{
	uint64_t now = now_ns();

	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&j->lock);
	st->state = j->state;
	snprintf(st->path, sizeof(st->path), "%s", j->p.path);
	st->resume = j->p.resume;
	st->total_ns = (j->t_end ? j->t_end : now) - j->t_start;
	if (j->t_paused)
		st->paused_ns = (j->t_unpaused ? j->t_unpaused : now) - j->t_paused;
	st->res = j->res;
	snprintf(st->error, sizeof(st->error), "%s", j->error);
	pthread_mutex_unlock(&j->lock);
	st->phase = (enum sf_phase)atomic_load(&j->pr.phase);
	st->ram_done = atomic_load(&j->pr.ram_done);
	st->ram_total = atomic_load(&j->pr.ram_total);
	st->bytes_written = atomic_load(&j->pr.bytes_written);
}

int sf_job_cancel(struct sf_job *j)
{
	int rc = 0;

	pthread_mutex_lock(&j->lock);
	if (j->state >= SF_JOB_COMPLETED)
		rc = ferr(EINVAL, "the save has already %s", sf_job_state_name(j->state));
	else
		atomic_store(&j->pr.cancel, true);
	pthread_mutex_unlock(&j->lock);
	return rc;
}

bool sf_job_finished(struct sf_job *j)
{
	bool done;

	pthread_mutex_lock(&j->lock);
	done = j->state >= SF_JOB_COMPLETED;
	pthread_mutex_unlock(&j->lock);
	return done;
}

void sf_job_free(struct sf_job *j)
{
	if (!j)
		return;
	atomic_store(&j->pr.cancel, true);
	pthread_join(j->thread, NULL);
	pthread_mutex_destroy(&j->lock);
	free(j);
}
