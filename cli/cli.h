/* The ferry command line: one function per subcommand, called by main(). */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include "../core/vm.h"
#include "control.h"

#define EXIT_RUNTIME 1   /* ferry could not do what was asked */
#define EXIT_USAGE   2   /* the command line was wrong */

int cmd_run(int argc, char **argv);
int cmd_ctl(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_save(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* Control commands of the synthetic devices (cli/vsp_commands.c). */
struct runner;
int vsp_commands_register(struct ctl_server *s, struct runner *r);

/* Prints "ferry SUB: message" to stderr and returns EXIT_USAGE. */
int usage_error(const char *sub, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Connects to a control socket; the fd, or -errno with a message. */
int ctl_connect(const char *path);
/* Sends one request line and reads one reply into *reply (caller decrefs). */
int ctl_request(int fd, const char *execute, json_t *args, json_t **reply);

/* A long control-API job followed by its client (cli/job_client.c). */
struct job_client {
	const char *cmd;                  /* the subcommand, for messages */
	const char *start, *query, *cancel;  /* its control commands */
	const char *const *final_states;  /* NULL-terminated */
	const char *lost_hint;            /* added when the ferry process is lost */
	void (*draw)(json_t *st, void *ctx);  /* redraws the progress line */
	void *draw_ctx;
	void (*summary)(json_t *st);      /* prints the completed job's summary */
	size_t json_flags;                /* extra json_dumpf() flags for --json */
	const char *failed_what;          /* "migration", "save": in the failure line */
	/* The exit status of a final state other than "completed" (NULL: 1). */
	int (*fail_status)(const char *state);
};

/*
 * Connects to SOCKET, starts the job with args, follows it to a final state
 * (redrawing progress on a terminal, sending the cancel command at the first
 * SIGINT) and prints the summary, or with as_json the final figures.
 * Returns the exit status: 0 once completed.
 */
int job_client_run(const char *socket, const struct job_client *j, json_t *args, bool as_json);

#endif
