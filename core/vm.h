/*
 * The partition: a KVM VM with its guest RAM, vCPU threads, I/O tables and
 * console, and the lifecycle the rest of ferry drives (start, pause, resume,
 * end).
 *
 * Threads.  Every vCPU has its own thread, created with the VM and parked
 * until vm_start().  All vCPU ioctls are issued from that thread: code that
 * needs one (state capture, restore, dirty-ring harvesting) hands a function
 * to the vCPU with vm_exec_all() or vm_vcpu_exec() while the VM is paused.
 * The "controller" is whichever thread calls vm_pause/vm_resume/vm_exec_*:
 * ferry's main thread, the control-API thread or a migration thread.  Those
 * calls are serialised by vm->op_lock, so two controllers never interleave.
 */
#ifndef FERRY_VM_H
#define FERRY_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "devices.h"
#include "iotable.h"
#include "memory.h"

struct vm;

struct vm_config {
	uint64_t mem_size;          /* bytes, a multiple of 2 MiB */
	unsigned ncpus;
	/*
	 * Dirty ring size in bytes per vCPU (0: no ring).  KVM requires the
	 * ring to be enabled before any vCPU exists, so it is part of creation.
	 */
	uint32_t dirty_ring_bytes;
	bool dirty_ring_acq_rel;    /* use KVM_CAP_DIRTY_LOG_RING_ACQ_REL */
};

enum vm_run_state {
	VM_CREATED,   /* vCPUs parked, never run */
	VM_RUNNING,
	VM_PAUSED,
	VM_ENDED,     /* the guest finished or failed; vCPUs parked for good */
};

#define VCPU_PROGRESS_MAX 16

struct vcpu_progress {
	char key[32];
	uint64_t value;
	uint64_t updated_ns;
};

struct vcpu_work {
	int (*fn)(struct vcpu *vcpu, void *arg);
	void *arg;
	int rc;
	bool done;
	char msg[256];            /* ferr_msg() of the vCPU thread on failure */
};

struct vcpu {
	struct vm *vm;
	unsigned index;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	_Atomic pid_t tid;

	/* Protected by vm->lock. */
	bool parked;
	bool done;               /* the guest program finished on this vCPU */
	int done_status;
	struct vcpu_work *work;

	_Atomic uint64_t exits;

	/* Throttling (core/throttle.c): percentage of each period to sleep,
	 * and the sleep the throttle thread has asked for. */
	_Atomic unsigned throttle_pct;
	_Atomic uint64_t throttle_sleep_ns;

	/* Dirty ring, mapped by core when the VM has one (vm->dirty_ring_bytes);
	 * harvested by dirtylog/, which owns dirty_ring_next. */
	void *dirty_ring;
	uint32_t dirty_ring_next;

	/* Protected by vm->progress_lock. */
	struct vcpu_progress progress[VCPU_PROGRESS_MAX];
	unsigned nprogress;
};

struct vm {
	int kvm_fd;
	int fd;
	size_t run_size;
	struct guest_mem mem;
	unsigned ncpus;
	struct vcpu *vcpus;
	struct iotable pio;
	struct iotable mmio;
	uint32_t dirty_ring_bytes;

	/* What KVM offers, read once at creation. */
	struct kvm_cpuid2 *cpuid;       /* supported CPUID, APIC ids patched per vCPU */
	uint32_t *msr_index;            /* saveable MSRs this vCPU model can read */
	unsigned nmsrs;
	uint32_t xsave_size;            /* bytes of XSAVE state, 0 if no XSAVE */
	uint32_t tsc_khz;
	bool has_tsc_offset;            /* KVM_VCPU_TSC_OFFSET attribute */

	pthread_mutex_t op_lock;        /* serialises controllers */
	pthread_mutex_t lock;           /* run state below */
	pthread_cond_t vcpu_cond;       /* controller -> vCPU threads */
	pthread_cond_t ctl_cond;        /* vCPU threads -> controller */
	enum vm_run_state state;
	_Atomic bool pause_req;
	_Atomic bool stopping;          /* vCPU threads exit */
	unsigned nparked;
	bool ended;
	int exit_status;
	char exit_msg[512];

	uint64_t created_ns;
	uint64_t started_ns;
	uint64_t last_pause_latency_ns;
	/* The instant the VM last paused, for TSC and kvmclock capture. */
	uint64_t pause_host_tsc;
	uint64_t pause_realtime_ns;
	struct kvm_clock_data pause_clock;

	int console_fd;
	pthread_mutex_t console_lock;
	pthread_mutex_t progress_lock;
	char guest_name[32];
	char dirty_log[16];             /* chosen dirty-log backend, for status */
	_Atomic unsigned unhandled_io_warnings;

	/* Migratable devices, registered before the VM starts. */
	struct vm_device devices[VM_DEVICES_MAX];
	unsigned ndevices;

	uint8_t uuid[16];               /* this VM's identity, kept across migration */

	/* The throttle thread, started when a vCPU is first throttled. */
	pthread_t throttle_thread;
	bool throttle_running;

	/* Called on a vCPU thread on KVM_EXIT_DIRTY_RING_FULL. */
	void (*dirty_ring_full)(struct vcpu *vcpu, void *opaque);
	void *dirty_ring_opaque;
};

/* Creates the VM with its RAM and parked vCPU threads.  Main thread. */
int vm_create(struct vm **out, const struct vm_config *cfg);
/* Stops and joins the vCPU threads, frees everything.  Not on a vCPU thread. */
void vm_destroy(struct vm *vm);

/* Lets the vCPUs run for the first time (same as resume). */
int vm_start(struct vm *vm);
/*
 * Brings every vCPU out of KVM_RUN and parks it.  Returns when all are
 * parked; *latency_ns (optional) is how long that took.  Pausing a paused or
 * ended VM succeeds at once.
 */
int vm_pause(struct vm *vm, uint64_t *latency_ns);
int vm_resume(struct vm *vm);
/* A VM that has not run yet becomes paused (a migrated or restored VM
 * whose source was paused): `resume` then starts it. */
void vm_mark_paused(struct vm *vm);
/*
 * Ends the VM with an exit status and a message (first call wins).  Any
 * thread, including vCPU threads.  vCPUs park; vm_wait_end() returns.
 */
void vm_end(struct vm *vm, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Blocks until the VM ends; returns the exit status. */
int vm_wait_end(struct vm *vm, char *msg, size_t msg_len);
enum vm_run_state vm_run_state(struct vm *vm);
const char *vm_run_state_name(enum vm_run_state s);

/*
 * Runs fn on the vCPU's own thread and returns its result.  The VM must be
 * created, paused or ended (vCPUs parked); otherwise -EBUSY.
 */
int vm_vcpu_exec(struct vm *vm, unsigned index,
		 int (*fn)(struct vcpu *vcpu, void *arg), void *arg);
/* Runs fn on every vCPU thread concurrently; the first error wins. */
int vm_exec_all(struct vm *vm, int (*fn)(struct vcpu *vcpu, void *arg), void *arg);

/* Changes memslot 0's flags (e.g. KVM_MEM_LOG_DIRTY_PAGES). */
int vm_set_memslot_flags(struct vm *vm, uint32_t flags);

/* Guest progress reports: set from vCPU threads, read by anyone. */
void vm_progress_set(struct vcpu *vcpu, const char *key, uint64_t value);
/* Copies vCPU `index`'s reports into out[max]; returns how many. */
unsigned vm_progress_get(struct vm *vm, unsigned index,
			 struct vcpu_progress *out, unsigned max);

/* Writes guest console output (from any thread). */
void vm_console_write(struct vm *vm, const void *buf, size_t len);

/*
 * Throttling: vCPU `index` sleeps `pct` percent of every 10 ms period (0
 * stops it; pct is capped at 99).  Used by auto-converge to slow the vCPUs
 * that dirty memory fastest.  Any thread.
 */
int vm_throttle_set(struct vm *vm, unsigned index, unsigned pct);
unsigned vm_throttle_get(struct vm *vm, unsigned index);
void vm_throttle_stop(struct vm *vm);

/* Internal to core/: the vCPU thread body and kick. */
void *vcpu_thread_main(void *arg);
void vcpu_kick(struct vcpu *vcpu);
void vcpu_handle_exit(struct vcpu *vcpu);
void vcpu_throttle_sleep(struct vcpu *vcpu);
int vm_register_core_ports(struct vm *vm);

#endif
