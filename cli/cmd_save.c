/*
 * `ferry save SOCKET FILE [--resume] [--max-bandwidth RATE] [--json]`:
 * save the VM behind a control socket to FILE and follow the save to the
 * end.  FILE is made absolute here, since the ferry that writes it may run
 * in another directory.  On a terminal one progress line is redrawn; Ctrl-C
 * asks ferry to cancel (the VM goes back to how it was).  Exits 0 only when
 * FILE holds the complete, synced save.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/util.h"
#include "cli.h"

static const char save_usage[] =
	"usage: ferry save SOCKET FILE [--resume] [--max-bandwidth RATE] [--json]\n"
	"\n"
	"Pauses the VM and writes its memory and complete state to FILE (through a\n"
	"temporary file in the same directory, renamed into place once synced).\n"
	"\n"
	"  --resume              let the VM run on afterwards (a checkpoint); by default\n"
	"                        it stays paused, ready to be moved\n"
	"  --max-bandwidth RATE  write at most RATE bytes per second, e.g. 200M\n"
	"  --json                print the final figures as JSON\n"
	"\n"
	"Run the saved VM with `ferry run --restore FILE [--lazy]`.\n"
	"Exit status: 0 saved; 1 the save failed or was cancelled (FILE is unchanged and\n"
	"the VM is as it was); 2 usage error.\n";

static double jnum(json_t *o, const char *k)
{
	return json_number_value(json_object_get(o, k));
}

static void draw_progress(json_t *st, void *ctx)
{
	const char *state = json_string_value(json_object_get(st, "state"));
	const char *phase = json_string_value(json_object_get(st, "phase"));
	double total = jnum(st, "ram_total_bytes"), done = jnum(st, "ram_done_bytes");
	char d[32], t[32], w[32], r[32];

	(void)ctx;
	if (state && strcmp(state, "waiting") == 0) {
		fprintf(stderr, "\r\033[Kwaiting for the lazy restore to bring in all of RAM");
	} else if (phase && strcmp(phase, "state") == 0) {
		fprintf(stderr, "\r\033[Ksaving     pausing the VM and writing its state");
	} else if (phase && strcmp(phase, "sync") == 0) {
		fprintf(stderr, "\r\033[Ksyncing    %s written", fmt_size(w, sizeof(w),
			(uint64_t)jnum(st, "written_bytes")));
	} else {
		fprintf(stderr, "\r\033[Ksaving %3.0f%%  %s of %s scanned  %s written  %s/s  "
			"VM paused %.1f s", total > 0 ? 100.0 * done / total : 0.0,
			fmt_size(d, sizeof(d), (uint64_t)done), fmt_size(t, sizeof(t), (uint64_t)total),
			fmt_size(w, sizeof(w), (uint64_t)jnum(st, "written_bytes")),
			fmt_size(r, sizeof(r), (uint64_t)jnum(st, "throughput_bps")),
			jnum(st, "paused_ms") / 1000.0);
	}
	fflush(stderr);
}

static void print_summary(json_t *st)
{
	json_t *res = json_object_get(st, "result");
	char f[32], w[32], r[32];
	double write_ms = jnum(res, "write_ms");

	printf("saved to %s: %s file, %s written in %.1f ms (%s/s), synced in %.1f ms; "
	       "the VM was paused %.1f ms and is %s\n",
	       json_string_value(json_object_get(st, "file")),
	       fmt_size(f, sizeof(f), (uint64_t)jnum(res, "file_bytes")),
	       fmt_size(w, sizeof(w), (uint64_t)jnum(st, "written_bytes")), write_ms,
	       fmt_size(r, sizeof(r), write_ms > 0 ? (uint64_t)(jnum(st, "written_bytes") * 1000.0 /
							       write_ms) : 0),
	       jnum(res, "sync_ms"), jnum(st, "paused_ms"),
	       json_is_true(json_object_get(st, "resume")) ? "running again" : "paused");
}

/* FILE relative to this process's directory, made absolute. */
static int absolute_path(const char *file, char *out, size_t len)
{
	char cwd[PATH_MAX];

	if (file[0] == '/') {
		if (strlen(file) >= len)
			return -ENAMETOOLONG;
		snprintf(out, len, "%s", file);
		return 0;
	}
	if (!getcwd(cwd, sizeof(cwd)))
		return -errno;
	if (strlen(cwd) + 1 + strlen(file) >= len)
		return -ENAMETOOLONG;
	/* Lengths checked above; the compiler cannot see it. */
	memcpy(out, cwd, strlen(cwd));
	out[strlen(cwd)] = '/';
	memcpy(out + strlen(cwd) + 1, file, strlen(file) + 1);
	return 0;
}

static int parse_opts(int argc, char **argv, json_t *args, bool *as_json)
{
	static const struct option longopts[] = {
		{ "resume", no_argument, NULL, 'r' },
		{ "max-bandwidth", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char path[PATH_MAX];
	uint64_t v;
	int opt;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'r':
			json_object_set_new(args, "resume", json_true());
			break;
		case 'b':
			if (parse_size(optarg, &v) < 0 || v == 0)
				return usage_error("save", "--max-bandwidth '%s' is not a rate such as 200M",
						   optarg);
			json_object_set_new(args, "max_bandwidth", json_integer((json_int_t)v));
			break;
		case 'j':
			*as_json = true;
			break;
		case 'h':
			fputs(save_usage, stdout);
			exit(0);
		default:
			return usage_error("save", "option '%s' is unknown or needs a value "
					   "(see ferry save --help)", argv[optind - 1]);
		}
	}
	if (argc - optind != 2)
		return usage_error("save", "usage: ferry save SOCKET FILE [--resume] "
				   "[--max-bandwidth RATE] [--json]");
	if (!argv[optind + 1][0] || absolute_path(argv[optind + 1], path, sizeof(path)) < 0)
		return usage_error("save", "'%s' is not a usable file name", argv[optind + 1]);
	json_object_set_new(args, "file", json_string(path));
	return 0;
}

int cmd_save(int argc, char **argv)
{
	static const char *const final[] = { "completed", "failed", "cancelled", NULL };
	static const struct job_client job = {
		.cmd = "save", .start = "save", .query = "query-save", .cancel = "save-cancel",
		.final_states = final, .draw = draw_progress, .summary = print_summary,
		.failed_what = "save",
	};
	json_t *args = json_object();
	bool as_json = false;
	int rc = parse_opts(argc, argv, args, &as_json);

	if (!rc)
		rc = job_client_run(argv[optind], &job, args, as_json);
	json_decref(args);
	return rc;
}
