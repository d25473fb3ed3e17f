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
#include "runner.h"

static const char *const no_args[] = { NULL };

struct vm *runner_vm(struct runner *r, struct ctl_call *c)
{
	struct vm *vm;

	pthread_mutex_lock(&r->lock);
	vm = r->vm;
	pthread_mutex_unlock(&r->lock);
	if (!vm && c)
		ctl_fail(c, "InvalidState", "there is no VM yet: waiting for an incoming migration");
	return vm;
}

bool runner_handing_over(struct runner *r)
{
	struct mig_stats st;
	struct mig_out *m;

	pthread_mutex_lock(&r->lock);
	m = r->mig;
	pthread_mutex_unlock(&r->lock);
	if (!m)
		return false;
	mig_out_query(m, &st);
	return st.state == MIG_STOP_COPY || st.state == MIG_COMPLETING ||
	       st.state == MIG_UNCONFIRMED || st.state == MIG_COMPLETED;
}

static json_t *cmd_status(struct ctl_call *c, void *opaque)
{
	struct runner *r = opaque;
	struct vm *vm = runner_vm(r, NULL);
	enum vm_run_state st;
	uint64_t up;

	if (!ctl_args_only(c, no_args))
		return NULL;
	if (!vm)
		return json_pack("{s:s}", "state", "incoming");
	st = vm_run_state(vm);
	up = vm->started_ns ? (now_ns() - vm->started_ns) / 1000000 : 0;
	return json_pack("{s:s, s:s, s:I, s:i, s:I, s:I, s:s}",
			 "state", vm_run_state_name(st),
			 "guest", vm->guest_name,
			 "memory", (json_int_t)vm->mem.size,
			 "vcpus", (int)vm->ncpus,
			 "uptime_ms", (json_int_t)up,
			 "last_pause_latency_us", (json_int_t)(vm->last_pause_latency_ns / 1000),
			 "dirty_log", vm->dirty_log);
}

static json_t *cmd_pause(struct ctl_call *c, void *opaque)
{
	struct runner *r = opaque;
	struct vm *vm;
	uint64_t lat = 0;

	if (!ctl_args_only(c, no_args) || !(vm = runner_vm(r, c)))
		return NULL;
	if (runner_handing_over(r))
		return ctl_fail(c, "InvalidState", "the VM is being handed over to a destination");
	if (vm_run_state(vm) == VM_ENDED)
		return ctl_fail(c, "InvalidState", "the VM has ended");
	vm_pause(vm, &lat);
	return json_pack("{s:f}", "latency_us", (double)lat / 1000.0);
}

static json_t *cmd_resume(struct ctl_call *c, void *opaque)
{
	struct runner *r = opaque;
	struct vm *vm;
	int rc;

	if (!ctl_args_only(c, no_args) || !(vm = runner_vm(r, c)))
		return NULL;
	if (runner_handing_over(r))
		return ctl_fail(c, "InvalidState", "the VM is being handed over to a destination");
	rc = vm_resume(vm);
	if (rc)
		return ctl_fail(c, "InvalidState", "%s", ferr_msg(rc));
	return json_object();
}

static json_t *cmd_quit(struct ctl_call *c, void *opaque)
{
	struct runner *r = opaque;
	struct vm *vm = runner_vm(r, NULL);

	if (!ctl_args_only(c, no_args))
		return NULL;
	if (vm)
		vm_end(vm, 0, "stopped by the control command 'quit'");
	else if (r->incoming)
		mig_in_abort(r->incoming, "stopped by the control command 'quit'");
	return json_object();
}

static json_t *cmd_shutdown(struct ctl_call *c, void *opaque)
{
	struct runner *r = opaque;
	struct vm *vm;
	uint64_t one = 1;

	if (!ctl_args_only(c, no_args) || !(vm = runner_vm(r, c)))
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
	struct runner *r = opaque;
	uint64_t rips[FERRY_MAX_VCPUS];
	bool have_rips;
	struct vm *vm;
	json_t *list;

	if (!ctl_args_only(c, no_args) || !(vm = runner_vm(r, c)))
		return NULL;
	have_rips = vm_run_state(vm) != VM_RUNNING && !runner_handing_over(r) &&
		    vm_exec_all(vm, read_rip, rips) == 0;
	list = json_array();
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = &vm->vcpus[i];
		const char *state;
		json_t *o;

		pthread_mutex_lock(&vm->lock);
		state = v->done ? "finished" : v->parked ? "parked" : "running";
		pthread_mutex_unlock(&vm->lock);
		o = json_pack("{s:i, s:i, s:s, s:I, s:i}", "index", (int)i,
			      "thread_id", (int)atomic_load(&v->tid), "state", state,
			      "exits", (json_int_t)atomic_load(&v->exits),
			      "throttle_pct", (int)vm_throttle_get(vm, i));
		if (have_rips)
			json_object_set_new(o, "rip", json_integer((json_int_t)rips[i]));
		json_array_append_new(list, o);
	}
	return list;
}

static json_t *cmd_query_guest(struct ctl_call *c, void *opaque)
{
	struct runner *r = opaque;
	struct vm *vm;
	json_t *cpus;

	if (!ctl_args_only(c, no_args) || !(vm = runner_vm(r, c)))
		return NULL;
	cpus = json_array();
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

int vm_commands_register(struct ctl_server *s, struct runner *r)
{
	return ctl_register(s, vm_cmds, ARRAY_SIZE(vm_cmds), r);
}
