#include "helpers.h"

#include <stddef.h>
#include <string.h>
#include <time.h>

void tsleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

struct vm *tvm_create_cfg(const struct vm_config *cfg)
{
	struct vm *vm = NULL;
	int rc = vm_create(&vm, cfg);

	cr_assert(rc == 0, "vm_create: %s", ferr_msg(rc));
	vm->console_fd = 2;
	return vm;
}

struct vm *tvm_create(unsigned ncpus, uint64_t mem)
{
	struct vm_config cfg = { .mem_size = mem, .ncpus = ncpus };

	return tvm_create_cfg(&cfg);
}

void tvm_boot(struct vm *vm, const char *prog, const char *const *args)
{
	unsigned n = 0;
	int rc;

	while (args && args[n])
		n++;
	rc = boot_program(vm, prog, (char *const *)args, n);
	cr_assert(rc == 0, "booting %s: %s", prog, ferr_msg(rc));
}

void tvm_request_stop(struct vm *vm)
{
	uint64_t one = 1;

	cr_assert(gmem_write(&vm->mem, FERRY_BOOTINFO_GPA +
			     offsetof(struct ferry_bootinfo, stop_request),
			     &one, sizeof(one)) == 0);
}

int tvm_wait_end(struct vm *vm, unsigned timeout_ms, char *msg, size_t len)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000;

	while (vm_run_state(vm) != VM_ENDED) {
		cr_assert(now_ns() < deadline, "the VM did not end within %u ms", timeout_ms);
		tsleep_ms(5);
	}
	return vm_wait_end(vm, msg, len);
}

uint64_t tvm_progress(struct vm *vm, unsigned cpu, const char *key)
{
	struct vcpu_progress p[VCPU_PROGRESS_MAX];
	unsigned n = vm_progress_get(vm, cpu, p, VCPU_PROGRESS_MAX);

	for (unsigned i = 0; i < n; i++)
		if (strcmp(p[i].key, key) == 0)
			return p[i].value;
	return 0;
}
