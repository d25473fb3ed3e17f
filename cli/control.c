#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../core/util.h"

#define MAX_CLIENTS 16
#define MAX_COMMANDS 64
#define OUT_MAX (4u << 20)

struct registered {
	struct ctl_command cmd;
	void *opaque;
};

struct client {
	int fd;
	char *in;
	size_t in_len;
	bool discarding;     /* skipping the rest of an over-long line */
	char *out;
	size_t out_len;
};

struct ctl_server {
	struct registered cmds[MAX_COMMANDS];
	unsigned ncmds;
	int listen_fd;
	int wake[2];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	pthread_t thread;
	bool running;
	struct client clients[MAX_CLIENTS];
};

json_t *ctl_fail(struct ctl_call *c, const char *cls, const char *fmt, ...)
{
	va_list ap;

	snprintf(c->err_class, sizeof(c->err_class), "%s", cls);
	va_start(ap, fmt);
	vsnprintf(c->err_desc, sizeof(c->err_desc), fmt, ap);
	va_end(ap);
	return NULL;
}

bool ctl_arg_u64(struct ctl_call *c, const char *key, bool required,
		 uint64_t min, uint64_t max, uint64_t *out)
{
	json_t *v = json_object_get(c->args, key);
	uint64_t val;

	if (!v) {
		if (required)
			ctl_fail(c, "InvalidParameter", "missing argument '%s'", key);
		return !required;
	}
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		val = (uint64_t)json_integer_value(v);
	} else if (json_is_string(v) && parse_size(json_string_value(v), &val) == 0) {
		/* accepted: "512M" */
	} else {
		ctl_fail(c, "InvalidParameter", "argument '%s' must be a non-negative integer", key);
		return false;
	}
	if (val < min || val > max) {
		ctl_fail(c, "InvalidParameter", "argument '%s' = %llu is outside [%llu, %llu]",
			 key, (unsigned long long)val, (unsigned long long)min,
			 (unsigned long long)max);
		return false;
	}
	*out = val;
	return true;
}

bool ctl_arg_str(struct ctl_call *c, const char *key, bool required, const char **out)
{
	json_t *v = json_object_get(c->args, key);

	if (!v) {
		if (required)
			ctl_fail(c, "InvalidParameter", "missing argument '%s'", key);
		return !required;
	}
	if (!json_is_string(v)) {
		ctl_fail(c, "InvalidParameter", "argument '%s' must be a string", key);
		return false;
	}
	*out = json_string_value(v);
	return true;
}

bool ctl_arg_bool(struct ctl_call *c, const char *key, bool *out)
{
	json_t *v = json_object_get(c->args, key);

	if (!v)
		return true;
	if (!json_is_boolean(v)) {
		ctl_fail(c, "InvalidParameter", "argument '%s' must be true or false", key);
		return false;
	}
	*out = json_is_true(v);
	return true;
}

bool ctl_args_only(struct ctl_call *c, const char *const *keys)
{
	const char *k;
	json_t *v;

	json_object_foreach(c->args, k, v) {
		bool known = false;

		for (const char *const *p = keys; *p && !known; p++)
			known = strcmp(*p, k) == 0;
		if (!known) {
			ctl_fail(c, "InvalidParameter", "unknown argument '%s'", k);
			return false;
		}
	}
	return true;
}

static json_t *cmd_help(struct ctl_call *call, void *opaque)
{
	struct ctl_server *s = opaque;
	json_t *list = json_array();

	(void)call;
	for (unsigned i = 0; i < s->ncmds; i++)
		json_array_append_new(list, json_pack("{s:s, s:s}", "name", s->cmds[i].cmd.name,
						      "help", s->cmds[i].cmd.help));
	return list;
}

int ctl_server_create(struct ctl_server **out)
{
	static const struct ctl_command help = {
		"query-commands", cmd_help, "lists the commands this server knows",
	};
	struct ctl_server *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->listen_fd = -1;
	s->wake[0] = s->wake[1] = -1;
	for (unsigned i = 0; i < MAX_CLIENTS; i++)
		s->clients[i].fd = -1;
	ctl_register(s, &help, 1, s);
	*out = s;
	return 0;
}

int ctl_register(struct ctl_server *s, const struct ctl_command *cmds,
		 unsigned n, void *opaque)
{
	for (unsigned i = 0; i < n; i++) {
		if (s->ncmds == MAX_COMMANDS)
			return ferr(ENOSPC, "too many control commands");
		s->cmds[s->ncmds++] = (struct registered){ .cmd = cmds[i], .opaque = opaque };
	}
	return 0;
}

static char *reply_error(json_t *id, const char *cls, const char *desc)
{
	json_t *r = json_pack("{s:{s:s, s:s}}", "error", "class", cls, "desc", desc);
	char *line;

	if (id)
		json_object_set(r, "id", id);
	line = json_dumps(r, JSON_COMPACT);
	json_decref(r);
	return line;
}

char *ctl_dispatch(struct ctl_server *s, const char *line, size_t len)
{
	struct ctl_call call;
	json_error_t jerr;
	json_t *req, *id, *exec, *args, *result, *r;
	const struct registered *cmd = NULL;
	char *out;

	req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req) {
		char desc[300];

		snprintf(desc, sizeof(desc), "malformed JSON at column %d: %s",
			 jerr.column, jerr.text);
		return reply_error(NULL, "ParseError", desc);
	}
	id = json_object_get(req, "id");
	exec = json_object_get(req, "execute");
	args = json_object_get(req, "arguments");
	if (!json_is_object(req) || !json_is_string(exec)) {
		out = reply_error(json_is_object(req) ? id : NULL, "InvalidRequest",
				  "a request is an object with a string \"execute\"");
		goto out;
	}
	if (args && !json_is_object(args)) {
		out = reply_error(id, "InvalidRequest", "\"arguments\" must be an object");
		goto out;
	}
	for (unsigned i = 0; i < s->ncmds && !cmd; i++)
		if (strcmp(s->cmds[i].cmd.name, json_string_value(exec)) == 0)
			cmd = &s->cmds[i];
	if (!cmd) {
		char desc[300];

		snprintf(desc, sizeof(desc), "unknown command '%.200s' (query-commands lists them)",
			 json_string_value(exec));
		out = reply_error(id, "CommandNotFound", desc);
		goto out;
	}
	memset(&call, 0, sizeof(call));
	call.args = args ? json_incref(args) : json_object();
	result = cmd->cmd.fn(&call, cmd->opaque);
	json_decref(call.args);
	if (!result) {
		out = reply_error(id, call.err_class[0] ? call.err_class : "GenericError",
				  call.err_desc[0] ? call.err_desc : "command failed");
		goto out;
	}
	r = json_pack("{s:o}", "return", result);
	if (id)
		json_object_set(r, "id", id);
	out = json_dumps(r, JSON_COMPACT | CTL_JSON_REALS);
	json_decref(r);
out:
	json_decref(req);
	return out;
}

static void client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->in);
	free(c->out);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static void client_queue(struct client *c, const char *line)
{
	size_t n = strlen(line);
	char *grown;

	if (c->out_len + n + 1 > OUT_MAX) {
		client_close(c);  /* it is not reading its replies */
		return;
	}
	grown = realloc(c->out, c->out_len + n + 1);
	if (!grown) {
		client_close(c);
		return;
	}
	c->out = grown;
	memcpy(c->out + c->out_len, line, n);
	c->out[c->out_len + n] = '\n';
	c->out_len += n + 1;
}

static void client_flush(struct client *c)
{
	while (c->fd >= 0 && c->out_len) {
		ssize_t n = send(c->fd, c->out, c->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			client_close(c);
			return;
		}
		memmove(c->out, c->out + n, c->out_len - (size_t)n);
		c->out_len -= (size_t)n;
	}
}

static void client_process_lines(struct ctl_server *s, struct client *c)
{
	size_t start = 0;

	for (size_t i = 0; i < c->in_len && c->fd >= 0; i++) {
		char *reply;

		if (c->in[i] != '\n')
			continue;
		if (c->discarding) {
			c->discarding = false;
		} else if (i > start) {
			reply = ctl_dispatch(s, c->in + start, i - start);
			if (reply)
				client_queue(c, reply);
			free(reply);
		}
		start = i + 1;
	}
	if (c->fd < 0)
		return;
	memmove(c->in, c->in + start, c->in_len - start);
	c->in_len -= start;
	if (c->in_len >= CTL_LINE_MAX) {
		char *reply = reply_error(NULL, "InvalidRequest",
					  "request line longer than 64 KiB");

		client_queue(c, reply);
		free(reply);
		c->in_len = 0;
		c->discarding = true;
	}
}

static void client_read(struct ctl_server *s, struct client *c)
{
	ssize_t n;

	if (!c->in && !(c->in = malloc(CTL_LINE_MAX))) {
		client_close(c);
		return;
	}
	n = recv(c->fd, c->in + c->in_len, CTL_LINE_MAX - c->in_len, MSG_DONTWAIT);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		client_close(c);
		return;
	}
	if (c->discarding) {
		char *nl = memchr(c->in, '\n', (size_t)n);

		if (!nl)
			return;
		c->discarding = false;
		memmove(c->in, nl + 1, (size_t)n - (size_t)(nl + 1 - c->in));
		c->in_len = (size_t)n - (size_t)(nl + 1 - c->in);
	} else {
		c->in_len += (size_t)n;
	}
	client_process_lines(s, c);
	if (c->fd >= 0)
		client_flush(c);
}

static void accept_client(struct ctl_server *s)
{
	int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	for (unsigned i = 0; i < MAX_CLIENTS; i++) {
		if (s->clients[i].fd < 0) {
			s->clients[i].fd = fd;
			return;
		}
	}
	/* Full: say so and hang up. */
	(void)!send(fd, "{\"error\":{\"class\":\"GenericError\",\"desc\":\"too many control clients\"}}\n",
		    70, MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fd);
}

static void *server_thread(void *arg)
{
	struct ctl_server *s = arg;
	struct pollfd pfd[MAX_CLIENTS + 2];

	pthread_setname_np(pthread_self(), "ferry-control");
	for (;;) {
		unsigned n = 0;

		pfd[n++] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = s->listen_fd, .events = POLLIN };
		for (unsigned i = 0; i < MAX_CLIENTS; i++) {
			struct client *c = &s->clients[i];

			pfd[n++] = (struct pollfd){
				.fd = c->fd,
				.events = (short)(POLLIN | (c->out_len ? POLLOUT : 0)),
			};
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents & POLLIN)
			accept_client(s);
		for (unsigned i = 0; i < MAX_CLIENTS; i++) {
			struct client *c = &s->clients[i];
			short re = pfd[2 + i].revents;

			if (c->fd < 0 || !re || pfd[2 + i].fd != c->fd)
				continue;
			if (re & POLLOUT)
				client_flush(c);
			if (c->fd >= 0 && (re & (POLLIN | POLLHUP | POLLERR)))
				client_read(s, c);
		}
	}
	/* Last replies (e.g. to "quit") get a short chance to leave. */
	for (unsigned i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &s->clients[i];

		for (int tries = 0; c->fd >= 0 && c->out_len && tries < 50; tries++) {
			struct pollfd one = { .fd = c->fd, .events = POLLOUT };

			if (poll(&one, 1, 10) > 0)
				client_flush(c);
		}
	}
	return NULL;
}

static int bind_socket(struct ctl_server *s, const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path))
		return ferr(ENAMETOOLONG, "control socket path '%s' is longer than %zu bytes",
			    path, sizeof(addr.sun_path) - 1);
	strcpy(addr.sun_path, path);
	if (lstat(path, &st) == 0) {
		int probe;

		if (!S_ISSOCK(st.st_mode))
			return ferr(EEXIST, "control socket path %s exists and is not a socket", path);
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
			close(probe);
			return ferr(EADDRINUSE, "control socket %s is in use by another process", path);
		}
		if (probe >= 0)
			close(probe);
		unlink(path);  /* a stale socket from a process that died */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ferr_sys(errno, "cannot create the control socket");
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 8) < 0) {
		int rc = ferr_sys(errno, "cannot listen on control socket %s", path);

		close(fd);
		return rc;
	}
	s->listen_fd = fd;
	snprintf(s->path, sizeof(s->path), "%s", path);
	return 0;
}

int ctl_server_listen(struct ctl_server *s, const char *path)
{
	int rc = bind_socket(s, path);

	if (rc)
		return rc;
	if (pipe2(s->wake, O_CLOEXEC) < 0)
		return ferr_sys(errno, "pipe2");
	rc = pthread_create(&s->thread, NULL, server_thread, s);
	if (rc)
		return ferr_sys(rc, "cannot start the control thread");
	s->running = true;
	return 0;
}

void ctl_server_destroy(struct ctl_server *s)
{
	if (!s)
		return;
	if (s->running) {
		(void)!write(s->wake[1], "x", 1);
		pthread_join(s->thread, NULL);
	}
	for (unsigned i = 0; i < MAX_CLIENTS; i++)
		client_close(&s->clients[i]);
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		unlink(s->path);
	}
	if (s->wake[0] >= 0)
		close(s->wake[0]);
	if (s->wake[1] >= 0)
		close(s->wake[1]);
	free(s);
}
