/*
 * Creating and destroying the partition: the KVM VM, its memslot, in-kernel
 * irqchip, vCPUs and their threads, and what KVM tells us about the CPU
 * model (CPUID, saveable MSRs, XSAVE size, TSC frequency).
 */
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "../guest/abi.h"
#include "util.h"

#define KVM_DEVICE "/dev/kvm"
#define MAX_CPUID_ENTRIES 256
#define MAX_MSR_INDICES 1024
#define MSR_IA32_TSC 0x10

static int kvm_ioctl_retry(int fd, unsigned long req, void *arg)
{
	int rc;

	do
		rc = ioctl(fd, req, arg);
	while (rc < 0 && errno == EINTR);
	return rc;
}

static int check_caps(struct vm *vm)
{
	static const struct { int cap; const char *name; } required[] = {
		{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
		{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
		{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
		{ KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS" },
		{ KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS" },
		{ KVM_CAP_XCRS, "KVM_CAP_XCRS" },
		{ KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE" },
		{ KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK" },
		{ KVM_CAP_GET_TSC_KHZ, "KVM_CAP_GET_TSC_KHZ" },
	};
	int version = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);

	if (version != KVM_API_VERSION)
		return ferr(ENOTSUP, "%s speaks KVM API version %d, ferry needs %d",
			    KVM_DEVICE, version, KVM_API_VERSION);
	for (unsigned i = 0; i < ARRAY_SIZE(required); i++)
		if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, required[i].cap) <= 0)
			return ferr(ENOTSUP, "this KVM lacks %s, which ferry needs",
				    required[i].name);
	return 0;
}

static int load_cpuid(struct vm *vm)
{
	size_t sz = sizeof(*vm->cpuid) + MAX_CPUID_ENTRIES * sizeof(struct kvm_cpuid_entry2);

	vm->cpuid = calloc(1, sz);
	if (!vm->cpuid)
		return -ENOMEM;
	vm->cpuid->nent = MAX_CPUID_ENTRIES;
	if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, vm->cpuid) < 0)
		return ferr_sys(errno, "KVM_GET_SUPPORTED_CPUID failed");
	return 0;
}

static int load_msr_list(struct vm *vm)
{
	struct kvm_msr_list probe = { .nmsrs = 0 };
	struct kvm_msr_list *list;
	int rc = 0;

	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return ferr_sys(errno, "KVM_GET_MSR_INDEX_LIST failed");
	if (probe.nmsrs > MAX_MSR_INDICES)
		return ferr(E2BIG, "KVM reports %u saveable MSRs, more than %u",
			    probe.nmsrs, MAX_MSR_INDICES);
	list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
	vm->msr_index = calloc(probe.nmsrs + 1, sizeof(uint32_t));
	if (!list || !vm->msr_index) {
		rc = -ENOMEM;
		goto out;
	}
	list->nmsrs = probe.nmsrs;
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		rc = ferr_sys(errno, "KVM_GET_MSR_INDEX_LIST failed");
		goto out;
	}
	/* The TSC is captured through its offset (see cpustate.c). */
	for (unsigned i = 0; i < list->nmsrs; i++)
		if (list->indices[i] != MSR_IA32_TSC)
			vm->msr_index[vm->nmsrs++] = list->indices[i];
out:
	free(list);
	return rc;
}

/*
 * Runs once on each vCPU thread before anything else: install the CPUID the
 * vCPU will report (APIC ids made unique) and, on vCPU 0, learn the TSC
 * frequency and which listed MSRs this CPU model can actually read.
 */
static int vcpu_init(struct vcpu *v, void *arg)
{
	struct vm *vm = v->vm;
	struct kvm_cpuid2 *cpuid;
	size_t sz = sizeof(*cpuid) + vm->cpuid->nent * sizeof(struct kvm_cpuid_entry2);
	struct kvm_device_attr attr = {
		.group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET,
	};
	int rc = 0;

	(void)arg;
	cpuid = malloc(sz);
	if (!cpuid)
		return -ENOMEM;
	memcpy(cpuid, vm->cpuid, sz);
	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffffu) | (v->index << 24);
		if (e->function == 0xb || e->function == 0x1f)
			e->edx = v->index;
	}
	if (ioctl(v->fd, KVM_SET_CPUID2, cpuid) < 0) {
		rc = ferr_sys(errno, "KVM_SET_CPUID2 on vCPU %u failed", v->index);
		goto out;
	}
	if (v->index != 0)
		goto out;

	rc = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	if (rc <= 0) {
		rc = ferr_sys(rc < 0 ? errno : EINVAL, "KVM_GET_TSC_KHZ failed");
		goto out;
	}
	vm->tsc_khz = (uint32_t)rc;
	rc = 0;
	vm->has_tsc_offset = ioctl(v->fd, KVM_HAS_DEVICE_ATTR, &attr) == 0;

	/* Keep only the MSRs that read back on this vCPU model. */
	unsigned kept = 0;
	for (unsigned i = 0; i < vm->nmsrs; i++) {
		struct {
			struct kvm_msrs hdr;
			struct kvm_msr_entry e;
		} one = { .hdr.nmsrs = 1, .e.index = vm->msr_index[i] };

		if (ioctl(v->fd, KVM_GET_MSRS, &one) == 1)
			vm->msr_index[kept++] = vm->msr_index[i];
	}
	vm->nmsrs = kept;
out:
	free(cpuid);
	return rc;
}

static int create_vcpus(struct vm *vm)
{
	int rc;

	vm->vcpus = calloc(vm->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return -ENOMEM;
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = &vm->vcpus[i];

		v->vm = vm;
		v->index = i;
		v->fd = kvm_ioctl_retry(vm->fd, KVM_CREATE_VCPU, (void *)(uintptr_t)i);
		if (v->fd < 0)
			return ferr_sys(errno, "KVM_CREATE_VCPU %u failed", i);
		v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
		if (v->run == MAP_FAILED) {
			v->run = NULL;
			return ferr_sys(errno, "cannot map kvm_run of vCPU %u", i);
		}
		if (vm->dirty_ring_bytes) {
			v->dirty_ring = mmap(NULL, vm->dirty_ring_bytes, PROT_READ | PROT_WRITE,
					     MAP_SHARED, v->fd,
					     KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());
			if (v->dirty_ring == MAP_FAILED) {
				v->dirty_ring = NULL;
				return ferr_sys(errno, "cannot map the dirty ring of vCPU %u", i);
			}
		}
	}
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = &vm->vcpus[i];

		rc = pthread_create(&v->thread, NULL, vcpu_thread_main, v);
		if (rc)
			return ferr_sys(rc, "cannot start the thread of vCPU %u", i);
		v->thread_started = true;
	}
	return 0;
}

/*
 * Registering guest RAM with KVM is the slowest step of creating a VM on a
 * shadow-paging host: KVM allocates and clears the reverse map for every
 * page of the slot (4-12 ms per VM here, docs/performance.md).  Nothing
 * else vm_create() does needs the slot, so it runs on a thread of its own
 * while the vCPUs are created, and vm_create() waits for it before it
 * returns.
 */
struct ram_slot {
	pthread_t thread;
	bool started;
	int vm_fd;
	struct kvm_userspace_memory_region region;
	int err;
};

static void *ram_slot_thread(void *arg)
{
	struct ram_slot *s = arg;

	s->err = ioctl(s->vm_fd, KVM_SET_USER_MEMORY_REGION, &s->region) < 0 ? errno : 0;
	return NULL;
}

static void ram_slot_start(struct ram_slot *s, const struct vm *vm)
{
	s->vm_fd = vm->fd;
	s->region = (struct kvm_userspace_memory_region){
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = vm->mem.size,
		.userspace_addr = (uintptr_t)vm->mem.hva,
	};
	s->err = 0;
	s->started = pthread_create(&s->thread, NULL, ram_slot_thread, s) == 0;
	if (!s->started)
		ram_slot_thread(s);
}

/* Waits for the registration, if it runs on its own thread. */
static void ram_slot_wait(struct ram_slot *s)
{
	if (s->started)
		pthread_join(s->thread, NULL);
	s->started = false;
}

static int validate_config(const struct vm_config *cfg, int max_vcpus)
{
	char a[32], b[32];
	unsigned limit = FERRY_MAX_VCPUS;

	if (max_vcpus > 0 && (unsigned)max_vcpus < limit)
		limit = (unsigned)max_vcpus;
	if (cfg->ncpus == 0 || cfg->ncpus > limit)
		return ferr(EINVAL, "%u vCPUs requested; this host allows 1 to %u",
			    cfg->ncpus, limit);
	if (cfg->mem_size < FERRY_MIN_MEM || cfg->mem_size > FERRY_MAX_MEM)
		return ferr(EINVAL, "guest memory must be between %s and %s",
			    fmt_size(a, sizeof(a), FERRY_MIN_MEM),
			    fmt_size(b, sizeof(b), FERRY_MAX_MEM));
	if (cfg->mem_size % (2ull << 20))
		return ferr(EINVAL, "guest memory must be a multiple of 2 MiB");
	return 0;
}

int vm_create(struct vm **out, const struct vm_config *cfg)
{
	struct ram_slot slot = { .started = false };
	pthread_condattr_t ca;
	struct vm *vm;
	int rc;

	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->fd = -1;
	vm->mem.fd = -1;
	vm->console_fd = STDOUT_FILENO;
	vm->created_ns = now_ns();
	if (getrandom(vm->uuid, sizeof(vm->uuid), 0) != sizeof(vm->uuid))
		memset(vm->uuid, 0, sizeof(vm->uuid));
	vm->state = VM_CREATED;
	atomic_store(&vm->pause_req, true);
	pthread_mutex_init(&vm->op_lock, NULL);
	pthread_mutex_init(&vm->lock, NULL);
	pthread_mutex_init(&vm->console_lock, NULL);
	pthread_mutex_init(&vm->progress_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->vcpu_cond, &ca);
	pthread_cond_init(&vm->ctl_cond, &ca);
	pthread_condattr_destroy(&ca);

	vm->kvm_fd = open(KVM_DEVICE, O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		rc = ferr_sys(errno, "cannot open %s (is KVM available to this user?)",
			      KVM_DEVICE);
		goto fail;
	}
	rc = check_caps(vm);
	if (rc)
		goto fail;
	rc = validate_config(cfg, ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS));
	if (rc)
		goto fail;
	vm->ncpus = cfg->ncpus;

	vm->fd = kvm_ioctl_retry(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->fd < 0) {
		rc = ferr_sys(errno, "KVM_CREATE_VM failed");
		goto fail;
	}
	if (cfg->dirty_ring_bytes) {
		struct kvm_enable_cap cap = {
			.cap = cfg->dirty_ring_acq_rel ? KVM_CAP_DIRTY_LOG_RING_ACQ_REL
						       : KVM_CAP_DIRTY_LOG_RING,
			.args = { cfg->dirty_ring_bytes },
		};

		if (ioctl(vm->fd, KVM_ENABLE_CAP, &cap) < 0) {
			rc = ferr_sys(errno, "cannot enable a %u-byte dirty ring",
				      cfg->dirty_ring_bytes);
			goto fail;
		}
		vm->dirty_ring_bytes = cfg->dirty_ring_bytes;
	}
	if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		rc = ferr_sys(errno, "KVM_CREATE_IRQCHIP failed");
		goto fail;
	}
	rc = gmem_create(&vm->mem, cfg->mem_size);
	if (rc)
		goto fail;
	ram_slot_start(&slot, vm);
	rc = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (rc < (int)sizeof(struct kvm_run)) {
		rc = ferr_sys(errno, "KVM_GET_VCPU_MMAP_SIZE failed");
		goto fail;
	}
	vm->run_size = (size_t)rc;
	rc = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	if (rc > 0)
		vm->xsave_size = (uint32_t)rc;
	else if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0)
		vm->xsave_size = sizeof(struct kvm_xsave);
	rc = load_cpuid(vm);
	if (rc)
		goto fail;
	rc = load_msr_list(vm);
	if (rc)
		goto fail;

	rc = vm_register_core_ports(vm);
	if (rc)
		goto fail;
	rc = create_vcpus(vm);
	if (rc)
		goto fail;
	rc = vm_exec_all(vm, vcpu_init, NULL);
	if (rc)
		goto fail;
	ram_slot_wait(&slot);
	if (slot.err) {
		rc = ferr_sys(slot.err, "cannot register guest RAM with KVM");
		goto fail;
	}
	*out = vm;
	return 0;

fail:
	ram_slot_wait(&slot);
	vm_destroy(vm);
	return rc;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	vm_throttle_stop(vm);
	if (vm->vcpus) {
		pthread_mutex_lock(&vm->lock);
		atomic_store(&vm->stopping, true);
		pthread_cond_broadcast(&vm->vcpu_cond);
		pthread_mutex_unlock(&vm->lock);
		for (unsigned i = 0; i < vm->ncpus; i++)
			if (vm->vcpus[i].thread_started)
				vcpu_kick(&vm->vcpus[i]);
		for (unsigned i = 0; i < vm->ncpus; i++) {
			struct vcpu *v = &vm->vcpus[i];

			if (v->thread_started)
				pthread_join(v->thread, NULL);
			if (v->run)
				munmap(v->run, vm->run_size);
			if (v->dirty_ring)
				munmap(v->dirty_ring, vm->dirty_ring_bytes);
			if (v->fd > 0)
				close(v->fd);
		}
		free(vm->vcpus);
	}
	gmem_destroy(&vm->mem);
	if (vm->fd >= 0)
		close(vm->fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	free(vm->cpuid);
	free(vm->msr_index);
	pthread_cond_destroy(&vm->vcpu_cond);
	pthread_cond_destroy(&vm->ctl_cond);
	pthread_mutex_destroy(&vm->op_lock);
	pthread_mutex_destroy(&vm->lock);
	pthread_mutex_destroy(&vm->console_lock);
	pthread_mutex_destroy(&vm->progress_lock);
	free(vm);
}

int vm_set_memslot_flags(struct vm *vm, uint32_t flags)
{
	struct kvm_userspace_memory_region slot = {
		.slot = 0,
		.flags = flags,
		.guest_phys_addr = 0,
		.memory_size = vm->mem.size,
		.userspace_addr = (uintptr_t)vm->mem.hva,
	};

	if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
		return ferr_sys(errno, "cannot set memslot flags %#x", flags);
	return 0;
}

void vm_console_write(struct vm *vm, const void *buf, size_t len)
{
	pthread_mutex_lock(&vm->console_lock);
	/* A console that went away must not stop the guest. */
	(void)write_all(vm->console_fd, buf, len);
	pthread_mutex_unlock(&vm->console_lock);
}

void vm_progress_set(struct vcpu *v, const char *key, uint64_t value)
{
	struct vm *vm = v->vm;
	struct vcpu_progress *p = NULL;

	pthread_mutex_lock(&vm->progress_lock);
	for (unsigned i = 0; i < v->nprogress; i++)
		if (strcmp(v->progress[i].key, key) == 0)
			p = &v->progress[i];
	if (!p && v->nprogress < VCPU_PROGRESS_MAX) {
		p = &v->progress[v->nprogress++];
		snprintf(p->key, sizeof(p->key), "%s", key);
	}
	if (p) {
		p->value = value;
		p->updated_ns = now_ns();
	}
	pthread_mutex_unlock(&vm->progress_lock);
}

unsigned vm_progress_get(struct vm *vm, unsigned index,
			 struct vcpu_progress *out, unsigned max)
{
	struct vcpu *v;
	unsigned n;

	if (index >= vm->ncpus)
		return 0;
	v = &vm->vcpus[index];
	pthread_mutex_lock(&vm->progress_lock);
	n = MIN(v->nprogress, max);
	memcpy(out, v->progress, n * sizeof(*out));
	pthread_mutex_unlock(&vm->progress_lock);
	return n;
}
