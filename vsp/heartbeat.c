/*
 * The heartbeat provider: the guest's integration component sends a BEAT
 * packet every interval (the offer's info[0], in ms), and the host keeps the
 * last one.  Health, as query-vsp reports it:
 *   no-client     the guest never opened the channel
 *   waiting       open, no beat yet
 *   healthy       the last beat is at most 3 intervals old
 *   unresponsive  it is older: the guest is hung or too slow
 *   paused        the VM is not running, so no beat is expected
 *   failed        the channel was closed for a protocol violation
 * A beat's age is measured on the host's clock; a migrated VM keeps its
 * age at the moment the source saved it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../core/util.h"
#include "channel.h"

#define STATE_VERSION 1
#define HEALTHY_INTERVALS 3

struct heartbeat {
	uint32_t interval_ms;
	uint64_t seq;              /* the last beat's sequence number */
	uint64_t guest_us;
	uint64_t beats;
	uint64_t last_ns;          /* host monotonic, 0: none */
	uint64_t out_of_order;     /* beats whose seq did not grow */
};

static int heartbeat_work(struct vsp_chan *ch)
{
	struct heartbeat *h = ch->priv;
	struct vmbus_pkt pkt;
	struct vhb_beat beat;
	bool idle;
	int got;

	if (ch->state != VSP_CH_OPEN)
		return 1000;
	if (!vsp_vm_enter(ch->vm))
		return 10;
	while ((got = vsp_ring_pop(ch, &pkt, &beat, sizeof(beat))) > 0) {
		if (pkt.type != VHB_BEAT || pkt.len != sizeof(beat)) {
			vsp_chan_fail(ch, "heartbeat: packet type %u of %u bytes is not a BEAT",
				      pkt.type, pkt.len);
			break;
		}
		if (beat.seq <= h->seq)
			h->out_of_order++;
		h->seq = beat.seq;
		h->guest_us = beat.guest_us;
		h->beats++;
		h->last_ns = now_ns();
	}
	vsp_ring_consumed(ch);
	idle = vsp_chan_arm(ch);
	vsp_vm_leave(ch->vm);
	return idle ? 1000 : 0;
}

static void heartbeat_opened(struct vsp_chan *ch)
{
	struct heartbeat *h = ch->priv;

	h->seq = 0;
	h->last_ns = 0;
}

static int heartbeat_save(struct vsp_chan *ch, struct dbuf *out)
{
	struct heartbeat *h = ch->priv;

	dbuf_put_le32(out, h->interval_ms);
	dbuf_put_le64(out, h->seq);
	dbuf_put_le64(out, h->guest_us);
	dbuf_put_le64(out, h->beats);
	dbuf_put_le64(out, h->out_of_order);
	dbuf_put_le64(out, h->last_ns ? now_ns() - h->last_ns : UINT64_MAX);
	return 0;
}

static int heartbeat_load(struct vsp_chan *ch, struct dreader *r, uint32_t version)
{
	struct heartbeat *h = ch->priv;
	uint32_t interval = dreader_le32(r);
	uint64_t seq = dreader_le64(r), gus = dreader_le64(r), beats = dreader_le64(r);
	uint64_t ooo = dreader_le64(r), age = dreader_le64(r), now = now_ns();

	(void)version;
	if (!dreader_ok(r))
		return ferr(EBADMSG, "%s: the state is truncated", ch->name);
	if (interval != h->interval_ms)
		return ferr(EINVAL, "%s: the source beats every %u ms, this VM every %u ms",
			    ch->name, interval, h->interval_ms);
	h->seq = seq;
	h->guest_us = gus;
	h->beats = beats;
	h->out_of_order = ooo;
	h->last_ns = age == UINT64_MAX ? 0 : age < now ? now - age : 1;
	return 0;
}

static void heartbeat_query(struct vsp_chan *ch, struct vsp_chan_info *out)
{
	struct heartbeat *h = ch->priv;
	uint64_t age_ms = h->last_ns ? (now_ns() - h->last_ns) / 1000000 : 0;
	enum vm_run_state st = vm_run_state(ch->vm);

	out->stats[0] = (struct vsp_stat){ "interval_ms", h->interval_ms };
	out->stats[1] = (struct vsp_stat){ "seq", h->seq };
	out->stats[2] = (struct vsp_stat){ "beats", h->beats };
	out->stats[3] = (struct vsp_stat){ "guest_us", h->guest_us };
	out->stats[4] = (struct vsp_stat){ "out_of_order", h->out_of_order };
	out->nstats = 5;
	out->last_beat_ms = h->last_ns ? (int64_t)age_ms : -1;
	if (ch->state == VSP_CH_FAILED)
		out->health = "failed";
	else if (ch->state != VSP_CH_OPEN)
		out->health = "no-client";
	else if (st != VM_RUNNING)
		out->health = "paused";
	else if (!h->last_ns)
		out->health = "waiting";
	else if (age_ms <= (uint64_t)HEALTHY_INTERVALS * h->interval_ms)
		out->health = "healthy";
	else
		out->health = "unresponsive";
}

static void heartbeat_destroy(struct vsp_chan *ch)
{
	free(ch->priv);
	ch->priv = NULL;
}

const struct vsp_provider_ops vsp_heartbeat_ops = {
	.kind = "heartbeat",
	.type = VMBUS_TYPE_HEARTBEAT,
	.version = VHB_VERSION,
	.max_payload = sizeof(struct vhb_beat),
	.state_version = STATE_VERSION,
	.work = heartbeat_work,
	.opened = heartbeat_opened,
	.save = heartbeat_save,
	.load = heartbeat_load,
	.query = heartbeat_query,
	.destroy = heartbeat_destroy,
};

int vsp_heartbeat_init(struct vsp_chan *ch, uint32_t interval_ms)
{
	struct heartbeat *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->interval_ms = interval_ms;
	ch->priv = h;
	ch->offer.info[0] = interval_ms;
	return 0;
}
