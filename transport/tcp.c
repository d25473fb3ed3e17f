/*
 * TCP transport.  Sockets are blocking (a sender thread per channel waits in
 * send), with TCP_NODELAY so small control messages leave at once and large
 * socket buffers so a 1 MiB batch fits in flight.  abort() shuts the socket
 * down, which wakes any thread blocked in it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../core/util.h"
#include "xport.h"

#define SOCK_BUF (4 << 20)

static int tcp_send(struct xport *x, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(x->fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == ECONNRESET ? -EPIPE : -errno;
		p += n;
		len -= (size_t)n;
		x->bytes_sent += (uint64_t)n;
	}
	return 0;
}

static int tcp_sendv(struct xport *x, const struct iovec *in, unsigned n)
{
	struct iovec iov[XPORT_MAX_IOV];
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n };
	size_t left = 0;

	if (n > XPORT_MAX_IOV)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		iov[i] = in[i];
		left += in[i].iov_len;
	}
	while (left) {
		ssize_t sent = sendmsg(x->fd, &msg, MSG_NOSIGNAL);

		if (sent < 0 && errno == EINTR)
			continue;
		if (sent < 0)
			return errno == ECONNRESET ? -EPIPE : -errno;
		x->bytes_sent += (uint64_t)sent;
		left -= (size_t)sent;
		/* Skip what went out, possibly ending inside one buffer. */
		while (sent > 0) {
			size_t take = MIN((size_t)sent, msg.msg_iov[0].iov_len);

			msg.msg_iov[0].iov_base = (uint8_t *)msg.msg_iov[0].iov_base + take;
			msg.msg_iov[0].iov_len -= take;
			sent -= (ssize_t)take;
			if (msg.msg_iov[0].iov_len == 0 && msg.msg_iovlen > 1) {
				msg.msg_iov++;
				msg.msg_iovlen--;
			}
		}
	}
	return 0;
}

static int tcp_recv(struct xport *x, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(x->fd, p, len, MSG_WAITALL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == ECONNRESET ? -EPIPE : -errno;
		if (n == 0)
			return -EPIPE;
		p += n;
		len -= (size_t)n;
		x->bytes_received += (uint64_t)n;
	}
	return 0;
}

static void tcp_abort(struct xport *x)
{
	shutdown(x->fd, SHUT_RDWR);
}

static void tcp_stop_receiving(struct xport *x)
{
	shutdown(x->fd, SHUT_RD);
}

static void tcp_close(struct xport *x)
{
	close(x->fd);
	free(x);
}

static const struct xport_ops tcp_ops = {
	.name = "tcp",
	.send = tcp_send,
	.sendv = tcp_sendv,
	.recv = tcp_recv,
	.abort = tcp_abort,
	.stop_receiving = tcp_stop_receiving,
	.close = tcp_close,
	.place_pages = NULL,
};

static void tune(int fd)
{
	int one = 1, buf = SOCK_BUF;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

static void describe(const struct sockaddr *sa, socklen_t len, char *out, size_t olen)
{
	char h[64], p[8];

	if (getnameinfo(sa, len, h, sizeof(h), p, sizeof(p), NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(out, olen, "?");
	else if (sa->sa_family == AF_INET6)
		snprintf(out, olen, "[%s]:%s", h, p);
	else
		snprintf(out, olen, "%s:%s", h, p);
}

static struct xport *wrap(int fd)
{
	struct xport *x = calloc(1, sizeof(*x));
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (!x)
		return NULL;
	x->ops = &tcp_ops;
	x->fd = fd;
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
		describe((struct sockaddr *)&ss, len, x->peer, sizeof(x->peer));
	return x;
}

static int resolve(const char *host, uint16_t port, bool passive, struct addrinfo **res)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
		.ai_flags = passive ? AI_PASSIVE : 0,
	};
	char p[8];
	int rc;

	snprintf(p, sizeof(p), "%u", port);
	rc = getaddrinfo(host, p, &hints, res);
	if (rc)
		return ferr(EHOSTUNREACH, "cannot resolve '%s': %s", host, gai_strerror(rc));
	return 0;
}

static int connect_timeout(int fd, const struct sockaddr *sa, socklen_t len, unsigned ms)
{
	int flags = fcntl(fd, F_GETFL), err = 0;
	socklen_t elen = sizeof(err);
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };

	fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	if (connect(fd, sa, len) < 0) {
		if (errno != EINPROGRESS)
			return -errno;
		if (poll(&pfd, 1, (int)ms) <= 0)
			return -ETIMEDOUT;
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
		if (err)
			return -err;
	}
	fcntl(fd, F_SETFL, flags);
	return 0;
}

int xport_tcp_connect(const char *host, uint16_t port, unsigned timeout_ms,
		      struct xport **out)
{
	struct addrinfo *res, *ai;
	int rc, fd = -1;

	rc = resolve(host, port, false, &res);
	if (rc)
		return rc;
	rc = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		tune(fd);
		rc = connect_timeout(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms);
		if (rc == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return ferr_sys(rc, "cannot connect to tcp:%s:%u", host, port);
	*out = wrap(fd);
	if (!*out) {
		close(fd);
		return -ENOMEM;
	}
	return 0;
}

int xport_tcp_listen(const char *host, uint16_t port, struct xport_listener **out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct addrinfo *res;
	struct xport_listener *l;
	int rc, fd, one = 1;

	rc = resolve(host, port, true, &res);
	if (rc)
		return rc;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = ferr_sys(errno, "socket");
		goto free_res;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 16) < 0) {
		rc = ferr_sys(errno, "cannot listen on tcp:%s:%u", host, port);
		close(fd);
		goto free_res;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		rc = -ENOMEM;
		close(fd);
		goto free_res;
	}
	l->fd = fd;
	snprintf(l->scheme, sizeof(l->scheme), "tcp");
	getsockname(fd, (struct sockaddr *)&ss, &len);
	describe((struct sockaddr *)&ss, len, l->addr, sizeof(l->addr));
	*out = l;
	rc = 0;
free_res:
	freeaddrinfo(res);
	return rc;
}

int xport_tcp_accept(struct xport_listener *l, unsigned timeout_ms, struct xport **out)
{
	struct pollfd pfd = { .fd = l->fd, .events = POLLIN };
	int fd, rc;

	do
		rc = poll(&pfd, 1, timeout_ms ? (int)timeout_ms : -1);
	while (rc < 0 && errno == EINTR);
	if (rc == 0)
		return ferr(ETIMEDOUT, "no connection on tcp:%s within %u ms", l->addr, timeout_ms);
	if (rc < 0)
		return ferr_sys(errno, "poll on the migration listener");
	fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return ferr_sys(errno, "accept on tcp:%s", l->addr);
	tune(fd);
	*out = wrap(fd);
	if (!*out) {
		close(fd);
		return -ENOMEM;
	}
	return 0;
}
