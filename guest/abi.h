/*
 * The contract between ferry (the host) and the programs it runs (the guest).
 *
 * This header is compiled twice: into the VMM with the host's libc and into
 * freestanding guest images.  It therefore uses only fixed-width types and
 * no library calls.  Anything the guest writes here is hostile to the host:
 * the host checks every address and length before it touches guest memory.
 *
 * Guest-physical layout (identity mapped; a guest virtual address equals its
 * guest-physical address):
 *
 *   0x0000_0000  not mapped (catches NULL dereferences)
 *   0x0000_1000  GDT         (null, kernel code/data, user data/code, TSSes)
 *   0x0000_2000  IDT         (256 interrupt gates into the image's stubs)
 *   0x0000_3000  boot info   (struct ferry_bootinfo)
 *   0x0000_4000  TSS array   (FERRY_MAX_VCPUS x 256 bytes, each with an
 *                             I/O permission bitmap; see FERRY_PORT_BASE)
 *   0x0000_8000  page tables (PML4, PDPT, a PT for the first 2 MiB, PDs, and a
 *                             PT for the stacks' 2 MiB at 0x4B000)
 *   0x0010_0000  reserved for device areas
 *   0x0020_0000  stacks      (32 KiB per vCPU: a guard page, 4 KiB of ring-0
 *                             stack, a guard page, 20 KiB of ring-3 stack; a
 *                             guard page is not mapped, so an overflow faults)
 *   0x0040_0000  guest image (ELF, loaded by the VMM; up to 12 MiB)
 *   0x0100_0000  data area   (to the end of RAM; the program's to use)
 */
#ifndef FERRY_GUEST_ABI_H
#define FERRY_GUEST_ABI_H

#ifndef __ASSEMBLER__
#include <stdint.h>
#endif

#define FERRY_PAGE_SIZE        4096ull
#define FERRY_MAX_VCPUS        64u

#define FERRY_GDT_GPA          0x1000ull
#define FERRY_IDT_GPA          0x2000ull
#define FERRY_BOOTINFO_GPA     0x3000ull
#define FERRY_TSS_GPA          0x4000ull
#define FERRY_TSS_STRIDE       256ull
#define FERRY_PML4_GPA         0x8000ull
#define FERRY_PDPT_GPA         0x9000ull
#define FERRY_PT0_GPA          0xA000ull
#define FERRY_PD_GPA           0xB000ull      /* one PD per GiB of RAM */
#define FERRY_PT_STACKS_GPA    0x4B000ull     /* 4 KiB pages for the stacks */
#define FERRY_DEVICE_GPA       0x100000ull
#define FERRY_STACKS_GPA       0x200000ull
#define FERRY_STACK_PER_VCPU   0x8000ull
#define FERRY_STACK_RING0      0x2000ull      /* low part of each slot */
#define FERRY_STACK_GUARD      0x1000ull      /* one unmapped page */
#define FERRY_IMAGE_GPA        0x400000ull
#define FERRY_IMAGE_END        0x1000000ull
#define FERRY_DATA_GPA         0x1000000ull

#define FERRY_MIN_MEM          (32ull << 20)
#define FERRY_MAX_MEM          (64ull << 30)  /* the PD area holds 64 PDs */

/* Segment selectors the VMM puts in the GDT. */
#define FERRY_SEL_KCODE        0x08
#define FERRY_SEL_KDATA        0x10
#define FERRY_SEL_UDATA        0x23           /* 0x20 | RPL 3 */
#define FERRY_SEL_UCODE        0x2b           /* 0x28 | RPL 3 */
#define FERRY_SEL_TSS(cpu)     (0x30 + 16 * (cpu))

/*
 * I/O ports.  A guest->host call ("ucall") is one 32-bit OUT to
 * FERRY_PORT_UCALL whose value is the guest-physical address of a
 * struct ferry_ucall.  The ring-0 exception stubs OUT the address of their
 * struct ferry_exc_frame to FERRY_PORT_EXCEPTION.
 */
#define FERRY_PORT_BASE        0xE0
#define FERRY_PORT_COUNT       32
#define FERRY_PORT_UCALL       0xE0
#define FERRY_PORT_EXCEPTION   0xE4
#define FERRY_PORT_VMBUS       0xE8   /* VMBus control: guest/vmbus_abi.h */
#define FERRY_PORT_DOORBELL    0xEC   /* VMBus doorbell: channel id */

#ifndef __ASSEMBLER__
enum ferry_ucall_nr {
	FERRY_UC_PRINT = 1,     /* a0 = gpa of text, a1 = length            */
	FERRY_UC_EXIT,          /* a0 = status: the whole VM ends            */
	FERRY_UC_DONE,          /* a0 = status: this vCPU is finished        */
	FERRY_UC_ASSERT,        /* a0/a1 file, a2 line, a3/a4 message        */
	FERRY_UC_PROGRESS,      /* a0/a1 key, a2 value                      */
	FERRY_UC_HALT,          /* a0 = microseconds to sleep at most       */
	FERRY_UC_NR_MAX
};

#endif /* !__ASSEMBLER__ */

#define FERRY_UCALL_MAX_TEXT   4096u  /* longest string one ucall may pass */
#define FERRY_PROGRESS_KEY_MAX 32u

#ifndef __ASSEMBLER__
struct ferry_ucall {
	uint32_t nr;
	uint32_t cpu;
	uint64_t args[5];
	uint64_t ret;
};

/* Pushed by the ring-0 stubs; the host reads it to report the fault. */
struct ferry_exc_frame {
	uint64_t cr2;
	uint64_t vector;
	uint64_t error_code;
	uint64_t rip;
	uint64_t cs;
	uint64_t rflags;
	uint64_t rsp;
	uint64_t ss;
};
#endif /* !__ASSEMBLER__ */

/*
 * The image header sits at the very start of the image (FERRY_IMAGE_GPA).
 * The VMM reads it after loading the ELF to find the ring-0 entry point and
 * the interrupt stubs it points the IDT at, and to check guest arguments.
 */
#define FERRY_IMAGE_MAGIC      0x5453474752524546 /* "FERRGGST" LE */
#define FERRY_ABI_VERSION      1u
#define FERRY_ISR_STUB_SIZE    16u

#ifndef __ASSEMBLER__
struct ferry_image_header {
	uint64_t magic;
	uint32_t abi_version;
	uint32_t isr_stub_size;
	uint64_t entry;           /* ring-0 entry, per vCPU               */
	uint64_t isr_stubs;       /* 256 stubs, isr_stub_size apart       */
	char name[32];            /* program name, NUL terminated          */
	char args[192];           /* accepted argument keys, comma separated */
};
#endif /* !__ASSEMBLER__ */

/*
 * Boot information, written by the VMM before the first vCPU runs.  Guest
 * arguments are "key=value" strings packed one after another, each ending in
 * a NUL.  The host bumps `stop_request` when it asks the program to finish
 * (control command `shutdown`) and `host_seq` when a test harness wants the
 * guest to move to its next iteration.
 */
#define FERRY_BOOTINFO_MAGIC   0x4f464e49544f4f42ull /* "BOOTINFO" LE */
#define FERRY_ARGS_MAX         2048u

#ifndef __ASSEMBLER__
struct ferry_bootinfo {
	uint64_t magic;
	uint32_t version;
	uint32_t ncpus;
	uint64_t mem_size;
	uint64_t data_base;
	uint64_t data_end;
	uint64_t tsc_khz;
	uint32_t nargs;
	uint32_t args_len;
	volatile uint64_t stop_request;
	volatile uint64_t host_seq;
	uint64_t reserved[8];
	char args[FERRY_ARGS_MAX];
};
#endif /* !__ASSEMBLER__ */

/* Exit statuses ferry reports for guest failures (others are the guest's). */
#define FERRY_STATUS_ASSERT    134    /* like a process killed by SIGABRT */
#define FERRY_STATUS_EXCEPTION 139    /* like a process killed by SIGSEGV */

#endif
