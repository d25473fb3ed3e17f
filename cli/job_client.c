/*
 * The client side of a long control-API job (a live migration, a save):
 * start it, then poll its query command until it reaches a final state,
 * redrawing one progress line on a terminal and turning the first Ctrl-C
 * into the job's cancel command.  `ferry migrate` and `ferry save` share it.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/util.h"
#include "cli.h"

#define POLL_MS 100

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static bool is_final(const struct job_client *j, const char *state)
{
	for (const char *const *f = j->final_states; *f; f++)
		if (strcmp(*f, state) == 0)
			return true;
	return false;
}

static void send_cancel(int fd, const struct job_client *j)
{
	json_t *args = json_object(), *reply = NULL;

	if (ctl_request(fd, j->cancel, args, &reply) == 0 && json_object_get(reply, "error"))
		fprintf(stderr, "\nferry %s: cannot cancel: %s\n", j->cmd,
			json_string_value(json_object_get(json_object_get(reply, "error"), "desc")));
	json_decref(args);
	json_decref(reply);
}

/* Sends the start command; 0, or an exit status after printing why not. */
static int job_client_start(int fd, const struct job_client *j, json_t *args)
{
	json_t *reply = NULL, *err;
	int rc = ctl_request(fd, j->start, args, &reply), status = 0;

	if (rc) {
		fprintf(stderr, "ferry %s: %s\n", j->cmd, ferr_msg(rc));
		status = EXIT_RUNTIME;
	} else if ((err = json_object_get(reply, "error"))) {
		const char *cls = json_string_value(json_object_get(err, "class"));

		fprintf(stderr, "ferry %s: %s\n", j->cmd,
			json_string_value(json_object_get(err, "desc")));
		status = cls && strcmp(cls, "InvalidParameter") == 0 ? EXIT_USAGE : EXIT_RUNTIME;
	}
	json_decref(reply);
	return status;
}

/* Polls until a final state; the final query reply's "return" object
 * (caller decrefs), or NULL after printing an error. */
static json_t *job_client_follow(int fd, const struct job_client *j, bool tty)
{
	struct sigaction sa = { .sa_handler = on_sigint };
	bool cancel_sent = false;
	json_t *reply = NULL;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	for (;;) {
		struct timespec ts = { 0, POLL_MS * 1000000L };
		json_t *st, *empty = json_object();
		const char *state;
		int rc;

		if (interrupted && !cancel_sent) {
			cancel_sent = true;
			send_cancel(fd, j);
		}
		json_decref(reply);
		reply = NULL;
		rc = ctl_request(fd, j->query, empty, &reply);
		json_decref(empty);
		if (rc) {
			fprintf(stderr, "%sferry %s: lost the ferry process (%s)%s\n", tty ? "\n" : "",
				j->cmd, ferr_msg(rc), j->lost_hint ? j->lost_hint : "");
			break;
		}
		st = json_object_get(reply, "return");
		state = json_string_value(json_object_get(st, "state"));
		if (!state) {
			fprintf(stderr, "ferry %s: unexpected reply from ferry\n", j->cmd);
			break;
		}
		if (is_final(j, state)) {
			json_incref(st);
			json_decref(reply);
			if (tty)
				fputs("\r\033[K", stderr);
			return st;
		}
		if (tty)
			j->draw(st, j->draw_ctx);
		nanosleep(&ts, NULL);
	}
	json_decref(reply);
	return NULL;
}

static int finish(const struct job_client *j, json_t *st, bool as_json)
{
	const char *state = json_string_value(json_object_get(st, "state"));
	const char *err = json_string_value(json_object_get(st, "error"));

	if (as_json) {
		json_dumpf(st, stdout, JSON_INDENT(2) | j->json_flags);
		fputc('\n', stdout);
	} else if (strcmp(state, "completed") == 0) {
		j->summary(st);
	}
	if (strcmp(state, "completed") == 0)
		return 0;
	fprintf(stderr, "ferry %s: %s %s: %s\n", j->cmd, j->failed_what, state,
		err ? err : "no reason given");
	return j->fail_status ? j->fail_status(state) : EXIT_RUNTIME;
}

int job_client_run(const char *socket, const struct job_client *j, json_t *args, bool as_json)
{
	int fd = ctl_connect(socket), rc;
	json_t *st;

	if (fd < 0) {
		fprintf(stderr, "ferry %s: %s\n", j->cmd, ferr_msg(fd));
		return EXIT_RUNTIME;
	}
	rc = job_client_start(fd, j, args);
	if (!rc) {
		st = job_client_follow(fd, j, isatty(STDERR_FILENO));
		rc = st ? finish(j, st, as_json) : EXIT_RUNTIME;
		json_decref(st);
	}
	close(fd);
	return rc;
}
