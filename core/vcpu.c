/*
 * vCPU threads and the run state of the VM: the KVM_RUN loop, parking,
 * kicking a vCPU out of the kernel, pause/resume, running work on a vCPU's
 * own thread, and ending the VM.
 *
 * Kicking.  A controller that wants a vCPU out of KVM_RUN sets pause_req,
 * then kvm_run->immediate_exit, then sends SIGUSR1 to the thread.  If the
 * thread is inside KVM_RUN the signal makes KVM return -EINTR; if it is
 * about to enter, immediate_exit makes KVM return at once.  The vCPU clears
 * immediate_exit before it re-reads pause_req, so no request is lost.
 */
#include "vm.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

#define KICK_SIGNAL SIGUSR1

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;

static void kick_handler(int sig)
{
	(void)sig;
}

static void install_kick_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(KICK_SIGNAL, &sa, NULL);
}

void vcpu_kick(struct vcpu *v)
{
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	pthread_kill(v->thread, KICK_SIGNAL);
}

/* Caller holds vm->lock (or reads atomics only). */
static bool vcpu_must_park(struct vcpu *v)
{
	struct vm *vm = v->vm;

	return atomic_load(&vm->pause_req) || atomic_load(&vm->stopping) ||
	       vm->ended || v->done;
}

/*
 * Parks the vCPU until it may run again, serving work items meanwhile.
 * Returns false when the thread should exit.
 */
static bool vcpu_park(struct vcpu *v)
{
	struct vm *vm = v->vm;
	bool keep_running;

	pthread_mutex_lock(&vm->lock);
	__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	v->parked = true;
	vm->nparked++;
	pthread_cond_broadcast(&vm->ctl_cond);
	while (!atomic_load(&vm->stopping) && vcpu_must_park(v)) {
		struct vcpu_work *w = v->work;

		if (!w) {
			pthread_cond_wait(&vm->vcpu_cond, &vm->lock);
			continue;
		}
		v->work = NULL;
		pthread_mutex_unlock(&vm->lock);
		ferr_clear();
		w->rc = w->fn(v, w->arg);
		if (w->rc)
			snprintf(w->msg, sizeof(w->msg), "%s", ferr_msg(w->rc));
		pthread_mutex_lock(&vm->lock);
		w->done = true;
		pthread_cond_broadcast(&vm->ctl_cond);
	}
	keep_running = !atomic_load(&vm->stopping);
	v->parked = false;
	vm->nparked--;
	pthread_mutex_unlock(&vm->lock);
	return keep_running;
}

void *vcpu_thread_main(void *arg)
{
	struct vcpu *v = arg;
	struct vm *vm = v->vm;
	char name[16];
	sigset_t set;

	pthread_once(&kick_once, install_kick_handler);
	sigemptyset(&set);
	sigaddset(&set, KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	snprintf(name, sizeof(name), "ferry-vcpu%u", v->index);
	pthread_setname_np(pthread_self(), name);
	atomic_store(&v->tid, (pid_t)syscall(SYS_gettid));

	for (;;) {
		if (vcpu_must_park(v)) {
			if (!vcpu_park(v))
				break;
			continue;
		}
		if (atomic_load_explicit(&v->throttle_sleep_ns, memory_order_relaxed)) {
			vcpu_throttle_sleep(v);
			continue;
		}
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
				continue;
			}
			vm_end(vm, 1, "KVM_RUN on vCPU %u failed: %s", v->index,
			       strerror(errno));
			continue;
		}
		atomic_fetch_add_explicit(&v->exits, 1, memory_order_relaxed);
		vcpu_handle_exit(v);
	}
	return NULL;
}

static void set_state_locked(struct vm *vm, enum vm_run_state s)
{
	if (vm->state != VM_ENDED)
		vm->state = s;
}

int vm_pause(struct vm *vm, uint64_t *latency_ns)
{
	uint64_t t0 = now_ns(), lat;

	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&vm->lock);
	atomic_store(&vm->pause_req, true);
	pthread_cond_broadcast(&vm->vcpu_cond);
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (!vm->vcpus[i].parked)
			vcpu_kick(&vm->vcpus[i]);
	while (vm->nparked < vm->ncpus)
		pthread_cond_wait(&vm->ctl_cond, &vm->lock);
	lat = now_ns() - t0;
	if (vm->state == VM_RUNNING) {
		/* The pause instant: TSC and kvmclock are captured as of now. */
		vm->pause_host_tsc = host_rdtsc();
		vm->pause_realtime_ns = realtime_ns();
		memset(&vm->pause_clock, 0, sizeof(vm->pause_clock));
		ioctl(vm->fd, KVM_GET_CLOCK, &vm->pause_clock);
		vm->last_pause_latency_ns = lat;
		set_state_locked(vm, VM_PAUSED);
	}
	pthread_mutex_unlock(&vm->lock);
	pthread_mutex_unlock(&vm->op_lock);
	if (latency_ns)
		*latency_ns = lat;
	return 0;
}

int vm_resume(struct vm *vm)
{
	int rc = 0;

	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&vm->lock);
	if (vm->ended) {
		rc = ferr(ESRCH, "the VM has ended");
	} else {
		if (vm->state == VM_CREATED && !vm->started_ns)
			vm->started_ns = now_ns();
		atomic_store(&vm->pause_req, false);
		set_state_locked(vm, VM_RUNNING);
		pthread_cond_broadcast(&vm->vcpu_cond);
	}
	pthread_mutex_unlock(&vm->lock);
	pthread_mutex_unlock(&vm->op_lock);
	return rc;
}

void vm_mark_paused(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->state == VM_CREATED) {
		vm->state = VM_PAUSED;
		vm->started_ns = now_ns();
	}
	pthread_mutex_unlock(&vm->lock);
}

int vm_start(struct vm *vm)
{
	return vm_resume(vm);
}

void vm_end(struct vm *vm, int status, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&vm->lock);
	if (!vm->ended) {
		vm->ended = true;
		vm->exit_status = status;
		va_start(ap, fmt);
		vsnprintf(vm->exit_msg, sizeof(vm->exit_msg), fmt, ap);
		va_end(ap);
		vm->state = VM_ENDED;
		pthread_cond_broadcast(&vm->ctl_cond);
		pthread_cond_broadcast(&vm->vcpu_cond);
		for (unsigned i = 0; i < vm->ncpus; i++)
			if (vm->vcpus && vm->vcpus[i].thread_started &&
			    !vm->vcpus[i].parked)
				vcpu_kick(&vm->vcpus[i]);
	}
	pthread_mutex_unlock(&vm->lock);
}

int vm_wait_end(struct vm *vm, char *msg, size_t msg_len)
{
	int status;

	pthread_mutex_lock(&vm->lock);
	while (!vm->ended)
		pthread_cond_wait(&vm->ctl_cond, &vm->lock);
	status = vm->exit_status;
	if (msg && msg_len)
		snprintf(msg, msg_len, "%s", vm->exit_msg);
	pthread_mutex_unlock(&vm->lock);
	return status;
}

enum vm_run_state vm_run_state(struct vm *vm)
{
	enum vm_run_state s;

	pthread_mutex_lock(&vm->lock);
	s = vm->state;
	pthread_mutex_unlock(&vm->lock);
	return s;
}

const char *vm_run_state_name(enum vm_run_state s)
{
	switch (s) {
	case VM_CREATED: return "created";
	case VM_RUNNING: return "running";
	case VM_PAUSED: return "paused";
	case VM_ENDED: return "ended";
	}
	return "unknown";
}

/* Caller holds vm->lock. */
static bool all_parked_locked(struct vm *vm)
{
	return vm->state != VM_RUNNING && vm->nparked == vm->ncpus;
}

static int exec_on(struct vm *vm, unsigned first, unsigned count,
		   int (*fn)(struct vcpu *, void *), void *arg)
{
	struct vcpu_work *works;
	int rc = 0;

	works = calloc(count, sizeof(*works));
	if (!works)
		return -ENOMEM;
	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&vm->lock);
	/* A freshly created VM's threads may still be on their way to park. */
	while (vm->state != VM_RUNNING && vm->nparked < vm->ncpus)
		pthread_cond_wait(&vm->ctl_cond, &vm->lock);
	if (!all_parked_locked(vm)) {
		rc = ferr(EBUSY, "the VM must be paused for this");
		goto unlock;
	}
	for (unsigned i = 0; i < count; i++) {
		works[i] = (struct vcpu_work){ .fn = fn, .arg = arg };
		vm->vcpus[first + i].work = &works[i];
	}
	pthread_cond_broadcast(&vm->vcpu_cond);
	for (unsigned i = 0; i < count; i++) {
		while (!works[i].done)
			pthread_cond_wait(&vm->ctl_cond, &vm->lock);
		if (works[i].rc && !rc)
			rc = ferr(works[i].rc, "%s", works[i].msg);
	}
unlock:
	pthread_mutex_unlock(&vm->lock);
	pthread_mutex_unlock(&vm->op_lock);
	free(works);
	return rc;
}

int vm_vcpu_exec(struct vm *vm, unsigned index,
		 int (*fn)(struct vcpu *vcpu, void *arg), void *arg)
{
	if (index >= vm->ncpus)
		return -EINVAL;
	return exec_on(vm, index, 1, fn, arg);
}

int vm_exec_all(struct vm *vm, int (*fn)(struct vcpu *vcpu, void *arg), void *arg)
{
	return exec_on(vm, 0, vm->ncpus, fn, arg);
}
