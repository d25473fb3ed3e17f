/*
 * The control API: a unix socket speaking newline-delimited JSON in the
 * spirit of QEMU's QMP.  A request is {"execute": NAME, "arguments": {...}}
 * with an optional "id" that the reply echoes; the reply is
 * {"return": ...} or {"error": {"class": ..., "desc": ...}}.
 *
 * The server runs on its own thread and serves several clients.  Clients are
 * untrusted: lines are capped, malformed JSON gets an error reply, and a
 * client that stops reading or vanishes is dropped without affecting the VM.
 * Command handlers run on the server thread, one at a time; a long operation
 * (a migration) starts its own thread and returns at once.
 */
#ifndef FERRY_CONTROL_H
#define FERRY_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define CTL_LINE_MAX (64u << 10)
/* Reals in replies: enough digits for nanoseconds in ms, no binary noise
 * such as 167.11199999999999. */
#define CTL_JSON_REALS JSON_REAL_PRECISION(10)

struct ctl_server;

struct ctl_call {
	json_t *args;          /* always an object (empty if none given) */
	char err_class[32];
	char err_desc[512];
};

/* Returns the "return" value (new reference), or NULL after ctl_fail(). */
typedef json_t *(*ctl_fn)(struct ctl_call *call, void *opaque);

struct ctl_command {
	const char *name;
	ctl_fn fn;
	const char *help;
};

int ctl_server_create(struct ctl_server **out);
/* Registers commands (before ctl_server_listen). */
int ctl_register(struct ctl_server *s, const struct ctl_command *cmds,
		 unsigned n, void *opaque);
/* Binds `path` and starts the server thread. */
int ctl_server_listen(struct ctl_server *s, const char *path);
/* Stops the thread (flushing pending replies), removes the socket. */
void ctl_server_destroy(struct ctl_server *s);

/* Handles one request line; returns the reply line (caller frees). */
char *ctl_dispatch(struct ctl_server *s, const char *line, size_t len);

/* Records an error for the reply and returns NULL. */
json_t *ctl_fail(struct ctl_call *c, const char *cls, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Argument helpers: false (with the error recorded) when the argument is
 * missing while required, or has the wrong type or range.  Integers may be
 * given as JSON numbers or as size strings such as "512M".
 */
bool ctl_arg_u64(struct ctl_call *c, const char *key, bool required,
		 uint64_t min, uint64_t max, uint64_t *out);
bool ctl_arg_str(struct ctl_call *c, const char *key, bool required,
		 const char **out);
bool ctl_arg_bool(struct ctl_call *c, const char *key, bool *out);
/* Fails on any argument not in the NULL-terminated list of keys. */
bool ctl_args_only(struct ctl_call *c, const char *const *keys);

#endif
