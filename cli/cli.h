/* The ferry command line: one function per subcommand, called by main(). */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include "../core/vm.h"
#include "control.h"

#define EXIT_RUNTIME 1   /* ferry could not do what was asked */
#define EXIT_USAGE   2   /* the command line was wrong */

int cmd_run(int argc, char **argv);
int cmd_ctl(int argc, char **argv);

/* Prints "ferry SUB: message" to stderr and returns EXIT_USAGE. */
int usage_error(const char *sub, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Registers status, pause, resume, quit, shutdown, query-cpus, query-guest. */
int vm_commands_register(struct ctl_server *s, struct vm *vm);

#endif
