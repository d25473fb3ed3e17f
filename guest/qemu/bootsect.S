/*
 * The QEMU side of `ferry bench`: a boot sector that runs the same idle and
 * increment workloads as ferry's guest programs, in ring 3.  On this host
 * (kvm_pvm) ring-0 guest code runs through KVM's instruction emulator, so
 * the ring-0 part only does what ring 3 cannot: real mode -> protected mode
 * -> long mode with identity-mapped 2 MiB user pages over the low 4 GiB, a
 * GDT with ring-3 segments and a TSS, an IDT entry for #GP, and an iretq to
 * ring 3 with interrupts off.  SeaBIOS loads it at 0x7c00.
 *
 * The harness patches its parameters into this sector (struct at 0x7df0)
 * and reads the guest's counters with QMP pmemsave (status page at 0xc00):
 *
 *   0x7df0 u8  mode: 0 idle, 1 increment
 *   0x7df4 u32 working set in MiB, from 16 MiB up (below the PCI hole);
 *              idle fills it (4 MiB by default, as ferry's idle)
 *   0x0c00 u64 magic "FERRYQ01" once ring 3 runs
 *   0x0c08 u64 increment: passes over the working set
 *   0x0c10 u64 increment: pages written (a step is 64 pages)
 *   0x0c18 u64 longest TSC gap between two steps
 *   0x0c28 u64 idle: 1 once the working set is filled
 *
 * Low memory, zeroed first: IDT 0x800, TSS 0xa00, status 0xc00, PML4
 * 0x1000, PDPT 0x2000, four page directories 0x3000-0x6fff, ring-0 stack
 * below 0x7c00.  It all has to fit in 496 bytes.
 *
 * idle fills its working set (each word holds its own address) and then
 * executes hlt in ring 3: the #GP handler halts the vCPU in ring 0 for good,
 * so it sleeps in the host like ferry's idle guest.  increment adds 1 to the
 * first byte of every page, pass after pass, like ferry's `dirty`.
 */
	.set STATUS, 0xc00
	.set TSS, 0xa00
	.set IDT, 0x800
	.set PML4, 0x1000
	.set STACK0, 0x7c00
	.set WSS_BASE, 0x1000000
	.set SEL_CODE32, 0x08
	.set SEL_DATA, 0x10
	.set SEL_CODE64, 0x18
	.set SEL_UDATA, 0x20
	.set SEL_UCODE, 0x28
	.set SEL_TSS, 0x30

	.code16
	.globl _start
_start:
	cli
	xorw %ax, %ax
	movw %ax, %ds
	movw %ax, %ss
	movw $STACK0, %sp
	inb $0x92, %al                 /* fast A20 */
	orb $2, %al
	outb %al, $0x92
	lgdtl gdtr
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $SEL_CODE32, $pm32

	.code32
pm32:
	movw $SEL_DATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	xorl %eax, %eax                /* 0 to 0x7000: IVT, BDA and ours */
	xorl %edi, %edi
	movl $0x7000 / 4, %ecx
	rep stosl
	movl $PML4 + 0x1007, PML4      /* PML4[0] -> PDPT */
	movl $PML4 + 0x1000, %edi      /* PDPT[0..3] -> PDs */
	movl $PML4 + 0x2007, %eax
	movb $4, %cl
1:	stosl
	addl $4, %edi
	addl $0x1000, %eax
	loop 1b
	movl $PML4 + 0x2000, %edi
	movl $0x87, %eax               /* 2048 user 2 MiB pages: P RW US PS */
	movw $2048, %cx
2:	stosl
	addl $4, %edi
	addl $0x200000, %eax
	loop 2b
	movl $STACK0, TSS + 4          /* rsp0 */
	movl $(SEL_CODE64 << 16) + gp_handler, IDT + 13 * 16
	movl $0x8e00, IDT + 13 * 16 + 4   /* present 64-bit interrupt gate */
	movl %cr4, %eax
	orb $0x20, %al                 /* PAE */
	movl %eax, %cr4
	movl $PML4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx         /* EFER.LME */
	rdmsr
	orb $1, %ah
	wrmsr
	movl %cr0, %eax
	orl $0x80000000, %eax
	movl %eax, %cr0
	ljmpl $SEL_CODE64, $lm64

	.code64
lm64:
	lidt idtr(%rip)
	movw $SEL_TSS, %ax
	ltr %ax
	pushq $SEL_UDATA | 3
	pushq $STACK0 - 0x100
	pushq $0x2                     /* RFLAGS: IF=0, IOPL=0 */
	pushq $SEL_UCODE | 3
	pushq $ring3
	iretq

gp_handler:                        /* ring 3 asked to idle (or faulted) */
	cli
1:	hlt
	jmp 1b

ring3:
	movl $STATUS, %ebx
	movl $WSS_BASE, %r8d
	movl wss_mib(%rip), %eax
	shlq $20, %rax
	leaq (%r8, %rax), %r9
	movabsq $0x3130515952524546, %rax   /* "FERRYQ01" */
	movq %rax, (%rbx)
	rdtsc
	shlq $32, %rdx
	orq %rdx, %rax
	movq %rax, 32(%rbx)
	cmpb $0, mode(%rip)
	je idle

pass:
	movq %r8, %rsi
2:	addb $1, (%rsi)
	addq $4096, %rsi
	testl $0x3ffff, %esi           /* every 64 pages: one step */
	jnz 3f
	rdtsc
	shlq $32, %rdx
	orq %rdx, %rax
	movq %rax, %rcx
	subq 32(%rbx), %rcx
	movq %rax, 32(%rbx)
	addq $64, 16(%rbx)
	cmpq 24(%rbx), %rcx
	jbe 3f
	movq %rcx, 24(%rbx)
3:	cmpq %r9, %rsi
	jb 2b
	incq 8(%rbx)
	jmp pass

idle:
	movq %r8, %rdi
4:	movq %rdi, (%rdi)
	addq $8, %rdi
	cmpq %r9, %rdi
	jb 4b
	movb $1, 40(%rbx)
	hlt                            /* #GP: sleep in ring 0 */

	.p2align 3
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff       /* 0x08 code32 */
	.quad 0x00cf92000000ffff       /* 0x10 data */
	.quad 0x00af9a000000ffff       /* 0x18 code64 */
	.quad 0x00cff2000000ffff       /* 0x20 user data */
	.quad 0x00affa000000ffff       /* 0x28 user code64 */
	.quad 0x000089000a000067       /* 0x30 TSS at 0xa00, limit 103 */
	.quad 0
gdt_end:
gdtr:
	.word gdt_end - gdt - 1
	.long gdt
idtr:
	.word 14 * 16 - 1
	.quad IDT

	.org 0x1f0
mode:
	.byte 1                        /* 0 idle, 1 increment */
	.byte 0, 0, 0
wss_mib:
	.long 64
	.org 510
	.byte 0x55, 0xaa
