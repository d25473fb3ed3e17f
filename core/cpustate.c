#include "cpustate.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../guest/abi.h"
#include "util.h"

#define MSR_IA32_TSC 0x10

int vm_state_alloc(struct vm_state *st, unsigned ncpus)
{
	memset(st, 0, sizeof(*st));
	st->vcpus = calloc(ncpus, sizeof(*st->vcpus));
	if (!st->vcpus)
		return -ENOMEM;
	st->ncpus = ncpus;
	return 0;
}

void vm_state_free(struct vm_state *st)
{
	free(st->vcpus);
	memset(st, 0, sizeof(*st));
}

/* One KVM vCPU ioctl with a message naming it and the vCPU on failure. */
#define VCPU_IOCTL(v, req, arg)                                                \
	do {                                                                   \
		if (ioctl((v)->fd, req, arg) < 0)                              \
			return ferr_sys(errno, "%s on vCPU %u failed", #req,   \
					(v)->index);                           \
	} while (0)

static int capture_msrs(struct vcpu *v, struct vcpu_state *s)
{
	struct vm *vm = v->vm;
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[CPUSTATE_MAX_MSRS];
	} m;
	int n;

	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = vm->nmsrs;
	for (unsigned i = 0; i < vm->nmsrs; i++)
		m.e[i].index = vm->msr_index[i];
	n = ioctl(v->fd, KVM_GET_MSRS, &m);
	if (n < 0)
		return ferr_sys(errno, "KVM_GET_MSRS on vCPU %u failed", v->index);
	if ((unsigned)n != vm->nmsrs)
		return ferr(EIO, "vCPU %u: KVM could not read MSR %#x", v->index,
			    vm->msr_index[n]);
	s->nmsrs = vm->nmsrs;
	memcpy(s->msrs, m.e, vm->nmsrs * sizeof(m.e[0]));
	return 0;
}

static int capture_tsc(struct vcpu *v, struct vcpu_state *s)
{
	struct vm *vm = v->vm;
	uint64_t ofs = 0;
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET,
		.addr = (uintptr_t)&ofs,
	};
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} m = { .hdr.nmsrs = 1, .e.index = MSR_IA32_TSC };

	s->tsc_khz = vm->tsc_khz;
	if (vm->has_tsc_offset) {
		/* Guest TSC = host TSC + offset, exactly, on an unscaled TSC. */
		VCPU_IOCTL(v, KVM_GET_DEVICE_ATTR, &attr);
		s->tsc = vm->pause_host_tsc + ofs;
		return 0;
	}
	if (ioctl(v->fd, KVM_GET_MSRS, &m) != 1)
		return ferr(EIO, "vCPU %u: cannot read the TSC", v->index);
	s->tsc = m.e.data;
	return 0;
}

static int capture_vcpu(struct vcpu *v, void *arg)
{
	struct vm_state *st = arg;
	struct vcpu_state *s = &st->vcpus[v->index];
	struct vm *vm = v->vm;
	struct {
		struct kvm_cpuid2 hdr;
		struct kvm_cpuid_entry2 e[CPUSTATE_MAX_CPUID];
	} cpuid;
	int rc;

	memset(s, 0, sizeof(*s));
	s->index = v->index;
	/* MP state first: reading it lets KVM process pending INIT/SIPI
	 * events, which can change the registers read below. */
	VCPU_IOCTL(v, KVM_GET_MP_STATE, &s->mp_state);
	VCPU_IOCTL(v, KVM_GET_REGS, &s->regs);
	VCPU_IOCTL(v, KVM_GET_SREGS, &s->sregs);
	if (vm->xsave_size > sizeof(struct kvm_xsave)) {
		VCPU_IOCTL(v, KVM_GET_XSAVE2, s->xsave);
		s->xsave_size = vm->xsave_size;
	} else if (vm->xsave_size) {
		VCPU_IOCTL(v, KVM_GET_XSAVE, s->xsave);
		s->xsave_size = vm->xsave_size;
	} else {
		VCPU_IOCTL(v, KVM_GET_FPU, &s->fpu);
	}
	VCPU_IOCTL(v, KVM_GET_XCRS, &s->xcrs);
	VCPU_IOCTL(v, KVM_GET_DEBUGREGS, &s->debugregs);
	VCPU_IOCTL(v, KVM_GET_LAPIC, &s->lapic);
	rc = capture_msrs(v, s);
	if (rc)
		return rc;
	rc = capture_tsc(v, s);
	if (rc)
		return rc;
	memset(&cpuid, 0, sizeof(cpuid));
	cpuid.hdr.nent = CPUSTATE_MAX_CPUID;
	VCPU_IOCTL(v, KVM_GET_CPUID2, &cpuid);
	s->ncpuid = cpuid.hdr.nent;
	memcpy(s->cpuid, cpuid.e, s->ncpuid * sizeof(cpuid.e[0]));
	/* Events last: the reads above may still change what is pending. */
	VCPU_IOCTL(v, KVM_GET_VCPU_EVENTS, &s->events);
	return 0;
}

int vm_capture(struct vm *vm, struct vm_state *st)
{
	int rc;

	if (st->ncpus != vm->ncpus || !st->vcpus)
		return ferr(EINVAL, "state holds %u vCPUs, the VM has %u", st->ncpus, vm->ncpus);
	if (vm->xsave_size > CPUSTATE_XSAVE_MAX)
		return ferr(E2BIG, "XSAVE state of %u bytes exceeds %u", vm->xsave_size,
			    CPUSTATE_XSAVE_MAX);
	if (vm->nmsrs > CPUSTATE_MAX_MSRS)
		return ferr(E2BIG, "%u MSRs exceed %u", vm->nmsrs, CPUSTATE_MAX_MSRS);
	if (vm_run_state(vm) == VM_RUNNING)
		return ferr(EBUSY, "the VM must be paused to capture its state");
	st->tsc_khz = vm->tsc_khz;
	st->mem_size = vm->mem.size;
	st->pause_realtime_ns = vm->pause_realtime_ns;
	st->clock = vm->pause_clock;
	for (unsigned i = 0; i < VMSTATE_NR_IRQCHIPS; i++) {
		memset(&st->irqchip[i], 0, sizeof(st->irqchip[i]));
		st->irqchip[i].chip_id = i;
		if (ioctl(vm->fd, KVM_GET_IRQCHIP, &st->irqchip[i]) < 0)
			return ferr_sys(errno, "KVM_GET_IRQCHIP %u failed", i);
	}
	rc = vm_exec_all(vm, capture_vcpu, st);
	return rc;
}

int vm_state_check(const struct vm *vm, const struct vm_state *st)
{
	if (st->ncpus != vm->ncpus)
		return ferr(EINVAL, "the state has %u vCPUs, the VM %u", st->ncpus, vm->ncpus);
	if (st->mem_size != vm->mem.size)
		return ferr(EINVAL, "the state is for %llu bytes of RAM, the VM has %llu",
			    (unsigned long long)st->mem_size,
			    (unsigned long long)vm->mem.size);
	for (unsigned i = 0; i < st->ncpus; i++) {
		const struct vcpu_state *s = &st->vcpus[i];

		if (s->index != i)
			return ferr(EINVAL, "vCPU state %u is labelled %u", i, s->index);
		if (s->nmsrs > CPUSTATE_MAX_MSRS || s->ncpuid > CPUSTATE_MAX_CPUID ||
		    s->ncpuid == 0)
			return ferr(EINVAL, "vCPU %u state has %u MSRs and %u CPUID leaves",
				    i, s->nmsrs, s->ncpuid);
		if (s->xsave_size != vm->xsave_size)
			return ferr(EINVAL, "vCPU %u state has %u bytes of XSAVE, this host uses %u",
				    i, s->xsave_size, vm->xsave_size);
		if (s->tsc_khz != vm->tsc_khz)
			return ferr(EINVAL, "vCPU %u ran with a %u kHz TSC, this host's is %u kHz "
				    "and TSC scaling is not supported",
				    i, s->tsc_khz, vm->tsc_khz);
	}
	for (unsigned i = 0; i < VMSTATE_NR_IRQCHIPS; i++)
		if (st->irqchip[i].chip_id != i)
			return ferr(EINVAL, "irqchip state %u is labelled %u", i,
				    st->irqchip[i].chip_id);
	return 0;
}

static int restore_msrs(struct vcpu *v, const struct vcpu_state *s)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[CPUSTATE_MAX_MSRS];
	} m;
	int n;

	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = s->nmsrs;
	memcpy(m.e, s->msrs, s->nmsrs * sizeof(m.e[0]));
	n = ioctl(v->fd, KVM_SET_MSRS, &m);
	if (n < 0)
		return ferr_sys(errno, "KVM_SET_MSRS on vCPU %u failed", v->index);
	if ((unsigned)n != s->nmsrs)
		return ferr(EINVAL, "vCPU %u: KVM refused MSR %#x = %#llx", v->index,
			    s->msrs[n].index, (unsigned long long)s->msrs[n].data);
	return 0;
}

struct restore_ctx {
	const struct vm_state *st;
	/* Where KVM kept its own TSC offset, the pause instant it implies. */
	bool offset_ignored[FERRY_MAX_VCPUS];
	uint64_t implied_pause_tsc[FERRY_MAX_VCPUS];
};

static int restore_tsc(struct vcpu *v, const struct vcpu_state *s,
		       struct restore_ctx *ctx)
{
	struct vm *vm = v->vm;
	uint64_t want = s->tsc - vm->pause_host_tsc, ofs = want;
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET,
		.addr = (uintptr_t)&ofs,
	};
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} m = { .hdr.nmsrs = 1, .e = { .index = MSR_IA32_TSC } };

	if (vm->has_tsc_offset) {
		VCPU_IOCTL(v, KVM_SET_DEVICE_ATTR, &attr);
		/*
		 * kvm_pvm accepts the offset and keeps 0: its guests read the
		 * host TSC natively.  Read back what KVM really holds; the
		 * guest's time then continues, and the pause instant is the
		 * one at which this offset gives the captured TSC.
		 */
		VCPU_IOCTL(v, KVM_GET_DEVICE_ATTR, &attr);
		if (ofs != want) {
			ctx->offset_ignored[v->index] = true;
			ctx->implied_pause_tsc[v->index] = s->tsc - ofs;
		}
		return 0;
	}
	/* Without the offset attribute, aim the TSC at "now" directly. */
	m.e.data = s->tsc + (host_rdtsc() - vm->pause_host_tsc);
	if (ioctl(v->fd, KVM_SET_MSRS, &m) != 1)
		return ferr(EIO, "vCPU %u: cannot set the TSC", v->index);
	return 0;
}

/*
 * The order matters, and KVM enforces little of it:
 *  - CPUID first: KVM checks later state (XCR0, CR4 bits, MSRs) against it;
 *  - SREGS before the LAPIC: SREGS carries the APIC base the LAPIC needs;
 *  - the LAPIC before the MSRs: KVM drops the TSC-deadline MSR unless the
 *    LAPIC timer is already in TSC-deadline mode;
 *  - the TSC before the MSRs, so the deadline is read against the right TSC;
 *  - vCPU events last: setting REGS and SREGS discards pending exceptions,
 *    and events puts them back.
 */
static int restore_vcpu(struct vcpu *v, void *arg)
{
	struct restore_ctx *ctx = arg;
	const struct vcpu_state *s = &ctx->st->vcpus[v->index];
	struct vcpu_state *w;
	struct {
		struct kvm_cpuid2 hdr;
		struct kvm_cpuid_entry2 e[CPUSTATE_MAX_CPUID];
	} cpuid;
	int rc;

	/* Some SET ioctls take non-const pointers; work on a private copy. */
	w = malloc(sizeof(*w));
	if (!w)
		return -ENOMEM;
	memcpy(w, s, sizeof(*w));
	memset(&cpuid, 0, sizeof(cpuid));
	cpuid.hdr.nent = s->ncpuid;
	memcpy(cpuid.e, s->cpuid, s->ncpuid * sizeof(cpuid.e[0]));

#define SET(req, ptr)                                                          \
	do {                                                                   \
		if (ioctl(v->fd, req, ptr) < 0) {                              \
			rc = ferr_sys(errno, "%s on vCPU %u failed", #req,     \
				      v->index);                               \
			goto out;                                              \
		}                                                              \
	} while (0)

	SET(KVM_SET_CPUID2, &cpuid);
	SET(KVM_SET_MP_STATE, &w->mp_state);
	SET(KVM_SET_REGS, &w->regs);
	SET(KVM_SET_SREGS, &w->sregs);
	if (w->xsave_size)
		SET(KVM_SET_XSAVE, w->xsave);
	else
		SET(KVM_SET_FPU, &w->fpu);
	SET(KVM_SET_XCRS, &w->xcrs);
	SET(KVM_SET_DEBUGREGS, &w->debugregs);
	SET(KVM_SET_LAPIC, &w->lapic);
	rc = restore_tsc(v, w, ctx);
	if (!rc)
		rc = restore_msrs(v, w);
	if (rc)
		goto out;
	SET(KVM_SET_VCPU_EVENTS, &w->events);
#undef SET
	rc = 0;
out:
	free(w);
	return rc;
}

int vm_restore(struct vm *vm, const struct vm_state *st, bool clock_continues)
{
	struct kvm_clock_data clock;
	struct restore_ctx *ctx;
	uint64_t now_rt, elapsed_ns = 0;
	int rc;

	rc = vm_state_check(vm, st);
	if (rc)
		return rc;
	if (vm_run_state(vm) == VM_RUNNING)
		return ferr(EBUSY, "the VM must be paused to restore state into it");

	/*
	 * Define this VM's pause instant so that its guest TSC reads exactly
	 * st->vcpus[i].tsc then; with clock_continues that instant lies
	 * `elapsed` in the past, so the guest sees the time that went by.
	 */
	now_rt = realtime_ns();
	if (clock_continues && now_rt > st->pause_realtime_ns)
		elapsed_ns = now_rt - st->pause_realtime_ns;
	vm->pause_realtime_ns = st->pause_realtime_ns;
	vm->pause_host_tsc = host_rdtsc() - elapsed_ns / 1000 * vm->tsc_khz / 1000;
	vm->pause_clock = st->clock;

	for (unsigned i = 0; i < VMSTATE_NR_IRQCHIPS; i++) {
		struct kvm_irqchip chip = st->irqchip[i];

		if (ioctl(vm->fd, KVM_SET_IRQCHIP, &chip) < 0)
			return ferr_sys(errno, "KVM_SET_IRQCHIP %u failed", i);
	}
	clock = st->clock;
	clock.flags = 0;
	if (clock_continues && (st->clock.flags & KVM_CLOCK_REALTIME))
		clock.flags = KVM_CLOCK_REALTIME;
	else if (clock_continues)
		clock.clock += elapsed_ns;
	memset(clock.pad, 0, sizeof(clock.pad));
	if (ioctl(vm->fd, KVM_SET_CLOCK, &clock) < 0)
		return ferr_sys(errno, "KVM_SET_CLOCK failed");

	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->st = st;
	rc = vm_exec_all(vm, restore_vcpu, ctx);
	if (!rc && ctx->offset_ignored[0])
		vm->pause_host_tsc = ctx->implied_pause_tsc[0];
	free(ctx);
	return rc;
}
