/*
 * Encoders and decoders for the sections that describe a VM: the VM
 * description checked before any RAM moves, and the captured VM and vCPU
 * state.  Decoders treat their input as hostile: every count and length is
 * checked, each record may appear once, and every required record must be
 * present; failures are -EBADMSG with a message naming the field.
 *
 * The KVM state records (regs, sregs, LAPIC, ...) carry the x86-64 layout of
 * the structs in linux/kvm.h, which is little-endian; their lengths must
 * match this build's sizeof exactly.
 */
#ifndef FERRY_MIG_CODEC_H
#define FERRY_MIG_CODEC_H

#include <stdint.h>

#include "../core/cpustate.h"
#include "../core/dbuf.h"
#include "../core/vm.h"

#define MIG_VMDESC_VERSION 1u
#define MIG_STATE_VERSION 1u

#define MIG_FLAG_VERIFY   0x1u
#define MIG_FLAG_COMPRESS 0x2u

struct mig_vmdesc {
	uint8_t uuid[16];
	uint64_t mem_size;
	uint32_t page_size;
	uint32_t ncpus;
	char guest_name[32];
	char dirty_log[16];
	uint32_t tsc_khz;
	uint32_t xsave_size;
	uint32_t nmsrs;
	uint32_t msr_index[CPUSTATE_MAX_MSRS];
	uint32_t ncpuid;
	struct kvm_cpuid_entry2 cpuid[CPUSTATE_MAX_CPUID];
	uint32_t nchannels;
	uint32_t flags;
	uint8_t boot_id[16];      /* of the source host: same host, same clock */
};

/* Fills a description of a live VM (any thread). */
void mig_vmdesc_from_vm(struct vm *vm, struct mig_vmdesc *d);
void mig_vmdesc_encode(const struct mig_vmdesc *d, struct dbuf *out);
int mig_vmdesc_decode(const uint8_t *p, size_t len, struct mig_vmdesc *d);
/*
 * Can `vm` (created with the description's shape) take this VM?  Checks the
 * TSC frequency, XSAVE size, MSRs and CPU features.  -ENOTSUP with a message
 * naming the first mismatch.
 */
int mig_vmdesc_check(const struct mig_vmdesc *d, struct vm *vm);

void mig_vm_state_encode(const struct vm_state *st, struct dbuf *out);
int mig_vm_state_decode(const uint8_t *p, size_t len, struct vm_state *st);
void mig_vcpu_state_encode(const struct vcpu_state *s, struct dbuf *out);
int mig_vcpu_state_decode(const uint8_t *p, size_t len, struct vcpu_state *s);

/* This host's boot id (from /proc), or zeros if unknown. */
void mig_boot_id(uint8_t out[16]);

#endif
