/*
 * A small QMP client for the QEMU side of the benchmark: QEMU's monitor
 * protocol is one JSON object per line on a unix socket, a greeting
 * {"QMP": ...}, then {"return": ...} or {"error": ...} replies in order,
 * with asynchronous {"event": ..., "timestamp": {"seconds", "microseconds"}}
 * lines in between.  Events that arrive while a reply is awaited are queued,
 * so none is lost.  QEMU is a child of the harness, but its lines are still
 * checked: a line over the buffer or that is not a JSON object is an error.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../core/util.h"
#include "bench.h"

int bench_qmp_classify(json_t *msg)
{
	if (!json_is_object(msg))
		return -EPROTO;
	if (json_object_get(msg, "return") || json_is_object(json_object_get(msg, "error")))
		return 1;
	if (json_is_string(json_object_get(msg, "event")))
		return 2;
	if (json_is_object(json_object_get(msg, "QMP")))
		return 0;
	return -EPROTO;
}

int bench_qmp_event_ms(json_t *ev, double *ms)
{
	json_t *ts = json_object_get(ev, "timestamp");
	json_t *s = json_object_get(ts, "seconds"), *us = json_object_get(ts, "microseconds");

	if (!json_is_integer(s) || !json_is_integer(us) || json_integer_value(s) < 0 ||
	    json_integer_value(us) < 0 || json_integer_value(us) >= 1000000)
		return -EPROTO;
	*ms = (double)json_integer_value(s) * 1000.0 + (double)json_integer_value(us) / 1000.0;
	return 0;
}

const char *bench_qmp_error(json_t *reply)
{
	json_t *e = json_object_get(reply, "error");

	if (!e)
		return NULL;
	return json_string_value(json_object_get(e, "desc")) ?: "error without a description";
}

/* The next message, waiting up to timeout_ms; -ETIMEDOUT, -EPIPE or -EPROTO. */
static int read_msg(struct bench_qmp *q, unsigned timeout_ms, json_t **msg)
{
	double end = bench_now_ms() + timeout_ms;

	for (;;) {
		char *nl = memchr(q->buf, '\n', q->len);
		struct pollfd pfd = { .fd = q->fd, .events = POLLIN };
		double left;
		ssize_t n;

		if (nl) {
			size_t line = (size_t)(nl - q->buf) + 1;

			*msg = json_loadb(q->buf, line, 0, NULL);
			memmove(q->buf, q->buf + line, q->len - line);
			q->len -= line;
			if (!*msg || bench_qmp_classify(*msg) < 0) {
				json_decref(*msg);
				*msg = NULL;
				return ferr(EPROTO, "QMP sent a line that is not a QMP message");
			}
			return 0;
		}
		if (q->len == sizeof(q->buf))
			return ferr(EPROTO, "QMP sent a line longer than %zu bytes", sizeof(q->buf));
		left = end - bench_now_ms();
		if (left <= 0)
			return ferr(ETIMEDOUT, "QMP did not answer within %u ms", timeout_ms);
		if (poll(&pfd, 1, (int)left + 1) < 0 && errno != EINTR)
			return ferr_sys(errno, "poll");
		if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return ferr(EPIPE, "QEMU closed its QMP socket");
		q->len += (size_t)n;
	}
}

int bench_qmp_connect(struct bench_qmp *q, const char *path, unsigned timeout_ms)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	double end = bench_now_ms() + timeout_ms;
	json_t *greeting = NULL, *ret = NULL;
	int rc;

	memset(q, 0, sizeof(*q));
	q->fd = -1;
	if (strlen(path) >= sizeof(addr.sun_path))
		return ferr(ENAMETOOLONG, "QMP socket path %s is too long", path);
	strcpy(addr.sun_path, path);
	q->events = json_array();
	for (;;) {
		q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (q->fd < 0)
			return ferr_sys(errno, "socket");
		if (connect(q->fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
			break;
		close(q->fd);
		q->fd = -1;
		if (bench_now_ms() >= end)
			return ferr(ETIMEDOUT, "QMP socket %s never answered", path);
		bench_sleep_ms(20);
	}
	rc = read_msg(q, timeout_ms, &greeting);
	if (rc)
		return rc;
	rc = bench_qmp_classify(greeting);
	json_decref(greeting);
	if (rc != 0)
		return ferr(EPROTO, "QMP did not start with a greeting");
	rc = bench_qmp_exec(q, "qmp_capabilities", NULL, &ret);
	json_decref(ret);
	return rc;
}

int bench_qmp_exec(struct bench_qmp *q, const char *cmd, json_t *args, json_t **ret)
{
	json_t *req = json_pack("{s:s}", "execute", cmd), *msg = NULL;
	char *line;
	int rc;

	*ret = NULL;
	if (args)
		json_object_set_new(req, "arguments", args);
	line = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	rc = write_all(q->fd, line, strlen(line));
	if (!rc)
		rc = write_all(q->fd, "\n", 1);
	free(line);
	if (rc)
		return ferr_sys(-rc, "cannot send %s to QMP", cmd);
	for (;;) {
		if ((rc = read_msg(q, 30000, &msg)) < 0)
			return rc;
		if (bench_qmp_classify(msg) == 2) {
			json_array_append_new(q->events, msg);
			continue;
		}
		if (bench_qmp_classify(msg) == 1)
			break;
		json_decref(msg);
	}
	if (bench_qmp_error(msg)) {
		rc = ferr(EIO, "QMP %s: %s", cmd, bench_qmp_error(msg));
		json_decref(msg);
		return rc;
	}
	*ret = json_incref(json_object_get(msg, "return"));
	json_decref(msg);
	return 0;
}

int bench_qmp_wait_event(struct bench_qmp *q, const char *name, unsigned timeout_ms,
			 json_t **ev)
{
	double end = bench_now_ms() + timeout_ms;
	json_t *v, *msg;
	size_t i;
	int rc;

	json_array_foreach(q->events, i, v)
		if (strcmp(json_string_value(json_object_get(v, "event")), name) == 0) {
			*ev = json_incref(v);
			json_array_remove(q->events, i);
			return 0;
		}
	for (;;) {
		double left = end - bench_now_ms();

		if (left <= 0)
			return ferr(ETIMEDOUT, "no QMP event %s within %u ms", name, timeout_ms);
		if ((rc = read_msg(q, (unsigned)left + 1, &msg)) < 0)
			return rc;
		if (bench_qmp_classify(msg) == 2 &&
		    strcmp(json_string_value(json_object_get(msg, "event")), name) == 0) {
			*ev = msg;
			return 0;
		}
		if (bench_qmp_classify(msg) == 2)
			json_array_append_new(q->events, msg);
		else
			json_decref(msg);
	}
}

void bench_qmp_close(struct bench_qmp *q)
{
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	json_decref(q->events);
	q->events = NULL;
}
