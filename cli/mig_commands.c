/*
 * Control-API commands for live migration: migrate, query-migrate,
 * migrate-cancel, migrate-set-parameters and migrate-recover.  migrate only
 * starts the migration thread; clients follow it with query-migrate.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../core/util.h"
#include "../transport/xport.h"
#include "cli.h"
#include "runner.h"

static json_t *ms(uint64_t ns)
{
	return json_real((double)ns / 1e6);
}

static json_t *stats_json(const struct mig_stats *st)
{
	json_t *o = json_object();

	json_object_set_new(o, "state", json_string(mig_state_name(st->state)));
	json_object_set_new(o, "iteration", json_integer((json_int_t)st->iteration));
	json_object_set_new(o, "ram_bytes", json_integer((json_int_t)st->ram_bytes));
	json_object_set_new(o, "total_ms", ms(st->total_ns));
	json_object_set_new(o, "setup_ms", ms(st->setup_ns));
	json_object_set_new(o, "downtime_ms", ms(st->downtime_ns));
	json_object_set_new(o, "expected_downtime_ms", ms(st->expected_downtime_ns));
	json_object_set_new(o, "transferred_bytes", json_integer((json_int_t)st->bytes_wire));
	json_object_set_new(o, "pages_sent", json_integer((json_int_t)st->pages_sent));
	json_object_set_new(o, "zero_pages", json_integer((json_int_t)st->zero_pages));
	json_object_set_new(o, "remaining_bytes",
			    json_integer((json_int_t)(st->pages_remaining * GMEM_PAGE_SIZE)));
	json_object_set_new(o, "dirty_rate_pps", json_integer((json_int_t)st->dirty_rate_pps));
	json_object_set_new(o, "bandwidth_bps", json_integer((json_int_t)st->bandwidth_bps));
	json_object_set_new(o, "throughput_bps", json_integer((json_int_t)st->throughput_bps));
	json_object_set_new(o, "first_pass_bps", json_integer((json_int_t)st->first_pass_bps));
	json_object_set_new(o, "first_pass_bytes", json_integer((json_int_t)st->first_pass_bytes));
	json_object_set_new(o, "eta_ms", ms(st->eta_ns));
	json_object_set_new(o, "batches", json_integer((json_int_t)st->batches));
	json_object_set_new(o, "compressed_batches",
			    json_integer((json_int_t)st->compressed_batches));
	json_object_set_new(o, "compressing", json_boolean(st->compressing));
	json_object_set_new(o, "throttle_pct", json_integer(st->throttle_pct));
	json_object_set_new(o, "channels", json_integer(st->channels));
	{
		json_t *hist = json_array();

		for (unsigned i = 0; i < st->nhistory; i++) {
			const struct mig_iteration *h = &st->history[i];

			json_array_append_new(hist, json_pack(
				"{s:i, s:o, s:o, s:I, s:I, s:I, s:i}",
				"iteration", (int)h->iteration, "start_ms", ms(h->start_ns),
				"duration_ms", ms(h->duration_ns),
				"dirty_pages", (json_int_t)h->dirty_pages,
				"pages_sent", (json_int_t)h->pages_sent,
				"wire_bytes", (json_int_t)h->wire_bytes,
				"throttle_pct", (int)h->throttle_pct));
		}
		json_object_set_new(o, "iterations", hist);
	}
	if (st->sw_paused_ns)
		json_object_set_new(o, "switchover", json_pack(
			"{s:o, s:o, s:o, s:o, s:o}",
			"pause_ms", ms(st->sw_paused_ns), "pages_sent_ms", ms(st->sw_pages_ns),
			"state_sent_ms", ms(st->sw_state_ns), "loaded_ms", ms(st->sw_loaded_ns),
			"running_ms", ms(st->sw_running_ns)));
	if (st->error[0])
		json_object_set_new(o, "error", json_string(st->error));
	return o;
}

static json_t *incoming_json(const struct mig_in_stats *st)
{
	json_t *o = json_object();

	json_object_set_new(o, "state", json_string(mig_in_state_name(st->state)));
	json_object_set_new(o, "role", json_string("destination"));
	json_object_set_new(o, "source", json_string(st->source));
	json_object_set_new(o, "total_ms", ms(st->total_ns));
	json_object_set_new(o, "downtime_ms", ms(st->downtime_ns));
	json_object_set_new(o, "received_bytes", json_integer((json_int_t)st->bytes));
	json_object_set_new(o, "pages", json_integer((json_int_t)st->pages));
	json_object_set_new(o, "iteration", json_integer((json_int_t)st->iteration));
	json_object_set_new(o, "channels", json_integer(st->channels));
	if (st->error[0])
		json_object_set_new(o, "error", json_string(st->error));
	return o;
}

static json_t *cmd_migrate_start(struct ctl_call *c, void *opaque)
{
	static const char *const keys[] = {
		"uri", "downtime_ms", "channels", "compress", "max_bandwidth", "timeout",
		"on_timeout", "verify", "throttle_max", NULL,
	};
	struct runner *r = opaque;
	struct mig_params p = {
		.downtime_ns = MIG_DEFAULT_DOWNTIME_MS * 1000000ull, .channels = 1,
		.compress = MIG_COMPRESS_AUTO, .throttle_max_pct = 90,
	};
	const char *uri = NULL, *compress = NULL, *on_timeout = NULL;
	uint64_t downtime_ms = MIG_DEFAULT_DOWNTIME_MS, channels = 1, timeout = 0, tmax = 90;
	struct mig_out *m;
	struct vm *vm;
	char host[64], scheme[8];
	uint16_t port;
	int rc;

	if (!ctl_args_only(c, keys) || !ctl_arg_str(c, "uri", true, &uri) ||
	    !ctl_arg_u64(c, "downtime_ms", false, 1, 60000, &downtime_ms) ||
	    !ctl_arg_u64(c, "channels", false, 1, MIG_MAX_CHANNELS, &channels) ||
	    !ctl_arg_str(c, "compress", false, &compress) ||
	    !ctl_arg_u64(c, "max_bandwidth", false, 0, UINT64_MAX / 2, &p.max_bandwidth) ||
	    !ctl_arg_u64(c, "timeout", false, 0, 86400, &timeout) ||
	    !ctl_arg_str(c, "on_timeout", false, &on_timeout) ||
	    !ctl_arg_bool(c, "verify", &p.verify) ||
	    !ctl_arg_u64(c, "throttle_max", false, 0, 99, &tmax) || !(vm = runner_vm(r, c)))
		return NULL;
	if (xport_parse_uri(uri, scheme, sizeof(scheme), host, sizeof(host), &port) < 0)
		return ctl_fail(c, "InvalidParameter", "%s", ferr_msg(-EINVAL));
	if (compress && mig_compress_parse(compress, &p.compress) < 0)
		return ctl_fail(c, "InvalidParameter", "%s", ferr_msg(-EINVAL));
	if (on_timeout && strcmp(on_timeout, "cancel") != 0 && strcmp(on_timeout, "switchover") != 0)
		return ctl_fail(c, "InvalidParameter", "on_timeout must be cancel or switchover");
	snprintf(p.uri, sizeof(p.uri), "%s", uri);
	p.downtime_ns = downtime_ms * 1000000ull;
	p.channels = (unsigned)channels;
	p.timeout_ns = timeout * 1000000000ull;
	p.timeout_switchover = on_timeout && strcmp(on_timeout, "switchover") == 0;
	p.throttle_max_pct = (unsigned)tmax;
	p.dirty_log = r->dirty_log;
	if (!runner_ready_to_migrate(r, c))
		return NULL;

	pthread_mutex_lock(&r->lock);
	if (r->mig && !mig_out_finished(r->mig)) {
		pthread_mutex_unlock(&r->lock);
		return ctl_fail(c, "InvalidState", "a migration is already in progress");
	}
	if (vm_run_state(vm) == VM_ENDED) {
		pthread_mutex_unlock(&r->lock);
		return ctl_fail(c, "InvalidState", "the VM has ended");
	}
	rc = mig_out_start(vm, &p, &m);
	if (rc) {
		pthread_mutex_unlock(&r->lock);
		return ctl_fail(c, "GenericError", "%s", ferr_msg(rc));
	}
	/* The previous migration (failed or cancelled) is finished; drop it. */
	if (r->mig)
		mig_out_free(r->mig);
	r->mig = m;
	r->final_status_read = false;
	pthread_mutex_unlock(&r->lock);
	return json_object();
}

static json_t *cmd_query_migrate(struct ctl_call *c, void *opaque)
{
	static const char *const no_args[] = { NULL };
	struct runner *r = opaque;
	struct mig_stats st;
	struct mig_out *m;

	if (!ctl_args_only(c, no_args))
		return NULL;
	pthread_mutex_lock(&r->lock);
	m = r->mig;
	pthread_mutex_unlock(&r->lock);
	if (m) {
		mig_out_query(m, &st);
		if (st.state == MIG_COMPLETED || st.state == MIG_FAILED ||
		    st.state == MIG_CANCELLED) {
			pthread_mutex_lock(&r->lock);
			r->final_status_read = true;
			pthread_cond_broadcast(&r->cond);
			pthread_mutex_unlock(&r->lock);
		}
		return stats_json(&st);
	}
	if (r->incoming) {
		struct mig_in_stats in;

		mig_in_query(r->incoming, &in);
		return incoming_json(&in);
	}
	return json_pack("{s:s}", "state", "none");
}

static struct mig_out *current(struct runner *r, struct ctl_call *c)
{
	struct mig_out *m;

	pthread_mutex_lock(&r->lock);
	m = r->mig;
	pthread_mutex_unlock(&r->lock);
	if (!m)
		ctl_fail(c, "InvalidState", "no outgoing migration");
	return m;
}

static json_t *cmd_migrate_cancel(struct ctl_call *c, void *opaque)
{
	static const char *const no_args[] = { NULL };
	struct mig_out *m;
	int rc;

	if (!ctl_args_only(c, no_args) || !(m = current(opaque, c)))
		return NULL;
	rc = mig_out_cancel(m);
	if (rc)
		return ctl_fail(c, "InvalidState", "%s", ferr_msg(rc));
	return json_object();
}

static json_t *cmd_migrate_set(struct ctl_call *c, void *opaque)
{
	static const char *const keys[] = { "downtime_ms", "max_bandwidth", NULL };
	uint64_t downtime_ms = UINT64_MAX, bw = UINT64_MAX;
	struct mig_out *m;

	if (!ctl_args_only(c, keys) ||
	    !ctl_arg_u64(c, "downtime_ms", false, 1, 60000, &downtime_ms) ||
	    !ctl_arg_u64(c, "max_bandwidth", false, 0, UINT64_MAX / 2, &bw) ||
	    !(m = current(opaque, c)))
		return NULL;
	if (downtime_ms == UINT64_MAX && bw == UINT64_MAX)
		return ctl_fail(c, "InvalidParameter", "give downtime_ms and/or max_bandwidth");
	mig_out_set_params(m, downtime_ms == UINT64_MAX ? UINT64_MAX : downtime_ms * 1000000ull, bw);
	return json_object();
}

static json_t *cmd_migrate_recover(struct ctl_call *c, void *opaque)
{
	static const char *const no_args[] = { NULL };
	struct mig_out *m;
	int rc;

	if (!ctl_args_only(c, no_args) || !(m = current(opaque, c)))
		return NULL;
	rc = mig_out_recover(m);
	if (rc)
		return ctl_fail(c, "InvalidState", "%s", ferr_msg(rc));
	return json_object();
}

static const struct ctl_command mig_cmds[] = {
	{ "migrate", cmd_migrate_start, "starts a live migration: uri, downtime_ms, channels, compress, "
	  "max_bandwidth, timeout, on_timeout, verify, throttle_max" },
	{ "query-migrate", cmd_query_migrate, "state and figures of the current migration" },
	{ "migrate-cancel", cmd_migrate_cancel, "cancels an outgoing migration before its commit" },
	{ "migrate-set-parameters", cmd_migrate_set,
	  "changes downtime_ms and/or max_bandwidth of a running migration" },
	{ "migrate-recover", cmd_migrate_recover,
	  "resumes the VM here after an unconfirmed commit (check the destination first)" },
};

int mig_commands_register(struct ctl_server *s, struct runner *r)
{
	return ctl_register(s, mig_cmds, ARRAY_SIZE(mig_cmds), r);
}
