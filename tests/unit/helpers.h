/* Shared set-up for unit tests that need a real VM (they all run on KVM). */
#ifndef FERRY_TEST_HELPERS_H
#define FERRY_TEST_HELPERS_H

#include <criterion/criterion.h>

#include "core/boot.h"
#include "core/loader.h"
#include "core/util.h"
#include "core/vm.h"

/* Creates a VM or fails the test with ferry's message. */
struct vm *tvm_create(unsigned ncpus, uint64_t mem);
struct vm *tvm_create_cfg(const struct vm_config *cfg);
/* Loads guest program `prog` with NULL-terminated args and sets up vCPUs. */
void tvm_boot(struct vm *vm, const char *prog, const char *const *args);
/* Asks the guest to finish (as the `shutdown` command does). */
void tvm_request_stop(struct vm *vm);
/* Waits for the VM to end; fails the test after timeout_ms. */
int tvm_wait_end(struct vm *vm, unsigned timeout_ms, char *msg, size_t len);
/* The value a guest reported for `key` on vCPU `cpu` (0 if none yet). */
uint64_t tvm_progress(struct vm *vm, unsigned cpu, const char *key);
void tsleep_ms(unsigned ms);

#endif
