/*
 * Control-API commands about the VM itself.  They run on the control
 * thread; pause/resume/query-cpus act through the vm_* lifecycle calls,
 * which serialise with any other controller (a migration, say).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../core/util.h"
#include "../guest/abi.h"
#include "cli.h"

static const char *const no_args[] = { NULL };

static json_t *cmd_status(struct ctl_call *c, void *opaque)
{
	struct vm *vm = opaque;
	enum vm_run_state st = vm_run_state(vm);
	uint64_t up = vm->started_ns ? (now_ns() - vm->started_ns) / 1000000 : 0;

	if (!ctl_args_only(c, no_args))
		return NULL;
	return json_pack("{s:s, s:s, s:I, s:i, s:I, s:I}",
			 "state", vm_run_state_name(st),
			 "guest", vm->guest_name,
			 "memory", (json_int_t)vm->mem.size,
			 "vcpus", (int)vm->ncpus,
			 "uptime_ms", (json_int_t)up,
			 "last_pause_latency_us", (json_int_t)(vm->last_pause_latency_ns / 1000));
}

static json_t *cmd_pause(struct ctl_call *c, void *opaque)
{
	struct vm *vm = opaque;
	uint64_t lat = 0;

	if (!ctl_args_only(c, no_args))
		return NULL;
	if (vm_run_state(vm) == VM_ENDED)
		return ctl_fail(c, "InvalidState", "the VM has ended");
	vm_pause(vm, &lat);
	return json_pack("{s:f}", "latency_us", (double)lat / 1000.0);
}

static json_t *cmd_resume(struct ctl_call *c, void *opaque)
{
	struct vm *vm = opaque;
	int rc;

	if (!ctl_args_only(c, no_args))
		return NULL;
	rc = vm_resume(vm);
	if (rc)
		return ctl_fail(c, "InvalidState", "%s", ferr_msg(rc));
	return json_object();
}

static json_t *cmd_quit(struct ctl_call *c, void *opaque)
{
	struct vm *vm = opaque;

	if (!ctl_args_only(c, no_args))
		return NULL;
	vm_end(vm, 0, "stopped by the control command 'quit'");
	return json_object();
}

static json_t *cmd_shutdown(struct ctl_call *c, void *opaque)
{
	struct vm *vm = opaque;
	uint64_t one = 1;

	if (!ctl_args_only(c, no_args))
		return NULL;
	if (gmem_write(&vm->mem, FERRY_BOOTINFO_GPA +
		       offsetof(struct ferry_bootinfo, stop_request), &one, sizeof(one)))
		return ctl_fail(c, "GenericError", "guest RAM has no boot info page");
	return json_object();
}

static int read_rip(struct vcpu *v, void *arg)
{
	struct kvm_regs regs;

	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0)
		return -errno;
	((uint64_t *)arg)[v->index] = regs.rip;
	return 0;
}

static json_t *cmd_query_cpus(struct ctl_call *c, void *opaque)
{
	struct vm *vm = opaque;
	uint64_t rips[FERRY_MAX_VCPUS];
	bool have_rips;
	json_t *list;

	if (!ctl_args_only(c, no_args))
		return NULL;
	have_rips = vm_run_state(vm) != VM_RUNNING && vm_exec_all(vm, read_rip, rips) == 0;
	list = json_array();
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = &vm->vcpus[i];
		const char *state;
		json_t *o;

		pthread_mutex_lock(&vm->lock);
		state = v->done ? "finished" : v->parked ? "parked" : "running";
		pthread_mutex_unlock(&vm->lock);
		o = json_pack("{s:i, s:i, s:s, s:I}", "index", (int)i,
			      "thread_id", (int)atomic_load(&v->tid), "state", state,
			      "exits", (json_int_t)atomic_load(&v->exits));
		if (have_rips)
			json_object_set_new(o, "rip", json_integer((json_int_t)rips[i]));
		json_array_append_new(list, o);
	}
	return list;
}

static json_t *cmd_query_guest(struct ctl_call *c, void *opaque)
{
	struct vm *vm = opaque;
	json_t *cpus = json_array();

	if (!ctl_args_only(c, no_args)) {
		json_decref(cpus);
		return NULL;
	}
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vcpu_progress p[VCPU_PROGRESS_MAX];
		unsigned n = vm_progress_get(vm, i, p, VCPU_PROGRESS_MAX);
		json_t *o = json_object();

		for (unsigned k = 0; k < n; k++)
			json_object_set_new(o, p[k].key, json_integer((json_int_t)p[k].value));
		json_array_append_new(cpus, o);
	}
	return json_pack("{s:s, s:o}", "program", vm->guest_name, "vcpus", cpus);
}

static const struct ctl_command vm_cmds[] = {
	{ "status", cmd_status, "state, guest, memory, vCPUs and uptime of the VM" },
	{ "pause", cmd_pause, "stops every vCPU; returns how long that took" },
	{ "resume", cmd_resume, "lets a paused VM run again" },
	{ "quit", cmd_quit, "ends the VM and ferry at once (exit status 0)" },
	{ "shutdown", cmd_shutdown, "asks the guest program to finish, verifying its memory" },
	{ "query-cpus", cmd_query_cpus, "per vCPU: thread, state, exits (and RIP when paused)" },
	{ "query-guest", cmd_query_guest, "the progress figures the guest program reported" },
};

int vm_commands_register(struct ctl_server *s, struct vm *vm)
{
	return ctl_register(s, vm_cmds, ARRAY_SIZE(vm_cmds), vm);
}
