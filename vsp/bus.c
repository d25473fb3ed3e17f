/*
 * The bus: the offers, the control port (QUERY, OPEN, CLOSE, WAIT) and the
 * doorbell port the guest uses, the doorbell ioeventfds, the placement
 * check that keeps every channel's rings apart, and the "vmbus" device
 * section that lets a destination check it offers the same channels.
 *
 * The port handlers run on vCPU threads; everything they read from the
 * guest is copied out first and checked.  A malformed control message gets
 * a -errno status; one the host cannot even read is ignored.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>

#include "../core/util.h"
#include "channel.h"

#define WAIT_MAX_US 1000000u
#define BUS_DEVICE "vmbus"
#define BUS_STATE_VERSION 1

struct ring_range {
	uint64_t start, end;          /* [start, end), end == 0 when unused */
};

struct vsp_bus {
	struct vm *vm;
	struct vsp_chan ch[VMBUS_MAX_CHANNELS];
	unsigned nch;
	bool ioeventfd;
	bool started;
	pthread_mutex_t ring_lock;
	struct ring_range rings[VMBUS_MAX_CHANNELS][2];   /* (ring_lock) */
	_Atomic unsigned bad_access_warnings;
};

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

static int check_one_ring(struct vm *vm, uint64_t gpa, uint32_t size, const char *which)
{
	if (size < VMBUS_RING_MIN || size > VMBUS_RING_MAX || (size & (size - 1)))
		return ferr(EINVAL, "%s ring size %" PRIu32 " is not a power of two from %u to %u",
			    which, size, VMBUS_RING_MIN, VMBUS_RING_MAX);
	if (gpa % FERRY_PAGE_SIZE || gpa < FERRY_DEVICE_GPA)
		return ferr(EINVAL, "%s ring at %#" PRIx64 " is not page aligned at or above %#llx",
			    which, gpa, FERRY_DEVICE_GPA);
	if (!gmem_range_ok(&vm->mem, gpa, (uint64_t)VMBUS_RING_HDR_SIZE + size))
		return ferr(EFAULT, "%s ring at %#" PRIx64 " (%" PRIu32 " bytes) is outside guest RAM",
			    which, gpa, size);
	return 0;
}

int vsp_bus_check_rings(struct vsp_bus *bus, struct vsp_chan *self,
			uint64_t out_gpa, uint32_t out_size, uint64_t in_gpa, uint32_t in_size)
{
	uint64_t out_len = (uint64_t)VMBUS_RING_HDR_SIZE + out_size;
	uint64_t in_len = (uint64_t)VMBUS_RING_HDR_SIZE + in_size;
	unsigned me = self->offer.channel;
	int rc;

	rc = check_one_ring(bus->vm, out_gpa, out_size, "guest->host");
	if (!rc)
		rc = check_one_ring(bus->vm, in_gpa, in_size, "host->guest");
	if (rc)
		return rc;
	if (overlaps(out_gpa, out_len, in_gpa, in_len))
		return ferr(EINVAL, "%s: the two rings overlap", self->name);
	pthread_mutex_lock(&bus->ring_lock);
	for (unsigned i = 0; i < bus->nch && !rc; i++)
		for (unsigned j = 0; j < 2 && !rc; j++) {
			const struct ring_range *o = &bus->rings[i][j];

			if (i == me || !o->end)
				continue;
			if (overlaps(out_gpa, out_len, o->start, o->end - o->start) ||
			    overlaps(in_gpa, in_len, o->start, o->end - o->start))
				rc = ferr(EADDRINUSE, "%s: a ring overlaps one of %s", self->name,
					  bus->ch[i].name);
		}
	if (!rc) {
		bus->rings[me][0] = (struct ring_range){ out_gpa, out_gpa + out_len };
		bus->rings[me][1] = (struct ring_range){ in_gpa, in_gpa + in_len };
	}
	pthread_mutex_unlock(&bus->ring_lock);
	return rc;
}

void vsp_bus_release_rings(struct vsp_bus *bus, struct vsp_chan *self)
{
	pthread_mutex_lock(&bus->ring_lock);
	memset(bus->rings[self->offer.channel], 0, sizeof(bus->rings[0]));
	pthread_mutex_unlock(&bus->ring_lock);
}

static void warn_bad_access(struct vsp_bus *bus, unsigned cpu, const char *what)
{
	if (atomic_fetch_add(&bus->bad_access_warnings, 1) < 8)
		flog("vCPU %u: %s (ignored)", cpu, what);
}

static bool channel_has_news(struct vsp_chan *ch)
{
	struct vmbus_ring_hdr *h = atomic_load(&ch->wait_hdr);

	/* Closed or failed: the guest must look at it now. */
	return !h || __atomic_load_n(&h->prod, __ATOMIC_ACQUIRE) !=
		     __atomic_load_n(&h->cons, __ATOMIC_ACQUIRE);
}

/*
 * WAIT: the guest's way to sleep until the host has something for it.  It
 * waits like UC_HALT on vcpu_cond, which vsp_ring_flush() broadcasts, and
 * ends at once for a pause or the end of the VM.
 */
static void bus_wait(struct vsp_bus *bus, struct vcpu *v, uint64_t mask, uint64_t us)
{
	struct vm *vm = v->vm;
	uint64_t deadline = now_ns() + MIN(us, WAIT_MAX_US) * 1000;
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / 1000000000ull),
		.tv_nsec = (long)(deadline % 1000000000ull),
	};

	pthread_mutex_lock(&vm->lock);
	while (!atomic_load(&vm->pause_req) && !vm->ended && !atomic_load(&vm->stopping) &&
	       now_ns() < deadline) {
		bool news = false;

		for (unsigned i = 0; i < bus->nch && !news; i++)
			if (mask & (1ull << i))
				news = channel_has_news(&bus->ch[i]);
		if (news || pthread_cond_timedwait(&vm->vcpu_cond, &vm->lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&vm->lock);
}

static int bus_query(struct vsp_bus *bus, struct vm *vm, struct vmbus_msg *m)
{
	struct vmbus_offer offers[VMBUS_MAX_CHANNELS];
	uint64_t n = MIN(m->buf_len / sizeof(offers[0]), bus->nch);

	for (unsigned i = 0; i < n; i++)
		offers[i] = bus->ch[i].offer;
	m->count = bus->nch;
	if (n && gmem_write(&vm->mem, m->buf_gpa, offers, n * sizeof(offers[0])) < 0)
		return -EFAULT;
	return 0;
}

static void ctl_port(struct vcpu *v, uint64_t port, bool is_write, uint8_t *data,
		     unsigned size, void *opaque)
{
	struct vsp_bus *bus = opaque;
	struct vm *vm = v->vm;
	struct vmbus_msg m;
	uint32_t gpa;

	(void)port;
	if (!is_write || size != 4) {
		if (!is_write)
			memset(data, 0xff, size);
		warn_bad_access(bus, v->index, "the VMBus control port takes a 32-bit OUT");
		return;
	}
	memcpy(&gpa, data, sizeof(gpa));
	if (gmem_read(&vm->mem, gpa, &m, sizeof(m)) < 0) {
		warn_bad_access(bus, v->index, "VMBus control message outside guest RAM");
		return;
	}
	if (m.abi_version != VMBUS_ABI_VERSION) {
		m.status = -EPROTONOSUPPORT;
	} else if (m.op == VMBUS_OP_QUERY) {
		m.status = bus_query(bus, vm, &m);
	} else if (m.op == VMBUS_OP_WAIT) {
		bus_wait(bus, v, m.wait_mask, m.wait_us);
		m.status = 0;
	} else if (m.op == VMBUS_OP_OPEN || m.op == VMBUS_OP_CLOSE) {
		if (m.channel >= bus->nch)
			m.status = -ENOENT;
		else if (m.op == VMBUS_OP_OPEN)
			m.status = vsp_chan_open(&bus->ch[m.channel], &m);
		else
			m.status = vsp_chan_close(&bus->ch[m.channel]);
	} else {
		m.status = -EOPNOTSUPP;
	}
	(void)gmem_write(&vm->mem, gpa, &m, sizeof(m));
}

/* Doorbells that no ioeventfd took (all of them without ioeventfd). */
static void doorbell_port(struct vcpu *v, uint64_t port, bool is_write, uint8_t *data,
			  unsigned size, void *opaque)
{
	struct vsp_bus *bus = opaque;
	uint32_t id;

	(void)port;
	if (!is_write || size != 4) {
		if (!is_write)
			memset(data, 0xff, size);
		warn_bad_access(bus, v->index, "the VMBus doorbell takes a 32-bit OUT");
		return;
	}
	memcpy(&id, data, sizeof(id));
	if (id >= bus->nch) {
		warn_bad_access(bus, v->index, "doorbell for a channel that does not exist");
		return;
	}
	(void)eventfd_write(bus->ch[id].doorbell_fd, 1);
}

static int add_ioeventfd(struct vsp_bus *bus, struct vsp_chan *ch)
{
	struct kvm_ioeventfd io = {
		.datamatch = ch->offer.channel,
		.addr = FERRY_PORT_DOORBELL,
		.len = 4,
		.fd = ch->doorbell_fd,
		.flags = KVM_IOEVENTFD_FLAG_PIO | KVM_IOEVENTFD_FLAG_DATAMATCH,
	};

	if (ioctl(bus->vm->fd, KVM_IOEVENTFD, &io) < 0)
		return -errno;
	return 0;
}

/* ---- device sections ---- */

static int chan_save(void *opaque, struct dbuf *out)
{
	struct vsp_chan *ch = opaque;
	int rc;

	pthread_mutex_lock(&ch->lock);
	vsp_chan_save_common(ch, out);
	rc = ch->ops->save ? ch->ops->save(ch, out) : 0;
	pthread_mutex_unlock(&ch->lock);
	return rc;
}

static int chan_load(void *opaque, uint32_t version, const uint8_t *data, size_t len)
{
	struct vsp_chan *ch = opaque;
	struct dreader r;
	int rc;

	if (version < 1)
		return ferr(EINVAL, "%s: state version %u is unknown", ch->name, version);
	dreader_init(&r, data, len);
	rc = vsp_chan_load_common(ch, &r);
	if (rc)
		return rc;
	pthread_mutex_lock(&ch->lock);
	if (ch->state == VSP_CH_OFFERED)
		vsp_bus_release_rings(ch->bus, ch);
	rc = ch->ops->load ? ch->ops->load(ch, &r, version) : 0;
	if (!rc && (!dreader_ok(&r) || r.left))
		rc = ferr(EBADMSG, "%s: the state is %s", ch->name,
			  dreader_ok(&r) ? "longer than its contents" : "truncated");
	pthread_mutex_unlock(&ch->lock);
	return rc;
}

static int bus_save(void *opaque, struct dbuf *out)
{
	struct vsp_bus *bus = opaque;

	dbuf_put_le32(out, bus->nch);
	for (unsigned i = 0; i < bus->nch; i++) {
		const struct vmbus_offer *o = &bus->ch[i].offer;

		dbuf_put_le32(out, o->type);
		dbuf_put_le32(out, o->instance);
		dbuf_put_le32(out, o->version);
		for (unsigned j = 0; j < 4; j++)
			dbuf_put_le64(out, o->info[j]);
	}
	return 0;
}

static int bus_load(void *opaque, uint32_t version, const uint8_t *data, size_t len)
{
	struct vsp_bus *bus = opaque;
	struct dreader r;
	uint32_t n;

	(void)version;
	dreader_init(&r, data, len);
	n = dreader_le32(&r);
	if (!dreader_ok(&r) || n != bus->nch)
		return ferr(EINVAL, "vmbus: the source offers %u channels, this VM %u", n, bus->nch);
	for (unsigned i = 0; i < n; i++) {
		const struct vmbus_offer *o = &bus->ch[i].offer;
		uint32_t type = dreader_le32(&r), inst = dreader_le32(&r), ver = dreader_le32(&r);
		uint64_t info[4];

		for (unsigned j = 0; j < 4; j++)
			info[j] = dreader_le64(&r);
		if (!dreader_ok(&r))
			return ferr(EBADMSG, "vmbus: the offers are truncated");
		if (type != o->type || inst != o->instance)
			return ferr(EINVAL, "vmbus: channel %u is type %u instance %u at the source, "
				    "%s here", i, type, inst, bus->ch[i].name);
		if (ver > o->version)
			return ferr(EINVAL, "vmbus: %s speaks version %#x at the source, only %#x here",
				    bus->ch[i].name, ver, o->version);
		if (memcmp(info, o->info, sizeof(info)) != 0)
			return ferr(EINVAL, "vmbus: %s differs from the source's (%s)",
				    bus->ch[i].name, type == VMBUS_TYPE_STORAGE ?
				    "disk size, read-only flag or limits" : "settings");
	}
	return r.left ? ferr(EBADMSG, "vmbus: trailing bytes in the offers") : 0;
}

static const struct vm_device_ops bus_dev_ops = {
	.name = BUS_DEVICE, .version = BUS_STATE_VERSION, .save = bus_save, .load = bus_load,
};

/* ---- life cycle ---- */

static int add_channel(struct vsp_bus *bus, const struct vsp_provider_ops *ops,
		       uint32_t instance, const char *name)
{
	struct vsp_chan *ch = &bus->ch[bus->nch];
	int rc;

	rc = vsp_chan_init(ch, bus, bus->vm, ops, bus->nch, instance, name);
	bus->nch++;
	return rc;
}

static int register_channel(struct vsp_bus *bus, struct vsp_chan *ch)
{
	int rc;

	ch->dev_ops = (struct vm_device_ops){
		.name = ch->name, .version = ch->ops->state_version,
		.save = chan_save, .load = chan_load,
	};
	rc = vm_device_register(bus->vm, &ch->dev_ops, ch);
	if (rc)
		return rc;
	if (bus->ioeventfd && add_ioeventfd(bus, ch) < 0) {
		flog("vmbus: KVM_IOEVENTFD failed; doorbells go through the port handler");
		bus->ioeventfd = false;
	}
	return 0;
}

int vsp_bus_create(struct vm *vm, const struct vsp_config *cfg, struct vsp_bus **out)
{
	struct vsp_bus *bus;
	char name[VM_DEVICE_NAME_MAX];
	int rc;

	if (cfg->ndisks > VSP_MAX_DISKS)
		return ferr(EINVAL, "at most %u disks", VSP_MAX_DISKS);
	bus = calloc(1, sizeof(*bus));
	if (!bus)
		return -ENOMEM;
	bus->vm = vm;
	bus->ioeventfd = !cfg->no_ioeventfd;
	pthread_mutex_init(&bus->ring_lock, NULL);
	rc = add_channel(bus, &vsp_console_ops, 0, "vsp-console");
	if (!rc)
		rc = vsp_console_init(&bus->ch[0], cfg->console_in_fd);
	if (!rc)
		rc = add_channel(bus, &vsp_heartbeat_ops, 0, "vsp-heartbeat");
	if (!rc)
		rc = vsp_heartbeat_init(&bus->ch[1], cfg->heartbeat_ms ? cfg->heartbeat_ms
							     : VSP_DEFAULT_HEARTBEAT_MS);
	for (unsigned i = 0; i < cfg->ndisks && !rc; i++) {
		snprintf(name, sizeof(name), "vsp-storage%u", i);
		rc = add_channel(bus, &vsp_storage_ops, i, name);
		if (!rc)
			rc = vsp_storage_init(&bus->ch[bus->nch - 1], &cfg->disks[i]);
	}
	if (!rc)
		rc = iotable_register(&vm->pio, FERRY_PORT_VMBUS, 4, "vmbus", ctl_port, bus);
	if (!rc)
		rc = iotable_register(&vm->pio, FERRY_PORT_DOORBELL, 4, "doorbell",
				      doorbell_port, bus);
	if (!rc)
		rc = vm_device_register(vm, &bus_dev_ops, bus);
	for (unsigned i = 0; i < bus->nch && !rc; i++)
		rc = register_channel(bus, &bus->ch[i]);
	if (rc) {
		vsp_bus_destroy(bus);
		return rc;
	}
	*out = bus;
	return 0;
}

int vsp_bus_start(struct vsp_bus *bus)
{
	int rc = 0;

	for (unsigned i = 0; i < bus->nch && !rc; i++)
		rc = vsp_chan_start(&bus->ch[i]);
	bus->started = true;
	return rc;
}

void vsp_bus_destroy(struct vsp_bus *bus)
{
	if (!bus)
		return;
	for (unsigned i = 0; i < bus->nch; i++)
		vsp_chan_fini(&bus->ch[i]);
	pthread_mutex_destroy(&bus->ring_lock);
	free(bus);
}

struct vsp_bus *vsp_bus_of(struct vm *vm)
{
	const struct vm_device *d = vm_device_find(vm, BUS_DEVICE);

	return d ? d->opaque : NULL;
}

unsigned vsp_bus_count(struct vsp_bus *bus)
{
	return bus->nch;
}

bool vsp_bus_uses_ioeventfd(struct vsp_bus *bus)
{
	return bus->ioeventfd;
}

int vsp_bus_query(struct vsp_bus *bus, unsigned index, struct vsp_chan_info *out)
{
	struct vsp_chan *ch;

	if (index >= bus->nch)
		return -ENOENT;
	ch = &bus->ch[index];
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&ch->lock);
	vsp_chan_query_common(ch, out);
	if (ch->ops->query)
		ch->ops->query(ch, out);
	pthread_mutex_unlock(&ch->lock);
	return 0;
}

int vsp_console_send(struct vsp_bus *bus, const void *data, size_t len)
{
	for (unsigned i = 0; i < bus->nch; i++)
		if (bus->ch[i].ops == &vsp_console_ops)
			return vsp_console_queue(&bus->ch[i], data, len);
	return -ENODEV;
}

int vsp_disk_parse(const char *spec, struct vsp_disk_cfg *out)
{
	static const char ro[] = ",readonly";
	size_t n = strlen(spec);

	memset(out, 0, sizeof(*out));
	if (n >= strlen(ro) && strcmp(spec + n - strlen(ro), ro) == 0) {
		out->readonly = true;
		n -= strlen(ro);
	}
	if (n == 0)
		return ferr(EINVAL, "--disk '%s' names no file", spec);
	if (n >= sizeof(out->path))
		return ferr(ENAMETOOLONG, "--disk path is longer than %zu bytes",
			    sizeof(out->path) - 1);
	memcpy(out->path, spec, n);
	out->path[n] = 0;
	return 0;
}
