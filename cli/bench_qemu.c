/*
 * One benchmark run on QEMU/KVM: two qemu-system-x86_64 processes on this
 * machine, the boot-sector guest (guest/qemu/bootsect.S) doing the same idle
 * or increment work in ring 3, migrated over loopback TCP with the same
 * downtime target and no bandwidth cap, driven over QMP.
 *
 * Downtime is the time from the source's STOP event to the destination's
 * RESUME event (QMP timestamps, CLOCK_REALTIME on one host), not QEMU's own
 * "downtime", which is measured on the source alone.  The guest's counters
 * are read with pmemsave: no exit, no help from the guest.  Throughput is
 * bytes transferred over total time, as ferry computes it.
 *
 * Machine: `-M pc` with the default CPU model.  Measured on this kvm_pvm
 * host: SeaBIOS reaches the boot sector in ~5 s on `pc`; `q35` took over a
 * minute; `-cpu host` and `-cpu max` abort (KVM refuses MSR 0x10a).
 */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../core/util.h"
#include "bench.h"

#define STATUS_GPA 0xc00
#define PARAM_OFFSET 0x1f0
#define POLL_MS 20
#define SAMPLE_MS 200
#define MIGRATE_TIMEOUT_MS 300000
#define QEMU_BIN "/usr/bin/qemu-system-x86_64"

struct qside {
	struct bench_child ch;
	struct bench_qmp q;
	char qmp[256], log[256];
	pid_t vcpu_tid;
	double cpu0, vcpu0, vcpu_last;
};

struct gstatus {
	bool magic;
	uint64_t pass, pages, max_gap_tsc, idle_filled;
};

static void fail(struct bench_result *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void fail(struct bench_result *r, const char *fmt, ...)
{
	va_list ap;

	if (!r->ok)
		return;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	r->ok = false;
}

/* The host TSC's rate, which is the guest's on this host: measured over 50 ms. */
static double tsc_per_ms(void)
{
	static double rate;
	uint64_t t0, c0;

	if (rate > 0)
		return rate;
	t0 = now_ns();
	c0 = host_rdtsc();
	bench_sleep_ms(50);
	rate = (double)(host_rdtsc() - c0) / ((double)(now_ns() - t0) / 1e6);
	return rate;
}

/* QEMU keeps RAM up to 3 GiB below 4 GiB on `pc` when it has 3.5 GiB or more. */
static unsigned qemu_wss_mib(const struct bench_cfg *c)
{
	unsigned low = c->mem_mib >= 3584 ? 3072 : c->mem_mib;

	return (unsigned)MIN(bench_wss(c) >> 20, (uint64_t)low - 16);
}

static int write_image(const struct bench_env *env, const struct bench_cfg *c, const char *path)
{
	uint8_t *img;
	size_t len;
	uint32_t wss = qemu_wss_mib(c);
	FILE *f;
	int rc = read_file(env->bootsect, 512, &img, &len);

	if (rc < 0)
		return rc;
	if (len != 512 || img[510] != 0x55 || img[511] != 0xaa) {
		free(img);
		return ferr(EINVAL, "%s is not a 512-byte boot sector", env->bootsect);
	}
	img[PARAM_OFFSET] = c->workload == BW_IDLE ? 0 : 1;
	memcpy(img + PARAM_OFFSET + 4, &wss, sizeof(wss));
	f = fopen(path, "we");
	if (!f || fwrite(img, 1, len, f) != len) {
		rc = ferr_sys(errno, "cannot write %s", path);
		if (f)
			fclose(f);
	} else if (fclose(f) != 0) {
		rc = ferr_sys(errno, "cannot write %s", path);
	}
	free(img);
	return rc;
}

static int free_port(unsigned *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = 0;

	if (fd < 0)
		return ferr_sys(errno, "socket");
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		rc = ferr_sys(errno, "cannot find a free loopback port");
	else
		*port = ntohs(a.sin_port);
	close(fd);
	return rc;
}

static int spawn_qemu(const struct bench_cfg *c, const char *img, struct qside *s, bool incoming)
{
	char mem[32], drive[320], qmp[300];
	char *argv[24];
	unsigned n = 0;

	snprintf(mem, sizeof(mem), "%uM", c->mem_mib);
	snprintf(drive, sizeof(drive), "file=%s,format=raw,if=ide", img);
	snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", s->qmp);
	argv[n++] = QEMU_BIN;
	argv[n++] = "-enable-kvm";
	argv[n++] = "-M";
	argv[n++] = "pc";
	argv[n++] = "-m";
	argv[n++] = mem;
	argv[n++] = "-display";
	argv[n++] = "none";
	argv[n++] = "-nodefaults";
	argv[n++] = "-drive";
	argv[n++] = drive;
	argv[n++] = "-qmp";
	argv[n++] = qmp;
	if (incoming) {
		argv[n++] = "-incoming";
		argv[n++] = "defer";
	}
	argv[n] = NULL;
	unlink(s->qmp);
	return bench_spawn(argv, s->log, &s->ch);
}

static int read_status(struct qside *s, const char *dir, struct gstatus *g)
{
	char path[300];
	uint8_t *buf;
	size_t len;
	json_t *ret;
	int rc;

	snprintf(path, sizeof(path), "%s/qemu-status.bin", dir);
	rc = bench_qmp_exec(&s->q, "pmemsave", json_pack("{s:i, s:i, s:s}", "val", STATUS_GPA,
							 "size", 64, "filename", path), &ret);
	json_decref(ret);
	if (rc < 0)
		return rc;
	rc = read_file(path, 64, &buf, &len);
	if (rc < 0)
		return rc;
	if (len < 48) {
		free(buf);
		return ferr(EIO, "pmemsave wrote %zu bytes", len);
	}
	g->magic = memcmp(buf, "FERRYQ01", 8) == 0;
	memcpy(&g->pass, buf + 8, 8);
	memcpy(&g->pages, buf + 16, 8);
	memcpy(&g->max_gap_tsc, buf + 24, 8);
	memcpy(&g->idle_filled, buf + 40, 8);
	free(buf);
	return 0;
}

/*
 * The idle guest's memory on the destination: every word holds its address.
 * The first 64 MiB at most, so that a big working set costs no big file.
 */
static int check_idle_memory(struct qside *s, const char *dir, const struct bench_cfg *c)
{
	size_t want = (size_t)MIN(qemu_wss_mib(c), 64u) << 20;
	char path[300];
	uint8_t *buf;
	size_t len;
	json_t *ret;
	int rc;

	snprintf(path, sizeof(path), "%s/qemu-wss.bin", dir);
	rc = bench_qmp_exec(&s->q, "pmemsave", json_pack("{s:i, s:I, s:s}", "val", 0x1000000,
							 "size", (json_int_t)want, "filename", path), &ret);
	json_decref(ret);
	if (rc < 0 || (rc = read_file(path, want, &buf, &len)) < 0)
		return rc;
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, buf + i, 8);
		if (w != 0x1000000 + i) {
			free(buf);
			return ferr(EIO, "the idle guest's word at %#zx holds %#llx after the migration",
				    0x1000000 + i, (unsigned long long)w);
		}
	}
	free(buf);
	unlink(path);
	return len == want ? 0 : ferr(EIO, "pmemsave wrote %zu bytes", len);
}

static int vcpu_thread(struct qside *s)
{
	json_t *ret, *cpu;
	int rc = bench_qmp_exec(&s->q, "query-cpus-fast", NULL, &ret);

	if (rc < 0)
		return rc;
	cpu = json_array_get(ret, 0);
	s->vcpu_tid = (pid_t)json_integer_value(json_object_get(cpu, "thread-id"));
	json_decref(ret);
	s->cpu0 = s->vcpu0 = 0;
	bench_proc_cpu(s->ch.pid, 0, &s->cpu0);
	bench_proc_cpu(s->ch.pid, s->vcpu_tid, &s->vcpu0);
	s->vcpu_last = s->vcpu0;
	return 0;
}

/* CPU seconds since vcpu_thread(), less what the vCPU thread ran. */
static double vmm_cpu(struct qside *s)
{
	double now = NAN;

	bench_proc_cpu(s->ch.pid, s->vcpu_tid, &s->vcpu_last);
	if (bench_proc_cpu(s->ch.pid, 0, &now) < 0)
		return NAN;
	return now - s->cpu0 - (s->vcpu_last - s->vcpu0);
}

static int set_params(struct qside *s, const struct bench_cfg *c, bool source)
{
	json_t *ret;
	int rc;

	if (c->channels > 1) {
		rc = bench_qmp_exec(&s->q, "migrate-set-capabilities", json_pack(
			"{s:[{s:s, s:b}]}", "capabilities", "capability", "multifd", "state", 1), &ret);
		json_decref(ret);
		if (rc < 0)
			return rc;
		rc = bench_qmp_exec(&s->q, "migrate-set-parameters",
				    json_pack("{s:i}", "multifd-channels", (int)c->channels), &ret);
		json_decref(ret);
		if (rc < 0)
			return rc;
	}
	if (!source)
		return 0;
	/* No cap: QEMU's default is 128 MiB/s; 100 GB/s is far above loopback. */
	rc = bench_qmp_exec(&s->q, "migrate-set-parameters", json_pack(
		"{s:I, s:I}", "downtime-limit", (json_int_t)c->downtime_ms,
		"max-bandwidth", (json_int_t)100000000000LL), &ret);
	json_decref(ret);
	return rc;
}

static double jnum(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Warm-up as on ferry: the whole working set written once (or filled). */
static int warm_up(struct qside *src, const struct bench_env *env, const struct bench_cfg *c,
		   struct gstatus *g)
{
	double end = bench_now_ms() + 120000 + (double)qemu_wss_mib(c) * 256 * 0.1;
	int rc;

	for (;;) {
		if ((rc = read_status(src, env->dir, g)) < 0)
			return rc;
		if (g->magic && (c->workload == BW_IDLE ? g->idle_filled == 1 : g->pass >= 1))
			return 0;
		if (bench_now_ms() > end)
			return ferr(ETIMEDOUT, "the QEMU guest did not boot and warm up in time "
				    "(magic %s, pass %llu)", g->magic ? "seen" : "not seen",
				    (unsigned long long)g->pass);
		bench_sleep_ms(SAMPLE_MS);
	}
}

/* MB/s of page writes between two status samples, ms apart. */
static double rate_mbs(const struct gstatus *a, const struct gstatus *b, double ms)
{
	return ms > 0 ? (double)(b->pages - a->pages) * 4096 / 1e6 / (ms / 1000) : NAN;
}

static json_t *follow(struct qside *src, const struct bench_env *env, const struct bench_cfg *c,
		      struct bench_result *r)
{
	double start = bench_now_ms(), last = start, sum = 0;
	struct gstatus prev = { 0 }, g;
	unsigned n = 0;
	bool have_prev = false;

	for (;;) {
		json_t *st;
		const char *state;
		int rc = bench_qmp_exec(&src->q, "query-migrate", NULL, &st);

		if (rc < 0) {
			fail(r, "QEMU source: %s", ferr_msg(rc));
			return NULL;
		}
		state = json_string_value(json_object_get(st, "status"));
		if (state && (strcmp(state, "completed") == 0 || strcmp(state, "failed") == 0 ||
			      strcmp(state, "cancelled") == 0)) {
			r->v[BM_DIRTY_DURING] = n ? sum / n : NAN;
			return st;
		}
		json_decref(st);
		bench_proc_cpu(src->ch.pid, src->vcpu_tid, &src->vcpu_last);
		if (c->workload != BW_IDLE && bench_now_ms() - last >= SAMPLE_MS &&
		    read_status(src, env->dir, &g) == 0) {
			double t = bench_now_ms();

			if (have_prev && g.pages > prev.pages) {
				sum += rate_mbs(&prev, &g, t - last);
				n++;
			}
			prev = g;
			have_prev = true;
			last = t;
		}
		if (bench_now_ms() - start > MIGRATE_TIMEOUT_MS) {
			fail(r, "the QEMU migration did not end within %u s", MIGRATE_TIMEOUT_MS / 1000);
			return NULL;
		}
		bench_sleep_ms(POLL_MS);
	}
}

static void figures(json_t *st, struct bench_result *r)
{
	json_t *ram = json_object_get(st, "ram");
	double total = jnum(st, "total-time");

	r->v[BM_TOTAL] = total;
	r->v[BM_SETUP] = jnum(st, "setup-time");
	r->v[BM_WIRE] = jnum(ram, "transferred") / (1024.0 * 1024.0);
	r->v[BM_ITERATIONS] = jnum(ram, "dirty-sync-count");
	r->v[BM_THROUGHPUT] = total > 0 ? jnum(ram, "transferred") / 1e6 / (total / 1000) : NAN;
	r->v[BM_LOG_RATE] = jnum(ram, "dirty-pages-rate") * 4096 / 1e6;
}

/* STOP on the source to RESUME on the destination. */
static void downtime(struct qside *src, struct qside *dst, struct bench_result *r)
{
	json_t *stop = NULL, *resume = NULL;
	double a, b;
	int rc;

	if ((rc = bench_qmp_wait_event(&src->q, "STOP", 5000, &stop)) < 0 ||
	    (rc = bench_qmp_wait_event(&dst->q, "RESUME", 30000, &resume)) < 0) {
		fail(r, "%s", ferr_msg(rc));
	} else if (bench_qmp_event_ms(stop, &a) < 0 || bench_qmp_event_ms(resume, &b) < 0) {
		fail(r, "a QMP event without a valid timestamp");
	} else {
		r->v[BM_DOWNTIME] = b - a;
	}
	json_decref(stop);
	json_decref(resume);
}

/* The guest on the destination: it runs on, its stall, its memory (idle). */
static void check_dest(struct qside *dst, const struct bench_env *env, const struct bench_cfg *c,
		       struct bench_result *r)
{
	struct gstatus a, b;
	int rc;

	if ((rc = vcpu_thread(dst)) < 0 || (rc = read_status(dst, env->dir, &a)) < 0) {
		fail(r, "QEMU destination: %s", ferr_msg(rc));
		return;
	}
	/* Everything it ran since it started, less its vCPU (as for ferry). */
	r->v[BM_DST_CPU] = dst->cpu0 - dst->vcpu0;
	bench_proc_hwm(dst->ch.pid, &r->v[BM_DST_RSS]);
	bench_sleep_ms(300);
	if ((rc = read_status(dst, env->dir, &b)) < 0) {
		fail(r, "QEMU destination: %s", ferr_msg(rc));
		return;
	}
	if (!b.magic) {
		fail(r, "the migrated QEMU guest's status page is gone");
		return;
	}
	if (c->workload == BW_IDLE) {
		if ((rc = check_idle_memory(dst, env->dir, c)) < 0)
			fail(r, "%s", ferr_msg(rc));
		return;
	}
	if (b.pages <= a.pages)
		fail(r, "the migrated QEMU guest made no progress in 300 ms");
	r->v[BM_STALL] = (double)b.max_gap_tsc / tsc_per_ms();
}

static void quit(struct qside *s)
{
	json_t *ret = NULL;

	if (s->q.fd >= 0)
		bench_qmp_exec(&s->q, "quit", NULL, &ret);
	json_decref(ret);
	bench_qmp_close(&s->q);
	if (!bench_wait(&s->ch, 5000))
		bench_kill(&s->ch);
}

void bench_run_qemu(const struct bench_env *env, const struct bench_cfg *c,
		    struct bench_result *r)
{
	struct qside src = { .q.fd = -1 }, dst = { .q.fd = -1 };
	struct gstatus g0, g1;
	char img[300], uri[64];
	json_t *ret = NULL, *st = NULL;
	unsigned port = 0;
	double t0;
	int rc;

	for (unsigned i = 0; i < BM_COUNT; i++)
		r->v[i] = NAN;
	r->ok = true;
	r->engine = BENCH_QEMU;
	tsc_per_ms();
	snprintf(img, sizeof(img), "%s/qemu-disk.img", env->dir);
	snprintf(src.qmp, sizeof(src.qmp), "%s/qsrc.qmp", env->dir);
	snprintf(dst.qmp, sizeof(dst.qmp), "%s/qdst.qmp", env->dir);
	snprintf(src.log, sizeof(src.log), "%s/qemu-src.log", env->dir);
	snprintf(dst.log, sizeof(dst.log), "%s/qemu-dst.log", env->dir);
	if ((rc = write_image(env, c, img)) < 0 || (rc = free_port(&port)) < 0 ||
	    (rc = spawn_qemu(c, img, &dst, true)) < 0 || (rc = spawn_qemu(c, img, &src, false)) < 0 ||
	    (rc = bench_qmp_connect(&dst.q, dst.qmp, 10000)) < 0 ||
	    (rc = bench_qmp_connect(&src.q, src.qmp, 10000)) < 0 ||
	    (rc = set_params(&dst, c, false)) < 0 || (rc = set_params(&src, c, true)) < 0) {
		fail(r, "QEMU set-up: %s", ferr_msg(rc));
		goto out;
	}
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", port);
	if ((rc = bench_qmp_exec(&dst.q, "migrate-incoming", json_pack("{s:s}", "uri", uri),
				 &ret)) < 0 || (rc = warm_up(&src, env, c, &g0)) < 0) {
		fail(r, "%s", ferr_msg(rc));
		goto out;
	}
	json_decref(ret);
	ret = NULL;
	t0 = bench_now_ms();
	bench_sleep_ms(500);
	if (read_status(&src, env->dir, &g1) == 0)
		r->v[BM_DIRTY_BEFORE] = rate_mbs(&g0, &g1, bench_now_ms() - t0);
	r->v[BM_STALL_BEFORE] = (double)g1.max_gap_tsc / tsc_per_ms();
	if ((rc = vcpu_thread(&src)) < 0 ||
	    (rc = bench_qmp_exec(&src.q, "migrate", json_pack("{s:s}", "uri", uri), &ret)) < 0) {
		fail(r, "%s", ferr_msg(rc));
		goto out;
	}
	if (!(st = follow(&src, env, c, r)))
		goto out;
	figures(st, r);
	if (strcmp(json_string_value(json_object_get(st, "status")), "completed") != 0) {
		fail(r, "QEMU migration %s: %s", json_string_value(json_object_get(st, "status")),
		     json_string_value(json_object_get(st, "error-desc")) ?: "no reason given");
		goto out;
	}
	r->v[BM_SRC_CPU] = vmm_cpu(&src);
	bench_proc_hwm(src.ch.pid, &r->v[BM_SRC_RSS]);
	downtime(&src, &dst, r);
	if (r->ok)
		check_dest(&dst, env, c, r);
out:
	json_decref(ret);
	json_decref(st);
	quit(&src);
	quit(&dst);
	unlink(img);
}
