/* hello: every vCPU greets the host and finishes; the VM exits 0. */
#include "../rt/ferry_guest.h"

FERRY_PROGRAM("hello", "");

int guest_main(unsigned cpu)
{
	gprintf("hello from ferry guest: vCPU %u of %u, %lu MiB of RAM\n", cpu,
		gncpus(), (unsigned long)(gboot()->mem_size >> 20));
	return 0;
}
