/*
 * Transports: one ops table behind which TCP (and later TLS and RDMA) are
 * interchangeable.  migrate/ never sees a socket; it sends and receives
 * whole messages through an xport and may abort one from another thread.
 *
 * Addresses are URIs: "tcp:HOST:PORT" (HOST an IPv4 address, "[v6]" or a
 * name).  Beside the byte stream, a transport may offer one-sided placement
 * of guest pages (RDMA WRITE into registered destination RAM); stream
 * transports leave place_pages NULL and migrate/ sends page batches.
 */
#ifndef FERRY_XPORT_H
#define FERRY_XPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define XPORT_MAX_IOV 4

struct xport;
struct xport_listener;

struct xport_ops {
	const char *name;
	/* Sends all of buf; 0 or -errno (-EPIPE when the peer has gone). */
	int (*send)(struct xport *x, const void *buf, size_t len);
	/* Sends n buffers back to back (n <= XPORT_MAX_IOV) as one write. */
	int (*sendv)(struct xport *x, const struct iovec *iov, unsigned n);
	/* Receives exactly len bytes; -EPIPE on a clean end of stream. */
	int (*recv)(struct xport *x, void *buf, size_t len);
	/* Makes blocked and later send/recv calls fail at once (any thread). */
	void (*abort)(struct xport *x);
	/* Makes blocked and later recv calls fail; sending still works. */
	void (*stop_receiving)(struct xport *x);
	void (*close)(struct xport *x);
	/* Optional: place `len` bytes at guest-physical `gpa` on the peer. */
	int (*place_pages)(struct xport *x, uint64_t gpa, const void *buf, size_t len);
};

struct xport {
	const struct xport_ops *ops;
	int fd;
	char peer[96];            /* for messages: "127.0.0.1:4444" */
	uint64_t bytes_sent;      /* updated by send/send2 */
	uint64_t bytes_received;
};

struct xport_listener {
	int fd;
	char addr[96];            /* the bound address, port resolved */
	char scheme[8];
};

/*
 * Splits "tcp:HOST:PORT" into its parts; -EINVAL with a message naming
 * what is wrong.  Accepted schemes: tcp.
 */
int xport_parse_uri(const char *uri, char *scheme, size_t slen, char *host,
		    size_t hlen, uint16_t *port);

/* Connects, giving up after timeout_ms. */
int xport_connect(const char *uri, unsigned timeout_ms, struct xport **out);
/* Binds and listens; port 0 picks a free port (see l->addr). */
int xport_listen(const char *uri, struct xport_listener **out);
/* Waits up to timeout_ms (0: forever) for one connection. */
int xport_accept(struct xport_listener *l, unsigned timeout_ms, struct xport **out);
void xport_listener_close(struct xport_listener *l);

static inline int xport_send(struct xport *x, const void *buf, size_t len)
{
	return x->ops->send(x, buf, len);
}
static inline int xport_sendv(struct xport *x, const struct iovec *iov, unsigned n)
{
	return x->ops->sendv(x, iov, n);
}
static inline int xport_recv(struct xport *x, void *buf, size_t len)
{
	return x->ops->recv(x, buf, len);
}
static inline void xport_abort(struct xport *x)
{
	x->ops->abort(x);
}
static inline void xport_stop_receiving(struct xport *x)
{
	x->ops->stop_receiving(x);
}
void xport_close(struct xport *x);

/* The TCP transport (transport/tcp.c). */
int xport_tcp_connect(const char *host, uint16_t port, unsigned timeout_ms,
		      struct xport **out);
int xport_tcp_listen(const char *host, uint16_t port, struct xport_listener **out);
int xport_tcp_accept(struct xport_listener *l, unsigned timeout_ms, struct xport **out);

#endif
