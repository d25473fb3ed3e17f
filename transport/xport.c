#include "xport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/util.h"

int xport_parse_uri(const char *uri, char *scheme, size_t slen, char *host,
		    size_t hlen, uint16_t *port)
{
	const char *colon = strchr(uri, ':'), *hstart, *pcolon;
	uint64_t p;
	size_t n;

	if (!colon)
		return ferr(EINVAL, "'%s' is not a migration address (expected tcp:HOST:PORT)", uri);
	n = (size_t)(colon - uri);
	if (n >= slen)
		return ferr(EINVAL, "'%s': unknown transport", uri);
	memcpy(scheme, uri, n);
	scheme[n] = 0;
	if (strcmp(scheme, "tcp") != 0)
		return ferr(EINVAL, "'%s': unknown transport '%s' (this ferry speaks tcp)", uri, scheme);
	hstart = colon + 1;
	if (*hstart == '[') {
		const char *close = strchr(hstart, ']');

		if (!close || close[1] != ':')
			return ferr(EINVAL, "'%s': malformed [IPv6] host", uri);
		n = (size_t)(close - hstart - 1);
		hstart++;
		pcolon = close + 1;
	} else {
		pcolon = strrchr(hstart, ':');
		if (!pcolon)
			return ferr(EINVAL, "'%s' has no port (expected tcp:HOST:PORT)", uri);
		n = (size_t)(pcolon - hstart);
	}
	if (n == 0 || n >= hlen)
		return ferr(EINVAL, "'%s' has an empty or over-long host", uri);
	memcpy(host, hstart, n);
	host[n] = 0;
	if (parse_u64(pcolon + 1, &p) < 0 || p > 65535)
		return ferr(EINVAL, "'%s': port '%s' is not a number from 0 to 65535", uri, pcolon + 1);
	*port = (uint16_t)p;
	return 0;
}

int xport_connect(const char *uri, unsigned timeout_ms, struct xport **out)
{
	char scheme[8], host[64];
	uint16_t port;
	int rc = xport_parse_uri(uri, scheme, sizeof(scheme), host, sizeof(host), &port);

	if (rc)
		return rc;
	if (port == 0)
		return ferr(EINVAL, "'%s': cannot connect to port 0", uri);
	return xport_tcp_connect(host, port, timeout_ms, out);
}

int xport_listen(const char *uri, struct xport_listener **out)
{
	char scheme[8], host[64];
	uint16_t port;
	int rc = xport_parse_uri(uri, scheme, sizeof(scheme), host, sizeof(host), &port);

	if (rc)
		return rc;
	return xport_tcp_listen(host, port, out);
}

int xport_accept(struct xport_listener *l, unsigned timeout_ms, struct xport **out)
{
	return xport_tcp_accept(l, timeout_ms, out);
}

void xport_listener_close(struct xport_listener *l)
{
	if (!l)
		return;
	if (l->fd >= 0)
		close(l->fd);
	free(l);
}

void xport_close(struct xport *x)
{
	if (x)
		x->ops->close(x);
}
