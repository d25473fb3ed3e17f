/*
 * Complete VM state as plain data, apart from the live VM: per vCPU the
 * registers, FPU/XSAVE, XCRs, every saveable MSR, LAPIC, MP state, pending
 * events, debug registers, CPUID and TSC; per VM the kvmclock and the
 * in-kernel PIC/IOAPIC.  Guest RAM is not part of it (it lives in the memfd
 * and travels separately).
 *
 * Time.  The TSC and kvmclock are recorded as of the instant the VM paused
 * (vm->pause_*), so a capture of a paused VM does not depend on when it is
 * taken.  A restore can let guest time continue across the gap (live and
 * quick migration: the guest sees the real time that passed) or not.
 */
#ifndef FERRY_CPUSTATE_H
#define FERRY_CPUSTATE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "vm.h"

#define CPUSTATE_MAX_MSRS  256
#define CPUSTATE_MAX_CPUID 256
#define CPUSTATE_XSAVE_MAX 16384

struct vcpu_state {
	uint32_t index;
	uint32_t nmsrs;
	uint32_t ncpuid;
	uint32_t xsave_size;          /* 0: the legacy FPU block is used */
	uint32_t tsc_khz;
	uint32_t pad;
	uint64_t tsc;                 /* guest TSC at the pause instant */
	struct kvm_mp_state mp_state;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_fpu fpu;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs debugregs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_msr_entry msrs[CPUSTATE_MAX_MSRS];
	struct kvm_cpuid_entry2 cpuid[CPUSTATE_MAX_CPUID];
	uint8_t xsave[CPUSTATE_XSAVE_MAX];
};

#define VMSTATE_NR_IRQCHIPS 3         /* PIC master, PIC slave, IOAPIC */

struct vm_state {
	uint32_t ncpus;
	uint32_t tsc_khz;
	uint64_t mem_size;
	uint64_t pause_realtime_ns;   /* CLOCK_REALTIME at the pause instant */
	struct kvm_clock_data clock;
	struct kvm_irqchip irqchip[VMSTATE_NR_IRQCHIPS];
	struct vcpu_state *vcpus;     /* ncpus entries */
};

int vm_state_alloc(struct vm_state *st, unsigned ncpus);
void vm_state_free(struct vm_state *st);

/* Captures everything but RAM.  The VM must be paused (or created/ended). */
int vm_capture(struct vm *vm, struct vm_state *st);

/*
 * Loads a captured state into a VM of the same shape that has not run since
 * it was created or last paused.  With clock_continues, guest TSC and
 * kvmclock advance by the real time elapsed since the capture's pause.
 */
int vm_restore(struct vm *vm, const struct vm_state *st, bool clock_continues);

/* Checks a state's counts and sizes against this VM; -EINVAL with a message. */
int vm_state_check(const struct vm *vm, const struct vm_state *st);

#endif
