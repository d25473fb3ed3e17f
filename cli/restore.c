/*
 * `ferry run --restore FILE [--lazy]`: build the VM a save file describes
 * and load it, eagerly or lazily.  Everything in the file but RAM is read
 * and checked before the VM is created; with --lazy, RAM blocks are checked
 * as they come in (migrate/lazy.h).  The VM is created the way an incoming
 * live migration creates it (the caller's create_vm), so the same rules
 * apply: --mem and --cpus, when given, must match the file.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../core/util.h"
#include "../migrate/lazy.h"
#include "../migrate/savefile.h"
#include "cli.h"
#include "runner.h"

#define EAGER_THREADS 2

int runner_restore(struct runner *r, const char *path, bool lazy, mig_create_vm_fn create_vm,
		   void *opaque, struct vm **out)
{
	uint64_t t0 = now_ns();
	struct sf_file *f = sf_alloc();
	const struct sf_file *saved = f;
	struct sf_lazy *lz = NULL;
	struct vm *vm = NULL;
	int rc;

	*out = NULL;
	if (!f)
		return -ENOMEM;
	rc = sf_load(f, path);
	if (rc)
		goto fail;
	if (lazy) {
		/* The loader reads the first blocks while the VM is created; it
		 * owns f from here on but keeps it until sf_lazy_free(). */
		rc = sf_lazy_prepare(f, &lz);
		f = NULL;
		if (rc)
			goto fail;
	}
	rc = create_vm(opaque, &saved->desc, &vm);
	if (rc) {
		vm = NULL;
		rc = sf_errwrap(rc, "cannot restore %s", path);
		goto fail;
	}
	rc = sf_check_vm(saved, vm);
	if (!rc && lazy)
		rc = sf_lazy_attach(lz, vm);
	else if (!rc)
		rc = sf_load_ram(saved, &vm->mem, EAGER_THREADS);
	if (!rc)
		rc = sf_load_state(saved, vm);
	if (rc)
		goto fail;
	sf_free(f);
	r->lazy = lz;
	r->restore_path = path;
	r->restore_t0 = t0;
	*out = vm;
	return 0;
fail:
	if (vm) {
		vm_end(vm, 1, "the restore failed");
		sf_lazy_free(lz);
		vm_destroy(vm);
	} else {
		sf_lazy_free(lz);
	}
	sf_free(f);
	return rc;
}

void runner_restore_started(struct runner *r, bool running)
{
	if (!r->restore_path)
		return;
	r->restore_ns = now_ns() - r->restore_t0;
	if (running)
		flog("restored %s (%s): the VM was started %.1f ms after the restore began",
		     r->restore_path, r->lazy ? "lazy" : "eager", r->restore_ns / 1e6);
	else
		flog("restored %s (%s) in %.1f ms; the VM stays paused until `resume`",
		     r->restore_path, r->lazy ? "lazy" : "eager", r->restore_ns / 1e6);
}
