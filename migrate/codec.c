#include "codec.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../core/util.h"
#include "../guest/abi.h"

#define MAX_SLOTS 8

void mig_boot_id(uint8_t out[16])
{
	char text[64];
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;
	unsigned j = 0;

	memset(out, 0, 16);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return;
	text[n] = 0;
	for (ssize_t i = 0; i + 1 < n && j < 16; i++) {
		unsigned v;

		if (text[i] == '-')
			continue;
		if (sscanf(&text[i], "%2x", &v) != 1)
			break;
		out[j++] = (uint8_t)v;
		i++;
	}
}

void mig_vmdesc_from_vm(struct vm *vm, struct mig_vmdesc *d)
{
	memset(d, 0, sizeof(*d));
	memcpy(d->uuid, vm->uuid, sizeof(d->uuid));
	d->mem_size = vm->mem.size;
	d->page_size = GMEM_PAGE_SIZE;
	d->ncpus = vm->ncpus;
	snprintf(d->guest_name, sizeof(d->guest_name), "%s", vm->guest_name);
	d->tsc_khz = vm->tsc_khz;
	d->xsave_size = vm->xsave_size;
	d->nmsrs = MIN(vm->nmsrs, CPUSTATE_MAX_MSRS);
	memcpy(d->msr_index, vm->msr_index, d->nmsrs * sizeof(uint32_t));
	d->ncpuid = MIN(vm->cpuid->nent, CPUSTATE_MAX_CPUID);
	memcpy(d->cpuid, vm->cpuid->entries, d->ncpuid * sizeof(d->cpuid[0]));
	mig_boot_id(d->boot_id);
}

static void put_cpuid(struct dbuf *b, const struct kvm_cpuid_entry2 *e)
{
	dbuf_put_le32(b, e->function);
	dbuf_put_le32(b, e->index);
	dbuf_put_le32(b, e->flags);
	dbuf_put_le32(b, e->eax);
	dbuf_put_le32(b, e->ebx);
	dbuf_put_le32(b, e->ecx);
	dbuf_put_le32(b, e->edx);
}

static void get_cpuid(struct dreader *r, struct kvm_cpuid_entry2 *e)
{
	memset(e, 0, sizeof(*e));
	e->function = dreader_le32(r);
	e->index = dreader_le32(r);
	e->flags = dreader_le32(r);
	e->eax = dreader_le32(r);
	e->ebx = dreader_le32(r);
	e->ecx = dreader_le32(r);
	e->edx = dreader_le32(r);
}

void mig_vmdesc_encode(const struct mig_vmdesc *d, struct dbuf *b)
{
	dbuf_put(b, d->uuid, 16);
	dbuf_put_le64(b, d->mem_size);
	dbuf_put_le32(b, d->page_size);
	dbuf_put_le32(b, d->ncpus);
	/* One memslot today: all RAM at guest-physical 0. */
	dbuf_put_le32(b, 1);
	dbuf_put_le64(b, 0);
	dbuf_put_le64(b, d->mem_size);
	dbuf_put_str(b, d->guest_name, sizeof(d->guest_name));
	dbuf_put_str(b, d->dirty_log, sizeof(d->dirty_log));
	dbuf_put_le32(b, d->tsc_khz);
	dbuf_put_le32(b, d->xsave_size);
	dbuf_put_le32(b, d->nmsrs);
	for (unsigned i = 0; i < d->nmsrs; i++)
		dbuf_put_le32(b, d->msr_index[i]);
	dbuf_put_le32(b, d->ncpuid);
	for (unsigned i = 0; i < d->ncpuid; i++)
		put_cpuid(b, &d->cpuid[i]);
	dbuf_put_le32(b, d->nchannels);
	dbuf_put_le32(b, d->flags);
	dbuf_put(b, d->boot_id, 16);
}

int mig_vmdesc_decode(const uint8_t *p, size_t len, struct mig_vmdesc *d)
{
	struct dreader r;
	uint32_t nslots;

	memset(d, 0, sizeof(*d));
	dreader_init(&r, p, len);
	dreader_copy(&r, d->uuid, 16);
	d->mem_size = dreader_le64(&r);
	d->page_size = dreader_le32(&r);
	d->ncpus = dreader_le32(&r);
	nslots = dreader_le32(&r);
	if (!dreader_ok(&r))
		return ferr(EBADMSG, "VM description truncated");
	if (d->page_size != GMEM_PAGE_SIZE)
		return ferr(EBADMSG, "VM description: page size %u, expected %llu", d->page_size,
			    (unsigned long long)GMEM_PAGE_SIZE);
	if (d->mem_size < FERRY_MIN_MEM || d->mem_size > FERRY_MAX_MEM ||
	    d->mem_size % (2ull << 20))
		return ferr(EBADMSG, "VM description: memory size %llu is not one ferry can run",
			    (unsigned long long)d->mem_size);
	if (d->ncpus == 0 || d->ncpus > FERRY_MAX_VCPUS)
		return ferr(EBADMSG, "VM description: %u vCPUs", d->ncpus);
	if (nslots != 1)
		return ferr(EBADMSG, "VM description: %u memory slots (this ferry uses 1)", nslots);
	if (dreader_le64(&r) != 0 || dreader_le64(&r) != d->mem_size)
		return ferr(EBADMSG, "VM description: memory slot does not cover RAM from 0");
	dreader_str(&r, d->guest_name, sizeof(d->guest_name));
	dreader_str(&r, d->dirty_log, sizeof(d->dirty_log));
	d->tsc_khz = dreader_le32(&r);
	d->xsave_size = dreader_le32(&r);
	d->nmsrs = dreader_le32(&r);
	if (!dreader_ok(&r) || d->nmsrs > CPUSTATE_MAX_MSRS)
		return ferr(EBADMSG, "VM description: bad name fields or %u MSRs", d->nmsrs);
	for (unsigned i = 0; i < d->nmsrs; i++)
		d->msr_index[i] = dreader_le32(&r);
	d->ncpuid = dreader_le32(&r);
	if (!dreader_ok(&r) || d->ncpuid == 0 || d->ncpuid > CPUSTATE_MAX_CPUID)
		return ferr(EBADMSG, "VM description: %u CPUID entries", d->ncpuid);
	for (unsigned i = 0; i < d->ncpuid; i++)
		get_cpuid(&r, &d->cpuid[i]);
	d->nchannels = dreader_le32(&r);
	d->flags = dreader_le32(&r);
	dreader_copy(&r, d->boot_id, 16);
	if (!dreader_ok(&r))
		return ferr(EBADMSG, "VM description truncated");
	if (r.left)
		return ferr(EBADMSG, "VM description has %zu unexpected trailing bytes", r.left);
	if (d->nchannels == 0 || d->nchannels > 16)
		return ferr(EBADMSG, "VM description: %u channels", d->nchannels);
	return 0;
}

static const struct kvm_cpuid_entry2 *find_cpuid(const struct kvm_cpuid_entry2 *e, unsigned n,
						 uint32_t fn, uint32_t idx)
{
	for (unsigned i = 0; i < n; i++)
		if (e[i].function == fn && e[i].index == idx)
			return &e[i];
	return NULL;
}

/* Feature words a guest may rely on; bits the OS sets itself are masked. */
static const struct {
	uint32_t fn, idx;
	unsigned reg;   /* 0 eax, 1 ebx, 2 ecx, 3 edx */
	uint32_t ignore;
	const char *name;
} feature_words[] = {
	{ 1, 0, 2, 1u << 27, "1.ECX" },           /* OSXSAVE mirrors CR4 */
	{ 1, 0, 3, 0, "1.EDX" },
	{ 7, 0, 1, 0, "7.0.EBX" },
	{ 7, 0, 2, 1u << 4, "7.0.ECX" },          /* OSPKE mirrors CR4 */
	{ 7, 0, 3, 0, "7.0.EDX" },
	{ 7, 1, 0, 0, "7.1.EAX" },
	{ 0xd, 1, 0, 0, "D.1.EAX" },
	{ 0x80000001, 0, 2, 0, "80000001.ECX" },
	{ 0x80000001, 0, 3, 0, "80000001.EDX" },
};

static uint32_t reg_of(const struct kvm_cpuid_entry2 *e, unsigned reg)
{
	return reg == 0 ? e->eax : reg == 1 ? e->ebx : reg == 2 ? e->ecx : e->edx;
}

int mig_vmdesc_check(const struct mig_vmdesc *d, struct vm *vm)
{
	if (d->tsc_khz != vm->tsc_khz)
		return ferr(ENOTSUP, "the source TSC runs at %u kHz, this host's at %u kHz, "
			    "and TSC scaling is not supported", d->tsc_khz, vm->tsc_khz);
	if (d->xsave_size != vm->xsave_size)
		return ferr(ENOTSUP, "the source saves %u bytes of XSAVE state, this host %u",
			    d->xsave_size, vm->xsave_size);
	for (unsigned i = 0; i < d->nmsrs; i++) {
		bool found = false;

		for (unsigned j = 0; j < vm->nmsrs && !found; j++)
			found = vm->msr_index[j] == d->msr_index[i];
		if (!found)
			return ferr(ENOTSUP, "this host cannot hold the source's MSR %#x",
				    d->msr_index[i]);
	}
	for (unsigned i = 0; i < ARRAY_SIZE(feature_words); i++) {
		const struct kvm_cpuid_entry2 *src, *dst;
		uint32_t missing;

		src = find_cpuid(d->cpuid, d->ncpuid, feature_words[i].fn, feature_words[i].idx);
		if (!src)
			continue;
		dst = find_cpuid(vm->cpuid->entries, vm->cpuid->nent, feature_words[i].fn,
				 feature_words[i].idx);
		missing = reg_of(src, feature_words[i].reg) & ~feature_words[i].ignore;
		if (dst)
			missing &= ~reg_of(dst, feature_words[i].reg);
		if (missing)
			return ferr(ENOTSUP, "this host's CPU lacks features the guest may use: "
				    "CPUID %s bits %#x", feature_words[i].name, missing);
	}
	return 0;
}

/* ---- state records: u32 tag, u32 length, bytes ---- */

enum vm_tag { VT_SHAPE = 1, VT_CLOCK, VT_IRQCHIP };
enum vcpu_tag {
	CT_INDEX = 1, CT_MP_STATE, CT_REGS, CT_SREGS, CT_FPU, CT_XSAVE, CT_XCRS,
	CT_DEBUGREGS, CT_LAPIC, CT_EVENTS, CT_MSRS, CT_CPUID, CT_TSC, CT_MAX
};

static void put_record(struct dbuf *b, uint32_t tag, const void *p, size_t len)
{
	dbuf_put_le32(b, tag);
	dbuf_put_le32(b, (uint32_t)len);
	dbuf_put(b, p, len);
}

void mig_vm_state_encode(const struct vm_state *st, struct dbuf *b)
{
	uint8_t shape[24];

	put_le32(shape, st->ncpus);
	put_le32(shape + 4, st->tsc_khz);
	put_le64(shape + 8, st->mem_size);
	put_le64(shape + 16, st->pause_realtime_ns);
	put_record(b, VT_SHAPE, shape, sizeof(shape));
	put_record(b, VT_CLOCK, &st->clock, sizeof(st->clock));
	put_record(b, VT_IRQCHIP, st->irqchip, sizeof(st->irqchip));
}

struct record {
	uint32_t tag;
	uint32_t len;
	const uint8_t *data;
};

/* Next record, or false at the end; sets r->bad if truncated. */
static bool next_record(struct dreader *r, struct record *rec)
{
	if (r->left == 0 || r->bad)
		return false;
	rec->tag = dreader_le32(r);
	rec->len = dreader_le32(r);
	rec->data = dreader_take(r, rec->len);
	return dreader_ok(r);
}

static int want_len(const char *what, const struct record *rec, size_t len)
{
	if (rec->len != len)
		return ferr(EBADMSG, "%s record %u is %u bytes, expected %zu", what, rec->tag,
			    rec->len, len);
	return 0;
}

int mig_vm_state_decode(const uint8_t *p, size_t len, struct vm_state *st)
{
	struct dreader r;
	struct record rec;
	unsigned seen = 0;
	int rc;

	dreader_init(&r, p, len);
	while (next_record(&r, &rec)) {
		if (rec.tag == 0 || rec.tag > VT_IRQCHIP)
			return ferr(EBADMSG, "VM state: unknown record %u", rec.tag);
		if (seen & (1u << rec.tag))
			return ferr(EBADMSG, "VM state: record %u appears twice", rec.tag);
		seen |= 1u << rec.tag;
		switch (rec.tag) {
		case VT_SHAPE:
			if ((rc = want_len("VM state", &rec, 24)))
				return rc;
			if (get_le32(rec.data) != st->ncpus)
				return ferr(EBADMSG, "VM state is for %u vCPUs, the VM has %u",
					    get_le32(rec.data), st->ncpus);
			st->tsc_khz = get_le32(rec.data + 4);
			st->mem_size = get_le64(rec.data + 8);
			st->pause_realtime_ns = get_le64(rec.data + 16);
			break;
		case VT_CLOCK:
			if ((rc = want_len("VM state", &rec, sizeof(st->clock))))
				return rc;
			memcpy(&st->clock, rec.data, sizeof(st->clock));
			break;
		case VT_IRQCHIP:
			if ((rc = want_len("VM state", &rec, sizeof(st->irqchip))))
				return rc;
			memcpy(st->irqchip, rec.data, sizeof(st->irqchip));
			break;
		}
	}
	if (!dreader_ok(&r))
		return ferr(EBADMSG, "VM state truncated");
	if (seen != ((1u << VT_SHAPE) | (1u << VT_CLOCK) | (1u << VT_IRQCHIP)))
		return ferr(EBADMSG, "VM state lacks records (have mask %#x)", seen);
	return 0;
}

void mig_vcpu_state_encode(const struct vcpu_state *s, struct dbuf *b)
{
	uint8_t idx[4], tsc[16];
	struct dbuf list;

	put_le32(idx, s->index);
	put_record(b, CT_INDEX, idx, 4);
	put_record(b, CT_MP_STATE, &s->mp_state, sizeof(s->mp_state));
	put_record(b, CT_REGS, &s->regs, sizeof(s->regs));
	put_record(b, CT_SREGS, &s->sregs, sizeof(s->sregs));
	if (s->xsave_size)
		put_record(b, CT_XSAVE, s->xsave, s->xsave_size);
	else
		put_record(b, CT_FPU, &s->fpu, sizeof(s->fpu));
	put_record(b, CT_XCRS, &s->xcrs, sizeof(s->xcrs));
	put_record(b, CT_DEBUGREGS, &s->debugregs, sizeof(s->debugregs));
	put_record(b, CT_LAPIC, &s->lapic, sizeof(s->lapic));
	put_record(b, CT_EVENTS, &s->events, sizeof(s->events));
	dbuf_init(&list);
	for (unsigned i = 0; i < s->nmsrs; i++) {
		dbuf_put_le32(&list, s->msrs[i].index);
		dbuf_put_le32(&list, 0);
		dbuf_put_le64(&list, s->msrs[i].data);
	}
	put_record(b, CT_MSRS, list.data, list.len);
	dbuf_reset(&list);
	for (unsigned i = 0; i < s->ncpuid; i++)
		put_cpuid(&list, &s->cpuid[i]);
	put_record(b, CT_CPUID, list.data, list.len);
	dbuf_free(&list);
	put_le64(tsc, s->tsc);
	put_le32(tsc + 8, s->tsc_khz);
	put_le32(tsc + 12, 0);
	put_record(b, CT_TSC, tsc, sizeof(tsc));
}

int mig_vcpu_state_decode(const uint8_t *p, size_t len, struct vcpu_state *s)
{
	static const char what[] = "vCPU state";
	struct dreader r, list;
	struct record rec;
	unsigned seen = 0, need;
	int rc = 0;

	memset(s, 0, sizeof(*s));
	dreader_init(&r, p, len);
	while (next_record(&r, &rec)) {
		if (rec.tag == 0 || rec.tag >= CT_MAX)
			return ferr(EBADMSG, "vCPU state: unknown record %u", rec.tag);
		if (seen & (1u << rec.tag))
			return ferr(EBADMSG, "vCPU state: record %u appears twice", rec.tag);
		seen |= 1u << rec.tag;
		switch (rec.tag) {
		case CT_INDEX:
			if (!(rc = want_len(what, &rec, 4)))
				s->index = get_le32(rec.data);
			break;
#define FIXED(tag, field)                                                      \
		case tag:                                                      \
			if (!(rc = want_len(what, &rec, sizeof(s->field))))    \
				memcpy(&s->field, rec.data, sizeof(s->field)); \
			break;
		FIXED(CT_MP_STATE, mp_state)
		FIXED(CT_REGS, regs)
		FIXED(CT_SREGS, sregs)
		FIXED(CT_FPU, fpu)
		FIXED(CT_XCRS, xcrs)
		FIXED(CT_DEBUGREGS, debugregs)
		FIXED(CT_LAPIC, lapic)
		FIXED(CT_EVENTS, events)
#undef FIXED
		case CT_XSAVE:
			if (rec.len == 0 || rec.len > CPUSTATE_XSAVE_MAX)
				return ferr(EBADMSG, "vCPU state: %u bytes of XSAVE", rec.len);
			memcpy(s->xsave, rec.data, rec.len);
			s->xsave_size = rec.len;
			break;
		case CT_MSRS:
			if (rec.len % 16 || rec.len / 16 > CPUSTATE_MAX_MSRS)
				return ferr(EBADMSG, "vCPU state: MSR list of %u bytes", rec.len);
			s->nmsrs = rec.len / 16;
			dreader_init(&list, rec.data, rec.len);
			for (unsigned i = 0; i < s->nmsrs; i++) {
				s->msrs[i].index = dreader_le32(&list);
				(void)dreader_le32(&list);
				s->msrs[i].data = dreader_le64(&list);
			}
			break;
		case CT_CPUID:
			if (rec.len % 28 || rec.len == 0 || rec.len / 28 > CPUSTATE_MAX_CPUID)
				return ferr(EBADMSG, "vCPU state: CPUID list of %u bytes", rec.len);
			s->ncpuid = rec.len / 28;
			dreader_init(&list, rec.data, rec.len);
			for (unsigned i = 0; i < s->ncpuid; i++)
				get_cpuid(&list, &s->cpuid[i]);
			break;
		case CT_TSC:
			if (!(rc = want_len(what, &rec, 16))) {
				s->tsc = get_le64(rec.data);
				s->tsc_khz = get_le32(rec.data + 8);
			}
			break;
		}
		if (rc)
			return rc;
	}
	if (!dreader_ok(&r))
		return ferr(EBADMSG, "vCPU state truncated");
	need = (1u << CT_INDEX) | (1u << CT_MP_STATE) | (1u << CT_REGS) | (1u << CT_SREGS) |
	       (1u << CT_XCRS) | (1u << CT_DEBUGREGS) | (1u << CT_LAPIC) |
	       (1u << CT_EVENTS) | (1u << CT_MSRS) | (1u << CT_CPUID) | (1u << CT_TSC);
	if ((seen & need) != need)
		return ferr(EBADMSG, "vCPU state lacks records (missing mask %#x)", need & ~seen);
	if (!(seen & ((1u << CT_FPU) | (1u << CT_XSAVE))) ||
	    (seen & (1u << CT_FPU) && seen & (1u << CT_XSAVE)))
		return ferr(EBADMSG, "vCPU state needs exactly one of FPU and XSAVE");
	return 0;
}
