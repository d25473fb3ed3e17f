/*
 * The ring-0 stub.  Ring-0 code runs through KVM's instruction emulator on
 * kvm_pvm hosts (hundreds of times slower than native), so it does as little
 * as possible: the VMM has already built the GDT, IDT, TSS and page tables
 * and entered long mode, and this code only drops to ring 3 (with IOPL=3, so
 * the program may use port I/O) and reports exceptions.
 */
#include "../abi.h"

	.section .text.entry, "ax"
	.globl _start
_start:
	/* rdi = vCPU index, rsi = ring-3 stack top, rsp = ring-0 stack top */
	pushq	$FERRY_SEL_UDATA
	pushq	%rsi
	pushq	$0x3002			/* IOPL=3, reserved bit 1; IF stays 0 */
	pushq	$FERRY_SEL_UCODE
	leaq	ring3_start(%rip), %rax
	pushq	%rax
	iretq

ring3_start:
	xorl	%ebp, %ebp
	call	ferry_rt_start		/* never returns */
1:	ud2
	jmp	1b

/*
 * 256 interrupt stubs, FERRY_ISR_STUB_SIZE bytes apart.  Each leaves
 * [vector][error code] below the CPU's frame (a zero is pushed where the CPU
 * pushes no error code) and jumps to the common handler.
 */
	.balign	FERRY_ISR_STUB_SIZE
	.globl	ferry_isr_stubs
ferry_isr_stubs:
	.set	vec, 0
	.rept	256
	.balign	FERRY_ISR_STUB_SIZE
	.if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	pushq	$vec
	.else
	pushq	$0
	pushq	$vec
	.endif
	jmp	isr_common
	.set	vec, vec + 1
	.endr

/*
 * Completes a struct ferry_exc_frame on the ring-0 stack and hands its
 * address to the host.  The host reports the fault and ends the VM, so the
 * vCPU simply halts here.
 */
isr_common:
	movq	%cr2, %rax
	pushq	%rax
	movl	%esp, %eax
	movw	$FERRY_PORT_EXCEPTION, %dx
	outl	%eax, %dx
2:	hlt
	jmp	2b
