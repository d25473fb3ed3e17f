/*
 * `ferry bench [--quick] [--out DIR] [--reps N] [--qemu] [--config SPEC]...`:
 * the live-migration benchmark harness.  It states up front how many runs
 * it will make and about how long they take, shows a progress line, and
 * writes results.csv, results.json, results.md, downtime.png and
 * timeline.png into DIR.  Each run is a real migration between two
 * processes it spawns (see bench.h for the modules).
 *
 * Exit status: 0 when every ferry run succeeded and the results are
 * written; 1 when a ferry run failed (it is in the results, with its
 * reason) or the results could not be written; 2 for a usage error.  QEMU
 * runs that fail are shown but do not change the status: they measure the
 * other engine, not ferry.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "../core/util.h"
#include "bench.h"
#include "cli.h"

#define MAX_CUSTOM 16
#define QEMU_RUN_ESTIMATE_S 12.0

static const char bench_usage[] =
	"usage: ferry bench [--quick] [--out DIR] [--reps N] [--qemu] [--config SPEC]...\n"
	"\n"
	"  --quick        a small matrix that finishes in a few minutes (make bench)\n"
	"  --out DIR      where results go (default bench-results)\n"
	"  --reps N       runs per configuration (default 3 with --quick, else 5)\n"
	"  --qemu         also run the idle and increment workloads under QEMU/KVM\n"
	"  --config SPEC  run this configuration instead of a matrix; repeatable.\n"
	"                 SPEC: mem=1G,workload=idle|increment|random,rate=MBps,\n"
	"                 cpus=N,channels=N,compress=auto|none,downtime=MS\n"
	"\n"
	"Writes results.csv, results.json, results.md, downtime.png and timeline.png.\n"
	"Exit status: 0 all ferry runs succeeded; 1 a ferry run failed or the results\n"
	"could not be written; 2 usage error.  See docs/benchmarks.md.\n";

struct bench_opts {
	bool quick, qemu;
	unsigned reps;
	const char *out;
	struct bench_cfg custom[MAX_CUSTOM];
	unsigned ncustom;
};

static int parse_opts(int argc, char **argv, struct bench_opts *o)
{
	static const struct option longopts[] = {
		{ "quick", no_argument, NULL, 'q' },
		{ "out", required_argument, NULL, 'o' },
		{ "reps", required_argument, NULL, 'r' },
		{ "qemu", no_argument, NULL, 'Q' },
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int opt;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'q':
			o->quick = true;
			break;
		case 'o':
			o->out = optarg;
			break;
		case 'r':
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 1000)
				return usage_error("bench", "--reps '%s' must be 1 to 1000", optarg);
			o->reps = (unsigned)v;
			break;
		case 'Q':
			o->qemu = true;
			break;
		case 'c':
			if (o->ncustom == MAX_CUSTOM)
				return usage_error("bench", "at most %d --config options", MAX_CUSTOM);
			if (bench_parse_cfg(optarg, &o->custom[o->ncustom]) < 0)
				return usage_error("bench", "--config: %s", ferr_msg(-EINVAL));
			o->ncustom++;
			break;
		case 'h':
			fputs(bench_usage, stdout);
			exit(0);
		default:
			return usage_error("bench", "option '%s' is unknown or needs a value "
					   "(see ferry bench --help)", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return usage_error("bench", "unexpected argument '%s'", argv[optind]);
	if (!o->reps)
		o->reps = o->quick || o->ncustom ? 3 : 5;
	return 0;
}

/* One line of output from a command, or "unknown". */
static void command_line(const char *cmd, char *buf, size_t len)
{
	FILE *p = popen(cmd, "re");

	snprintf(buf, len, "unknown");
	if (!p)
		return;
	if (fgets(buf, (int)len, p))
		buf[strcspn(buf, "\n")] = 0;
	else
		snprintf(buf, len, "unknown");
	pclose(p);
}

static const char *fmt_dur(char *buf, size_t len, double secs)
{
	unsigned s = secs > 0 && secs < 3.6e6 ? (unsigned)(secs + 0.5) : 0;

	if (s >= 3600)
		snprintf(buf, len, "%uh%02um", s / 3600, s / 60 % 60);
	else if (s >= 60)
		snprintf(buf, len, "%um%02us", s / 60, s % 60);
	else
		snprintf(buf, len, "%us", s);
	return buf;
}

static void progress(bool tty, unsigned done, unsigned total, const char *what,
		     const struct bench_result *last, unsigned failed, double elapsed_s,
		     double left_s)
{
	char e[32], l[32], res[96] = "";

	if (last && last->ok)
		snprintf(res, sizeof(res), "last: downtime %.2f ms, total %.0f ms",
			 last->v[BM_DOWNTIME], last->v[BM_TOTAL]);
	else if (last)
		snprintf(res, sizeof(res), "last: FAILED");
	fprintf(stderr, "%s[%u/%u] %s | %s | failed %u | %s elapsed, ~%s left%s",
		tty ? "\r\033[K" : "", done, total, what, res, failed,
		fmt_dur(e, sizeof(e), elapsed_s), fmt_dur(l, sizeof(l), left_s), tty ? "" : "\n");
	fflush(stderr);
}

/* Copies a failed run's logs into OUT/logs so that its reason can be read. */
static void keep_logs(const char *out, const char *dir, const struct bench_result *r)
{
	static const char *const names[] = { "src.log", "dst.log", "qemu-src.log",
					     "qemu-dst.log" };
	char from[PATH_MAX + 64], to[PATH_MAX + 64];

	snprintf(to, sizeof(to), "%s/logs", out);
	mkdir(to, 0755);
	for (unsigned i = 0; i < ARRAY_SIZE(names); i++) {
		uint8_t *data;
		size_t len;
		FILE *f;

		snprintf(from, sizeof(from), "%s/%s", dir, names[i]);
		if (read_file(from, 1u << 20, &data, &len) < 0)
			continue;
		snprintf(to, sizeof(to), "%s/logs/%s-cfg%u-run%u-%s", out,
			 r->engine == BENCH_QEMU ? "qemu" : "ferry", r->cfg, r->rep, names[i]);
		if ((f = fopen(to, "we"))) {
			fwrite(data, 1, len, f);
			fclose(f);
		}
		free(data);
		unlink(from);
	}
}

/* qemu-system-x86_64, installing Debian's package when it is missing and we are root. */
static const char *find_qemu(char *version, size_t len)
{
	static const char *const path = "/usr/bin/qemu-system-x86_64";

	if (access(path, X_OK) != 0 && geteuid() == 0) {
		fprintf(stderr, "ferry bench: installing qemu-system-x86 for --qemu (apt-get)\n");
		if (system("DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
			   "--no-install-recommends qemu-system-x86 >/dev/null 2>&1") != 0)
			fprintf(stderr, "ferry bench: apt-get install qemu-system-x86 failed\n");
	}
	if (access(path, X_OK) != 0)
		return NULL;
	command_line("/usr/bin/qemu-system-x86_64 --version", version, len);
	return path;
}

/* The QEMU guest image: $FERRY_GUEST_DIR/qemu or guest/qemu beside this binary. */
static void find_bootsect(char *buf, size_t len)
{
	const char *env = getenv("FERRY_GUEST_DIR");
	char self[PATH_MAX];
	ssize_t n;

	if (env) {
		snprintf(buf, len, "%s/qemu/bootsect.bin", env);
		if (access(buf, R_OK) == 0)
			return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = 0;
	if (strrchr(self, '/'))
		*strrchr(self, '/') = 0;
	snprintf(buf, len, "%s/guest/qemu/bootsect.bin", self);
}

/* Empties and removes our own mkdtemp directory (flat: logs, sockets, images). */
static void remove_scratch(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[PATH_MAX + 64];

	if (d) {
		while ((e = readdir(d)))
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
				snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
				unlink(path);
			}
		closedir(d);
	}
	rmdir(dir);
}

struct plan {
	struct bench_cfg *cfgs;
	unsigned ncfg, total;
	double estimate_s;
};

static void make_plan(const struct bench_opts *o, bool qemu, struct plan *p)
{
	p->total = 0;
	p->estimate_s = 0;
	for (unsigned i = 0; i < p->ncfg; i++) {
		p->total += o->reps;
		p->estimate_s += o->reps * bench_estimate_s(&p->cfgs[i]);
		if (qemu && bench_qemu_can_run(&p->cfgs[i])) {
			p->total += o->reps;
			p->estimate_s += o->reps * QEMU_RUN_ESTIMATE_S;
		}
	}
}

static int write_results(const struct bench_opts *o, const char *out, struct bench_meta *m,
			 const struct plan *p, const struct bench_result *res, unsigned nres)
{
	char path[PATH_MAX + 64];
	int rc;

	snprintf(path, sizeof(path), "%s/results.csv", out);
	if ((rc = bench_write_csv(path, p->cfgs, res, nres)) < 0)
		return rc;
	snprintf(path, sizeof(path), "%s/results.json", out);
	if ((rc = bench_write_json(path, m, p->cfgs, p->ncfg, res, nres)) < 0)
		return rc;
	snprintf(path, sizeof(path), "%s/results.md", out);
	if ((rc = bench_write_md(path, stdout, m, p->cfgs, p->ncfg, res, nres)) < 0)
		return rc;
	if ((rc = bench_plot(out, p->cfgs, p->ncfg, res, nres)) < 0)
		fprintf(stderr, "ferry bench: no plots: %s\n", ferr_msg(rc));
	(void)o;
	printf("\nferry bench: results in %s/ (results.csv, results.json, results.md, "
	       "downtime.png, timeline.png)\n", out);
	return 0;
}

int cmd_bench(int argc, char **argv)
{
	struct bench_opts o = { .out = "bench-results" };
	char self[PATH_MAX], out[PATH_MAX], scratch[] = "/tmp/ferry-bench.XXXXXX";
	char bootsect[PATH_MAX + 64], qver[128] = "", date[64], commit[64], host[160], est[32];
	struct bench_env env = { 0 };
	struct bench_meta meta = { 0 };
	struct bench_result *res = NULL;
	struct plan p = { 0 };
	unsigned nres = 0, ferry_failed = 0, failed = 0;
	bool tty = isatty(STDERR_FILENO);
	double t0 = bench_now_ms();
	struct utsname u;
	int rc, status = EXIT_RUNTIME;

	if ((rc = parse_opts(argc, argv, &o)))
		return rc;
	/* A child that dies with its socket open must not take the harness along. */
	signal(SIGPIPE, SIG_IGN);
	{
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

		if (n <= 0) {
			fprintf(stderr, "ferry bench: cannot find this binary: %s\n",
				strerror(errno));
			return EXIT_RUNTIME;
		}
		self[n] = 0;
	}
	mkdir(o.out, 0755);
	if (!realpath(o.out, out)) {
		fprintf(stderr, "ferry bench: cannot create %s: %s\n", o.out, strerror(errno));
		return EXIT_RUNTIME;
	}
	if (!mkdtemp(scratch)) {
		fprintf(stderr, "ferry bench: mkdtemp: %s\n", strerror(errno));
		return EXIT_RUNTIME;
	}
	if (o.ncustom) {
		p.cfgs = malloc(o.ncustom * sizeof(*p.cfgs));
		if (!p.cfgs)
			goto out_scratch;
		memcpy(p.cfgs, o.custom, o.ncustom * sizeof(*p.cfgs));
		p.ncfg = o.ncustom;
	} else if (bench_matrix(o.quick, &p.cfgs, &p.ncfg) < 0) {
		goto out_scratch;
	}
	env.self = self;
	env.dir = scratch;
	if (o.qemu) {
		env.qemu = find_qemu(qver, sizeof(qver));
		find_bootsect(bootsect, sizeof(bootsect));
		env.bootsect = bootsect;
		if (!env.qemu)
			fprintf(stderr, "ferry bench: qemu-system-x86_64 is not installed: "
				"the QEMU runs are left out\n");
		else if (access(bootsect, R_OK) != 0) {
			fprintf(stderr, "ferry bench: no QEMU guest image at %s (make builds it): "
				"the QEMU runs are left out\n", bootsect);
			env.qemu = NULL;
		}
	}
	make_plan(&o, env.qemu != NULL, &p);
	res = calloc(p.total ? p.total : 1, sizeof(*res));
	if (!res)
		goto out_cfgs;
	fprintf(stderr, "ferry bench: %u configurations, %u runs%s; estimated %s on this "
		"machine; results in %s\n", p.ncfg, p.total, env.qemu ? " (with QEMU)" : "",
		fmt_dur(est, sizeof(est), p.estimate_s), out);

	for (unsigned i = 0; i < p.ncfg; i++)
		for (int e = BENCH_FERRY; e <= BENCH_QEMU; e++) {
			if (e == BENCH_QEMU && !(env.qemu && bench_qemu_can_run(&p.cfgs[i])))
				continue;
			for (unsigned rep = 1; rep <= o.reps; rep++) {
				struct bench_result *r = &res[nres];
				char label[96], what[128];
				double el = (bench_now_ms() - t0) / 1000, left;

				bench_cfg_label(&p.cfgs[i], label, sizeof(label));
				snprintf(what, sizeof(what), "%s %s run %u/%u",
					 e == BENCH_QEMU ? "qemu" : "ferry", label, rep, o.reps);
				left = nres ? el / nres * (p.total - nres) : p.estimate_s;
				progress(tty, nres + 1, p.total, what, nres ? &res[nres - 1] : NULL,
					 failed, el, left);
				r->cfg = i;
				r->rep = rep;
				if (e == BENCH_QEMU)
					bench_run_qemu(&env, &p.cfgs[i], r);
				else
					bench_run_ferry(&env, &p.cfgs[i], r);
				r->cfg = i;
				r->rep = rep;
				nres++;
				if (!r->ok) {
					failed++;
					ferry_failed += e == BENCH_FERRY;
					if (tty)
						fputc('\n', stderr);
					fprintf(stderr, "ferry bench: %s failed: %s\n", what, r->error);
					keep_logs(out, scratch, r);
				}
			}
		}
	if (tty)
		fputs("\r\033[K", stderr);

	command_line("date -u '+%Y-%m-%d %H:%M UTC'", date, sizeof(date));
	command_line("git rev-parse --short HEAD 2>/dev/null", commit, sizeof(commit));
	uname(&u);
	snprintf(host, sizeof(host), "Linux %s, %ld cores", u.release, sysconf(_SC_NPROCESSORS_ONLN));
	meta = (struct bench_meta){
		.date = date, .commit = commit, .host = host, .reps = o.reps, .quick = o.quick,
		.qemu = env.qemu != NULL, .qemu_version = env.qemu ? qver : NULL,
		.elapsed_s = (bench_now_ms() - t0) / 1000,
	};
	if ((rc = write_results(&o, out, &meta, &p, res, nres)) < 0)
		fprintf(stderr, "ferry bench: %s\n", ferr_msg(rc));
	else
		status = ferry_failed ? EXIT_RUNTIME : 0;
	for (unsigned i = 0; i < nres; i++)
		json_decref(res[i].iterations);
	free(res);
out_cfgs:
	free(p.cfgs);
out_scratch:
	remove_scratch(scratch);
	return status;
}
