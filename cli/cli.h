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

#endif
