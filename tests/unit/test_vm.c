/* The partition lifecycle on a real KVM VM. */
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helpers.h"

#define MB (1ull << 20)

Test(vm, rejects_bad_shapes)
{
	struct vm_config bad[] = {
		{ .mem_size = 64 * MB, .ncpus = 0 },
		{ .mem_size = 64 * MB, .ncpus = FERRY_MAX_VCPUS + 1 },
		{ .mem_size = 16 * MB, .ncpus = 1 },
		{ .mem_size = 65 * MB, .ncpus = 1 },
		{ .mem_size = FERRY_MAX_MEM + 2 * MB, .ncpus = 1 },
	};

	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		struct vm *vm = NULL;

		cr_assert_eq(vm_create(&vm, &bad[i]), -EINVAL, "shape %u accepted", i);
		cr_assert_null(vm);
	}
}

Test(vm, sixteen_gib_eight_vcpus_allocates_lazily)
{
	struct vm *vm = tvm_create(8, 16ull << 30);
	const char *const args[] = { "wss=64M", "passes=2", NULL };
	char msg[256];

	tvm_boot(vm, "dirty", args);
	vm_start(vm);
	cr_assert_eq(tvm_wait_end(vm, 60000, msg, sizeof(msg)), 0, "%s", msg);
	vm_destroy(vm);
}

static int record_tid(struct vcpu *v, void *arg)
{
	pid_t *tids = arg;

	tids[v->index] = (pid_t)syscall(SYS_gettid);
	return 0;
}

Test(vm, vcpu_work_runs_on_the_vcpu_thread)
{
	struct vm *vm = tvm_create(4, 64 * MB);
	pid_t tids[4];

	cr_assert_eq(vm_exec_all(vm, record_tid, tids), 0);
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(tids[i], atomic_load(&vm->vcpus[i].tid));
		cr_assert_neq(tids[i], (pid_t)syscall(SYS_gettid));
		for (unsigned j = 0; j < i; j++)
			cr_assert_neq(tids[i], tids[j]);
	}
	vm_destroy(vm);
}

Test(vm, pause_stops_every_vcpu_and_resume_continues)
{
	struct vm *vm = tvm_create(2, 64 * MB);
	const char *const args[] = { "wss=8M", "report_ms=10", NULL };
	uint64_t lat, before[2], after[2];
	pid_t tids[2];
	char msg[256];

	tvm_boot(vm, "dirty", args);
	vm_start(vm);
	tsleep_ms(100);
	cr_assert_eq(vm_exec_all(vm, record_tid, tids), -EBUSY, "work ran on a running VM");
	for (int round = 0; round < 5; round++) {
		cr_assert_eq(vm_pause(vm, &lat), 0);
		cr_assert_eq(vm_run_state(vm), VM_PAUSED);
		cr_assert_eq(vm->nparked, 2u);
		for (unsigned i = 0; i < 2; i++)
			before[i] = atomic_load(&vm->vcpus[i].exits);
		tsleep_ms(30);
		for (unsigned i = 0; i < 2; i++) {
			after[i] = atomic_load(&vm->vcpus[i].exits);
			cr_assert_eq(before[i], after[i], "vCPU %u ran while paused", i);
		}
		cr_assert_eq(vm_resume(vm), 0);
		tsleep_ms(30);
	}
	for (unsigned i = 0; i < 2; i++)
		cr_assert_gt(atomic_load(&vm->vcpus[i].exits), after[i], "vCPU %u did not resume", i);
	tvm_request_stop(vm);
	cr_assert_eq(tvm_wait_end(vm, 10000, msg, sizeof(msg)), 0, "%s", msg);
	vm_destroy(vm);
}

Test(vm, ends_when_every_vcpu_is_done)
{
	struct vm *vm = tvm_create(4, 64 * MB);
	char msg[256];

	tvm_boot(vm, "hello", NULL);
	vm_start(vm);
	cr_assert_eq(tvm_wait_end(vm, 5000, msg, sizeof(msg)), 0);
	cr_assert(strstr(msg, "finished on every vCPU"), "%s", msg);
	cr_assert_eq(vm_resume(vm), -ESRCH);
	vm_destroy(vm);
}

/* Drives the ucall port directly, as a hostile guest would. */
static void hostile_call(uint32_t gpa, unsigned size, const char *needle)
{
	struct vm *vm = tvm_create(1, 64 * MB);
	const struct io_range *r = iotable_find(&vm->pio, FERRY_PORT_UCALL, size);
	uint8_t data[8];
	char msg[256];

	cr_assert_not_null(r);
	memcpy(data, &gpa, sizeof(gpa));
	r->fn(&vm->vcpus[0], FERRY_PORT_UCALL, true, data, size, r->opaque);
	cr_assert_eq(vm_wait_end(vm, msg, sizeof(msg)), FERRY_STATUS_EXCEPTION);
	cr_assert(strstr(msg, needle), "'%s' lacks '%s'", msg, needle);
	vm_destroy(vm);
}

static uint32_t plant_call(struct vm *vm, struct ferry_ucall uc)
{
	const uint32_t gpa = 0x2000000;

	cr_assert_eq(gmem_write(&vm->mem, gpa, &uc, sizeof(uc)), 0);
	return gpa;
}

static void hostile_planted(struct ferry_ucall uc, const char *needle)
{
	struct vm *vm = tvm_create(1, 64 * MB);
	const struct io_range *r = iotable_find(&vm->pio, FERRY_PORT_UCALL, 4);
	uint32_t gpa = plant_call(vm, uc);
	char msg[256];

	r->fn(&vm->vcpus[0], FERRY_PORT_UCALL, true, (uint8_t *)&gpa, 4, r->opaque);
	cr_assert_eq(vm_wait_end(vm, msg, sizeof(msg)), FERRY_STATUS_EXCEPTION);
	cr_assert(strstr(msg, needle), "'%s' lacks '%s'", msg, needle);
	vm_destroy(vm);
}

Test(vm, hostile_guest_calls_end_only_the_guest)
{
	hostile_call(64 * MB - 8, 4, "call block outside guest RAM");
	hostile_call(0xffffffffu, 4, "call block outside guest RAM");
	hostile_call(0x1000, 2, "32-bit OUT");
	hostile_planted((struct ferry_ucall){ .nr = 999 }, "unknown call number 999");
	hostile_planted((struct ferry_ucall){ .nr = FERRY_UC_PRINT, .args = { 0x1000, 1u << 20 } },
			"print text");
	hostile_planted((struct ferry_ucall){ .nr = FERRY_UC_PRINT, .args = { UINT64_MAX - 4, 16 } },
			"print text");
	hostile_planted((struct ferry_ucall){ .nr = FERRY_UC_PROGRESS, .args = { 0x1000, 64 } },
			"progress key");
	hostile_planted((struct ferry_ucall){ .nr = FERRY_UC_ASSERT,
					      .args = { 0x1000, 10, 1, 64ull << 20, 10 } },
			"assertion text");
}
