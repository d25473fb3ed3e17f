/*
 * Puts a fresh VM into 64-bit long mode the way Firecracker does: the VMM
 * writes the GDT, IDT, per-vCPU TSSes, identity page tables and boot info
 * into guest RAM and loads the segment and control registers directly, so
 * the only ring-0 guest code that ever runs (slowly, through the emulator on
 * kvm_pvm) is the image's few-instruction drop to ring 3.
 */
#ifndef FERRY_BOOT_H
#define FERRY_BOOT_H

#include "../guest/abi.h"
#include "vm.h"

/* Builds descriptor tables, page tables and boot info.  Main thread. */
int boot_setup_memory(struct vm *vm, const struct ferry_image_header *hdr,
		      char *const *args, unsigned nargs);
/* Loads long-mode registers into every vCPU at the image entry point. */
int boot_setup_vcpus(struct vm *vm, const struct ferry_image_header *hdr);

/*
 * All of booting a guest program into a fresh VM: finds the image NAME,
 * loads it, checks args against it, then boot_setup_memory() and
 * boot_setup_vcpus().  For callers with nothing to do between the steps
 * (benchmarks, tests); `ferry run` takes them one by one.
 */
int boot_program(struct vm *vm, const char *name, char *const *args, unsigned nargs);

/* Page-table entry for `gpa` as the guest sees it, or 0 if not mapped. */
uint64_t boot_lookup_pte(struct vm *vm, uint64_t gpa);

#endif
