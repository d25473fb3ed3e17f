/*
 * Control-API commands for quick migration: save, query-save, save-cancel
 * and query-restore.  `save` only starts the save thread
 * (migrate/savefile_job.c); clients follow it with query-save, as they
 * follow a live migration with query-migrate.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../core/util.h"
#include "../migrate/lazy.h"
#include "../migrate/savefile.h"
#include "cli.h"
#include "runner.h"

static const char *const no_args[] = { NULL };

static json_t *ms(uint64_t ns)
{
	return json_real((double)ns / 1e6);
}

static struct sf_job *current_save(struct runner *r)
{
	struct sf_job *j;

	pthread_mutex_lock(&r->lock);
	j = r->save;
	pthread_mutex_unlock(&r->lock);
	return j;
}

static bool migration_running(struct runner *r)
{
	struct mig_out *m;

	pthread_mutex_lock(&r->lock);
	m = r->mig;
	pthread_mutex_unlock(&r->lock);
	return m && !mig_out_finished(m);
}

static json_t *cmd_save_start(struct ctl_call *c, void *opaque)
{
	static const char *const keys[] = { "file", "resume", "max_bandwidth", NULL };
	struct runner *r = opaque;
	struct sf_job_params p = { 0 };
	const char *file = NULL;
	struct sf_job *j, *old;
	struct vm *vm;
	int rc;

	if (!ctl_args_only(c, keys) || !ctl_arg_str(c, "file", true, &file) ||
	    !ctl_arg_bool(c, "resume", &p.resume) ||
	    !ctl_arg_u64(c, "max_bandwidth", false, 0, UINT64_MAX / 2, &p.max_bandwidth) ||
	    !(vm = runner_vm(r, c)))
		return NULL;
	if (!*file || strlen(file) >= sizeof(p.path))
		return ctl_fail(c, "InvalidParameter", "argument 'file' is empty or too long");
	snprintf(p.path, sizeof(p.path), "%s", file);
	if (vm_run_state(vm) == VM_ENDED)
		return ctl_fail(c, "InvalidState", "the VM has ended");
	if (migration_running(r) || runner_handing_over(r))
		return ctl_fail(c, "InvalidState", "a live migration of this VM is in progress");
	pthread_mutex_lock(&r->lock);
	old = r->save;
	if (old && !sf_job_finished(old)) {
		pthread_mutex_unlock(&r->lock);
		return ctl_fail(c, "InvalidState", "a save is already in progress");
	}
	rc = sf_job_start(vm, &p, r->lazy, &j);
	if (rc) {
		pthread_mutex_unlock(&r->lock);
		return ctl_fail(c, "GenericError", "%s", ferr_msg(rc));
	}
	r->save = j;
	pthread_mutex_unlock(&r->lock);
	sf_job_free(old);
	return json_object();
}

static json_t *cmd_query_save(struct ctl_call *c, void *opaque)
{
	struct sf_job_stats st;
	struct sf_job *j;
	json_t *o;

	if (!ctl_args_only(c, no_args))
		return NULL;
	j = current_save(opaque);
	if (!j)
		return json_pack("{s:s}", "state", "none");
	sf_job_query(j, &st);
	o = json_pack("{s:s, s:s, s:s, s:b, s:I, s:I, s:I, s:o, s:o, s:I}",
		      "state", sf_job_state_name(st.state), "phase", sf_phase_name(st.phase),
		      "file", st.path, "resume", st.resume,
		      "ram_total_bytes", (json_int_t)st.ram_total,
		      "ram_done_bytes", (json_int_t)st.ram_done,
		      "written_bytes", (json_int_t)st.bytes_written,
		      "total_ms", ms(st.total_ns), "paused_ms", ms(st.paused_ns),
		      "throughput_bps", (json_int_t)(st.total_ns ? (double)st.bytes_written * 1e9 /
						    (double)st.total_ns : 0));
	if (st.state == SF_JOB_COMPLETED)
		json_object_set_new(o, "result", json_pack(
			"{s:I, s:I, s:I, s:o, s:o}",
			"file_bytes", (json_int_t)st.res.file_size,
			"data_blocks", (json_int_t)st.res.data_blocks,
			"stored_pages", (json_int_t)st.res.stored_pages,
			"write_ms", ms(st.res.write_ns), "sync_ms", ms(st.res.sync_ns)));
	if (st.error[0])
		json_object_set_new(o, "error", json_string(st.error));
	return o;
}

static json_t *cmd_save_cancel(struct ctl_call *c, void *opaque)
{
	struct sf_job *j;
	int rc;

	if (!ctl_args_only(c, no_args))
		return NULL;
	j = current_save(opaque);
	if (!j)
		return ctl_fail(c, "InvalidState", "no save has been started");
	rc = sf_job_cancel(j);
	if (rc)
		return ctl_fail(c, "InvalidState", "%s", ferr_msg(rc));
	return json_object();
}

static json_t *cmd_query_restore(struct ctl_call *c, void *opaque)
{
	struct runner *r = opaque;
	struct sf_lazy_stats st;
	json_t *o;

	if (!ctl_args_only(c, no_args))
		return NULL;
	if (!r->restore_path)
		return json_pack("{s:s}", "state", "none");
	o = json_pack("{s:s, s:s, s:s, s:o}", "state", "restored", "file", r->restore_path,
		      "mode", r->lazy ? "lazy" : "eager", "restore_ms", ms(r->restore_ns));
	if (!r->lazy)
		return o;
	sf_lazy_query(r->lazy, &st);
	json_object_set_new(o, "lazy", json_pack(
		"{s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}",
		"state", st.failed ? "failed" : st.complete ? "complete" : "loading",
		"data_blocks", (json_int_t)st.data_blocks, "blocks_done", (json_int_t)st.blocks_done,
		"faults", (json_int_t)st.faults, "read_bytes", (json_int_t)st.bytes_read,
		"hot_read_bytes", (json_int_t)st.hot_read_bytes,
		"fault_max_ms", ms(st.fault_max_ns), "first_fault_ms", ms(st.first_fault_ns),
		"complete_ms", ms(st.complete_ns)));
	if (st.error[0])
		json_object_set_new(json_object_get(o, "lazy"), "error", json_string(st.error));
	return o;
}

bool runner_ready_to_migrate(struct runner *r, struct ctl_call *c)
{
	struct sf_job *j = current_save(r);
	int rc;

	if (j && !sf_job_finished(j)) {
		ctl_fail(c, "InvalidState", "a save of this VM is in progress");
		return false;
	}
	/* A migration reads RAM by the memfd's extents: all of it must be in. */
	if (r->lazy && (rc = sf_lazy_wait(r->lazy, NULL)) != 0) {
		ctl_fail(c, "InvalidState", "the VM's memory was not restored: %s", ferr_msg(rc));
		return false;
	}
	return true;
}

void runner_save_cleanup(struct runner *r)
{
	struct sf_job *j;

	pthread_mutex_lock(&r->lock);
	j = r->save;
	r->save = NULL;
	pthread_mutex_unlock(&r->lock);
	sf_job_free(j);
	sf_lazy_free(r->lazy);
	r->lazy = NULL;
}

static const struct ctl_command save_cmds[] = {
	{ "save", cmd_save_start, "saves the VM to a file: file, resume (default: stay paused), "
	  "max_bandwidth" },
	{ "query-save", cmd_query_save, "state and figures of the current or last save" },
	{ "save-cancel", cmd_save_cancel, "cancels a save; the VM goes back to how it was" },
	{ "query-restore", cmd_query_restore,
	  "how this VM was restored, and the progress of a lazy restore" },
};

int save_commands_register(struct ctl_server *s, struct runner *r)
{
	return ctl_register(s, save_cmds, ARRAY_SIZE(save_cmds), r);
}
