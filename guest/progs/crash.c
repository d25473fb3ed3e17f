/*
 * crash: a test program that fails on purpose, in the way `kind` names, so
 * the tests can check how ferry reports each failure.
 *
 *   pf       writes to address 0, which is not mapped (#PF)
 *   gp       executes HLT in ring 3 (#GP)
 *   ud       executes UD2 (#UD)
 *   de       divides by zero (#DE)
 *   assert   fails a GASSERT
 *   exit     exits with `status`
 *   badcall  passes the host a call block outside guest RAM
 *   stack    recurses until the ring-3 stack overflows into its guard page
 */
#include "../rt/ferry_guest.h"

FERRY_PROGRAM("crash", "kind,status");

/*
 * Each frame holds 1 KiB the compiler cannot drop; 20 KiB of stack end it.
 * The limit is far beyond that, and it keeps the compiler from calling the
 * recursion endless (it is, in practice, on purpose).
 */
static uint64_t recurse(uint64_t depth, uint64_t limit)
{
	volatile uint64_t frame[128];

	frame[depth % 128] = depth;
	if (depth == limit)
		return frame[depth % 128];
	return recurse(depth + 1, limit) + frame[depth % 128];
}

int guest_main(unsigned cpu)
{
	const char *kind = garg("kind");
	uint64_t status = 3;
	volatile uint64_t zero = 0;

	if (cpu != 0)
		return 0;
	if (!kind)
		gusage_fail(cpu, "kind: missing (pf, gp, ud, de, assert, exit, badcall, stack)");
	if (strcmp(kind, "pf") == 0)
		*(volatile uint64_t *)(uintptr_t)zero = 1;
	else if (strcmp(kind, "gp") == 0)
		__asm__ volatile("hlt");
	else if (strcmp(kind, "ud") == 0)
		__asm__ volatile("ud2");
	else if (strcmp(kind, "de") == 0)
		return (int)(10 / zero);
	else if (strcmp(kind, "assert") == 0)
		GASSERT(zero == 1, "crash: asserting that %lu == 1", (unsigned long)zero);
	else if (strcmp(kind, "exit") == 0) {
		const char *s = garg("status");

		if (s && !gparse_u64(s, &status))
			gusage_fail(cpu, "status: '%s' is not a number", s);
		gexit((int)status);
	} else if (strcmp(kind, "stack") == 0) {
		return (int)recurse(0, gboot()->mem_size);
	} else if (strcmp(kind, "badcall") == 0) {
		uint32_t gpa = (uint32_t)(gboot()->mem_size - 8);

		__asm__ volatile("outl %0, %1" : : "a"(gpa), "Nd"((uint16_t)FERRY_PORT_UCALL));
	} else {
		gusage_fail(cpu, "kind: '%s' is not pf, gp, ud, de, assert, exit, badcall or stack",
			    kind);
	}
	return 0;
}
