/*
 * Complete state capture and restore: capture a running guest, restore it
 * into a fresh VM, capture again, and demand byte-identical state; then let
 * the restored guest run on and verify its own memory.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/cpustate.h"
#include "helpers.h"

#define MEM (64ull << 20)

/* Names the first field that differs, so a failure says where to look. */
static void assert_same_vcpu(const struct vcpu_state *a, const struct vcpu_state *b)
{
	static const struct { const char *name; size_t off, len; } fields[] = {
#define F(f) { #f, offsetof(struct vcpu_state, f), sizeof(((struct vcpu_state *)0)->f) }
		F(index), F(nmsrs), F(ncpuid), F(xsave_size), F(tsc_khz), F(tsc),
		F(mp_state), F(regs), F(sregs), F(fpu), F(xcrs), F(debugregs),
		F(lapic), F(events), F(msrs), F(cpuid), F(xsave),
#undef F
	};

	for (unsigned i = 0; i < ARRAY_SIZE(fields); i++)
		cr_assert(memcmp((const char *)a + fields[i].off, (const char *)b + fields[i].off,
				 fields[i].len) == 0,
			  "vCPU %u: field %s differs between the captures", a->index, fields[i].name);
	for (unsigned i = 0; i < a->nmsrs; i++)
		cr_assert_eq(a->msrs[i].data, b->msrs[i].data, "MSR %#x", a->msrs[i].index);
	cr_assert(memcmp(a, b, sizeof(*a)) == 0, "vCPU %u: padding differs", a->index);
}

static void assert_same_state(const struct vm_state *a, const struct vm_state *b)
{
	cr_assert_eq(a->ncpus, b->ncpus);
	cr_assert_eq(a->tsc_khz, b->tsc_khz);
	cr_assert_eq(a->mem_size, b->mem_size);
	cr_assert_eq(a->pause_realtime_ns, b->pause_realtime_ns);
	cr_assert(memcmp(&a->clock, &b->clock, sizeof(a->clock)) == 0, "kvmclock differs");
	cr_assert(memcmp(a->irqchip, b->irqchip, sizeof(a->irqchip)) == 0, "irqchip differs");
	for (unsigned i = 0; i < a->ncpus; i++)
		assert_same_vcpu(&a->vcpus[i], &b->vcpus[i]);
}

static void round_trip(unsigned ncpus, const char *pattern)
{
	char pat[32];
	const char *const args[] = { "wss=16M", pat, "report_ms=20", NULL };
	struct vm *src = tvm_create(ncpus, MEM), *dst;
	struct vm_state s1, s2;
	uint64_t pass_at_capture;
	char msg[256];
	int rc;

	snprintf(pat, sizeof(pat), "pattern=%s", pattern);
	tvm_boot(src, "dirty", args);
	vm_start(src);
	tsleep_ms(150);
	cr_assert_eq(vm_pause(src, NULL), 0);
	cr_assert_eq(vm_state_alloc(&s1, ncpus), 0);
	rc = vm_capture(src, &s1);
	cr_assert_eq(rc, 0, "capture: %s", ferr_msg(rc));
	pass_at_capture = tvm_progress(src, 0, "pass");

	dst = tvm_create(ncpus, MEM);
	memcpy(dst->mem.hva, src->mem.hva, MEM);
	rc = vm_restore(dst, &s1, false);
	cr_assert_eq(rc, 0, "restore: %s", ferr_msg(rc));
	cr_assert_eq(vm_state_alloc(&s2, ncpus), 0);
	rc = vm_capture(dst, &s2);
	cr_assert_eq(rc, 0, "second capture: %s", ferr_msg(rc));
	assert_same_state(&s1, &s2);

	/* The source is gone for good; the copy must carry on correctly. */
	vm_destroy(src);
	cr_assert_eq(vm_resume(dst), 0);
	tsleep_ms(150);
	cr_assert_geq(tvm_progress(dst, 0, "pass"), pass_at_capture);
	tvm_request_stop(dst);
	cr_assert_eq(tvm_wait_end(dst, 20000, msg, sizeof(msg)), 0, "%s", msg);
	vm_state_free(&s1);
	vm_state_free(&s2);
	vm_destroy(dst);
}

Test(cpustate, round_trip_one_vcpu) { round_trip(1, "increment"); }
Test(cpustate, round_trip_two_vcpus) { round_trip(2, "random"); }
Test(cpustate, round_trip_four_vcpus) { round_trip(4, "increment"); }

Test(cpustate, capture_needs_a_paused_vm)
{
	struct vm *vm = tvm_create(1, MEM);
	const char *const args[] = { "wss=4M", NULL };
	struct vm_state st;

	tvm_boot(vm, "dirty", args);
	vm_start(vm);
	cr_assert_eq(vm_state_alloc(&st, 1), 0);
	cr_assert_eq(vm_capture(vm, &st), -EBUSY);
	vm_state_free(&st);
	vm_destroy(vm);
}

Test(cpustate, restore_rejects_a_state_of_another_shape)
{
	struct vm *vm = tvm_create(2, MEM), *other;
	struct vm_state st;

	tvm_boot(vm, "hello", NULL);
	cr_assert_eq(vm_state_alloc(&st, 2), 0);
	cr_assert_eq(vm_capture(vm, &st), 0);
	other = tvm_create(1, MEM);
	cr_assert_eq(vm_restore(other, &st, false), -EINVAL);
	vm_destroy(other);
	other = tvm_create(2, 2 * MEM);
	cr_assert_eq(vm_restore(other, &st, false), -EINVAL);
	cr_assert(strstr(ferr_msg(-1), "bytes of RAM"), "%s", ferr_msg(-1));
	st.vcpus[1].tsc_khz += 1000;
	st.mem_size = 2 * MEM;
	cr_assert_eq(vm_restore(other, &st, false), -EINVAL);
	cr_assert(strstr(ferr_msg(-1), "TSC"), "%s", ferr_msg(-1));
	st.vcpus[1].tsc_khz -= 1000;
	st.vcpus[0].nmsrs = CPUSTATE_MAX_MSRS + 1;
	cr_assert_eq(vm_restore(other, &st, false), -EINVAL);
	vm_destroy(other);
	vm_state_free(&st);
	vm_destroy(vm);
}
