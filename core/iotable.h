/*
 * Port-I/O and MMIO dispatch.  Devices register address ranges with a
 * handler before the vCPUs start; the table is then read-only, so vCPU
 * threads look handlers up without a lock.
 */
#ifndef FERRY_IOTABLE_H
#define FERRY_IOTABLE_H

#include <stdbool.h>
#include <stdint.h>

struct vcpu;

/*
 * Called on the vCPU's thread.  For a write, `data` holds `size` bytes the
 * guest wrote; for a read the handler fills them.  `addr` is the port or
 * guest-physical address of the access.
 */
typedef void (*io_handler_fn)(struct vcpu *vcpu, uint64_t addr, bool is_write,
			      uint8_t *data, unsigned size, void *opaque);

struct io_range {
	uint64_t base;
	uint64_t len;
	const char *name;
	io_handler_fn fn;
	void *opaque;
};

#define IOTABLE_MAX 64

struct iotable {
	struct io_range ranges[IOTABLE_MAX];
	unsigned n;
};

/* -EEXIST if the range overlaps one already registered, -ENOSPC if full. */
int iotable_register(struct iotable *t, uint64_t base, uint64_t len,
		     const char *name, io_handler_fn fn, void *opaque);
/* The range that holds all of [addr, addr+size), or NULL. */
const struct io_range *iotable_find(const struct iotable *t, uint64_t addr,
				    unsigned size);

#endif
