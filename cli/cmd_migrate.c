/*
 * `ferry migrate SOCKET URI [options]`: start a live migration through a
 * running ferry's control socket and follow it to the end.  On a terminal
 * it redraws one progress line; otherwise it is silent until the summary.
 * Ctrl-C asks the source to cancel.  Exits 0 only when the destination
 * runs the VM.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/util.h"
#include "../migrate/migrate.h"
#include "../transport/xport.h"
#include "cli.h"

#define EXIT_UNCONFIRMED 3

static const char migrate_usage[] =
	"usage: ferry migrate SOCKET tcp:HOST:PORT [--downtime-ms N] [--channels N]\n"
	"                     [--compress auto|zstd|none] [--max-bandwidth RATE]\n"
	"                     [--timeout SECONDS] [--on-timeout cancel|switchover]\n"
	"                     [--verify] [--json]\n"
	"\n"
	"  --downtime-ms N       switch over once the rest fits N ms (default 10)\n"
	"  --channels N          stripe pages over N TCP connections (1-16, default 1)\n"
	"  --compress MODE       auto (compress when it is faster), zstd or none\n"
	"  --max-bandwidth RATE  bytes per second, e.g. 200M (default: no limit)\n"
	"  --timeout SECONDS     give up (or switch over) after this long\n"
	"  --on-timeout ACTION   cancel (default) or switchover\n"
	"  --verify              compare a digest of every page before the switch\n"
	"  --json                print the final figures as JSON\n"
	"\n"
	"Exit status: 0 the destination runs the VM; 1 the migration failed or was\n"
	"cancelled and the source still runs it; 2 usage error; 3 committed but not\n"
	"confirmed by the destination (see docs/migration.md).\n";

static double jnum(json_t *o, const char *k)
{
	return json_number_value(json_object_get(o, k));
}

static const char *rate(char *buf, size_t len, double bytes_per_s)
{
	char s[32];

	snprintf(buf, len, "%s/s", fmt_size(s, sizeof(s), (uint64_t)bytes_per_s));
	return buf;
}

/* One progress line; fields that could run backwards are shown as is,
 * but the transferred total and the iteration only ever grow. */
static void draw_progress(json_t *st, void *ctx)
{
	char sent[32], left[32], bw[32];
	double eta = jnum(st, "eta_ms"), *eta_shown = ctx;

	/* Smooth the ETA so a noisy estimate does not jump about. */
	*eta_shown = *eta_shown > 0 ? 0.7 * *eta_shown + 0.3 * eta : eta;
	fprintf(stderr, "\r\033[K%-10s iter %-3lld sent %-10s left %-10s dirty %6.1fk pg/s  "
		"bw %-12s est. downtime %6.1f ms  ETA %5.1f s",
		json_string_value(json_object_get(st, "state")),
		(long long)jnum(st, "iteration"),
		fmt_size(sent, sizeof(sent), (uint64_t)jnum(st, "transferred_bytes")),
		fmt_size(left, sizeof(left), (uint64_t)jnum(st, "remaining_bytes")),
		jnum(st, "dirty_rate_pps") / 1000.0, rate(bw, sizeof(bw), jnum(st, "bandwidth_bps")),
		jnum(st, "expected_downtime_ms"), *eta_shown / 1000.0);
	fflush(stderr);
}

static void print_summary(json_t *st)
{
	char wire[32], tp[32];

	printf("migration %s: total %.1f ms, downtime %.2f ms, %s on the wire, "
	       "%lld iterations, %s\n",
	       json_string_value(json_object_get(st, "state")), jnum(st, "total_ms"),
	       jnum(st, "downtime_ms"),
	       fmt_size(wire, sizeof(wire), (uint64_t)jnum(st, "transferred_bytes")),
	       (long long)jnum(st, "iteration"), rate(tp, sizeof(tp), jnum(st, "throughput_bps")));
}

struct migrate_opts {
	json_t *args;
	bool json;
};

static int parse_opts(int argc, char **argv, struct migrate_opts *o)
{
	static const struct option longopts[] = {
		{ "downtime-ms", required_argument, NULL, 'd' },
		{ "channels", required_argument, NULL, 'c' },
		{ "compress", required_argument, NULL, 'z' },
		{ "max-bandwidth", required_argument, NULL, 'b' },
		{ "timeout", required_argument, NULL, 't' },
		{ "on-timeout", required_argument, NULL, 'T' },
		{ "verify", no_argument, NULL, 'v' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char scheme[8], host[64];
	enum mig_compress cz;
	uint16_t port;
	uint64_t v;
	int opt;

	optind = 1;
	opterr = 0;
	/* Options may come before or after SOCKET and URI. */
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 60000)
				return usage_error("migrate", "--downtime-ms '%s' must be 1 to 60000", optarg);
			json_object_set_new(o->args, "downtime_ms", json_integer((json_int_t)v));
			break;
		case 'c':
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > MIG_MAX_CHANNELS)
				return usage_error("migrate", "--channels '%s' must be 1 to %u", optarg,
						   MIG_MAX_CHANNELS);
			json_object_set_new(o->args, "channels", json_integer((json_int_t)v));
			break;
		case 'z':
			if (mig_compress_parse(optarg, &cz) < 0)
				return usage_error("migrate", "--compress '%s' must be auto, zstd or none", optarg);
			json_object_set_new(o->args, "compress", json_string(optarg));
			break;
		case 'b':
			if (parse_size(optarg, &v) < 0)
				return usage_error("migrate", "--max-bandwidth '%s' is not a rate such as 200M",
						   optarg);
			json_object_set_new(o->args, "max_bandwidth", json_integer((json_int_t)v));
			break;
		case 't':
			if (parse_u64(optarg, &v) < 0 || v > 86400)
				return usage_error("migrate", "--timeout '%s' must be 0 to 86400 seconds", optarg);
			json_object_set_new(o->args, "timeout", json_integer((json_int_t)v));
			break;
		case 'T':
			if (strcmp(optarg, "cancel") != 0 && strcmp(optarg, "switchover") != 0)
				return usage_error("migrate", "--on-timeout '%s' must be cancel or switchover",
						   optarg);
			json_object_set_new(o->args, "on_timeout", json_string(optarg));
			break;
		case 'v':
			json_object_set_new(o->args, "verify", json_true());
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			fputs(migrate_usage, stdout);
			exit(0);
		default:
			return usage_error("migrate", "option '%s' is unknown or needs a value "
					   "(see ferry migrate --help)", argv[optind - 1]);
		}
	}
	if (argc - optind != 2)
		return usage_error("migrate", "usage: ferry migrate SOCKET tcp:HOST:PORT [options]");
	if (xport_parse_uri(argv[optind + 1], scheme, sizeof(scheme), host, sizeof(host), &port) < 0)
		return usage_error("migrate", "%s", ferr_msg(-EINVAL));
	json_object_set_new(o->args, "uri", json_string(argv[optind + 1]));
	return 0;
}

static int fail_status(const char *state)
{
	return strcmp(state, "unconfirmed") == 0 ? EXIT_UNCONFIRMED : EXIT_RUNTIME;
}

int cmd_migrate(int argc, char **argv)
{
	static const char *const final[] = { "completed", "failed", "cancelled", "unconfirmed",
					     NULL };
	struct migrate_opts o = { .args = json_object() };
	double eta_shown = 0;
	struct job_client job = {
		.cmd = "migrate", .start = "migrate", .query = "query-migrate",
		.cancel = "migrate-cancel", .final_states = final,
		.lost_hint = "; check the destination to see where the VM runs",
		.draw = draw_progress, .draw_ctx = &eta_shown,
		.summary = print_summary, .json_flags = CTL_JSON_REALS,
		.failed_what = "migration", .fail_status = fail_status,
	};
	int rc = parse_opts(argc, argv, &o);

	if (!rc)
		rc = job_client_run(argv[optind], &job, o.args, o.json);
	json_decref(o.args);
	return rc;
}
