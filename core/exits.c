/*
 * What a vCPU does when KVM_RUN returns: dispatch port I/O and MMIO to the
 * registered handlers, and serve ferry's own ports: the guest->host call
 * interface (print, exit, assert, progress, halt) and the exception report
 * from the ring-0 stubs.
 *
 * Everything read from guest memory here is hostile: a ucall block is copied
 * out of the guest before it is looked at, every address and length is
 * checked against guest RAM, and a guest that breaks the protocol ends its
 * own VM with a message saying how.  All functions run on the vCPU thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../guest/abi.h"
#include "util.h"
#include "vm.h"

#define HALT_MAX_US 1000000u
#define UNHANDLED_WARN_MAX 8

static const char *const exception_names[32] = {
	[0] = "#DE divide error", [1] = "#DB debug", [2] = "NMI",
	[3] = "#BP breakpoint", [4] = "#OF overflow", [5] = "#BR bound range",
	[6] = "#UD invalid opcode", [7] = "#NM device not available",
	[8] = "#DF double fault", [10] = "#TS invalid TSS",
	[11] = "#NP segment not present", [12] = "#SS stack fault",
	[13] = "#GP general protection", [14] = "#PF page fault",
	[16] = "#MF x87 error", [17] = "#AC alignment check",
	[18] = "#MC machine check", [19] = "#XM SIMD error",
	[20] = "#VE virtualization", [21] = "#CP control protection",
};

static void guest_violation(struct vcpu *v, const char *what)
{
	vm_end(v->vm, FERRY_STATUS_EXCEPTION, "vCPU %u broke the guest call protocol: %s",
	       v->index, what);
}

/*
 * Copies a guest string of `len` bytes into out (NUL-terminated), replacing
 * control characters so that it is safe in a log line.  False when the
 * range is outside RAM or longer than `max`.
 */
static bool read_guest_text(struct vcpu *v, uint64_t gpa, uint64_t len,
			    char *out, size_t max)
{
	if (len >= max || gmem_read(&v->vm->mem, gpa, out, len) < 0)
		return false;
	out[len] = 0;
	for (uint64_t i = 0; i < len; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
			out[i] = '?';
	return true;
}

/* UC_HALT: sleep like an idle CPU, but wake at once for a pause or end. */
static void ucall_halt(struct vcpu *v, uint64_t us)
{
	struct vm *vm = v->vm;
	uint64_t deadline = now_ns() + MIN(us, HALT_MAX_US) * 1000;
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / 1000000000ull),
		.tv_nsec = (long)(deadline % 1000000000ull),
	};

	pthread_mutex_lock(&vm->lock);
	while (!atomic_load(&vm->pause_req) && !vm->ended &&
	       !atomic_load(&vm->stopping) && now_ns() < deadline)
		if (pthread_cond_timedwait(&vm->vcpu_cond, &vm->lock, &ts) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&vm->lock);
}

static void ucall_done(struct vcpu *v, uint64_t status)
{
	struct vm *vm = v->vm;
	int first_failure = 0;
	bool all_done = true;

	pthread_mutex_lock(&vm->lock);
	v->done = true;
	v->done_status = status > 255 ? 255 : (int)status;
	for (unsigned i = 0; i < vm->ncpus; i++) {
		if (!vm->vcpus[i].done)
			all_done = false;
		else if (!first_failure)
			first_failure = vm->vcpus[i].done_status;
	}
	pthread_mutex_unlock(&vm->lock);
	if (all_done)
		vm_end(vm, first_failure, "the guest program finished on every vCPU");
}

static void ucall_port(struct vcpu *v, uint64_t port, bool is_write,
		       uint8_t *data, unsigned size, void *opaque)
{
	struct vm *vm = v->vm;
	struct ferry_ucall uc;
	char text[FERRY_UCALL_MAX_TEXT + 1], file[256];
	uint32_t gpa;

	(void)port;
	(void)opaque;
	if (!is_write || size != 4) {
		if (!is_write)
			memset(data, 0xff, size);
		guest_violation(v, "the call port takes a 32-bit OUT");
		return;
	}
	memcpy(&gpa, data, sizeof(gpa));
	if (gmem_read(&vm->mem, gpa, &uc, sizeof(uc)) < 0) {
		guest_violation(v, "call block outside guest RAM");
		return;
	}

	switch (uc.nr) {
	case FERRY_UC_PRINT: {
		void *p = gmem_ptr(&vm->mem, uc.args[0], uc.args[1]);

		if (uc.args[1] > FERRY_UCALL_MAX_TEXT || !p) {
			guest_violation(v, "print text outside RAM or too long");
			return;
		}
		vm_console_write(vm, p, uc.args[1]);
		break;
	}
	case FERRY_UC_EXIT:
		vm_end(vm, uc.args[0] > 255 ? 255 : (int)uc.args[0],
		       "the guest exited with status %" PRIu64 " on vCPU %u",
		       uc.args[0], v->index);
		break;
	case FERRY_UC_DONE:
		ucall_done(v, uc.args[0]);
		break;
	case FERRY_UC_ASSERT:
		if (!read_guest_text(v, uc.args[0], uc.args[1], file, sizeof(file)) ||
		    !read_guest_text(v, uc.args[3], uc.args[4], text, sizeof(text))) {
			guest_violation(v, "assertion text outside RAM or too long");
			return;
		}
		vm_end(vm, FERRY_STATUS_ASSERT,
		       "guest assertion failed on vCPU %u at %s:%" PRIu64 ": %s",
		       v->index, file, uc.args[2], text);
		break;
	case FERRY_UC_PROGRESS:
		if (!read_guest_text(v, uc.args[0], uc.args[1], text,
				     FERRY_PROGRESS_KEY_MAX) || uc.args[1] == 0) {
			guest_violation(v, "progress key outside RAM or too long");
			return;
		}
		for (const char *c = text; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
			      *c == '_')) {
				guest_violation(v, "progress key is not [a-z0-9_]");
				return;
			}
		vm_progress_set(v, text, uc.args[2]);
		break;
	case FERRY_UC_HALT:
		ucall_halt(v, uc.args[0]);
		break;
	default:
		snprintf(text, sizeof(text), "unknown call number %u", uc.nr);
		guest_violation(v, text);
		return;
	}
}

static void exception_port(struct vcpu *v, uint64_t port, bool is_write,
			   uint8_t *data, unsigned size, void *opaque)
{
	struct ferry_exc_frame f;
	const char *name = NULL;
	char cr2[48] = "";
	uint32_t gpa;

	(void)port;
	(void)opaque;
	if (!is_write || size != 4) {
		guest_violation(v, "the exception port takes a 32-bit OUT");
		return;
	}
	memcpy(&gpa, data, sizeof(gpa));
	if (gmem_read(&v->vm->mem, gpa, &f, sizeof(f)) < 0) {
		guest_violation(v, "exception frame outside guest RAM");
		return;
	}
	if (f.vector < 32)
		name = exception_names[f.vector];
	if (f.vector == 14)
		snprintf(cr2, sizeof(cr2), ", CR2 %#" PRIx64, f.cr2);
	vm_end(v->vm, FERRY_STATUS_EXCEPTION,
	       "guest exception on vCPU %u: %s (vector %" PRIu64 "), error code %#" PRIx64
	       ", RIP %#" PRIx64 ", RSP %#" PRIx64 "%s, RFLAGS %#" PRIx64 ", ring %" PRIu64,
	       v->index, name ? name : (f.vector < 32 ? "reserved" : "unexpected interrupt"),
	       f.vector, f.error_code, f.rip, f.rsp, cr2, f.rflags, f.cs & 3);
}

int vm_register_core_ports(struct vm *vm)
{
	int rc;

	rc = iotable_register(&vm->pio, FERRY_PORT_UCALL, 4, "ucall", ucall_port, NULL);
	if (!rc)
		rc = iotable_register(&vm->pio, FERRY_PORT_EXCEPTION, 4, "exception",
				      exception_port, NULL);
	return rc;
}

static void warn_unhandled(struct vcpu *v, const char *kind, uint64_t addr,
			   bool is_write, unsigned size)
{
	if (atomic_fetch_add(&v->vm->unhandled_io_warnings, 1) < UNHANDLED_WARN_MAX)
		flog("vCPU %u: %s %s of %u bytes at %#" PRIx64 " has no handler (%s)",
		     v->index, kind, is_write ? "write" : "read", size, addr,
		     is_write ? "ignored" : "reads as all ones");
}

static void dispatch(struct vcpu *v, const struct iotable *t, const char *kind,
		     uint64_t addr, bool is_write, uint8_t *data, unsigned size)
{
	const struct io_range *r = iotable_find(t, addr, size);

	if (r) {
		r->fn(v, addr, is_write, data, size, r->opaque);
		return;
	}
	if (!is_write)
		memset(data, 0xff, size);
	warn_unhandled(v, kind, addr, is_write, size);
}

static void handle_pio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	size_t size = run->io.size, count = run->io.count;
	uint64_t off = run->io.data_offset;

	if (size == 0 || size > 8 || count == 0 || off > v->vm->run_size ||
	    size * count > v->vm->run_size - off) {
		vm_end(v->vm, 1, "vCPU %u: KVM reported a malformed I/O exit", v->index);
		return;
	}
	for (size_t i = 0; i < count && !v->vm->ended; i++)
		dispatch(v, &v->vm->pio, "port", run->io.port,
			 run->io.direction == KVM_EXIT_IO_OUT,
			 (uint8_t *)run + off + i * size, (unsigned)size);
}

static void fatal_exit(struct vcpu *v, const char *what)
{
	struct kvm_regs regs;
	uint64_t rip = 0;

	if (ioctl(v->fd, KVM_GET_REGS, &regs) == 0)
		rip = regs.rip;
	vm_end(v->vm, FERRY_STATUS_EXCEPTION, "vCPU %u: %s at RIP %#" PRIx64,
	       v->index, what, rip);
}

void vcpu_handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	char what[96];

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_pio(v);
		break;
	case KVM_EXIT_MMIO:
		if (run->mmio.len == 0 || run->mmio.len > sizeof(run->mmio.data)) {
			vm_end(v->vm, 1, "vCPU %u: KVM reported a malformed MMIO exit", v->index);
			break;
		}
		dispatch(v, &v->vm->mmio, "MMIO", run->mmio.phys_addr,
			 run->mmio.is_write, run->mmio.data, run->mmio.len);
		break;
	case KVM_EXIT_INTR:
		break;
	case KVM_EXIT_DIRTY_RING_FULL:
		if (v->vm->dirty_ring_full)
			v->vm->dirty_ring_full(v, v->vm->dirty_ring_opaque);
		else
			vm_end(v->vm, 1, "vCPU %u: dirty ring full with no collector", v->index);
		break;
	case KVM_EXIT_SHUTDOWN:
		fatal_exit(v, "triple fault (the guest reset itself)");
		break;
	case KVM_EXIT_HLT:
		fatal_exit(v, "halted with interrupts it can never get");
		break;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(what, sizeof(what), "VM entry failed (reason %#llx)",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		fatal_exit(v, what);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		snprintf(what, sizeof(what), "KVM internal error (suberror %u)",
			 run->internal.suberror);
		fatal_exit(v, what);
		break;
	default:
		snprintf(what, sizeof(what), "unexpected KVM exit reason %u", run->exit_reason);
		fatal_exit(v, what);
		break;
	}
}
