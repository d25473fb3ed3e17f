/*
 * vCPU throttling for auto-converge.  A throttled vCPU is kicked out of
 * KVM_RUN once every period and then sleeps pct% of the period before it
 * re-enters, so its guest runs (100 - pct)% of the time.  One thread per VM
 * does the kicking; it exists only while some vCPU is throttled.
 */
#include <errno.h>
#include <time.h>

#include "util.h"
#include "vm.h"

#define THROTTLE_PERIOD_NS 10000000ull
#define THROTTLE_MAX_PCT 99u

static bool any_throttled(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (atomic_load(&vm->vcpus[i].throttle_pct))
			return true;
	return false;
}

static void *throttle_thread(void *arg)
{
	struct vm *vm = arg;

	pthread_setname_np(pthread_self(), "ferry-throttle");
	for (;;) {
		struct timespec ts = { 0, (long)THROTTLE_PERIOD_NS };

		pthread_mutex_lock(&vm->lock);
		if (!any_throttled(vm) || atomic_load(&vm->stopping)) {
			vm->throttle_running = false;
			pthread_mutex_unlock(&vm->lock);
			return NULL;
		}
		for (unsigned i = 0; i < vm->ncpus; i++) {
			struct vcpu *v = &vm->vcpus[i];
			unsigned pct = atomic_load(&v->throttle_pct);

			if (!pct || v->parked)
				continue;
			atomic_store(&v->throttle_sleep_ns, THROTTLE_PERIOD_NS * pct / 100);
			vcpu_kick(v);
		}
		pthread_mutex_unlock(&vm->lock);
		nanosleep(&ts, NULL);
	}
}

int vm_throttle_set(struct vm *vm, unsigned index, unsigned pct)
{
	int rc = 0;

	if (index >= vm->ncpus)
		return -EINVAL;
	pct = MIN(pct, THROTTLE_MAX_PCT);
	pthread_mutex_lock(&vm->lock);
	atomic_store(&vm->vcpus[index].throttle_pct, pct);
	if (pct && !vm->throttle_running && !atomic_load(&vm->stopping)) {
		if (vm->throttle_thread)
			pthread_join(vm->throttle_thread, NULL);
		rc = pthread_create(&vm->throttle_thread, NULL, throttle_thread, vm);
		if (rc)
			rc = ferr_sys(rc, "cannot start the throttle thread");
		else
			vm->throttle_running = true;
	}
	pthread_mutex_unlock(&vm->lock);
	return rc;
}

unsigned vm_throttle_get(struct vm *vm, unsigned index)
{
	return index < vm->ncpus ? atomic_load(&vm->vcpus[index].throttle_pct) : 0;
}

void vm_throttle_stop(struct vm *vm)
{
	bool join;

	if (!vm->vcpus)
		return;
	pthread_mutex_lock(&vm->lock);
	for (unsigned i = 0; i < vm->ncpus; i++)
		atomic_store(&vm->vcpus[i].throttle_pct, 0);
	join = vm->throttle_thread != 0;
	pthread_mutex_unlock(&vm->lock);
	if (join) {
		pthread_join(vm->throttle_thread, NULL);
		vm->throttle_thread = 0;
	}
}

/* On the vCPU thread: sleep as asked, but wake at once for a pause or end. */
void vcpu_throttle_sleep(struct vcpu *v)
{
	struct vm *vm = v->vm;
	uint64_t ns = atomic_exchange(&v->throttle_sleep_ns, 0);
	uint64_t deadline = now_ns() + ns;
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / 1000000000ull),
		.tv_nsec = (long)(deadline % 1000000000ull),
	};

	pthread_mutex_lock(&vm->lock);
	while (!atomic_load(&vm->pause_req) && !vm->ended && !atomic_load(&vm->stopping) &&
	       now_ns() < deadline)
		if (pthread_cond_timedwait(&vm->vcpu_cond, &vm->lock, &ts) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&vm->lock);
}
