/*
 * `ferry bench`: the live-migration benchmark harness.  It runs a matrix of
 * configurations, each N times, as real migrations between two ferry
 * processes it spawns (and, with --qemu, between two QEMU processes), and
 * writes results.csv, results.json, results.md and gnuplot plots.
 *
 * Modules: bench_matrix.c (the configurations), bench_stats.c (median, p90,
 * max), bench_proc.c (child processes and /proc), bench_ferry.c (one ferry
 * migration), bench_qmp.c (a QMP client), bench_qemu.c (one QEMU
 * migration), bench_out.c (CSV, JSON, Markdown), bench_plot.c (gnuplot),
 * cmd_bench.c (the command).  Everything runs on the main thread.
 */
#ifndef FERRY_BENCH_H
#define FERRY_BENCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

enum bench_workload { BW_IDLE, BW_INCREMENT, BW_RANDOM };
enum bench_engine { BENCH_FERRY, BENCH_QEMU };

struct bench_cfg {
	unsigned mem_mib;
	enum bench_workload workload;
	unsigned rate_mbs;       /* random's rate in MB/s (10^6); 0 = unlimited */
	unsigned vcpus, channels, downtime_ms;
	unsigned wss_mib;        /* working set; 0 = the workload's default */
	bool compress_none;      /* else auto */
};

/* The figures of one run; NAN where a figure was not measured. */
enum bench_metric {
	BM_DOWNTIME,      /* ms: ferry's (or QEMU's STOP->RESUME events) */
	BM_STALL,         /* ms: the longest gap the guest saw */
	BM_TOTAL,         /* ms */
	BM_SETUP,         /* ms */
	BM_WIRE,          /* MiB on the wire */
	BM_ITERATIONS,
	BM_THROUGHPUT,    /* MB/s (10^6) over the whole migration */
	BM_DIRTY_BEFORE,  /* MB/s the guest dirtied before the migration */
	BM_DIRTY_DURING,  /* MB/s it dirtied during the migration */
	BM_LOG_RATE,      /* MB/s of distinct pages the dirty log saw, last iteration */
	BM_STALL_BEFORE,  /* ms: the guest's longest gap before the migration */
	BM_FIRST_PASS,    /* MB/s on the wire during the first iteration */
	BM_SRC_CPU,       /* CPU seconds of the source, without vCPU threads */
	BM_DST_CPU,       /* same, destination */
	BM_SRC_RSS,       /* MiB, peak RSS of the source process */
	BM_DST_RSS,       /* MiB, peak RSS of the destination process */
	BM_COUNT
};

struct bench_metric_info {
	const char *key;    /* CSV/JSON column */
	const char *title;  /* Markdown header */
	int decimals;
	bool in_md;         /* a column of the Markdown table */
};
extern const struct bench_metric_info bench_metrics[BM_COUNT];

struct bench_result {
	unsigned cfg;              /* index into the matrix */
	enum bench_engine engine;
	unsigned rep;              /* 1-based */
	bool ok;
	char error[256];           /* why the run failed, when !ok */
	double v[BM_COUNT];
	json_t *iterations;        /* the per-iteration array (owned), or NULL */
};

struct bench_stat {
	unsigned n;                /* values that went in (NaNs left out) */
	double median, p90, max;
};

/* bench_matrix.c */
/* The configurations of --quick or of the full matrix; caller frees. */
int bench_matrix(bool quick, struct bench_cfg **out, unsigned *n);
/* "1G increment 1cpu 1ch auto 10ms"-style label. */
const char *bench_cfg_label(const struct bench_cfg *c, char *buf, size_t len);
const char *bench_workload_name(const struct bench_cfg *c, char *buf, size_t len);
/*
 * One configuration from "mem=1G,workload=random,rate=200,cpus=2,channels=2,
 * compress=none,downtime=5,wss=512M" (any subset; the rest as in the
 * baseline: 1G increment, 1 vCPU, 1 channel, auto, 10 ms, default wss).  0, or -EINVAL with a message.
 */
int bench_parse_cfg(const char *spec, struct bench_cfg *c);
/* Estimated seconds for one ferry run of c on this machine. */
double bench_estimate_s(const struct bench_cfg *c);
/* The QEMU side runs the configurations its boot-sector guest can do. */
bool bench_qemu_can_run(const struct bench_cfg *c);
/* Working-set size the workload writes (bytes). */
uint64_t bench_wss(const struct bench_cfg *c);

/* bench_stats.c */
/* Median, p90 (nearest rank) and max of the finite values; v is sorted. */
struct bench_stat bench_stat_of(double *v, unsigned n);
/* Stats of metric m over the successful runs of (cfg, engine). */
struct bench_stat bench_stat_metric(const struct bench_result *r, unsigned nr, unsigned cfg,
				    enum bench_engine e, enum bench_metric m);
/* Runs of (cfg, engine), and how many of them failed. */
void bench_count(const struct bench_result *r, unsigned nr, unsigned cfg, enum bench_engine e,
		 unsigned *runs, unsigned *failed);

/* bench_proc.c */
struct bench_child {
	pid_t pid;
	int status;               /* exit status once reaped, -1 before */
	bool reaped;
	double cpu_s;             /* from wait4 once reaped */
	double maxrss_mib;
};
/* Starts argv with stdout and stderr into log; stdin from /dev/null. */
int bench_spawn(char *const argv[], const char *log, struct bench_child *c);
/* Waits up to timeout_ms for the child; true once it is reaped. */
bool bench_wait(struct bench_child *c, unsigned timeout_ms);
/* SIGKILLs and reaps the child if it still runs. */
void bench_kill(struct bench_child *c);
/* CPU seconds (utime+stime) of a process or one of its threads (tid 0). */
int bench_proc_cpu(pid_t pid, pid_t tid, double *cpu_s);
/* VmHWM of a process in MiB. */
int bench_proc_hwm(pid_t pid, double *mib);
/* Milliseconds on CLOCK_MONOTONIC. */
double bench_now_ms(void);
void bench_sleep_ms(unsigned ms);
/* Waits until a line of the file matches "... tcp:127.0.0.1:PORT"; 0 or -errno. */
int bench_wait_port(const char *log, const char *prefix, struct bench_child *c,
		    unsigned timeout_ms, unsigned *port);
/* Number of lines of the file that contain needle. */
unsigned bench_count_lines(const char *path, const char *needle);

/* bench_ferry.c */
struct bench_env {
	const char *self;          /* the ferry binary */
	const char *dir;           /* scratch directory for sockets and logs */
	const char *qemu;          /* qemu-system-x86_64, or NULL */
	const char *bootsect;      /* the QEMU guest image */
	bool keep_logs;
};
/* One migration of c; fills r (r->ok false with r->error on failure). */
void bench_run_ferry(const struct bench_env *env, const struct bench_cfg *c,
		     struct bench_result *r);

/* bench_qmp.c */
struct bench_qmp {
	int fd;
	char buf[65536];
	size_t len;
	json_t *events;            /* events seen while waiting for replies */
};
int bench_qmp_connect(struct bench_qmp *q, const char *path, unsigned timeout_ms);
/* Sends a command and waits for its reply; *ret gets "return" (new ref). */
int bench_qmp_exec(struct bench_qmp *q, const char *cmd, json_t *args, json_t **ret);
/* Waits for an event by name (queued or new); *ev gets it (new ref). */
int bench_qmp_wait_event(struct bench_qmp *q, const char *name, unsigned timeout_ms,
			 json_t **ev);
void bench_qmp_close(struct bench_qmp *q);
/* Splits one QMP line: 1 reply, 2 event, 0 greeting; -EPROTO if neither. */
int bench_qmp_classify(json_t *msg);
/* An event's timestamp in ms of CLOCK_REALTIME, or -EPROTO. */
int bench_qmp_event_ms(json_t *ev, double *ms);
/* The "error" desc of a reply, or NULL. */
const char *bench_qmp_error(json_t *reply);

/* bench_qemu.c */
void bench_run_qemu(const struct bench_env *env, const struct bench_cfg *c,
		    struct bench_result *r);

/* bench_out.c */
struct bench_meta {
	const char *date, *commit, *host;
	unsigned reps;
	bool quick, qemu;
	const char *qemu_version;   /* or NULL */
	double elapsed_s;
};
int bench_write_csv(const char *path, const struct bench_cfg *cfgs,
		    const struct bench_result *r, unsigned nr);
int bench_write_json(const char *path, const struct bench_meta *m, const struct bench_cfg *cfgs,
		     unsigned ncfg, const struct bench_result *r, unsigned nr);
/* The Markdown tables (also printed to out when it is not NULL). */
int bench_write_md(const char *path, FILE *out, const struct bench_meta *m,
		   const struct bench_cfg *cfgs, unsigned ncfg, const struct bench_result *r,
		   unsigned nr);
/* CSV-quotes s when it needs it, into buf. */
const char *bench_csv_field(const char *s, char *buf, size_t len);

/* bench_plot.c */
/* Writes the plot data and scripts into dir (absolute), runs gnuplot; 0, or -errno with a message. */
int bench_plot(const char *dir, const struct bench_cfg *cfgs, unsigned ncfg,
	       const struct bench_result *r, unsigned nr);

#endif
