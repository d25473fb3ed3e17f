/*
 * Restoring a save file into a new VM: the checks that must pass before
 * anything is loaded, the eager RAM load, and the device, vCPU and VM state.
 * The lazy RAM load is in lazy.c.
 *
 * The eager load reads each block where it lies in the file straight into
 * guest RAM and checks it there; the VM has not run, so nothing else can
 * change those bytes between the read and the check.  Only the file's data
 * extents are read (SEEK_DATA/SEEK_HOLE), and guest RAM for them is
 * allocated with fallocate() first, which is cheaper than faulting pages
 * in one by one; holes stay holes on both sides.
 */
#include "savefile.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "../core/util.h"

int sf_check_vm(const struct sf_file *f, struct vm *vm)
{
	int rc;

	if (vm->mem.size != f->desc.mem_size || vm->ncpus != f->desc.ncpus)
		return ferr(EINVAL, "the VM has %llu bytes of RAM and %u vCPUs; %s holds %llu "
			    "and %u", (unsigned long long)vm->mem.size, vm->ncpus, f->path,
			    (unsigned long long)f->desc.mem_size, f->desc.ncpus);
	rc = mig_vmdesc_check(&f->desc, vm);
	if (rc)
		return sf_errwrap(rc, "this host cannot run the VM saved in %s", f->path);
	for (unsigned i = 0; i < f->ndev; i++) {
		const struct vm_device *dev = vm_device_find(vm, f->dev[i].name);

		if (!dev)
			return ferr(ENOENT, "%s holds a device '%s' that this VM lacks", f->path,
				    f->dev[i].name);
		if (f->dev[i].version > dev->ops->version)
			return ferr(ENOTSUP, "%s holds device %s state version %u; this ferry reads "
				    "up to %u", f->path, f->dev[i].name, f->dev[i].version,
				    dev->ops->version);
	}
	for (unsigned i = 0; i < vm->ndevices; i++) {
		bool found = false;

		for (unsigned j = 0; j < f->ndev && !found; j++)
			found = strcmp(f->dev[j].name, vm->devices[i].ops->name) == 0;
		if (!found)
			return ferr(ENOENT, "%s holds no state for device '%s'", f->path,
				    vm->devices[i].ops->name);
	}
	return 0;
}

int sf_load_state(const struct sf_file *f, struct vm *vm)
{
	int rc;

	for (unsigned i = 0; i < f->ndev; i++) {
		const struct sf_device_state *d = &f->dev[i];
		const struct vm_device *dev = vm_device_find(vm, d->name);

		if (!dev)
			return ferr(ENOENT, "%s holds a device '%s' that this VM lacks", f->path,
				    d->name);
		rc = dev->ops->load(dev->opaque, d->version, d->data, d->len);
		if (rc)
			return sf_errwrap(rc, "loading device %s from %s", d->name, f->path);
	}
	rc = vm_restore(vm, &f->st, true);
	if (rc)
		return sf_errwrap(rc, "restoring the vCPU state from %s", f->path);
	return 0;
}

struct ram_job {
	const struct sf_file *f;
	struct guest_mem *m;
	_Atomic uint32_t next;
	_Atomic bool failed;
	pthread_mutex_t lock;
	int rc;
	char msg[512];
};

static void job_fail(struct ram_job *j, int rc)
{
	pthread_mutex_lock(&j->lock);
	if (!j->rc) {
		j->rc = rc;
		snprintf(j->msg, sizeof(j->msg), "%s", ferr_msg(rc));
	}
	pthread_mutex_unlock(&j->lock);
	atomic_store(&j->failed, true);
}

static void hash_zeros(XXH3_state_t *h, uint64_t len)
{
	static const uint8_t zero[GMEM_PAGE_SIZE];

	while (len) {
		uint64_t n = MIN(len, sizeof(zero));

		XXH3_64bits_update(h, zero, n);
		len -= n;
	}
}

/* Reads [off, off+len) of the file into guest RAM at gpa, allocated first. */
static int read_into_ram(const struct sf_file *f, struct guest_mem *m, uint64_t off,
			 uint64_t gpa, uint64_t len)
{
	/* Errors other than "not supported" surface below as a failed read. */
	(void)fallocate(m->fd, 0, (off_t)gpa, (off_t)len);
	return sf_read_at(f, m->hva + gpa, len, off, "the RAM area");
}

/*
 * One block: each data extent of the file inside it goes to guest RAM; the
 * checksum runs over those bytes in RAM and zeros for the holes.
 */
static int load_block(struct ram_job *j, uint32_t b, XXH3_state_t *h, uint8_t *scratch)
{
	const struct sf_file *f = j->f;
	uint64_t gpa = sf_block_gpa(b), start = f->ram_off + gpa, end = start + SF_BLOCK_SIZE;
	uint64_t pos = start;
	int rc;

	if (!f->block_pages[b]) {
		off_t d = lseek(f->fd, (off_t)start, SEEK_DATA);

		/* A block stored as empty must read as zeros: check any data there. */
		if (d >= 0 && (uint64_t)d < end)
			return sf_read_block(f, b, scratch);
		return 0;
	}
	XXH3_64bits_reset(h);
	while (pos < end) {
		off_t d = lseek(f->fd, (off_t)pos, SEEK_DATA), e;
		uint64_t from, to;

		if (d < 0 && errno == ENXIO)
			break;
		if (d < 0) {
			/* No hole support: the whole rest is data. */
			d = (off_t)pos;
			e = (off_t)end;
		} else {
			e = lseek(f->fd, d, SEEK_HOLE);
			if (e < 0)
				e = (off_t)end;
		}
		from = MAX(pos, (uint64_t)d / GMEM_PAGE_SIZE * GMEM_PAGE_SIZE);
		if (from >= end)
			break;
		to = MIN(end, ((uint64_t)e + GMEM_PAGE_SIZE - 1) / GMEM_PAGE_SIZE * GMEM_PAGE_SIZE);
		hash_zeros(h, from - pos);
		rc = read_into_ram(f, j->m, from, gpa + (from - start), to - from);
		if (rc)
			return rc;
		XXH3_64bits_update(h, j->m->hva + gpa + (from - start), to - from);
		pos = to;
	}
	hash_zeros(h, end - pos);
	if (XXH3_64bits_digest(h) != f->block_csum[b])
		return ferr(EBADMSG, "%s is corrupt: RAM block %u (guest-physical %#llx to %#llx) "
			    "fails its checksum", f->path, b, (unsigned long long)gpa,
			    (unsigned long long)(gpa + SF_BLOCK_SIZE - 1));
	return 0;
}

static void *ram_worker(void *arg)
{
	struct ram_job *j = arg;
	XXH3_state_t *h = XXH3_createState();
	uint8_t *scratch = malloc(SF_BLOCK_SIZE);
	uint32_t b;

	if (!h || !scratch) {
		job_fail(j, -ENOMEM);
		goto out;
	}
	while (!atomic_load(&j->failed) && (b = atomic_fetch_add(&j->next, 1)) < j->f->nblocks) {
		int rc = load_block(j, b, h, scratch);

		if (rc)
			job_fail(j, rc);
	}
out:
	XXH3_freeState(h);
	free(scratch);
	return NULL;
}

int sf_load_ram(const struct sf_file *f, struct guest_mem *m, unsigned threads)
{
	struct ram_job j = { .f = f, .m = m };
	pthread_t th[8];
	bool started[8] = { false };

	if (m->size != f->ram_size)
		return ferr(EINVAL, "guest RAM is %llu bytes, %s holds %llu",
			    (unsigned long long)m->size, f->path, (unsigned long long)f->ram_size);
	pthread_mutex_init(&j.lock, NULL);
	threads = MAX(1u, MIN(threads, 8u));
	for (unsigned t = 1; t < threads; t++)
		started[t] = pthread_create(&th[t], NULL, ram_worker, &j) == 0;
	ram_worker(&j);
	for (unsigned t = 1; t < threads; t++)
		if (started[t])
			pthread_join(th[t], NULL);
	pthread_mutex_destroy(&j.lock);
	if (j.rc)
		return ferr(j.rc, "%s", j.msg);
	/* A lazy restore would check these; an eager one must agree with it. */
	return sf_check_hot_ram(f, m->hva);
}
