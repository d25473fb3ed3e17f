/*
 * Per-vCPU write-fault counters, the bitmap backends' way to tell which
 * vCPU dirtied how much.  KVM_GET_DIRTY_LOG says which pages are dirty but
 * not who wrote them; every first write to a protected page, however, is a
 * page fault that KVM counts on the vCPU that took it.  KVM exports those
 * counters in each vCPU's binary statistics file (KVM_GET_STATS_FD):
 * pf_fixed (faults fixed by the slow path), pf_fast (write-protection
 * faults fixed without mmu_lock) and pf_spurious (already fixed by another
 * vCPU).  Their sum over a collection interval is each vCPU's share.
 *
 * The statistics file is found by name, never by a fixed offset, and a
 * kernel without it (or without those names) simply gives no estimates.
 * Opening it is a vCPU ioctl, so it runs on each vCPU's thread; reading
 * it is a pread that any thread may do while the vCPU runs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../core/util.h"
#include "internal.h"

#define STATS_MAX_DESCS 4096u   /* a header claiming more is not believed */
#define STATS_MAX_NAME 1024u
#define STATS_MAX_DATA (1u << 20)

static const char *const counter_names[3] = { "pf_fixed", "pf_fast", "pf_spurious" };

/* Fills p from the statistics file fd (already open).  0 or -errno. */
static int parse_stats(int fd, struct dlog_pf *p)
{
	struct kvm_stats_header h;
	size_t desc_size;
	uint8_t *descs = NULL;
	unsigned found = 0;
	uint64_t end = 0;
	int rc = 0;

	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return ferr(EIO, "short read of a vCPU statistics header");
	if (h.num_desc == 0 || h.num_desc > STATS_MAX_DESCS || h.name_size == 0 ||
	    h.name_size > STATS_MAX_NAME)
		return ferr(EINVAL, "vCPU statistics header is implausible (%u descriptors)",
			    h.num_desc);
	desc_size = sizeof(struct kvm_stats_desc) + h.name_size;
	descs = malloc(desc_size * h.num_desc);
	if (!descs)
		return -ENOMEM;
	if (pread(fd, descs, desc_size * h.num_desc, h.desc_offset) !=
	    (ssize_t)(desc_size * h.num_desc)) {
		rc = ferr(EIO, "short read of vCPU statistics descriptors");
		goto free_descs;
	}
	for (unsigned i = 0; i < h.num_desc; i++) {
		struct kvm_stats_desc *sd = (struct kvm_stats_desc *)(descs + i * desc_size);

		sd->name[h.name_size - 1] = 0;
		for (unsigned k = 0; k < ARRAY_SIZE(counter_names); k++) {
			if (strcmp(sd->name, counter_names[k]) != 0)
				continue;
			/* A plain cumulative 64-bit counter, inside the data. */
			if ((sd->flags & KVM_STATS_TYPE_MASK) != KVM_STATS_TYPE_CUMULATIVE ||
			    sd->size != 1 || sd->offset > STATS_MAX_DATA - 8)
				continue;
			p->off[k] = sd->offset;
			end = MAX(end, (uint64_t)sd->offset + 8);
			found |= 1u << k;
		}
	}
	if (found != 7) {
		rc = ferr(ENOTSUP, "vCPU statistics lack pf_fixed/pf_fast/pf_spurious");
		goto free_descs;
	}
	p->data_offset = h.data_offset;
	p->data_len = end;
free_descs:
	free(descs);
	return rc;
}

static uint64_t read_faults(const struct dlog_pf *p)
{
	uint8_t buf[STATS_MAX_DATA / 256];  /* the counters sit near the start */
	uint8_t *data = buf;
	uint64_t sum = 0;

	if (p->data_len > sizeof(buf)) {
		data = malloc(p->data_len);
		if (!data)
			return p->last;
	}
	if (pread(p->fd, data, p->data_len, (off_t)p->data_offset) == (ssize_t)p->data_len) {
		for (unsigned k = 0; k < ARRAY_SIZE(counter_names); k++) {
			uint64_t v;

			memcpy(&v, data + p->off[k], sizeof(v));
			sum += v;
		}
	} else {
		sum = p->last;      /* no figure this time: a zero delta */
	}
	if (data != buf)
		free(data);
	return sum;
}

/* On vCPU v's thread, while every vCPU is parked. */
static int open_one(struct vcpu *v, void *arg)
{
	struct dlog_pf *p = &((struct dlog_pf *)arg)[v->index];
	int fd = ioctl(v->fd, KVM_GET_STATS_FD, 0);

	if (fd < 0)
		return ferr_sys(errno, "KVM_GET_STATS_FD on vCPU %u failed", v->index);
	p->fd = fd;
	return 0;
}

int dlog_pf_open(struct dlog *d)
{
	struct vm *vm = d->vm;
	struct dlog_pf *pf;
	int rc;

	if (ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD) <= 0)
		return 0;           /* no estimates on this host; not an error */
	pf = calloc(vm->ncpus, sizeof(*pf));
	if (!pf)
		return -ENOMEM;
	for (unsigned i = 0; i < vm->ncpus; i++)
		pf[i].fd = -1;
	d->pf = pf;
	rc = dlog_with_vcpus_parked(vm, open_one, pf);
	for (unsigned i = 0; i < vm->ncpus && !rc; i++)
		rc = parse_stats(pf[i].fd, &pf[i]);
	if (rc) {
		/* Estimates are a nicety: say why they are missing, go on. */
		flog("dirty log: no per-vCPU estimates: %s", ferr_msg(rc));
		dlog_pf_close(d);
		return 0;
	}
	for (unsigned i = 0; i < vm->ncpus; i++)
		pf[i].last = read_faults(&pf[i]);
	return 0;
}

void dlog_pf_sample(struct dlog *d, uint64_t *counts)
{
	for (unsigned i = 0; i < d->vm->ncpus; i++) {
		struct dlog_pf *p = &d->pf[i];
		uint64_t now = read_faults(p);

		counts[i] = now >= p->last ? now - p->last : 0;
		p->last = now;
	}
}

void dlog_pf_close(struct dlog *d)
{
	if (!d->pf)
		return;
	for (unsigned i = 0; i < d->vm->ncpus; i++)
		if (d->pf[i].fd >= 0)
			close(d->pf[i].fd);
	free(d->pf);
	d->pf = NULL;
}
