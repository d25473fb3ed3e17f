#include "devices.h"

#include <errno.h>
#include <string.h>

#include "util.h"
#include "vm.h"

int vm_device_register(struct vm *vm, const struct vm_device_ops *ops, void *opaque)
{
	if (!ops->name || !*ops->name || strlen(ops->name) >= VM_DEVICE_NAME_MAX)
		return ferr(EINVAL, "device name '%s' is empty or too long", ops->name ? ops->name : "");
	if (vm_device_find(vm, ops->name))
		return ferr(EEXIST, "device '%s' is registered twice", ops->name);
	if (vm->ndevices == VM_DEVICES_MAX)
		return ferr(ENOSPC, "too many devices");
	vm->devices[vm->ndevices++] = (struct vm_device){ .ops = ops, .opaque = opaque };
	return 0;
}

const struct vm_device *vm_device_find(struct vm *vm, const char *name)
{
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (strcmp(vm->devices[i].ops->name, name) == 0)
			return &vm->devices[i];
	return NULL;
}
