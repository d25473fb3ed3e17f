/*
 * A TCP proxy for migration tests that damages the stream on purpose.
 *
 *   mig_proxy PORTFILE DEST_PORT MODE [ARG]
 *
 * Listens on 127.0.0.1 (a free port, written to PORTFILE), and forwards
 * every accepted connection to 127.0.0.1:DEST_PORT in both directions.
 * MODE applies to the source-to-destination bytes of the first connection:
 *   pass          forward unchanged
 *   flip N        invert one bit of byte N
 *   truncate N    forward N bytes, then close both sides
 *   blackhole     accept, read everything, forward nothing, never answer
 * Runs until killed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum mode { PASS, FLIP, TRUNCATE, BLACKHOLE };

struct conn {
	int client, server;
	enum mode mode;
	unsigned long long arg;
};

static unsigned short dest_port;

static int dial(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(dest_port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void *pump(void *arg)
{
	struct conn *c = arg;
	unsigned long long seen = 0;
	char buf[65536];

	if (c->mode == BLACKHOLE) {
		while (read(c->client, buf, sizeof(buf)) > 0)
			;
		return NULL;
	}
	for (;;) {
		struct pollfd p[2] = { { c->client, POLLIN, 0 }, { c->server, POLLIN, 0 } };

		if (poll(p, 2, -1) < 0)
			break;
		if (p[0].revents) {
			ssize_t n = read(c->client, buf, sizeof(buf));

			if (n <= 0)
				break;
			if (c->mode == FLIP && c->arg >= seen && c->arg < seen + (unsigned long long)n)
				buf[c->arg - seen] ^= 0x10;
			if (c->mode == TRUNCATE && seen + (unsigned long long)n > c->arg) {
				if (write(c->server, buf, c->arg - seen) < 0)
					break;
				break;
			}
			seen += (unsigned long long)n;
			if (write(c->server, buf, (size_t)n) != n)
				break;
		}
		if (p[1].revents) {
			ssize_t n = read(c->server, buf, sizeof(buf));

			if (n <= 0 || write(c->client, buf, (size_t)n) != n)
				break;
		}
	}
	shutdown(c->client, SHUT_RDWR);
	shutdown(c->server, SHUT_RDWR);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	enum mode mode = PASS;
	unsigned long long arg = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
	int lfd, one = 1, first = 1;
	FILE *f;

	if (argc < 4) {
		fprintf(stderr, "usage: mig_proxy PORTFILE DEST_PORT pass|flip N|truncate N|blackhole\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	dest_port = (unsigned short)atoi(argv[2]);
	if (strcmp(argv[3], "flip") == 0)
		mode = FLIP;
	else if (strcmp(argv[3], "truncate") == 0)
		mode = TRUNCATE;
	else if (strcmp(argv[3], "blackhole") == 0)
		mode = BLACKHOLE;
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 16) < 0) {
		perror("listen");
		return 1;
	}
	getsockname(lfd, (struct sockaddr *)&a, &len);
	f = fopen(argv[1], "w");
	fprintf(f, "%u\n", ntohs(a.sin_port));
	fclose(f);
	for (;;) {
		struct conn *c = calloc(1, sizeof(*c));
		pthread_t t;

		c->client = accept(lfd, NULL, NULL);
		if (c->client < 0)
			return 1;
		c->mode = first ? mode : PASS;
		c->arg = arg;
		first = 0;
		if (c->mode != BLACKHOLE && (c->server = dial()) < 0) {
			close(c->client);
			free(c);
			continue;
		}
		pthread_create(&t, NULL, pump, c);
		pthread_detach(t);
	}
}
