/*
 * A misbehaving control client for the end-to-end tests:
 *   ctl_abuse SOCKET partial    send half a request and hang up
 *   ctl_abuse SOCKET oversize   send a 200 KiB line, then a valid request
 *   ctl_abuse SOCKET flood N    open N connections at once and hold them
 *   ctl_abuse SOCKET binary     send random bytes and newlines
 *   ctl_abuse SOCKET noread N   send N requests and never read a reply
 * Exits 0 when it could do what it was asked; the test then checks that
 * the VM behind the socket is unharmed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int dial(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("connect");
		exit(1);
	}
	return fd;
}

static void put(int fd, const void *buf, size_t len)
{
	if (write(fd, buf, len) != (ssize_t)len) {
		perror("write");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	const char *mode = argc > 2 ? argv[2] : "";
	int n = argc > 3 ? atoi(argv[3]) : 0;
	char buf[4096];
	int fd;

	if (argc < 3) {
		fprintf(stderr, "usage: ctl_abuse SOCKET MODE [N]\n");
		return 2;
	}
	/* The server may drop us mid-write; that is the point, not a failure. */
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(mode, "partial") == 0) {
		fd = dial(argv[1]);
		put(fd, "{\"execute\":\"sta", 15);
		close(fd);
	} else if (strcmp(mode, "oversize") == 0) {
		char *big = malloc(200 << 10);
		ssize_t got;

		memset(big, 'x', 200 << 10);
		fd = dial(argv[1]);
		put(fd, big, 200 << 10);
		put(fd, "\n{\"execute\":\"status\"}\n", 22);
		free(big);
		/* Expect an error for the long line, then a real reply. */
		got = 0;
		while (got < (ssize_t)sizeof(buf) - 1) {
			ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - (size_t)got);

			if (r <= 0)
				break;
			got += r;
			buf[got] = 0;
			if (strstr(buf, "\"return\""))
				break;
		}
		buf[got > 0 ? got : 0] = 0;
		printf("%s", buf);
		close(fd);
		return strstr(buf, "longer than") && strstr(buf, "\"return\"") ? 0 : 1;
	} else if (strcmp(mode, "flood") == 0) {
		int *fds = calloc((size_t)n, sizeof(int));

		for (int i = 0; i < n; i++)
			fds[i] = dial(argv[1]);
		sleep(1);
		for (int i = 0; i < n; i++)
			close(fds[i]);
		free(fds);
	} else if (strcmp(mode, "binary") == 0) {
		fd = dial(argv[1]);
		srand(7);
		for (int i = 0; i < 64; i++) {
			for (size_t j = 0; j < sizeof(buf); j++)
				buf[j] = (char)rand();
			put(fd, buf, sizeof(buf));
		}
		put(fd, "\n\n\n", 3);
		close(fd);
	} else if (strcmp(mode, "noread") == 0) {
		static const char req[] = "{\"execute\":\"query-commands\"}\n";

		fd = dial(argv[1]);
		for (int i = 0; i < n; i++)
			if (write(fd, req, sizeof(req) - 1) < 0)
				break;  /* the server dropped us: fine */
		close(fd);
	} else {
		fprintf(stderr, "ctl_abuse: unknown mode %s\n", mode);
		return 2;
	}
	return 0;
}
