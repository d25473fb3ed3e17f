/*
 * Migratable device state.  A device (a VSP, say) registers a save and a
 * load function under a unique name; live and quick migration put each
 * device's state in a section of its own, carrying the device's format
 * version, so a destination can load older versions or refuse newer ones
 * by name.
 */
#ifndef FERRY_DEVICES_H
#define FERRY_DEVICES_H

#include <stddef.h>
#include <stdint.h>

#include "dbuf.h"

struct vm;

#define VM_DEVICE_NAME_MAX 32
#define VM_DEVICES_MAX 16

struct vm_device_ops {
	const char *name;
	uint32_t version;
	/* Appends the device's state.  Called with every vCPU paused. */
	int (*save)(void *opaque, struct dbuf *out);
	/*
	 * Loads state written by a save of `version`, before any vCPU runs.
	 * The bytes come from outside: check everything, return -errno with
	 * a message (ferr) on anything malformed.
	 */
	int (*load)(void *opaque, uint32_t version, const uint8_t *data, size_t len);
};

struct vm_device {
	const struct vm_device_ops *ops;
	void *opaque;
};

/* Registers a device before the VM starts.  -EEXIST on a duplicate name. */
int vm_device_register(struct vm *vm, const struct vm_device_ops *ops, void *opaque);
/* The device registered under `name`, or NULL. */
const struct vm_device *vm_device_find(struct vm *vm, const char *name);

#endif
