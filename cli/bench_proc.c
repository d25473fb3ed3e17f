/*
 * The benchmark's child processes: spawn with output into a log file, wait
 * with a deadline, kill, and read CPU time and peak RSS from /proc (or from
 * wait4's rusage once a child has exited, when /proc no longer has it).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../core/util.h"
#include "bench.h"

double bench_now_ms(void)
{
	return (double)now_ns() / 1e6;
}

void bench_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int bench_spawn(char *const argv[], const char *log, struct bench_child *c)
{
	int out = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	pid_t pid;

	memset(c, 0, sizeof(*c));
	c->status = -1;
	if (out < 0)
		return ferr_sys(errno, "cannot create %s", log);
	pid = fork();
	if (pid < 0) {
		int rc = ferr_sys(errno, "fork");

		close(out);
		return rc;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		/* The child dies with the harness, so nothing outlives a crash. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (null >= 0)
			dup2(null, STDIN_FILENO);
		dup2(out, STDOUT_FILENO);
		dup2(out, STDERR_FILENO);
		execv(argv[0], argv);
		dprintf(out, "bench: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(out);
	c->pid = pid;
	return 0;
}

static void reaped(struct bench_child *c, int st, const struct rusage *ru)
{
	c->reaped = true;
	c->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	c->cpu_s = (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 +
		   (double)ru->ru_stime.tv_sec + ru->ru_stime.tv_usec / 1e6;
	c->maxrss_mib = (double)ru->ru_maxrss / 1024.0;   /* KiB on Linux */
}

bool bench_wait(struct bench_child *c, unsigned timeout_ms)
{
	double end = bench_now_ms() + timeout_ms;

	if (c->reaped || c->pid <= 0)
		return true;
	for (;;) {
		struct rusage ru;
		int st;
		pid_t p = wait4(c->pid, &st, WNOHANG, &ru);

		if (p == c->pid) {
			reaped(c, st, &ru);
			return true;
		}
		if (p < 0 && errno != EINTR)
			return false;
		if (bench_now_ms() >= end)
			return false;
		bench_sleep_ms(10);
	}
}

void bench_kill(struct bench_child *c)
{
	if (c->pid <= 0 || c->reaped)
		return;
	kill(c->pid, SIGKILL);
	bench_wait(c, 10000);
}

/* Fields 14 and 15 of a stat file (utime, stime), in seconds. */
static int stat_cpu(const char *path, double *cpu_s)
{
	char buf[1024], *p;
	unsigned long long ut, st;
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* The command name may hold spaces and parentheses: skip to the last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return ferr(EPROTO, "cannot parse %s", path);
	*cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	return 0;
}

int bench_proc_cpu(pid_t pid, pid_t tid, double *cpu_s)
{
	char path[64];

	if (tid)
		snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
	else
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	return stat_cpu(path, cpu_s);
}

int bench_proc_hwm(pid_t pid, double *mib)
{
	char path[64], line[256];
	unsigned long long kib;
	FILE *f;
	int rc = -ENOENT;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %llu kB", &kib) == 1) {
			*mib = (double)kib / 1024.0;
			rc = 0;
			break;
		}
	fclose(f);
	return rc;
}

int bench_wait_port(const char *log, const char *prefix, struct bench_child *c,
		    unsigned timeout_ms, unsigned *port)
{
	double end = bench_now_ms() + timeout_ms;

	for (;;) {
		char line[512];
		FILE *f = fopen(log, "re");

		if (f) {
			while (fgets(line, sizeof(line), f)) {
				char *p = strstr(line, prefix);

				if (p && sscanf(p + strlen(prefix), "%u", port) == 1 &&
				    *port > 0 && *port < 65536) {
					fclose(f);
					return 0;
				}
			}
			fclose(f);
		}
		if (bench_wait(c, 0))
			return ferr(ECHILD, "it exited with status %d before listening", c->status);
		if (bench_now_ms() >= end)
			return ferr(ETIMEDOUT, "it did not listen within %u ms", timeout_ms);
		bench_sleep_ms(20);
	}
}

unsigned bench_count_lines(const char *path, const char *needle)
{
	char line[1024];
	unsigned n = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}
