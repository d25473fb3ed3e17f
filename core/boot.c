#include "boot.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "loader.h"
#include "util.h"

#define PTE_P   0x1ull
#define PTE_W   0x2ull
#define PTE_U   0x4ull
#define PTE_PS  0x80ull
#define PTE_FLAGS (PTE_P | PTE_W | PTE_U)

#define CR0_PE  (1ull << 0)
#define CR0_MP  (1ull << 1)
#define CR0_ET  (1ull << 4)
#define CR0_NE  (1ull << 5)
#define CR0_WP  (1ull << 16)
#define CR0_PG  (1ull << 31)
#define CR4_PAE (1ull << 5)
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define CR4_OSXSAVE (1ull << 18)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

/* Each TSS: 104 bytes, then an I/O bitmap for ports 0-255 and its end byte. */
#define TSS_IOPB  104
#define TSS_LIMIT (TSS_IOPB + 32)

#define GDT_KCODE 0x00209a0000000000ull  /* 64-bit code, DPL 0 */
#define GDT_KDATA 0x0000920000000000ull
#define GDT_UDATA 0x0000f20000000000ull  /* DPL 3 */
#define GDT_UCODE 0x0020fa0000000000ull  /* 64-bit code, DPL 3 */

static int write_page_tables(struct vm *vm)
{
	uint64_t gib = DIV_ROUND_UP(vm->mem.size, 1ull << 30);
	uint64_t entry;
	int rc = 0;

	if (gib > 512 || FERRY_PD_GPA + gib * 4096 > FERRY_PT_STACKS_GPA)
		return ferr(EINVAL, "guest RAM too large for the boot page tables");
	entry = FERRY_PDPT_GPA | PTE_FLAGS;
	rc = gmem_write(&vm->mem, FERRY_PML4_GPA, &entry, sizeof(entry));
	for (uint64_t g = 0; g < gib && !rc; g++) {
		entry = (FERRY_PD_GPA + g * 4096) | PTE_FLAGS;
		rc = gmem_write(&vm->mem, FERRY_PDPT_GPA + g * 8, &entry, sizeof(entry));
	}
	/*
	 * 2 MiB pages for all RAM, but 4 KiB ones in the first 2 MiB, so that
	 * page 0 stays unmapped, and in the stacks' 2 MiB, so that each stack
	 * has an unmapped guard page below it.
	 */
	for (uint64_t addr = 0; addr < vm->mem.size && !rc; addr += 2ull << 20) {
		uint64_t pd_slot = FERRY_PD_GPA + (addr >> 21) * 8;

		if (addr == 0)
			entry = FERRY_PT0_GPA | PTE_FLAGS;
		else if (addr == FERRY_STACKS_GPA)
			entry = FERRY_PT_STACKS_GPA | PTE_FLAGS;
		else
			entry = addr | PTE_FLAGS | PTE_PS;
		rc = gmem_write(&vm->mem, pd_slot, &entry, sizeof(entry));
	}
	for (uint64_t i = 0; i < 512 && !rc; i++) {
		uint64_t addr = FERRY_STACKS_GPA + (i << 12), in_slot = (i << 12) % FERRY_STACK_PER_VCPU;
		bool guard = in_slot == 0 || in_slot == FERRY_STACK_RING0;

		entry = i ? (i << 12) | PTE_FLAGS : 0;
		rc = gmem_write(&vm->mem, FERRY_PT0_GPA + i * 8, &entry, sizeof(entry));
		entry = guard ? 0 : addr | PTE_FLAGS;
		if (!rc)
			rc = gmem_write(&vm->mem, FERRY_PT_STACKS_GPA + i * 8, &entry, sizeof(entry));
	}
	return rc;
}

uint64_t boot_lookup_pte(struct vm *vm, uint64_t gpa)
{
	uint64_t e;

	if (gmem_read(&vm->mem, FERRY_PML4_GPA + ((gpa >> 39) & 511) * 8, &e, 8) || !(e & PTE_P))
		return 0;
	if (gmem_read(&vm->mem, (e & ~0xfffull) + ((gpa >> 30) & 511) * 8, &e, 8) || !(e & PTE_P))
		return 0;
	if (gmem_read(&vm->mem, (e & ~0xfffull) + ((gpa >> 21) & 511) * 8, &e, 8) || !(e & PTE_P))
		return 0;
	if (e & PTE_PS)
		return e;
	if (gmem_read(&vm->mem, (e & ~0xfffull) + ((gpa >> 12) & 511) * 8, &e, 8) || !(e & PTE_P))
		return 0;
	return e;
}

static int write_descriptors(struct vm *vm, const struct ferry_image_header *hdr)
{
	uint64_t gdt[6 + 2 * FERRY_MAX_VCPUS] = {
		0, GDT_KCODE, GDT_KDATA, 0, GDT_UDATA, GDT_UCODE,
	};
	uint64_t idt[512];
	uint8_t tss[FERRY_TSS_STRIDE];
	const uint16_t iopb = TSS_IOPB;
	int rc;

	for (unsigned i = 0; i < vm->ncpus; i++) {
		uint64_t base = FERRY_TSS_GPA + i * FERRY_TSS_STRIDE;
		uint64_t rsp0 = FERRY_STACKS_GPA + i * FERRY_STACK_PER_VCPU + FERRY_STACK_RING0;

		gdt[6 + 2 * i] = TSS_LIMIT | ((base & 0xffffff) << 16) | (0x89ull << 40) |
				 (((base >> 24) & 0xff) << 56);
		gdt[7 + 2 * i] = base >> 32;
		memset(tss, 0, sizeof(tss));
		memcpy(tss + 4, &rsp0, sizeof(rsp0));
		memcpy(tss + 102, &iopb, sizeof(iopb));
		/* A set bit denies a port: deny all but ferry's own. */
		memset(tss + iopb, 0xff, TSS_LIMIT + 1 - TSS_IOPB);
		for (unsigned p = FERRY_PORT_BASE; p < FERRY_PORT_BASE + FERRY_PORT_COUNT; p++)
			tss[iopb + p / 8] &= (uint8_t)~(1u << (p % 8));
		rc = gmem_write(&vm->mem, base, tss, sizeof(tss));
		if (rc)
			return rc;
	}
	for (unsigned v = 0; v < 256; v++) {
		uint64_t off = hdr->isr_stubs + v * FERRY_ISR_STUB_SIZE;

		idt[2 * v] = (off & 0xffff) | ((uint64_t)FERRY_SEL_KCODE << 16) |
			     (0x8eull << 40) | (((off >> 16) & 0xffff) << 48);
		idt[2 * v + 1] = off >> 32;
	}
	rc = gmem_write(&vm->mem, FERRY_GDT_GPA, gdt, (6 + 2 * vm->ncpus) * 8);
	if (!rc)
		rc = gmem_write(&vm->mem, FERRY_IDT_GPA, idt, sizeof(idt));
	return rc;
}

static int write_bootinfo(struct vm *vm, char *const *args, unsigned nargs)
{
	struct ferry_bootinfo bi;
	size_t off = 0;

	memset(&bi, 0, sizeof(bi));
	bi.magic = FERRY_BOOTINFO_MAGIC;
	bi.version = 1;
	bi.ncpus = vm->ncpus;
	bi.mem_size = vm->mem.size;
	bi.data_base = FERRY_DATA_GPA;
	bi.data_end = vm->mem.size;
	bi.tsc_khz = vm->tsc_khz;
	for (unsigned i = 0; i < nargs; i++) {
		size_t n = strlen(args[i]) + 1;

		if (n > sizeof(bi.args) - off)
			return ferr(E2BIG, "guest arguments do not fit the boot info page");
		memcpy(bi.args + off, args[i], n);
		off += n;
	}
	bi.nargs = nargs;
	bi.args_len = (uint32_t)off;
	return gmem_write(&vm->mem, FERRY_BOOTINFO_GPA, &bi, sizeof(bi));
}

int boot_setup_memory(struct vm *vm, const struct ferry_image_header *hdr,
		      char *const *args, unsigned nargs)
{
	int rc;

	if (vm->mem.size <= FERRY_DATA_GPA)
		return ferr(EINVAL, "guest RAM leaves no data area");
	rc = write_page_tables(vm);
	if (!rc)
		rc = write_descriptors(vm, hdr);
	if (!rc)
		rc = write_bootinfo(vm, args, nargs);
	snprintf(vm->guest_name, sizeof(vm->guest_name), "%s", hdr->name);
	return rc;
}

static void code_segment(struct kvm_segment *s, uint16_t sel, uint8_t dpl)
{
	*s = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = 11,
		.present = 1, .dpl = dpl, .db = 0, .s = 1, .l = 1, .g = 1,
	};
}

static void data_segment(struct kvm_segment *s, uint16_t sel, uint8_t dpl)
{
	*s = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = 3,
		.present = 1, .dpl = dpl, .db = 1, .s = 1, .l = 0, .g = 1,
	};
}

static int vcpu_enter_long_mode(struct vcpu *v, void *arg)
{
	const struct ferry_image_header *hdr = arg;
	uint64_t slot = FERRY_STACKS_GPA + v->index * FERRY_STACK_PER_VCPU;
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return ferr_sys(errno, "KVM_GET_SREGS on vCPU %u", v->index);
	code_segment(&sregs.cs, FERRY_SEL_KCODE, 0);
	data_segment(&sregs.ds, FERRY_SEL_KDATA, 0);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.tr = (struct kvm_segment){
		.base = FERRY_TSS_GPA + v->index * FERRY_TSS_STRIDE, .limit = TSS_LIMIT,
		.selector = FERRY_SEL_TSS(v->index), .type = 11, .present = 1,
	};
	sregs.ldt = (struct kvm_segment){ .type = 2, .present = 1, .limit = 0xffff };
	sregs.gdt.base = FERRY_GDT_GPA;
	sregs.gdt.limit = (uint16_t)((6 + 2 * v->vm->ncpus) * 8 - 1);
	sregs.idt.base = FERRY_IDT_GPA;
	sregs.idt.limit = 256 * 16 - 1;
	sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
	sregs.cr3 = FERRY_PML4_GPA;
	sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT |
		    (v->vm->xsave_size ? CR4_OSXSAVE : 0);
	sregs.efer = EFER_LME | EFER_LMA;
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
		return ferr_sys(errno, "KVM_SET_SREGS on vCPU %u", v->index);

	if (v->vm->xsave_size) {
		struct kvm_xcrs xcrs = { .nr_xcrs = 1, .xcrs = { { .xcr = 0, .value = 3 } } };

		if (ioctl(v->fd, KVM_SET_XCRS, &xcrs) < 0)
			return ferr_sys(errno, "KVM_SET_XCRS on vCPU %u", v->index);
	}

	memset(&regs, 0, sizeof(regs));
	regs.rip = hdr->entry;
	regs.rsp = slot + FERRY_STACK_RING0;
	regs.rdi = v->index;
	regs.rsi = slot + FERRY_STACK_PER_VCPU;
	regs.rflags = 2;
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
		return ferr_sys(errno, "KVM_SET_REGS on vCPU %u", v->index);
	/* With the in-kernel irqchip, application processors wait for a SIPI. */
	if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
		return ferr_sys(errno, "KVM_SET_MP_STATE on vCPU %u", v->index);
	return 0;
}

int boot_setup_vcpus(struct vm *vm, const struct ferry_image_header *hdr)
{
	return vm_exec_all(vm, vcpu_enter_long_mode, (void *)hdr);
}

int boot_program(struct vm *vm, const char *name, char *const *args, unsigned nargs)
{
	struct ferry_image_header hdr;
	char path[512];
	int rc = loader_find_image(name, path, sizeof(path));

	if (!rc)
		rc = loader_load_file(&vm->mem, path, &hdr);
	if (!rc)
		rc = loader_check_args(&hdr, args, nargs);
	if (!rc)
		rc = boot_setup_memory(vm, &hdr, args, nargs);
	if (!rc)
		rc = boot_setup_vcpus(vm, &hdr);
	return rc;
}
