/*
 * One benchmark run on ferry: a destination `ferry run --incoming` and a
 * source `ferry run` of the workload, both this very binary, driven over
 * their control sockets.  The run waits for the guest's first pass (first
 * touches of guest memory are slow here and would otherwise be measured as
 * migration time), migrates, follows query-migrate, then asks the migrated
 * guest to verify its memory: a run whose guest check fails is a failed run.
 *
 * CPU seconds leave out the vCPU threads (query-cpus names them), so they
 * are what the VMM spent, not the guest; the error is the vCPU time of the
 * last poll interval (20 ms) on the source.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/util.h"
#include "bench.h"
#include "cli.h"

#define POLL_MS 20
#define GUEST_POLL_MS 100
#define MIGRATE_TIMEOUT_MS 300000
#define MAX_VCPUS 64

struct fside {
	struct bench_child ch;
	char sock[256], log[256];
	int fd;
	pid_t vcpu_tid[MAX_VCPUS];
	unsigned nvcpu;
	double vcpu_cpu0[MAX_VCPUS], vcpu_cpu[MAX_VCPUS], cpu0;
};

static void fail(struct bench_result *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void fail(struct bench_result *r, const char *fmt, ...)
{
	va_list ap;

	if (!r->ok)
		return;   /* keep the first reason */
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	r->ok = false;
}

/* One request; the "return" value (new reference), or NULL with a message. */
static json_t *request(int fd, const char *cmd, json_t *args, char *err, size_t errlen)
{
	json_t *reply = NULL, *ret, *e, *a = args ? args : json_object();
	int rc = ctl_request(fd, cmd, a, &reply);

	json_decref(a);
	if (rc) {
		snprintf(err, errlen, "%s: %s", cmd, ferr_msg(rc));
		return NULL;
	}
	if ((e = json_object_get(reply, "error"))) {
		snprintf(err, errlen, "%s: %s", cmd,
			 json_string_value(json_object_get(e, "desc")) ?: "error");
		json_decref(reply);
		return NULL;
	}
	ret = json_incref(json_object_get(reply, "return"));
	json_decref(reply);
	if (!ret)
		snprintf(err, errlen, "%s: the reply has no return value", cmd);
	return ret;
}

static int connect_retry(struct fside *s, unsigned timeout_ms)
{
	double end = bench_now_ms() + timeout_ms;

	for (;;) {
		if (access(s->sock, F_OK) == 0 && (s->fd = ctl_connect(s->sock)) >= 0)
			return 0;
		if (bench_wait(&s->ch, 0))
			return ferr(ECHILD, "%s exited with status %d", s->log, s->ch.status);
		if (bench_now_ms() >= end)
			return ferr(ETIMEDOUT, "%s never answered", s->sock);
		bench_sleep_ms(20);
	}
}

static double num(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Sum of key over the guest's vCPUs, and the smallest value seen. */
static double guest_sum(json_t *g, const char *key, double *min)
{
	json_t *cpus = json_object_get(g, "vcpus"), *v;
	double sum = 0, lo = INFINITY;
	size_t i;
	bool any = false;

	json_array_foreach(cpus, i, v) {
		double x = num(v, key);

		if (isfinite(x)) {
			sum += x;
			lo = x < lo ? x : lo;
			any = true;
		} else {
			lo = -INFINITY;   /* a vCPU that has not reported */
		}
	}
	if (min)
		*min = any ? lo : -INFINITY;
	return any ? sum : NAN;
}

static double guest_max(json_t *g, const char *key)
{
	json_t *cpus = json_object_get(g, "vcpus"), *v;
	double m = NAN;
	size_t i;

	json_array_foreach(cpus, i, v) {
		double x = num(v, key);

		if (isfinite(x) && !(x <= m))
			m = x;
	}
	return m;
}

/* Records the vCPU threads, and the process's CPU time now. */
static int vcpu_threads(struct fside *s, char *err, size_t errlen)
{
	json_t *cpus = request(s->fd, "query-cpus", NULL, err, errlen), *v;
	size_t i;

	if (!cpus)
		return -EPROTO;
	s->nvcpu = 0;
	json_array_foreach(cpus, i, v)
		if (s->nvcpu < MAX_VCPUS)
			s->vcpu_tid[s->nvcpu++] = (pid_t)json_integer_value(json_object_get(v, "thread_id"));
	json_decref(cpus);
	for (unsigned k = 0; k < s->nvcpu; k++) {
		s->vcpu_cpu0[k] = 0;
		bench_proc_cpu(s->ch.pid, s->vcpu_tid[k], &s->vcpu_cpu0[k]);
		s->vcpu_cpu[k] = s->vcpu_cpu0[k];
	}
	s->cpu0 = 0;
	return bench_proc_cpu(s->ch.pid, 0, &s->cpu0);
}

static double vcpu_delta(struct fside *s)
{
	double d = 0;

	for (unsigned k = 0; k < s->nvcpu; k++) {
		bench_proc_cpu(s->ch.pid, s->vcpu_tid[k], &s->vcpu_cpu[k]);   /* keeps the last */
		d += s->vcpu_cpu[k] - s->vcpu_cpu0[k];
	}
	return d;
}

static bool warmed_up(const struct bench_cfg *c, json_t *g, double *since)
{
	double lo;

	if (c->workload == BW_IDLE)
		return num(json_array_get(json_object_get(g, "vcpus"), 0), "filled_kib") >=
		       (double)(bench_wss(c) >> 10);
	if (c->workload == BW_INCREMENT) {
		guest_sum(g, "pass", &lo);
		return lo >= 1;
	}
	/* random: a second of writing at its rate once every vCPU reports. */
	guest_sum(g, "rate_pps", &lo);
	if (lo < 0)
		return false;
	if (*since == 0)
		*since = bench_now_ms();
	return bench_now_ms() - *since >= 1000;
}

static void build_src_argv(const struct bench_env *env, const struct bench_cfg *c,
			   const char *sock, char bufs[8][64], char **argv)
{
	unsigned n = 0;

	if (c->wss_mib)
		snprintf(bufs[3], 64, "wss=%uM", c->wss_mib);

	argv[n++] = (char *)env->self;
	argv[n++] = "run";
	argv[n++] = "--guest";
	argv[n++] = c->workload == BW_IDLE ? "idle" : "dirty";
	snprintf(bufs[0], 64, "%uM", c->mem_mib);
	argv[n++] = "--mem";
	argv[n++] = bufs[0];
	snprintf(bufs[1], 64, "%u", c->vcpus);
	argv[n++] = "--cpus";
	argv[n++] = bufs[1];
	argv[n++] = "--control";
	argv[n++] = (char *)sock;
	if (c->workload != BW_IDLE) {
		argv[n++] = "--guest-arg";
		argv[n++] = c->workload == BW_RANDOM ? "pattern=random" : "pattern=increment";
		argv[n++] = "--guest-arg";
		argv[n++] = "report_ms=100";
		if (c->rate_mbs) {
			snprintf(bufs[2], 64, "rate=%u", c->rate_mbs);
			argv[n++] = "--guest-arg";
			argv[n++] = bufs[2];
		}
	}
	if (c->wss_mib) {
		argv[n++] = "--guest-arg";
		argv[n++] = bufs[3];
	}
	argv[n] = NULL;
}

/* Follows the migration to its end; the final figures, or NULL. */
static json_t *follow(struct fside *src, const struct bench_cfg *c, struct bench_result *r)
{
	double start = bench_now_ms(), last_guest = 0, rate_sum = 0;
	unsigned rate_n = 0;
	char err[256];

	for (;;) {
		json_t *st = request(src->fd, "query-migrate", NULL, err, sizeof(err));
		const char *state;

		if (!st) {
			fail(r, "lost the source during the migration (%s)", err);
			return NULL;
		}
		state = json_string_value(json_object_get(st, "state"));
		if (state && (strcmp(state, "completed") == 0 || strcmp(state, "failed") == 0 ||
			      strcmp(state, "cancelled") == 0 || strcmp(state, "unconfirmed") == 0)) {
			r->v[BM_DIRTY_DURING] = rate_n ? rate_sum / rate_n : NAN;
			return st;
		}
		json_decref(st);
		vcpu_delta(src);
		if (c->workload != BW_IDLE && bench_now_ms() - last_guest >= GUEST_POLL_MS) {
			json_t *g = request(src->fd, "query-guest", NULL, err, sizeof(err));
			double pps = g ? guest_sum(g, "rate_pps", NULL) : NAN;

			if (isfinite(pps)) {
				rate_sum += pps * 4096 / 1e6;
				rate_n++;
			}
			json_decref(g);
			last_guest = bench_now_ms();
		}
		if (bench_now_ms() - start > MIGRATE_TIMEOUT_MS) {
			json_decref(request(src->fd, "migrate-cancel", NULL, err, sizeof(err)));
			fail(r, "the migration did not end within %u s", MIGRATE_TIMEOUT_MS / 1000);
			return NULL;
		}
		bench_sleep_ms(POLL_MS);
	}
}

static void take_figures(json_t *st, struct bench_result *r)
{
	r->v[BM_DOWNTIME] = num(st, "downtime_ms");
	r->v[BM_TOTAL] = num(st, "total_ms");
	r->v[BM_SETUP] = num(st, "setup_ms");
	r->v[BM_WIRE] = num(st, "transferred_bytes") / (1024.0 * 1024.0);
	r->v[BM_ITERATIONS] = num(st, "iteration");
	r->v[BM_THROUGHPUT] = num(st, "throughput_bps") / 1e6;
	r->v[BM_LOG_RATE] = num(st, "dirty_rate_pps") * 4096 / 1e6;
	r->v[BM_FIRST_PASS] = num(st, "first_pass_bps") / 1e6;
	r->iterations = json_incref(json_object_get(st, "iterations"));
}

/* The migrated guest: its stall, the destination's costs, then its memory check. */
static void finish_dest(struct fside *dst, const struct bench_cfg *c, struct bench_result *r)
{
	char err[256];
	json_t *g;
	double cpu = NAN, vcpus;
	unsigned want = c->workload == BW_IDLE ? 1 : c->vcpus, got;
	int rc = connect_retry(dst, 5000);

	if (rc < 0) {
		fail(r, "destination: %s", ferr_msg(rc));
		return;
	}
	if (vcpu_threads(dst, err, sizeof(err)) == 0) {
		/* Everything since it started, less what the guest ran there. */
		cpu = dst->cpu0;
		for (unsigned k = 0; k < dst->nvcpu; k++)
			cpu -= dst->vcpu_cpu0[k];
		r->v[BM_DST_CPU] = cpu;
	}
	bench_proc_hwm(dst->ch.pid, &r->v[BM_DST_RSS]);
	/* dirty reports every 100 ms: let it report the switchover's gap. */
	bench_sleep_ms(350);
	if (c->workload != BW_IDLE && (g = request(dst->fd, "query-guest", NULL, err, sizeof(err)))) {
		vcpus = guest_max(g, "stall_us");
		r->v[BM_STALL] = vcpus / 1000.0;
		json_decref(g);
	}
	json_decref(request(dst->fd, "shutdown", NULL, err, sizeof(err)));
	if (!bench_wait(&dst->ch, 120000)) {
		fail(r, "the migrated guest did not finish within 120 s of shutdown");
		return;
	}
	if (dst->ch.status != 0) {
		fail(r, "the migrated guest exited with status %d (see %s)", dst->ch.status, dst->log);
		return;
	}
	got = bench_count_lines(dst->log, "verified");
	if (got != want)
		fail(r, "the migrated guest verified %u of %u memory ranges (see %s)", got, want,
		     dst->log);
}

void bench_run_ferry(const struct bench_env *env, const struct bench_cfg *c,
		     struct bench_result *r)
{
	struct fside src = { .fd = -1 }, dst = { .fd = -1 };
	char *dargv[8], *sargv[24], bufs[8][64], err[256], uri[64];
	double since = 0, deadline, src_cpu_end;
	json_t *g = NULL, *st = NULL;
	unsigned port;
	int rc;

	for (unsigned i = 0; i < BM_COUNT; i++)
		r->v[i] = NAN;
	r->ok = true;
	r->engine = BENCH_FERRY;
	snprintf(src.sock, sizeof(src.sock), "%s/src.sock", env->dir);
	snprintf(dst.sock, sizeof(dst.sock), "%s/dst.sock", env->dir);
	snprintf(src.log, sizeof(src.log), "%s/src.log", env->dir);
	snprintf(dst.log, sizeof(dst.log), "%s/dst.log", env->dir);
	unlink(src.sock);
	unlink(dst.sock);

	dargv[0] = (char *)env->self;
	dargv[1] = "run";
	dargv[2] = "--incoming";
	dargv[3] = "tcp:127.0.0.1:0";
	dargv[4] = "--control";
	dargv[5] = dst.sock;
	dargv[6] = NULL;
	build_src_argv(env, c, src.sock, bufs, sargv);
	if ((rc = bench_spawn(dargv, dst.log, &dst.ch)) < 0 ||
	    (rc = bench_spawn(sargv, src.log, &src.ch)) < 0) {
		fail(r, "%s", ferr_msg(rc));
		goto out;
	}
	if ((rc = bench_wait_port(dst.log, "incoming migration on tcp:127.0.0.1:", &dst.ch, 10000,
				  &port)) < 0) {
		fail(r, "destination: %s", ferr_msg(rc));
		goto out;
	}
	if ((rc = connect_retry(&src, 10000)) < 0) {
		fail(r, "source: %s", ferr_msg(rc));
		goto out;
	}

	/* Warm up: generous, since a first touch costs ~20 us a page here. */
	deadline = bench_now_ms() + 30000 + (double)bench_wss(c) / 4096 * 0.1;
	for (;;) {
		json_decref(g);
		g = request(src.fd, "query-guest", NULL, err, sizeof(err));
		if (!g) {
			fail(r, "source: %s", err);
			goto out;
		}
		if (warmed_up(c, g, &since)) {
			/* The report that ended the warm-up may span first touches: take
			 * the rate from the next one, a full interval of steady work. */
			if (c->workload != BW_IDLE) {
				bench_sleep_ms(GUEST_POLL_MS + 150);
				json_decref(g);
				g = request(src.fd, "query-guest", NULL, err, sizeof(err));
				if (!g) {
					fail(r, "source: %s", err);
					goto out;
				}
			}
			break;
		}
		if (bench_now_ms() > deadline) {
			fail(r, "the guest did not warm up in time (see %s)", src.log);
			goto out;
		}
		bench_sleep_ms(GUEST_POLL_MS);
	}
	r->v[BM_DIRTY_BEFORE] = c->workload == BW_IDLE ? 0 :
				guest_sum(g, "rate_pps", NULL) * 4096 / 1e6;
	r->v[BM_STALL_BEFORE] = c->workload == BW_IDLE ? NAN : guest_max(g, "stall_us") / 1000.0;
	if (vcpu_threads(&src, err, sizeof(err)) < 0) {
		fail(r, "source: %s", err);
		goto out;
	}

	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", port);
	{
		json_t *args = json_pack("{s:s, s:i, s:i, s:s}", "uri", uri,
					 "downtime_ms", (int)c->downtime_ms, "channels", (int)c->channels,
					 "compress", c->compress_none ? "none" : "auto");
		json_t *ok = request(src.fd, "migrate", args, err, sizeof(err));

		if (!ok) {
			fail(r, "%s", err);
			goto out;
		}
		json_decref(ok);
	}
	st = follow(&src, c, r);
	if (!st)
		goto out;
	take_figures(st, r);
	if (strcmp(json_string_value(json_object_get(st, "state")), "completed") != 0) {
		fail(r, "migration %s: %s", json_string_value(json_object_get(st, "state")),
		     json_string_value(json_object_get(st, "error")) ?: "no reason given");
		goto out;
	}
	/* The source exits once the destination runs the VM. */
	if (!bench_wait(&src.ch, 10000) || src.ch.status != 0) {
		fail(r, "the source did not exit 0 after the migration (status %d)", src.ch.status);
		goto out;
	}
	src_cpu_end = src.ch.cpu_s;
	r->v[BM_SRC_CPU] = src_cpu_end - src.cpu0 - vcpu_delta(&src);
	r->v[BM_SRC_RSS] = src.ch.maxrss_mib;
	finish_dest(&dst, c, r);
out:
	json_decref(g);
	json_decref(st);
	if (src.fd >= 0)
		close(src.fd);
	if (dst.fd >= 0)
		close(dst.fd);
	bench_kill(&src.ch);
	bench_kill(&dst.ch);
}
