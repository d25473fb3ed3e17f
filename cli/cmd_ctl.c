/*
 * `ferry ctl SOCKET COMMAND [KEY=VALUE]...`: send one control-API command
 * and print the reply.  Values that look like integers or booleans are sent
 * as such; everything else is a string.  `ferry ctl SOCKET --raw LINE`
 * sends LINE exactly as given and prints the reply line as it came.
 */
#include <errno.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../core/util.h"
#include "cli.h"

static json_t *typed_value(const char *s)
{
	const char *p = s;

	if (strcmp(s, "true") == 0)
		return json_true();
	if (strcmp(s, "false") == 0)
		return json_false();
	if (*p == '-')
		p++;
	if (*p && strspn(p, "0123456789") == strlen(p) && strlen(p) < 19)
		return json_integer(strtoll(s, NULL, 10));
	return json_string(s);
}

int ctl_connect(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path))
		return ferr(ENAMETOOLONG, "socket path '%s' is too long", path);
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ferr_sys(errno, "socket");
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int rc = ferr_sys(errno, "cannot connect to control socket %s", path);

		close(fd);
		return rc;
	}
	return fd;
}

/* Reads one newline-terminated reply line into buf (NUL-terminated). */
static int read_line(int fd, char *buf, size_t cap, size_t *len)
{
	size_t got = 0;

	while (got < cap - 1) {
		ssize_t n = read(fd, buf + got, cap - 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(buf, '\n', got))
			break;
	}
	buf[got] = 0;
	*len = got;
	return got && memchr(buf, '\n', got) ? 0 : -EPIPE;
}

int ctl_request(int fd, const char *execute, json_t *args, json_t **reply)
{
	json_t *req = json_pack("{s:s, s:O}", "execute", execute, "arguments", args);
	char *line = json_dumps(req, JSON_COMPACT), buf[CTL_LINE_MAX];
	size_t len;
	int rc;

	json_decref(req);
	rc = write_all(fd, line, strlen(line));
	if (!rc)
		rc = write_all(fd, "\n", 1);
	free(line);
	if (rc)
		return ferr_sys(rc, "cannot send to the control socket");
	rc = read_line(fd, buf, sizeof(buf), &len);
	if (rc)
		return ferr(EPIPE, "the control socket closed without a reply");
	*reply = json_loadb(buf, len, JSON_DISABLE_EOF_CHECK, NULL);
	return *reply ? 0 : ferr(EPROTO, "the control socket sent a malformed reply");
}

int cmd_ctl(int argc, char **argv)
{
	json_t *args = json_object(), *req, *reply = NULL, *err;
	char *line = NULL, buf[CTL_LINE_MAX];
	size_t got = 0;
	bool raw = argc == 4 && strcmp(argv[2], "--raw") == 0;
	int fd, status = EXIT_RUNTIME;

	if (argc >= 3 && strcmp(argv[2], "--raw") == 0 && argc != 4) {
		json_decref(args);
		return usage_error("ctl", "usage: ferry ctl SOCKET --raw JSON-LINE (one line, quoted)");
	}
	if (argc < 3 || (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))) {
		json_decref(args);
		if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
			puts("usage: ferry ctl SOCKET COMMAND [KEY=VALUE]...\n"
			     "       ferry ctl SOCKET --raw JSON-LINE");
			return 0;
		}
		return usage_error("ctl", "usage: ferry ctl SOCKET COMMAND [KEY=VALUE]...");
	}
	for (int i = 3; i < argc && !raw; i++) {
		const char *eq = strchr(argv[i], '=');
		char key[128];

		if (!eq || eq == argv[i] || (size_t)(eq - argv[i]) >= sizeof(key)) {
			json_decref(args);
			return usage_error("ctl", "argument '%s' is not KEY=VALUE", argv[i]);
		}
		memcpy(key, argv[i], (size_t)(eq - argv[i]));
		key[eq - argv[i]] = 0;
		json_object_set_new(args, key, typed_value(eq + 1));
	}
	if (raw) {
		json_decref(args);
		line = strdup(argv[3]);
	} else {
		req = json_pack("{s:s, s:o}", "execute", argv[2], "arguments", args);
		line = json_dumps(req, JSON_COMPACT);
		json_decref(req);
	}

	fd = ctl_connect(argv[1]);
	if (fd < 0) {
		fprintf(stderr, "ferry ctl: %s\n", ferr_msg(fd));
		free(line);
		return EXIT_RUNTIME;
	}
	if (write_all(fd, line, strlen(line)) < 0 || write_all(fd, "\n", 1) < 0) {
		fprintf(stderr, "ferry ctl: cannot send to %s: %s\n", argv[1], strerror(errno));
		goto out;
	}
	read_line(fd, buf, sizeof(buf), &got);
	if (raw) {
		fwrite(buf, 1, got, stdout);
		status = got && memchr(buf, '\n', got) ? 0 : EXIT_RUNTIME;
		goto out;
	}
	reply = json_loadb(buf, got, JSON_DISABLE_EOF_CHECK, NULL);
	if (!reply) {
		fprintf(stderr, "ferry ctl: no valid reply from %s\n", argv[1]);
		goto out;
	}
	err = json_object_get(reply, "error");
	if (err) {
		fprintf(stderr, "ferry ctl: %s: %s\n",
			json_string_value(json_object_get(err, "class")),
			json_string_value(json_object_get(err, "desc")));
	} else {
		json_dumpf(json_object_get(reply, "return"), stdout,
			   JSON_INDENT(2) | JSON_ENCODE_ANY | CTL_JSON_REALS);
		fputc('\n', stdout);
		status = 0;
	}
out:
	json_decref(reply);
	free(line);
	close(fd);
	return status;
}
