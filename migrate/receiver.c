/*
 * The migration destination.  The main thread reads channel 0 and drives
 * the state machine; each extra channel has a thread that applies page
 * batches.  All channels meet at a barrier at the end of every iteration,
 * so a page sent again in a later iteration always lands after its older
 * copy, whichever channels carried them.
 *
 *   LISTENING  --VMDESC ok-->  PRECOPY  --SWITCHOVER-->  SWITCHOVER
 *   SWITCHOVER --END, all loaded and verified-->  LOADED  --COMMIT-->  RUNNING
 *
 * PAGES and ITER_END are accepted in PRECOPY and SWITCHOVER; VM_STATE,
 * VCPU_STATE, DEVICE and DIGEST only in SWITCHOVER; ABORT anywhere before
 * COMMIT ends the migration.  Anything else is an error that names it.
 */
#include "receiver.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "../core/cpustate.h"
#include "../core/util.h"
#include "pages.h"
#include "ramscan.h"
#include "stream.h"

#define CHANNEL_TIMEOUT_MS 10000
#define COMMIT_TIMEOUT_MS 60000
#define MAX_CHANNELS 16

struct stored_device {
	char name[VM_DEVICE_NAME_MAX];
	uint32_t version;
	uint8_t *data;
	size_t len;
};

struct channel {
	struct mig_in *in;
	unsigned index;
	struct xport *x;
	pthread_t thread;
	bool started;
	uint64_t iteration;      /* the iteration this channel is in */
	struct mig_batch_rx rx;
	struct dbuf buf;
};

struct mig_in {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum mig_in_state state;           /* (lock) */
	char error[512];                   /* (lock) first error wins */
	_Atomic bool abort;

	struct vm *vm;
	struct mig_vmdesc desc;
	unsigned nch;
	struct channel ch[MAX_CHANNELS];

	unsigned barrier_count;            /* (lock) */
	uint64_t barrier_gen;              /* (lock) */

	struct vm_state st;
	bool vm_state_seen;
	bool *vcpu_seen;
	struct stored_device devices[VM_DEVICES_MAX];
	unsigned ndevices;
	uint64_t *digests;
	uint64_t digests_covered;
	bool final_pages_done;

	struct xport_listener *listener;   /* (lock) while accepting */

	/* Allocates the pages the source says hold data, ahead of them. */
	pthread_t populate;
	bool populating;
	uint64_t *extents;                 /* pairs: first page, count */
	uint64_t nextents;

	_Atomic uint64_t pages;
	uint64_t t_start, t_end;
	uint64_t src_stop_ns;
	uint8_t src_boot_id[16];
	uint64_t final_iteration;
	bool keep_paused;                  /* the source VM was paused */
	uint64_t downtime_ns;
	char source[96];
};

const char *mig_in_state_name(enum mig_in_state s)
{
	static const char *const names[] = {
		[MIG_IN_LISTENING] = "listening", [MIG_IN_DESCRIBED] = "checking",
		[MIG_IN_PRECOPY] = "receiving", [MIG_IN_SWITCHOVER] = "switchover",
		[MIG_IN_LOADED] = "loaded", [MIG_IN_RUNNING] = "running",
		[MIG_IN_FAILED] = "failed",
	};

	return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "unknown";
}

/*
 * Stops every thread of the migration.  Channel 0 only stops receiving, so
 * that the main thread can still tell the source why (ERROR).
 */
static void abort_all_locked(struct mig_in *in)
{
	atomic_store(&in->abort, true);
	if (in->listener)
		shutdown(in->listener->fd, SHUT_RDWR);   /* wakes a blocked accept */
	for (unsigned i = 0; i < in->nch; i++) {
		if (!in->ch[i].x)
			continue;
		if (i == 0)
			xport_stop_receiving(in->ch[i].x);
		else
			xport_abort(in->ch[i].x);
	}
	pthread_cond_broadcast(&in->cond);
}

/* Records the first error and stops every channel.  Any thread. */
static int fail(struct mig_in *in, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct mig_in *in, int rc, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&in->lock);
	if (!in->error[0]) {
		va_start(ap, fmt);
		vsnprintf(in->error, sizeof(in->error), fmt, ap);
		va_end(ap);
	}
	abort_all_locked(in);
	pthread_mutex_unlock(&in->lock);
	return rc ? rc : -EPROTO;
}

static void set_state(struct mig_in *in, enum mig_in_state s)
{
	pthread_mutex_lock(&in->lock);
	in->state = s;
	pthread_mutex_unlock(&in->lock);
}

static enum mig_in_state get_state(struct mig_in *in)
{
	enum mig_in_state s;

	pthread_mutex_lock(&in->lock);
	s = in->state;
	pthread_mutex_unlock(&in->lock);
	return s;
}

/* The end of an iteration: wait until every channel has reached it. */
static int barrier(struct mig_in *in)
{
	int rc = 0;

	pthread_mutex_lock(&in->lock);
	if (++in->barrier_count == in->nch) {
		in->barrier_count = 0;
		in->barrier_gen++;
		pthread_cond_broadcast(&in->cond);
	} else {
		uint64_t gen = in->barrier_gen;

		while (gen == in->barrier_gen && !atomic_load(&in->abort))
			pthread_cond_wait(&in->cond, &in->lock);
	}
	if (atomic_load(&in->abort))
		rc = -ECANCELED;
	pthread_mutex_unlock(&in->lock);
	return rc;
}

/* PAGES and ITER_END, on any channel. */
static int page_section(struct channel *c, const struct mig_section *s)
{
	struct mig_in *in = c->in;
	uint64_t iter, n;
	int rc;

	if (s->type == MIG_SEC_PAGES) {
		rc = mig_batch_apply(&c->rx, &in->vm->mem, c->buf.data, c->buf.len, &iter, &n);
		if (rc)
			return fail(in, rc, "channel %u: %s", c->index, ferr_msg(rc));
		if (iter != c->iteration)
			return fail(in, -EPROTO, "channel %u: a batch of iteration %llu arrived in "
				    "iteration %llu", c->index, (unsigned long long)iter,
				    (unsigned long long)c->iteration);
		atomic_fetch_add(&in->pages, n);
		return 0;
	}
	if (c->buf.len != 8 || get_le64(c->buf.data) != c->iteration)
		return fail(in, -EPROTO, "channel %u: ITER_END for the wrong iteration (expected %llu)",
			    c->index, (unsigned long long)c->iteration);
	rc = barrier(in);
	if (rc)
		return rc;
	c->iteration++;
	return 0;
}

static void *channel_thread(void *arg)
{
	struct channel *c = arg;
	struct mig_in *in = c->in;
	struct mig_section s;
	char name[16];
	int rc;

	snprintf(name, sizeof(name), "ferry-mig-in%u", c->index);
	pthread_setname_np(pthread_self(), name);
	for (;;) {
		rc = mig_recv_section(c->x, &s, &c->buf);
		if (rc) {
			if (get_state(in) < MIG_IN_LOADED && !atomic_load(&in->abort))
				fail(in, rc, "channel %u: %s", c->index, ferr_msg(rc));
			return NULL;
		}
		if (s.type != MIG_SEC_PAGES && s.type != MIG_SEC_ITER_END) {
			fail(in, -EPROTO, "channel %u: unexpected %s section (only pages travel here)",
			     c->index, mig_section_name(s.type));
			return NULL;
		}
		if (page_section(c, &s))
			return NULL;
	}
}

static int channel_init(struct mig_in *in, unsigned i, struct xport *x)
{
	struct channel *c = &in->ch[i];

	c->in = in;
	c->index = i;
	c->x = x;
	c->iteration = 1;
	dbuf_init(&c->buf);
	return mig_batch_rx_init(&c->rx);
}

/* Accepts the source's extra channels and starts their threads. */
static int accept_channels(struct mig_in *in, struct xport_listener *l)
{
	for (unsigned n = 1; n < in->desc.nchannels; n++) {
		uint8_t pre[MIG_PREAMBLE_SIZE];
		struct mig_section s;
		struct xport *x;
		struct dbuf hello;
		unsigned idx;
		int rc;

		rc = xport_accept(l, CHANNEL_TIMEOUT_MS, &x);
		if (rc)
			return fail(in, rc, "waiting for channel %u: %s", n, ferr_msg(rc));
		dbuf_init(&hello);
		rc = xport_recv(x, pre, sizeof(pre));
		if (!rc)
			rc = mig_preamble_check(pre);
		if (!rc)
			rc = mig_recv_section(x, &s, &hello);
		if (!rc && (s.type != MIG_SEC_CHANNEL || hello.len != 20 ||
			    memcmp(hello.data, in->desc.uuid, 16) != 0))
			rc = ferr(EPROTO, "a connection that is not a channel of this migration");
		idx = hello.len == 20 ? get_le32(hello.data + 16) : 0;
		if (!rc && (idx == 0 || idx >= in->desc.nchannels || in->ch[idx].x))
			rc = ferr(EPROTO, "channel index %u is invalid or repeated", idx);
		dbuf_free(&hello);
		if (rc) {
			xport_close(x);
			return fail(in, rc, "extra channel: %s", ferr_msg(rc));
		}
		pthread_mutex_lock(&in->lock);
		rc = channel_init(in, idx, x);
		pthread_mutex_unlock(&in->lock);
		if (rc)
			return fail(in, rc, "out of memory for channel %u", idx);
	}
	for (unsigned i = 1; i < in->nch; i++) {
		int rc = pthread_create(&in->ch[i].thread, NULL, channel_thread, &in->ch[i]);

		if (rc)
			return fail(in, -rc, "cannot start the thread of channel %u", i);
		in->ch[i].started = true;
	}
	return 0;
}

static int handshake(struct mig_in *in, struct xport_listener *l, mig_create_vm_fn create_vm,
		     void *opaque)
{
	struct channel *c0 = &in->ch[0];
	uint8_t pre[MIG_PREAMBLE_SIZE];
	struct mig_section s;
	struct xport *x;
	int rc;

	rc = xport_accept(l, 0, &x);
	if (rc)
		return fail(in, rc, "%s", ferr_msg(rc));
	in->t_start = now_ns();
	snprintf(in->source, sizeof(in->source), "%s", x->peer);
	rc = channel_init(in, 0, x);
	pthread_mutex_lock(&in->lock);
	in->nch = 1;
	pthread_mutex_unlock(&in->lock);
	if (rc)
		return fail(in, rc, "out of memory");
	rc = xport_recv(x, pre, sizeof(pre));
	if (rc)
		return fail(in, rc, "the source sent no stream preamble");
	rc = mig_preamble_check(pre);
	if (!rc)
		rc = mig_recv_section(x, &s, &c0->buf);
	if (!rc && s.type != MIG_SEC_VMDESC)
		rc = ferr(EPROTO, "the stream starts with %s, not VMDESC", mig_section_name(s.type));
	if (!rc && s.version != MIG_VMDESC_VERSION)
		rc = ferr(EPROTO, "VM description version %u; this ferry reads %u", s.version,
			  MIG_VMDESC_VERSION);
	if (!rc)
		rc = mig_vmdesc_decode(c0->buf.data, c0->buf.len, &in->desc);
	if (rc)
		goto reject;
	set_state(in, MIG_IN_DESCRIBED);
	rc = create_vm(opaque, &in->desc, &in->vm);
	if (!rc)
		rc = mig_vmdesc_check(&in->desc, in->vm);
	if (rc)
		goto reject;
	in->vcpu_seen = calloc(in->vm->ncpus, sizeof(bool));
	in->digests = (in->desc.flags & MIG_FLAG_VERIFY) ?
			      calloc(in->vm->mem.npages, sizeof(uint64_t)) : NULL;
	rc = vm_state_alloc(&in->st, in->vm->ncpus);
	if (rc || !in->vcpu_seen || ((in->desc.flags & MIG_FLAG_VERIFY) && !in->digests)) {
		rc = ferr(ENOMEM, "out of memory for the incoming VM");
		goto reject;
	}
	pthread_mutex_lock(&in->lock);
	in->nch = in->desc.nchannels;
	pthread_mutex_unlock(&in->lock);
	rc = mig_send_section(x, MIG_SEC_READY, 0, 1, 0, NULL, 0);
	if (rc)
		return fail(in, rc, "the source went away after its description");
	set_state(in, MIG_IN_PRECOPY);
	return accept_channels(in, l);

reject:
	{
		char why[400];

		snprintf(why, sizeof(why), "%s", ferr_msg(rc));
		mig_send_text(x, MIG_SEC_REJECT, why);
		return fail(in, rc, "rejected the incoming VM: %s", why);
	}
}

static int store_device(struct mig_in *in, const struct mig_section *s, const struct dbuf *b)
{
	struct stored_device *d;
	struct dreader r;

	if (in->ndevices == VM_DEVICES_MAX)
		return fail(in, -E2BIG, "more than %u device sections", VM_DEVICES_MAX);
	d = &in->devices[in->ndevices];
	dreader_init(&r, b->data, b->len);
	dreader_str(&r, d->name, sizeof(d->name));
	if (!dreader_ok(&r))
		return fail(in, -EBADMSG, "DEVICE section without a valid name");
	for (unsigned i = 0; i < in->ndevices; i++)
		if (strcmp(in->devices[i].name, d->name) == 0)
			return fail(in, -EBADMSG, "device %s sent twice", d->name);
	d->len = r.left;
	d->data = malloc(d->len ? d->len : 1);
	if (!d->data)
		return fail(in, -ENOMEM, "out of memory for device %s", d->name);
	memcpy(d->data, r.p, d->len);
	d->version = s->version;
	in->ndevices++;
	return 0;
}

static int store_digests(struct mig_in *in, const struct dbuf *b)
{
	struct dreader r;
	uint64_t first, count;

	if (!in->digests)
		return fail(in, -EPROTO, "DIGEST section, but the VM description did not ask to verify");
	dreader_init(&r, b->data, b->len);
	first = dreader_le64(&r);
	count = dreader_le64(&r);
	if (!dreader_ok(&r) || first != in->digests_covered || count > in->vm->mem.npages - first ||
	    r.left != count * 8)
		return fail(in, -EBADMSG, "DIGEST section for pages %llu+%llu is malformed or out of order",
			    (unsigned long long)first, (unsigned long long)count);
	for (uint64_t i = 0; i < count; i++)
		in->digests[first + i] = dreader_le64(&r);
	in->digests_covered += count;
	return 0;
}

static int verify_memory(struct mig_in *in)
{
	uint64_t npages = in->vm->mem.npages, bad = 0, first_bad = 0;
	uint64_t *mine = malloc(npages * sizeof(uint64_t));
	int rc;

	if (!mine)
		return -ENOMEM;
	if (in->digests_covered != npages) {
		free(mine);
		return fail(in, -EPROTO, "digests cover %llu of %llu pages",
			    (unsigned long long)in->digests_covered, (unsigned long long)npages);
	}
	rc = mig_digest_ram(&in->vm->mem, mine, 2);
	for (uint64_t p = 0; p < npages && !rc; p++) {
		if (mine[p] != in->digests[p]) {
			if (!bad)
				first_bad = p;
			bad++;
		}
	}
	free(mine);
	if (rc)
		return fail(in, rc, "digesting guest RAM: %s", ferr_msg(rc));
	if (bad)
		return fail(in, -EIO, "verify: %llu of %llu pages differ from the source "
			    "(first at guest-physical %#llx)", (unsigned long long)bad,
			    (unsigned long long)npages, (unsigned long long)(first_bad << 12));
	return 0;
}

/* END: everything must be here; load it into the VM and check it. */
static int finish_load(struct mig_in *in)
{
	struct vm *vm = in->vm;
	int rc;

	if (!in->final_pages_done)
		return fail(in, -EPROTO, "END arrived before the final pages");
	if (!in->vm_state_seen)
		return fail(in, -EPROTO, "END arrived without the VM state");
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (!in->vcpu_seen[i])
			return fail(in, -EPROTO, "END arrived without the state of vCPU %u", i);
	if (in->digests) {
		rc = verify_memory(in);
		if (rc)
			return rc;
	}
	for (unsigned i = 0; i < in->ndevices; i++) {
		const struct stored_device *d = &in->devices[i];
		const struct vm_device *dev = vm_device_find(vm, d->name);

		if (!dev)
			return fail(in, -ENOENT, "the source has a device '%s' that this VM lacks",
				    d->name);
		if (d->version > dev->ops->version)
			return fail(in, -ENOTSUP, "device %s state is version %u; this ferry reads up to %u",
				    d->name, d->version, dev->ops->version);
		rc = dev->ops->load(dev->opaque, d->version, d->data, d->len);
		if (rc)
			return fail(in, rc, "loading device %s: %s", d->name, ferr_msg(rc));
	}
	for (unsigned i = 0; i < vm->ndevices; i++) {
		bool sent = false;

		for (unsigned j = 0; j < in->ndevices && !sent; j++)
			sent = strcmp(in->devices[j].name, vm->devices[i].ops->name) == 0;
		if (!sent)
			return fail(in, -ENOENT, "the source sent no state for device '%s'",
				    vm->devices[i].ops->name);
	}
	rc = vm_restore(vm, &in->st, true);
	if (rc)
		return fail(in, rc, "restoring the vCPU state: %s", ferr_msg(rc));
	return 0;
}

#define POPULATE_STEP (2ull << 20)

/*
 * Fresh memfd pages cost a fault and a clear each when the receiver first
 * writes them; allocating them here, on another core and in 2 MiB steps,
 * takes that work off the receiving threads.  Only extents the source
 * reported are touched, so memory stays allocated on demand.
 */
static void *populate_thread(void *arg)
{
	struct mig_in *in = arg;
	struct guest_mem *m = &in->vm->mem;

	pthread_setname_np(pthread_self(), "ferry-mig-pop");
	for (uint64_t e = 0; e < in->nextents && !atomic_load(&in->abort); e++) {
		uint64_t off = in->extents[2 * e] << GMEM_PAGE_SHIFT;
		uint64_t end = off + (in->extents[2 * e + 1] << GMEM_PAGE_SHIFT);

		for (; off < end && !atomic_load(&in->abort); off += POPULATE_STEP) {
			uint64_t len = MIN(POPULATE_STEP, end - off);

			if (fallocate(m->fd, 0, (off_t)off, (off_t)len) == 0)
				madvise(m->hva + off, len, MADV_POPULATE_WRITE);
		}
	}
	return NULL;
}

/* EXTENTS: a hint; a malformed one is still an error, it comes from outside. */
static int start_populate(struct mig_in *in, const struct dbuf *b)
{
	uint64_t n = b->len / 16, npages = in->vm->mem.npages, prev_end = 0;

	if (in->populating || b->len % 16 || n > npages)
		return fail(in, -EBADMSG, "EXTENTS section is repeated or malformed");
	in->extents = malloc(b->len ? b->len : 1);
	if (!in->extents)
		return fail(in, -ENOMEM, "out of memory for the RAM extents");
	for (uint64_t i = 0; i < n; i++) {
		uint64_t first = get_le64(b->data + 16 * i), count = get_le64(b->data + 16 * i + 8);

		if (first < prev_end || first >= npages || count == 0 || count > npages - first)
			return fail(in, -EBADMSG, "EXTENTS entry %llu (%llu+%llu) is outside guest RAM "
				    "or out of order", (unsigned long long)i,
				    (unsigned long long)first, (unsigned long long)count);
		in->extents[2 * i] = first;
		in->extents[2 * i + 1] = count;
		prev_end = first + count;
	}
	in->nextents = n;
	if (pthread_create(&in->populate, NULL, populate_thread, in) == 0)
		in->populating = true;
	return 0;
}

/* One section on channel 0, checked against the state we are in. */
static int main_section(struct mig_in *in, const struct mig_section *s)
{
	struct channel *c0 = &in->ch[0];
	enum mig_in_state st = get_state(in);
	struct dbuf *b = &c0->buf;
	uint8_t done[8];
	char text[400];
	int rc;

	if (s->type == MIG_SEC_ABORT) {
		mig_text(b->data, b->len, text, sizeof(text));
		return fail(in, -ECANCELED, "the source abandoned the migration: %s", text);
	}
	if (s->type == MIG_SEC_PAGES || s->type == MIG_SEC_ITER_END) {
		if (st != MIG_IN_PRECOPY && st != MIG_IN_SWITCHOVER)
			goto out_of_place;
		rc = page_section(c0, s);
		if (rc || s->type != MIG_SEC_ITER_END)
			return rc;
		if (st == MIG_IN_SWITCHOVER && c0->iteration > in->final_iteration) {
			in->final_pages_done = true;
			return 0;
		}
		/* Every channel has applied this iteration: tell the source, so
		 * that it measures what really arrived, not what it buffered. */
		put_le64(done, c0->iteration - 1);
		rc = mig_send_section(c0->x, MIG_SEC_ITER_DONE, 0, 1, 0, done, sizeof(done));
		return rc ? fail(in, rc, "the source went away") : 0;
	}
	switch (s->type) {
	case MIG_SEC_EXTENTS:
		if (st != MIG_IN_PRECOPY || c0->iteration != 1)
			goto out_of_place;
		return start_populate(in, b);
	case MIG_SEC_SWITCHOVER:
		if (st != MIG_IN_PRECOPY)
			goto out_of_place;
		if (b->len != 40 || (get_le64(b->data + 32) & ~MIG_SWITCHOVER_PAUSED))
			return fail(in, -EBADMSG, "SWITCHOVER section of %zu bytes or with unknown flags",
				    b->len);
		in->src_stop_ns = get_le64(b->data);
		memcpy(in->src_boot_id, b->data + 8, 16);
		in->final_iteration = get_le64(b->data + 24);
		in->keep_paused = get_le64(b->data + 32) & MIG_SWITCHOVER_PAUSED;
		if (in->final_iteration != c0->iteration)
			return fail(in, -EPROTO, "SWITCHOVER names iteration %llu, the stream is at %llu",
				    (unsigned long long)in->final_iteration,
				    (unsigned long long)c0->iteration);
		set_state(in, MIG_IN_SWITCHOVER);
		return 0;
	case MIG_SEC_VM_STATE:
		if (st != MIG_IN_SWITCHOVER)
			goto out_of_place;
		if (in->vm_state_seen)
			return fail(in, -EBADMSG, "VM_STATE sent twice");
		if (s->version != MIG_STATE_VERSION)
			return fail(in, -ENOTSUP, "VM_STATE version %u; this ferry reads %u",
				    s->version, MIG_STATE_VERSION);
		rc = mig_vm_state_decode(b->data, b->len, &in->st);
		if (rc)
			return fail(in, rc, "%s", ferr_msg(rc));
		in->vm_state_seen = true;
		return 0;
	case MIG_SEC_VCPU_STATE:
		if (st != MIG_IN_SWITCHOVER)
			goto out_of_place;
		if (s->id >= in->vm->ncpus || in->vcpu_seen[s->id])
			return fail(in, -EBADMSG, "VCPU_STATE for vCPU %u is out of range or repeated", s->id);
		if (s->version != MIG_STATE_VERSION)
			return fail(in, -ENOTSUP, "VCPU_STATE version %u; this ferry reads %u",
				    s->version, MIG_STATE_VERSION);
		rc = mig_vcpu_state_decode(b->data, b->len, &in->st.vcpus[s->id]);
		if (!rc && in->st.vcpus[s->id].index != s->id)
			rc = ferr(EBADMSG, "VCPU_STATE %u holds vCPU %u", s->id, in->st.vcpus[s->id].index);
		if (rc)
			return fail(in, rc, "%s", ferr_msg(rc));
		in->vcpu_seen[s->id] = true;
		return 0;
	case MIG_SEC_DEVICE:
		if (st != MIG_IN_SWITCHOVER)
			goto out_of_place;
		return store_device(in, s, b);
	case MIG_SEC_DIGEST:
		if (st != MIG_IN_SWITCHOVER)
			goto out_of_place;
		return store_digests(in, b);
	case MIG_SEC_END:
		if (st != MIG_IN_SWITCHOVER)
			goto out_of_place;
		return finish_load(in);
	default:
		if (s->flags & MIG_SECF_OPTIONAL)
			return 0;   /* a later ferry's extra; safe to skip */
		break;
	}
out_of_place:
	return fail(in, -EPROTO, "unexpected %s section (type %u) while %s",
		    mig_section_name(s->type), s->type, mig_in_state_name(st));
}

static int await_commit(struct mig_in *in)
{
	struct channel *c0 = &in->ch[0];
	struct mig_section s;
	uint8_t running[24];
	uint8_t here[16];
	int rc;

	rc = mig_recv_section(c0->x, &s, &c0->buf);
	if (rc)
		return fail(in, rc, "the source did not commit (%s); this VM never ran",
			    ferr_msg(rc));
	if (s.type == MIG_SEC_ABORT)
		return main_section(in, &s);
	if (s.type != MIG_SEC_COMMIT)
		return fail(in, -EPROTO, "unexpected %s section while loaded (expected COMMIT)",
			    mig_section_name(s.type));
	if (in->keep_paused)
		vm_mark_paused(in->vm);
	else
		vm_start(in->vm);
	pthread_mutex_lock(&in->lock);
	in->state = MIG_IN_RUNNING;
	in->t_end = now_ns();
	mig_boot_id(here);
	if (memcmp(here, in->src_boot_id, 16) == 0 && in->t_end > in->src_stop_ns)
		in->downtime_ns = in->t_end - in->src_stop_ns;
	pthread_mutex_unlock(&in->lock);
	put_le64(running, in->t_end);
	memcpy(running + 8, here, 16);
	/* The VM is ours now whether or not the source hears this. */
	mig_send_section(c0->x, MIG_SEC_RUNNING, 0, 1, 0, running, sizeof(running));
	return 0;
}

int mig_in_run(struct mig_in *in, struct xport_listener *l, mig_create_vm_fn create_vm,
	       void *opaque, struct vm **vm_out)
{
	struct channel *c0 = &in->ch[0];
	struct mig_section s;
	uint8_t loaded[8];
	int rc;

	*vm_out = NULL;
	pthread_mutex_lock(&in->lock);
	in->listener = l;
	rc = atomic_load(&in->abort) ? -ECANCELED : 0;
	pthread_mutex_unlock(&in->lock);
	if (!rc)
		rc = handshake(in, l, create_vm, opaque);
	pthread_mutex_lock(&in->lock);
	in->listener = NULL;
	pthread_mutex_unlock(&in->lock);
	while (!rc && get_state(in) != MIG_IN_LOADED) {
		rc = mig_recv_section(c0->x, &s, &c0->buf);
		if (rc == -EPIPE) {
			rc = fail(in, rc, "the source closed the connection (the migration was "
				  "cancelled or failed there); this VM never ran");
			break;
		}
		if (rc) {
			rc = fail(in, rc, "%s", ferr_msg(rc));
			break;
		}
		rc = main_section(in, &s);
		if (!rc && s.type == MIG_SEC_END) {
			put_le64(loaded, now_ns() - in->t_start);
			rc = mig_send_section(c0->x, MIG_SEC_LOADED, 0, 1, 0, loaded, sizeof(loaded));
			if (rc)
				rc = fail(in, rc, "the source went away before the commit; this VM never ran");
			else
				set_state(in, MIG_IN_LOADED);
		}
	}
	if (!rc)
		rc = await_commit(in);
	/* The extra channels have nothing more to carry. */
	pthread_mutex_lock(&in->lock);
	abort_all_locked(in);
	if (rc) {
		in->state = MIG_IN_FAILED;
		in->t_end = now_ns();
	}
	pthread_mutex_unlock(&in->lock);
	for (unsigned i = 1; i < MAX_CHANNELS; i++)
		if (in->ch[i].started) {
			pthread_join(in->ch[i].thread, NULL);
			in->ch[i].started = false;
		}
	if (in->populating) {
		pthread_join(in->populate, NULL);
		in->populating = false;
	}
	if (rc) {
		char why[sizeof(in->error)];

		pthread_mutex_lock(&in->lock);
		snprintf(why, sizeof(why), "%s", in->error);
		pthread_mutex_unlock(&in->lock);
		if (c0->x)
			mig_send_text(c0->x, MIG_SEC_ERROR, why);
		if (in->vm) {
			vm_end(in->vm, 1, "the incoming migration failed");
			vm_destroy(in->vm);
			in->vm = NULL;
		}
		return ferr(rc, "%s", why);
	}
	*vm_out = in->vm;
	return 0;
}

int mig_in_create(struct mig_in **out)
{
	struct mig_in *in = calloc(1, sizeof(*in));

	if (!in)
		return -ENOMEM;
	pthread_mutex_init(&in->lock, NULL);
	pthread_cond_init(&in->cond, NULL);
	in->state = MIG_IN_LISTENING;
	*out = in;
	return 0;
}

void mig_in_abort(struct mig_in *in, const char *why)
{
	fail(in, -ECANCELED, "%s", why);
}

void mig_in_query(struct mig_in *in, struct mig_in_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&in->lock);
	st->state = in->state;
	st->total_ns = in->t_start ? (in->t_end ? in->t_end : now_ns()) - in->t_start : 0;
	st->downtime_ns = in->downtime_ns;
	st->channels = in->nch;
	for (unsigned i = 0; i < in->nch; i++)
		if (in->ch[i].x)
			st->bytes += __atomic_load_n(&in->ch[i].x->bytes_received, __ATOMIC_RELAXED);
	st->iteration = in->ch[0].iteration;
	snprintf(st->source, sizeof(st->source), "%s", in->source);
	snprintf(st->error, sizeof(st->error), "%s", in->error);
	pthread_mutex_unlock(&in->lock);
	st->pages = atomic_load(&in->pages);
}

void mig_in_free(struct mig_in *in)
{
	if (!in)
		return;
	for (unsigned i = 0; i < MAX_CHANNELS; i++) {
		if (in->ch[i].x)
			xport_close(in->ch[i].x);
		mig_batch_rx_free(&in->ch[i].rx);
		dbuf_free(&in->ch[i].buf);
	}
	for (unsigned i = 0; i < in->ndevices; i++)
		free(in->devices[i].data);
	vm_state_free(&in->st);
	free(in->extents);
	free(in->vcpu_seen);
	free(in->digests);
	pthread_mutex_destroy(&in->lock);
	pthread_cond_destroy(&in->cond);
	free(in);
}
