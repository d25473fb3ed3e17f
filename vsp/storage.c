/*
 * The storage provider: a block device of 512-byte sectors backed by a host
 * file or block device.  The guest sends READ, WRITE and FLUSH requests with
 * up to 32 guest-physical segments; the host answers each with one DONE
 * packet.  I/O is asynchronous, through blkio (io_uring or a thread pool).
 * A WRITE goes from the guest's pages to the disk directly.  A READ lands
 * in a host bounce buffer and is copied into the guest's pages when its DONE
 * is posted, while the VM runs: so guest memory never changes while the VM
 * is paused, which a migration's last page pass and its --verify rely on.
 *
 * Write-back.  Writes go to the host page cache; a DONE for a write means
 * the host accepted the data, and a FLUSH (fdatasync) means all completed
 * writes are durable.
 *
 * A request lives in a slot from the moment it leaves the ring until its
 * DONE is in the ring: QUEUED (to be issued: loaded from a migration),
 * ISSUED (in the kernel), DONE (its status waits for the guest's ring).
 * Migration: save() waits for every ISSUED request, fdatasyncs the disk
 * (so the destination, opening the same shared disk, sees every write the
 * source made) and saves every slot still not answered; the destination
 * issues them all again once it runs, and answers each exactly once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/util.h"
#include "blkio.h"
#include "channel.h"

#define STATE_VERSION 1
#define MAX_PAYLOAD (sizeof(struct vstor_req) + VSTOR_MAX_SEGS * sizeof(struct vstor_seg))
#define SPIN_US 50u                 /* keep polling the ring this long after work */
#define DRAIN_TIMEOUT_MS 30000

enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_ISSUED, SLOT_DONE };

struct slot {
	enum slot_state state;
	uint16_t op;
	uint64_t id;
	uint64_t sector;
	uint32_t nseg;
	uint32_t bytes;
	uint32_t status;
	struct vstor_seg seg[VSTOR_MAX_SEGS];
	struct iovec iov[VSTOR_MAX_SEGS];
	uint8_t *bounce;            /* a READ's data until it is posted */
	uint32_t bounce_cap;        /* kept between requests: no fault per read */
	bool orphan;                /* its channel closed while in the kernel */
};

struct storage {
	struct vsp_disk_cfg cfg;
	struct blkio *io;
	uint64_t sectors;
	struct slot slots[VSTOR_MAX_INFLIGHT];
	unsigned busy;              /* slots not FREE */
	unsigned waiting;           /* slots DONE or QUEUED: work for post_and_reissue */
	uint64_t last_work_tsc;
	uint64_t spin_tsc;          /* SPIN_US in TSC ticks (clock_gettime costs here) */
	uint64_t reads, writes, flushes, bytes_read, bytes_written, errors, reissued;
	struct vsp_chan *ch;
};

static const char *op_name(uint16_t op)
{
	return op == VSTOR_READ ? "READ" : op == VSTOR_WRITE ? "WRITE" : "FLUSH";
}

static void free_slot(struct storage *s, struct slot *sl);

/* A finished request (any thread that owns blkio). */
static void on_done(void *arg, uint64_t tag, int64_t res)
{
	struct storage *s = arg;
	struct slot *sl;

	if (tag >= VSTOR_MAX_INFLIGHT || s->slots[tag].state != SLOT_ISSUED)
		return;
	sl = &s->slots[tag];
	sl->state = SLOT_DONE;
	s->waiting++;
	if (sl->orphan) {
		sl->orphan = false;
		free_slot(s, sl);
		return;
	}
	if (res < 0 || (sl->op != VSTOR_FLUSH && (uint64_t)res != sl->bytes)) {
		sl->status = VSTOR_ERR_IO;
		s->errors++;
		return;
	}
	sl->status = VSTOR_OK;
	if (sl->op == VSTOR_READ) {
		s->reads++;
		s->bytes_read += sl->bytes;
	} else if (sl->op == VSTOR_WRITE) {
		s->writes++;
		s->bytes_written += sl->bytes;
	} else {
		s->flushes++;
	}
}

static void free_slot(struct storage *s, struct slot *sl)
{
	if (sl->state == SLOT_DONE || sl->state == SLOT_QUEUED)
		s->waiting--;
	sl->state = SLOT_FREE;
	s->busy--;
}

static struct slot *alloc_slot(struct storage *s)
{
	for (unsigned i = 0; i < VSTOR_MAX_INFLIGHT; i++)
		if (s->slots[i].state == SLOT_FREE) {
			s->busy++;
			return &s->slots[i];
		}
	return NULL;
}

/* Checks a slot's request; a status for the guest, or -EPROTO (violation). */
static int check_request(struct storage *s, struct slot *sl, char *why, size_t why_len)
{
	uint64_t total = 0;

	if (sl->op == VSTOR_FLUSH)
		return sl->nseg == 0 ? VSTOR_OK : (snprintf(why, why_len, "FLUSH with %" PRIu32
							    " segments", sl->nseg), -EPROTO);
	if (sl->nseg == 0 || sl->nseg > VSTOR_MAX_SEGS) {
		snprintf(why, why_len, "%s with %" PRIu32 " segments (1 to %u)", op_name(sl->op),
			 sl->nseg, VSTOR_MAX_SEGS);
		return -EPROTO;
	}
	for (uint32_t i = 0; i < sl->nseg; i++) {
		const struct vstor_seg *g = &sl->seg[i];

		if (!gmem_range_ok(&s->ch->vm->mem, g->gpa, g->len)) {
			snprintf(why, why_len, "segment %" PRIu32 " at %#" PRIx64 " (%" PRIu32
				 " bytes) is outside guest RAM", i, g->gpa, g->len);
			return -EPROTO;
		}
		if (g->len == 0 || g->len % VSTOR_SECTOR)
			return VSTOR_ERR_ALIGN;
		total += g->len;
		sl->iov[i] = (struct iovec){ gmem_ptr(&s->ch->vm->mem, g->gpa, g->len), g->len };
	}
	if (total > VSTOR_MAX_XFER)
		return VSTOR_ERR_ALIGN;
	sl->bytes = (uint32_t)total;
	if (sl->sector > s->sectors || total / VSTOR_SECTOR > s->sectors - sl->sector)
		return VSTOR_ERR_RANGE;
	if (sl->op == VSTOR_WRITE && s->cfg.readonly)
		return VSTOR_ERR_READONLY;
	return VSTOR_OK;
}

static int issue(struct storage *s, struct slot *sl)
{
	struct blkio_req r = {
		.op = sl->op == VSTOR_READ ? BLKIO_READ : sl->op == VSTOR_WRITE ? BLKIO_WRITE
										 : BLKIO_FLUSH,
		.offset = sl->sector * VSTOR_SECTOR,
		.iov = sl->iov, .niov = sl->nseg,
		.tag = (uint64_t)(sl - s->slots),
	};
	int rc;

	if (sl->op == VSTOR_READ) {
		/* At most VSTOR_MAX_XFER per slot: bounded by the slot count. */
		if (sl->bounce_cap < sl->bytes) {
			free(sl->bounce);
			sl->bounce_cap = 0;
			sl->bounce = malloc(sl->bytes);
			if (!sl->bounce)
				return -ENOMEM;
			sl->bounce_cap = sl->bytes;
		}
		sl->iov[0] = (struct iovec){ sl->bounce, sl->bytes };
		r.niov = 1;
	}
	rc = blkio_queue(s->io, &r);

	if (rc == 0) {
		if (sl->state == SLOT_QUEUED)
			s->waiting--;
		sl->state = SLOT_ISSUED;
	}
	return rc;
}

/* Takes requests from the ring while slots are free.  True on progress. */
static bool take_requests(struct vsp_chan *ch, struct storage *s)
{
	union {
		struct vstor_req req;
		uint8_t bytes[MAX_PAYLOAD];
	} u;
	struct vmbus_pkt pkt;
	bool progress = false;
	char why[160];

	while (s->busy < VSTOR_MAX_INFLIGHT && vsp_ring_pop(ch, &pkt, &u, sizeof(u)) > 0) {
		struct slot *sl;
		int st;

		if (pkt.type != VSTOR_READ && pkt.type != VSTOR_WRITE && pkt.type != VSTOR_FLUSH) {
			vsp_chan_fail(ch, "storage: packet type %u is not a request", pkt.type);
			return progress;
		}
		if (pkt.len < sizeof(u.req) ||
		    u.req.nseg > VSTOR_MAX_SEGS ||
		    pkt.len != sizeof(u.req) + u.req.nseg * sizeof(struct vstor_seg)) {
			vsp_chan_fail(ch, "storage: a %u-byte %s request does not match its %u segments",
				      pkt.len, op_name(pkt.type), u.req.nseg);
			return progress;
		}
		sl = alloc_slot(s);
		sl->op = pkt.type;
		sl->id = pkt.id;
		sl->sector = u.req.sector;
		sl->nseg = u.req.nseg;
		sl->bytes = 0;
		memcpy(sl->seg, u.req.seg, sl->nseg * sizeof(struct vstor_seg));
		st = check_request(s, sl, why, sizeof(why));
		if (st < 0) {
			free_slot(s, sl);
			vsp_chan_fail(ch, "storage: %s", why);
			return progress;
		}
		progress = true;
		if (st != VSTOR_OK || issue(s, sl) < 0) {
			sl->state = SLOT_DONE;
			s->waiting++;
			sl->status = st != VSTOR_OK ? (uint32_t)st : VSTOR_ERR_IO;
			s->errors++;
		}
	}
	return progress;
}

/* Copies a finished READ into the guest's segments (inside vsp_vm_enter). */
static void copy_to_guest(struct storage *s, struct slot *sl)
{
	uint64_t off = 0;

	for (uint32_t i = 0; i < sl->nseg; i++) {
		(void)gmem_write(&s->ch->vm->mem, sl->seg[i].gpa, sl->bounce + off, sl->seg[i].len);
		off += sl->seg[i].len;
	}
}

/* Posts finished requests; issues re-queued ones.  True on progress. */
static bool post_and_reissue(struct vsp_chan *ch, struct storage *s)
{
	bool progress = false;

	for (unsigned i = 0; i < VSTOR_MAX_INFLIGHT && s->waiting && ch->state == VSP_CH_OPEN; i++) {
		struct slot *sl = &s->slots[i];

		if (sl->state == SLOT_DONE) {
			struct vstor_done d = { .status = sl->status,
						.bytes = sl->status == VSTOR_OK ? sl->bytes : 0 };

			if (vsp_ring_push(ch, VSTOR_DONE, sl->id, &d, sizeof(d)) < 0)
				break;
			if (sl->op == VSTOR_READ && sl->status == VSTOR_OK)
				copy_to_guest(s, sl);
			free_slot(s, sl);
			progress = true;
		} else if (sl->state == SLOT_QUEUED) {
			if (issue(s, sl) < 0)
				break;
			s->reissued++;
			progress = true;
		}
	}
	return progress;
}

static int storage_work(struct vsp_chan *ch)
{
	struct storage *s = ch->priv;
	bool progress = false, idle = true;
	uint64_t now;

	if (blkio_reap(s->io, on_done, s))
		progress = true;
	if (ch->state != VSP_CH_OPEN)
		return blkio_inflight(s->io) ? 100 : 1000;
	if (!vsp_vm_enter(ch->vm))
		return 5;
	progress |= post_and_reissue(ch, s);
	progress |= take_requests(ch, s);
	vsp_ring_consumed(ch);
	progress |= post_and_reissue(ch, s);
	vsp_ring_flush(ch);
	now = host_rdtsc();
	if (progress)
		s->last_work_tsc = now;
	/* Spin a little for the guest's next request, unless the kernel has
	 * requests of ours: then their completion (or a doorbell) wakes us,
	 * and the core is free for io_uring's workers. */
	else if (now - s->last_work_tsc >= s->spin_tsc || blkio_inflight(s->io))
		idle = vsp_chan_arm(ch);
	else
		idle = false;
	vsp_vm_leave(ch->vm);
	if (blkio_submit(s->io) < 0)
		flog("%s: %s", ch->name, ferr_msg(-EIO));
	if (progress || !idle)
		return 0;
	return 100;
}

/* Nothing in flight may be answered on a later open of the channel. */
static void storage_closed(struct vsp_chan *ch)
{
	struct storage *s = ch->priv;

	for (unsigned i = 0; i < VSTOR_MAX_INFLIGHT; i++) {
		struct slot *sl = &s->slots[i];

		if (sl->state == SLOT_ISSUED)
			sl->orphan = true;
		else if (sl->state != SLOT_FREE)
			free_slot(s, sl);
	}
}

static void storage_opened(struct vsp_chan *ch)
{
	struct storage *s = ch->priv;

	s->last_work_tsc = 0;
}

static int storage_save(struct vsp_chan *ch, struct dbuf *out)
{
	struct storage *s = ch->priv;
	unsigned n = 0;
	int rc;

	rc = blkio_drain(s->io, DRAIN_TIMEOUT_MS, on_done, s);
	if (!rc)
		rc = blkio_sync(s->io);
	if (rc)
		return rc;
	for (unsigned i = 0; i < VSTOR_MAX_INFLIGHT; i++)
		n += s->slots[i].state != SLOT_FREE;
	dbuf_put_le64(out, s->sectors);
	dbuf_put_u8(out, s->cfg.readonly);
	dbuf_put_le64(out, s->reads);
	dbuf_put_le64(out, s->writes);
	dbuf_put_le64(out, s->flushes);
	dbuf_put_le64(out, s->bytes_read);
	dbuf_put_le64(out, s->bytes_written);
	dbuf_put_le64(out, s->errors);
	dbuf_put_le64(out, s->reissued);
	dbuf_put_le32(out, n);
	for (unsigned i = 0; i < VSTOR_MAX_INFLIGHT; i++) {
		const struct slot *sl = &s->slots[i];

		if (sl->state == SLOT_FREE)
			continue;
		dbuf_put_le32(out, sl->op);
		dbuf_put_le64(out, sl->id);
		dbuf_put_le64(out, sl->sector);
		dbuf_put_le32(out, sl->nseg);
		for (uint32_t j = 0; j < sl->nseg; j++) {
			dbuf_put_le64(out, sl->seg[j].gpa);
			dbuf_put_le32(out, sl->seg[j].len);
		}
	}
	return 0;
}

static int storage_load(struct vsp_chan *ch, struct dreader *r, uint32_t version)
{
	struct storage *s = ch->priv;
	uint64_t sectors = dreader_le64(r);
	bool ro = dreader_u8(r);
	uint64_t st[7];
	uint32_t n;
	char why[160];
	int rc;

	(void)version;
	for (unsigned i = 0; i < 7; i++)
		st[i] = dreader_le64(r);
	n = dreader_le32(r);
	if (!dreader_ok(r))
		return ferr(EBADMSG, "%s: the state is truncated", ch->name);
	if (sectors != s->sectors || ro != s->cfg.readonly)
		return ferr(EINVAL, "%s: the source's disk has %" PRIu64 " sectors%s, this one %"
			    PRIu64 "%s", ch->name, sectors, ro ? " (read-only)" : "", s->sectors,
			    s->cfg.readonly ? " (read-only)" : "");
	if (n > VSTOR_MAX_INFLIGHT)
		return ferr(EINVAL, "%s: %u requests in flight, at most %u", ch->name, n,
			    VSTOR_MAX_INFLIGHT);
	if (blkio_inflight(s->io))
		return ferr(EBUSY, "%s: this disk already has requests in flight", ch->name);
	for (unsigned i = 0; i < VSTOR_MAX_INFLIGHT; i++)
		free(s->slots[i].bounce);
	memset(s->slots, 0, sizeof(s->slots));
	s->busy = s->waiting = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct slot *sl = &s->slots[i];

		sl->op = (uint16_t)dreader_le32(r);
		sl->id = dreader_le64(r);
		sl->sector = dreader_le64(r);
		sl->nseg = dreader_le32(r);
		if (!dreader_ok(r) || sl->nseg > VSTOR_MAX_SEGS ||
		    (sl->op != VSTOR_READ && sl->op != VSTOR_WRITE && sl->op != VSTOR_FLUSH))
			return ferr(EBADMSG, "%s: in-flight request %u is malformed", ch->name, i);
		for (uint32_t j = 0; j < sl->nseg; j++) {
			sl->seg[j].gpa = dreader_le64(r);
			sl->seg[j].len = dreader_le32(r);
		}
		if (!dreader_ok(r))
			return ferr(EBADMSG, "%s: in-flight request %u is truncated", ch->name, i);
		rc = check_request(s, sl, why, sizeof(why));
		if (rc != VSTOR_OK)
			return ferr(EINVAL, "%s: in-flight request %u is not valid here: %s", ch->name,
				    i, rc < 0 ? why : "bad length, range or read-only write");
		sl->state = ch->state == VSP_CH_OPEN ? SLOT_QUEUED : SLOT_FREE;
		s->busy += sl->state != SLOT_FREE;
		s->waiting += sl->state != SLOT_FREE;
	}
	s->reads = st[0];
	s->writes = st[1];
	s->flushes = st[2];
	s->bytes_read = st[3];
	s->bytes_written = st[4];
	s->errors = st[5];
	s->reissued = st[6];
	/* Shared storage: look at the disk afresh, after the source's fdatasync. */
	return blkio_reopen(s->io);
}

static void storage_query(struct vsp_chan *ch, struct vsp_chan_info *out)
{
	struct storage *s = ch->priv;
	unsigned i = 0;

	out->stats[i++] = (struct vsp_stat){ "sectors", s->sectors };
	out->stats[i++] = (struct vsp_stat){ "reads", s->reads };
	out->stats[i++] = (struct vsp_stat){ "writes", s->writes };
	out->stats[i++] = (struct vsp_stat){ "flushes", s->flushes };
	out->stats[i++] = (struct vsp_stat){ "bytes_read", s->bytes_read };
	out->stats[i++] = (struct vsp_stat){ "bytes_written", s->bytes_written };
	out->stats[i++] = (struct vsp_stat){ "errors", s->errors };
	out->stats[i++] = (struct vsp_stat){ "in_flight", s->busy };
	out->stats[i++] = (struct vsp_stat){ "reissued", s->reissued };
	out->nstats = i;
	snprintf(out->path, sizeof(out->path), "%s", s->cfg.path);
	out->readonly = s->cfg.readonly;
	out->health = blkio_engine(s->io);
}

static void storage_destroy(struct vsp_chan *ch)
{
	struct storage *s = ch->priv;

	if (!s)
		return;
	blkio_close(s->io);
	for (unsigned i = 0; i < VSTOR_MAX_INFLIGHT; i++)
		free(s->slots[i].bounce);
	free(s);
	ch->priv = NULL;
}

const struct vsp_provider_ops vsp_storage_ops = {
	.kind = "storage",
	.type = VMBUS_TYPE_STORAGE,
	.version = VSTOR_VERSION,
	.max_payload = MAX_PAYLOAD,
	.state_version = STATE_VERSION,
	.work = storage_work,
	.opened = storage_opened,
	.closed = storage_closed,
	.save = storage_save,
	.load = storage_load,
	.query = storage_query,
	.destroy = storage_destroy,
};

int vsp_storage_init(struct vsp_chan *ch, const struct vsp_disk_cfg *cfg)
{
	struct storage *s = calloc(1, sizeof(*s));
	int rc;

	if (!s)
		return -ENOMEM;
	s->cfg = *cfg;
	s->ch = ch;
	s->spin_tsc = (uint64_t)SPIN_US * MAX(ch->vm->tsc_khz, 1u) / 1000;
	ch->priv = s;
	rc = blkio_open(cfg->path, cfg->readonly, VSTOR_MAX_INFLIGHT,
			cfg->force_threads, &s->io);
	if (rc)
		return rc;
	s->sectors = blkio_size(s->io) / VSTOR_SECTOR;
	if (!s->sectors)
		return ferr(EINVAL, "disk %s is smaller than one 512-byte sector", cfg->path);
	ch->extra_fd = blkio_event_fd(s->io);
	ch->offer.info[0] = s->sectors;
	ch->offer.info[1] = cfg->readonly ? VSTOR_F_READONLY : 0;
	ch->offer.info[2] = VSTOR_MAX_XFER;
	ch->offer.info[3] = VSTOR_MAX_INFLIGHT;
	return 0;
}
