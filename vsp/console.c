/*
 * The console provider: guest output packets go to ferry's console (stdout
 * or --console FILE, through vm_console_write), and host input (the
 * console-send command, or --console-in FILE, "-" for stdin) goes to the
 * guest in DATA packets, then one EOF packet when the input file ends.
 *
 * Host input waits in a 64 KiB queue until the guest has ring space.  A
 * reader thread of its own feeds the queue from the input file, so the
 * channel thread never blocks on it.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/util.h"
#include "channel.h"

#define QUEUE_SIZE (64u << 10)
#define OUT_BATCH (32u << 10)
#define STATE_VERSION 1

struct console {
	pthread_mutex_t qlock;
	uint8_t q[QUEUE_SIZE];     /* (qlock) */
	uint32_t qhead, qlen;      /* (qlock) */
	bool input_eof;            /* (qlock) the input file ended */
	bool eof_sent;             /* (ch->lock) */
	int input_fd;
	pthread_t reader;
	bool reader_started;
	_Atomic bool stop;
	struct vsp_chan *ch;
	uint64_t bytes_out, bytes_in, packets_out;
	uint8_t out[OUT_BATCH + VCON_MAX_DATA];
};

static uint32_t queue_put_locked(struct console *c, const uint8_t *p, uint32_t n)
{
	n = MIN(n, QUEUE_SIZE - c->qlen);
	for (uint32_t i = 0; i < n; i++)
		c->q[(c->qhead + c->qlen + i) % QUEUE_SIZE] = p[i];
	c->qlen += n;
	return n;
}

int vsp_console_queue(struct vsp_chan *ch, const void *data, size_t len)
{
	struct console *c = ch->priv;
	int rc = 0;

	pthread_mutex_lock(&c->qlock);
	if (len > QUEUE_SIZE - c->qlen)
		rc = ferr(ENOSPC, "the console input queue has room for %u bytes, not %zu",
			  QUEUE_SIZE - c->qlen, len);
	else
		queue_put_locked(c, data, (uint32_t)len);
	pthread_mutex_unlock(&c->qlock);
	if (!rc)
		vsp_chan_kick(ch);
	return rc;
}

/* Reads --console-in into the queue; stops at EOF, an error or stop. */
static void *reader_thread(void *arg)
{
	struct console *c = arg;
	uint8_t buf[4096];

	pthread_setname_np(pthread_self(), "vsp-console-in");
	while (!atomic_load(&c->stop)) {
		struct pollfd p = { .fd = c->input_fd, .events = POLLIN };
		uint32_t room;
		ssize_t n;

		pthread_mutex_lock(&c->qlock);
		room = QUEUE_SIZE - c->qlen;
		pthread_mutex_unlock(&c->qlock);
		if (room == 0 || poll(&p, 1, 100) <= 0) {
			if (room == 0)
				usleep(10000);
			continue;
		}
		n = read(c->input_fd, buf, MIN(room, sizeof(buf)));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		pthread_mutex_lock(&c->qlock);
		if (n > 0)
			queue_put_locked(c, buf, (uint32_t)n);
		else
			c->input_eof = true;
		pthread_mutex_unlock(&c->qlock);
		vsp_chan_kick(c->ch);
		if (n <= 0)
			break;
	}
	return NULL;
}

/* Moves queued input into the ring while it has room.  Returns true on progress. */
static bool push_input(struct vsp_chan *ch, struct console *c)
{
	uint8_t pkt[VCON_MAX_DATA];
	bool progress = false;

	pthread_mutex_lock(&c->qlock);
	while (c->qlen) {
		uint32_t n = MIN(c->qlen, VCON_MAX_DATA);

		for (uint32_t i = 0; i < n; i++)
			pkt[i] = c->q[(c->qhead + i) % QUEUE_SIZE];
		if (vsp_ring_push(ch, VCON_DATA, 0, pkt, n) < 0)
			break;
		c->qhead = (c->qhead + n) % QUEUE_SIZE;
		c->qlen -= n;
		c->bytes_in += n;
		progress = true;
	}
	if (!c->qlen && c->input_eof && !c->eof_sent &&
	    vsp_ring_push(ch, VCON_EOF, 0, NULL, 0) == 0) {
		c->eof_sent = true;
		progress = true;
	}
	pthread_mutex_unlock(&c->qlock);
	return progress;
}

static int console_work(struct vsp_chan *ch)
{
	struct console *c = ch->priv;
	struct vmbus_pkt pkt;
	uint32_t out_len = 0;
	bool progress = false, idle = false;
	int got;

	if (ch->state != VSP_CH_OPEN)
		return 1000;
	if (!vsp_vm_enter(ch->vm))
		return 10;
	while (out_len < OUT_BATCH &&
	       (got = vsp_ring_pop(ch, &pkt, c->out + out_len, VCON_MAX_DATA)) > 0) {
		if (pkt.type != VCON_DATA) {
			vsp_chan_fail(ch, "console: packet type %u is not DATA", pkt.type);
			break;
		}
		out_len += pkt.len;
		c->packets_out++;
		progress = true;
	}
	vsp_ring_consumed(ch);
	if (push_input(ch, c))
		progress = true;
	vsp_ring_flush(ch);
	if (!progress)
		idle = vsp_chan_arm(ch);
	vsp_vm_leave(ch->vm);
	if (out_len) {
		vm_console_write(ch->vm, c->out, out_len);
		c->bytes_out += out_len;
	}
	return progress || !idle ? 0 : 200;
}

static void console_opened(struct vsp_chan *ch)
{
	struct console *c = ch->priv;

	c->eof_sent = false;
}

static int console_save(struct vsp_chan *ch, struct dbuf *out)
{
	struct console *c = ch->priv;

	pthread_mutex_lock(&c->qlock);
	dbuf_put_u8(out, c->eof_sent);
	dbuf_put_u8(out, c->input_eof);
	dbuf_put_le64(out, c->bytes_out);
	dbuf_put_le64(out, c->bytes_in);
	dbuf_put_le64(out, c->packets_out);
	dbuf_put_le32(out, c->qlen);
	for (uint32_t i = 0; i < c->qlen; i++)
		dbuf_put_u8(out, c->q[(c->qhead + i) % QUEUE_SIZE]);
	pthread_mutex_unlock(&c->qlock);
	return 0;
}

static int console_load(struct vsp_chan *ch, struct dreader *r, uint32_t version)
{
	struct console *c = ch->priv;
	bool eof_sent = dreader_u8(r), input_eof = dreader_u8(r);
	uint64_t out = dreader_le64(r), in = dreader_le64(r), pkts = dreader_le64(r);
	uint32_t n = dreader_le32(r);
	const uint8_t *q;

	(void)version;
	if (!dreader_ok(r) || n > QUEUE_SIZE)
		return ferr(EBADMSG, "%s: the queued input (%u bytes) is malformed", ch->name, n);
	q = dreader_take(r, n);
	if (!q)
		return ferr(EBADMSG, "%s: the queued input is truncated", ch->name);
	pthread_mutex_lock(&c->qlock);
	c->eof_sent = eof_sent;
	/* The source's input file ended; this host's own input is separate. */
	c->input_eof = c->input_eof || (input_eof && c->input_fd < 0);
	c->bytes_out = out;
	c->bytes_in = in;
	c->packets_out = pkts;
	c->qhead = c->qlen = 0;
	queue_put_locked(c, q, n);
	pthread_mutex_unlock(&c->qlock);
	return 0;
}

static void console_query(struct vsp_chan *ch, struct vsp_chan_info *out)
{
	struct console *c = ch->priv;

	pthread_mutex_lock(&c->qlock);
	out->stats[0] = (struct vsp_stat){ "bytes_out", c->bytes_out };
	out->stats[1] = (struct vsp_stat){ "packets_out", c->packets_out };
	out->stats[2] = (struct vsp_stat){ "bytes_in", c->bytes_in };
	out->stats[3] = (struct vsp_stat){ "input_queued", c->qlen };
	out->stats[4] = (struct vsp_stat){ "eof_sent", c->eof_sent };
	out->nstats = 5;
	pthread_mutex_unlock(&c->qlock);
}

static void console_destroy(struct vsp_chan *ch)
{
	struct console *c = ch->priv;

	if (!c)
		return;
	if (c->reader_started) {
		atomic_store(&c->stop, true);
		pthread_join(c->reader, NULL);
	}
	pthread_mutex_destroy(&c->qlock);
	free(c);
	ch->priv = NULL;
}

const struct vsp_provider_ops vsp_console_ops = {
	.kind = "console",
	.type = VMBUS_TYPE_CONSOLE,
	.version = VCON_VERSION,
	.max_payload = VCON_MAX_DATA,
	.state_version = STATE_VERSION,
	.work = console_work,
	.opened = console_opened,
	.save = console_save,
	.load = console_load,
	.query = console_query,
	.destroy = console_destroy,
};

int vsp_console_init(struct vsp_chan *ch, int input_fd)
{
	struct console *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->qlock, NULL);
	c->input_fd = input_fd;
	c->ch = ch;
	ch->priv = c;
	if (input_fd >= 0) {
		rc = pthread_create(&c->reader, NULL, reader_thread, c);
		if (rc)
			return ferr_sys(rc, "cannot start the console input thread");
		c->reader_started = true;
	}
	return 0;
}
