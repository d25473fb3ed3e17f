/* The long-mode set-up the VMM writes into guest RAM. */
#include <string.h>

#include "helpers.h"

Test(boot, page_tables_map_ram_and_only_ram)
{
	struct vm *vm = tvm_create(2, 96ull << 20);

	tvm_boot(vm, "hello", NULL);
	cr_assert_eq(boot_lookup_pte(vm, 0), 0, "page 0 must stay unmapped");
	cr_assert_eq(boot_lookup_pte(vm, 0xfff), 0);
	cr_assert_eq(boot_lookup_pte(vm, 0x1000) & 7, 7, "low pages are present, writable, user");
	cr_assert_eq(boot_lookup_pte(vm, FERRY_DATA_GPA) & 0x87, 0x87, "data uses 2 MiB pages");
	cr_assert_neq(boot_lookup_pte(vm, (96ull << 20) - 1), 0);
	cr_assert_eq(boot_lookup_pte(vm, 96ull << 20), 0, "nothing past RAM is mapped");
	for (unsigned cpu = 0; cpu < 2; cpu++) {
		uint64_t slot = FERRY_STACKS_GPA + cpu * FERRY_STACK_PER_VCPU;

		cr_assert_eq(boot_lookup_pte(vm, slot), 0, "vCPU %u: ring-0 stack guard", cpu);
		cr_assert_eq(boot_lookup_pte(vm, slot + FERRY_STACK_RING0), 0,
			     "vCPU %u: ring-3 stack guard", cpu);
		cr_assert_neq(boot_lookup_pte(vm, slot + FERRY_STACK_RING0 - 1), 0);
		cr_assert_neq(boot_lookup_pte(vm, slot + FERRY_STACK_PER_VCPU - 1), 0);
	}
	vm_destroy(vm);
}

Test(boot, tss_bitmap_grants_ferry_ports_only)
{
	struct vm *vm = tvm_create(3, 64ull << 20);

	tvm_boot(vm, "hello", NULL);
	for (unsigned cpu = 0; cpu < 3; cpu++) {
		const uint8_t *tss = vm->mem.hva + FERRY_TSS_GPA + cpu * FERRY_TSS_STRIDE;
		uint16_t iopb;

		memcpy(&iopb, tss + 102, 2);
		for (unsigned port = 0; port < 256; port++) {
			bool denied = tss[iopb + port / 8] & (1u << (port % 8));
			bool ours = port >= FERRY_PORT_BASE && port < FERRY_PORT_BASE + FERRY_PORT_COUNT;

			cr_assert_eq(denied, !ours, "vCPU %u port %#x", cpu, port);
		}
		cr_assert_eq(tss[iopb + 32], 0xff, "bitmap end marker");
	}
	vm_destroy(vm);
}

Test(boot, boot_info_carries_shape_and_arguments)
{
	struct vm *vm = tvm_create(2, 64ull << 20);
	const char *const args[] = { "wss=1M", "pattern=stamp", NULL };
	const struct ferry_bootinfo *bi;

	tvm_boot(vm, "dirty", args);
	bi = (const struct ferry_bootinfo *)(vm->mem.hva + FERRY_BOOTINFO_GPA);
	cr_assert_eq(bi->magic, FERRY_BOOTINFO_MAGIC);
	cr_assert_eq(bi->ncpus, 2u);
	cr_assert_eq(bi->mem_size, 64ull << 20);
	cr_assert_eq(bi->data_base, FERRY_DATA_GPA);
	cr_assert_eq(bi->tsc_khz, vm->tsc_khz);
	cr_assert_eq(bi->nargs, 2u);
	cr_assert_str_eq(bi->args, "wss=1M");
	cr_assert_str_eq(bi->args + 7, "pattern=stamp");
	vm_destroy(vm);
}
