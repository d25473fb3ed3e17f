#include "iotable.h"

#include <errno.h>

#include "util.h"

int iotable_register(struct iotable *t, uint64_t base, uint64_t len,
		     const char *name, io_handler_fn fn, void *opaque)
{
	if (len == 0 || base + len < base)
		return ferr(EINVAL, "I/O range %s is empty or wraps", name);
	for (unsigned i = 0; i < t->n; i++) {
		const struct io_range *r = &t->ranges[i];

		if (base < r->base + r->len && r->base < base + len)
			return ferr(EEXIST, "I/O range %s [%#llx, +%llu) overlaps %s",
				    name, (unsigned long long)base,
				    (unsigned long long)len, r->name);
	}
	if (t->n == IOTABLE_MAX)
		return ferr(ENOSPC, "no room for I/O range %s", name);
	t->ranges[t->n++] = (struct io_range){
		.base = base, .len = len, .name = name, .fn = fn, .opaque = opaque,
	};
	return 0;
}

const struct io_range *iotable_find(const struct iotable *t, uint64_t addr,
				    unsigned size)
{
	for (unsigned i = 0; i < t->n; i++) {
		const struct io_range *r = &t->ranges[i];

		if (addr >= r->base && addr - r->base < r->len &&
		    size <= r->len - (addr - r->base))
			return r;
	}
	return NULL;
}
