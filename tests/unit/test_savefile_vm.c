/*
 * Saving and restoring real VMs: eager and lazy restores give the source's
 * memory page by page and a guest that verifies itself; device state comes
 * back; a damaged block found by the lazy loader ends the VM, a damaged
 * hot piece refuses the restore, a file without hot pieces still restores
 * lazily; write
 * errors, cancels and a VM that runs again during a save leave no file and
 * the VM as it was; the save job's pause/resume policy.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "migrate/lazy.h"
#include "test_savefile.h"

static const char *const dirty_args[] = { "wss=16M", "pattern=random", "report_ms=20", NULL };

/* A VM of the saved shape with the test device, restored from t->path. */
static struct vm *restore_eager(const struct tsf *t)
{
	struct vm *vm = tvm_create(t->src->ncpus, TSF_MEM);
	int rc;
	struct sf_file *f = tsf_open(t->path, &rc);

	cr_assert_eq(rc, 0, "%s", ferr_msg(rc));
	tsf_add_device(vm, 1);
	rc = sf_check_vm(f, vm);
	if (!rc)
		rc = sf_load_ram(f, &vm->mem, 2);
	if (!rc)
		rc = sf_load_state(f, vm);
	cr_assert_eq(rc, 0, "eager restore: %s", ferr_msg(rc));
	sf_free(f);
	return vm;
}

static struct vm *restore_lazy(const char *path, unsigned ncpus, struct sf_lazy **lz)
{
	struct vm *vm = tvm_create(ncpus, TSF_MEM);
	const struct sf_file *saved;
	int rc;
	struct sf_file *f = tsf_open(path, &rc);

	cr_assert_eq(rc, 0, "%s", ferr_msg(rc));
	tsf_add_device(vm, 1);
	cr_assert_eq(sf_check_vm(f, vm), 0, "%s", ferr_msg(-1));
	saved = f;
	rc = sf_lazy_start(f, vm, lz);
	cr_assert_eq(rc, 0, "lazy start: %s", ferr_msg(rc));
	rc = sf_load_state(saved, vm);
	cr_assert_eq(rc, 0, "lazy state: %s", ferr_msg(rc));
	return vm;
}

static void assert_same_memory(struct vm *a, struct vm *b, const char *what)
{
	for (uint64_t p = 0; p < a->mem.npages; p++)
		cr_assert(memcmp(a->mem.hva + p * GMEM_PAGE_SIZE, b->mem.hva + p * GMEM_PAGE_SIZE,
				 GMEM_PAGE_SIZE) == 0, "%s: page %llu differs", what,
			  (unsigned long long)p);
}

/* Lets a restored VM run, asks it to stop: it must verify its memory. */
static void run_and_verify(struct vm *vm)
{
	char msg[256];

	cr_assert_eq(vm_resume(vm), 0);
	tsleep_ms(150);
	tvm_request_stop(vm);
	cr_assert_eq(tvm_wait_end(vm, 20000, msg, sizeof(msg)), 0, "the guest failed: %s", msg);
}

/* Ends the saved source, lets the lazily restored VM run and verify, frees both. */
static void run_lazy_in_place_of_source(struct tsf *t, struct vm *vm, struct sf_lazy *lz)
{
	vm_end(t->src, 0, "saved");
	run_and_verify(vm);
	sf_lazy_free(lz);
	vm_destroy(vm);
}

Test(savefile_vm, eager_restore_is_the_source_page_by_page_and_runs_on)
{
	struct tsf t;
	struct vm *dst;

	tsf_make(&t, 2, "dirty", dirty_args, 150);
	memset(tsf_dev_loaded, 0, sizeof(tsf_dev_loaded));
	dst = restore_eager(&t);
	assert_same_memory(t.src, dst, "eager restore");
	cr_assert_str_eq(tsf_dev_loaded, TSF_DEV_STATE, "the device state did not come back");
	vm_end(t.src, 0, "saved");
	run_and_verify(dst);
	vm_destroy(dst);
	tsf_cleanup(&t);
}

Test(savefile_vm, lazy_and_eager_restores_give_the_same_memory)
{
	struct tsf t;
	struct sf_lazy_stats st;
	struct sf_lazy *lz;
	struct vm *eager, *lazy;

	tsf_make(&t, 4, "dirty", dirty_args, 150);
	eager = restore_eager(&t);
	lazy = restore_lazy(t.path, 4, &lz);
	/* This thread's reads fault the lazy VM's pages in, one by one. */
	assert_same_memory(eager, lazy, "lazy against eager");
	assert_same_memory(t.src, lazy, "lazy against the source");
	cr_assert_eq(sf_lazy_wait(lz, NULL), 0, "%s", ferr_msg(-1));
	sf_lazy_query(lz, &st);
	cr_assert(st.complete && !st.failed && st.data_blocks > 0 &&
		  st.blocks_done == st.data_blocks, "lazy load incomplete");
	/* Faults and the fill read each block once; the first instructions'
	 * pieces were read alone, 64 KiB each, before the VM ran. */
	cr_assert_eq(st.bytes_read, st.data_blocks * SF_BLOCK_SIZE, "a block was read twice");
	cr_assert(st.hot_read_bytes > 0 && st.hot_read_bytes % SF_PIECE_SIZE == 0 &&
		  st.hot_read_bytes <= SF_HOT_MAX * SF_PIECE_SIZE &&
		  st.hot_read_bytes < SF_BLOCK_SIZE,
		  "%llu bytes read for the first instructions",
		  (unsigned long long)st.hot_read_bytes);
	run_lazy_in_place_of_source(&t, lazy, lz);
	vm_destroy(eager);
	tsf_cleanup(&t);
}

Test(savefile_vm, lazy_restore_runs_at_once_and_loads_everything)
{
	struct tsf t;
	struct sf_lazy_stats st;
	struct sf_lazy *lz;
	struct vm *vm;

	tsf_make(&t, 2, "dirty", dirty_args, 150);
	vm_end(t.src, 0, "saved");
	vm = restore_lazy(t.path, 2, &lz);
	run_and_verify(vm);
	cr_assert_eq(sf_lazy_wait(lz, NULL), 0, "%s", ferr_msg(-1));
	sf_lazy_query(lz, &st);
	cr_assert(st.faults > 0, "the running guest never faulted a page in");
	sf_lazy_free(lz);
	vm_destroy(vm);
	tsf_cleanup(&t);
}

Test(savefile_vm, lazy_loader_ends_the_vm_on_a_damaged_block)
{
	struct tsf t;
	struct sf_lazy *lz;
	struct vm *vm;
	char msg[512], want[64];
	uint32_t bad = UINT32_MAX;
	int rc;
	struct sf_file *f;

	tsf_make(&t, 1, "dirty", dirty_args, 100);
	f = tsf_open(t.path, &rc);
	for (uint32_t b = 0; b < f->nblocks; b++)
		if (f->block_pages[b])
			bad = b;
	tsf_flip(t.path, f->ram_off + sf_block_gpa(bad) + 4096 * 3 + 5, 0x40);
	sf_free(f);
	vm = restore_lazy(t.path, 1, &lz);
	rc = sf_lazy_wait(lz, NULL);
	snprintf(want, sizeof(want), "RAM block %u (guest-physical", bad);
	cr_assert_eq(rc, -EIO, "the loader took a damaged block");
	cr_assert(strstr(ferr_msg(rc), want), "%s", ferr_msg(rc));
	cr_assert_eq(vm_run_state(vm), VM_ENDED, "the VM may still run on bad memory");
	cr_assert_eq(vm_wait_end(vm, msg, sizeof(msg)), 1);
	cr_assert(strstr(msg, want), "%s", msg);
	cr_assert_neq(vm_resume(vm), 0, "an ended VM resumed");
	sf_lazy_free(lz);
	vm_destroy(vm);
	tsf_cleanup(&t);
}

/* Starts a lazy restore of path into a fresh VM; returns what sf_lazy_start said. */
static int try_lazy(const char *path, struct vm **vm, struct sf_lazy **lz)
{
	int rc;
	struct sf_file *f = tsf_open(path, &rc);

	cr_assert_eq(rc, 0, "%s", ferr_msg(rc));
	*vm = tvm_create(1, TSF_MEM);
	tsf_add_device(*vm, 1);
	*lz = NULL;
	return sf_lazy_start(f, *vm, lz);
}

/*
 * The pieces the first instructions need are checked against their own
 * checksums (HOT_PIECES) before the VM runs: damage in one of them, or a
 * listed checksum that does not match, refuses the restore and the VM
 * never runs.  The eager restore checks the same list and agrees.
 */
Test(savefile_vm, a_damaged_hot_piece_refuses_the_restore)
{
	struct tsf t;
	struct sf_lazy *lz;
	struct vm *vm;
	uint64_t gpa, hot_sec = 0;
	uint8_t b[8];
	char path[160];
	int rc;
	struct sf_file *f;

	tsf_make(&t, 1, "dirty", dirty_args, 100);
	f = tsf_open(t.path, &rc);
	cr_assert(f->nhot > 0 && f->block_pages[f->hot_gpa[0] >> SF_BLOCK_SHIFT],
		  "no hot piece holds data");
	gpa = f->hot_gpa[0];
	for (unsigned i = 0; i < f->nsec; i++)
		if (f->sec[i].s.type == MIG_SEC_HOT_PIECES)
			hot_sec = f->sec[i].offset;
	cr_assert(hot_sec);
	snprintf(path, sizeof(path), "%s/piece.save", t.dir);
	tsf_copy(t.path, path);
	tsf_flip(path, f->ram_off + gpa + 3 * GMEM_PAGE_SIZE + 9, 0x04);
	sf_free(f);
	rc = try_lazy(path, &vm, &lz);
	cr_assert_eq(rc, -EBADMSG, "the restore took a damaged hot piece: %d", rc);
	cr_assert(strstr(ferr_msg(rc), "(HOT_PIECES entry 0) fails its checksum"), "%s",
		  ferr_msg(rc));
	cr_assert_eq(vm_run_state(vm), VM_CREATED, "the VM ran");
	vm_destroy(vm);

	/* The RAM is sound but the listed checksum is not. */
	tsf_copy(t.path, path);
	put_le64(b, 0x0123456789abcdefull);
	tsf_set_payload(path, hot_sec, SF_HOT_HDR_SIZE + 8, b, sizeof(b));
	rc = try_lazy(path, &vm, &lz);
	cr_assert_eq(rc, -EBADMSG, "the lazy restore took a piece against its checksum");
	cr_assert(strstr(ferr_msg(rc), "HOT_PIECES entry 0"), "%s", ferr_msg(rc));
	cr_assert_eq(vm_run_state(vm), VM_CREATED, "the VM ran");
	vm_destroy(vm);
	f = tsf_open(path, &rc);
	vm = tvm_create(1, TSF_MEM);
	rc = sf_load_ram(f, &vm->mem, 2);
	cr_assert_eq(rc, -EBADMSG, "the eager restore took what the lazy one refuses");
	cr_assert(strstr(ferr_msg(rc), "HOT_PIECES entry 0"), "%s", ferr_msg(rc));
	vm_destroy(vm);
	sf_free(f);
	tsf_cleanup(&t);
}

/*
 * Damage in a hot piece's block but outside every hot piece is not seen
 * before the VM runs (only the pieces are read then); the loader finds it
 * when it reads that block, and ends the VM before the guest sees a byte
 * of it.
 */
Test(savefile_vm, damage_beside_the_hot_pieces_ends_the_vm_later)
{
	struct tsf t;
	struct sf_lazy *lz;
	struct vm *vm;
	char msg[512], want[64];
	uint64_t off;
	uint32_t blk;
	int rc;
	struct sf_file *f;

	tsf_make(&t, 1, "dirty", dirty_args, 100);
	f = tsf_open(t.path, &rc);
	cr_assert(f->nhot > 0);
	blk = (uint32_t)(f->hot_gpa[0] >> SF_BLOCK_SHIFT);
	cr_assert(f->block_pages[blk], "block %u holds no data", blk);
	/* The last stored byte position of the block that no hot piece holds. */
	off = sf_block_gpa(blk) + SF_BLOCK_SIZE - 100;
	while (sf_hot_find(f, off) >= 0)
		off -= SF_PIECE_SIZE;
	cr_assert_geq(off, sf_block_gpa(blk));
	tsf_flip(t.path, f->ram_off + off, 0x01);
	sf_free(f);
	rc = try_lazy(t.path, &vm, &lz);
	cr_assert_eq(rc, 0, "damage outside the hot pieces refused the start: %s", ferr_msg(rc));
	rc = sf_lazy_wait(lz, NULL);
	snprintf(want, sizeof(want), "RAM block %u (guest-physical", blk);
	cr_assert_eq(rc, -EIO, "the loader took a damaged block");
	cr_assert(strstr(ferr_msg(rc), want), "%s", ferr_msg(rc));
	cr_assert_eq(vm_wait_end(vm, msg, sizeof(msg)), 1);
	cr_assert(strstr(msg, want), "%s", msg);
	sf_lazy_free(lz);
	vm_destroy(vm);
	tsf_cleanup(&t);
}

/*
 * A file without HOT_PIECES (as from a writer that had none; here the
 * section is turned into an unknown optional one) restores lazily too: the
 * first instructions' blocks are then read and checked whole.
 */
Test(savefile_vm, a_file_without_hot_pieces_restores_lazily)
{
	struct tsf t;
	struct sf_lazy_stats st;
	struct sf_lazy *lz;
	struct vm *vm;
	int rc;
	struct sf_file *f;

	tsf_make(&t, 2, "dirty", dirty_args, 150);
	f = tsf_open(t.path, &rc);
	for (unsigned i = 0; i < f->nsec; i++)
		if (f->sec[i].s.type == MIG_SEC_HOT_PIECES)
			tsf_set_header(t.path, f->sec[i].offset, 0, 99);
	sf_free(f);
	f = tsf_open(t.path, &rc);
	cr_assert_eq(rc, 0, "%s", ferr_msg(rc));
	cr_assert(!f->have_hot && f->nhot == 0, "the section is still read as HOT_PIECES");
	sf_free(f);
	vm = restore_lazy(t.path, 2, &lz);
	assert_same_memory(t.src, vm, "lazy restore without HOT_PIECES");
	cr_assert_eq(sf_lazy_wait(lz, NULL), 0, "%s", ferr_msg(-1));
	sf_lazy_query(lz, &st);
	cr_assert(st.hot_read_bytes > 0 && st.hot_read_bytes % SF_BLOCK_SIZE == 0,
		  "%llu bytes read for the first instructions, not whole blocks",
		  (unsigned long long)st.hot_read_bytes);
	run_lazy_in_place_of_source(&t, vm, lz);
	tsf_cleanup(&t);
}

Test(savefile_vm, device_state_must_match_the_vm)
{
	static const struct vm_device_ops other = { .name = "other-dev", .version = 1 };
	struct tsf t;
	struct vm *vm;
	int rc;
	struct sf_file *f;

	tsf_make(&t, 1, "idle", (const char *const[]){ "wss=4M", NULL }, 50);
	f = tsf_open(t.path, &rc);
	vm = tvm_create(1, TSF_MEM);
	cr_assert_eq(sf_check_vm(f, vm), -ENOENT);
	cr_assert(strstr(ferr_msg(-1), "holds a device 'test-dev' that this VM lacks"), "%s",
		  ferr_msg(-1));
	vm_destroy(vm);
	vm = tvm_create(1, TSF_MEM);
	tsf_add_device(vm, 0);
	cr_assert_eq(sf_check_vm(f, vm), -ENOTSUP);
	cr_assert(strstr(ferr_msg(-1), "state version 1; this ferry reads up to 0"), "%s",
		  ferr_msg(-1));
	vm_destroy(vm);
	vm = tvm_create(1, TSF_MEM);
	tsf_add_device(vm, 1);
	cr_assert_eq(vm_device_register(vm, &other, NULL), 0);
	cr_assert_eq(sf_check_vm(f, vm), -ENOENT);
	cr_assert(strstr(ferr_msg(-1), "holds no state for device 'other-dev'"), "%s",
		  ferr_msg(-1));
	vm_destroy(vm);
	vm = tvm_create(2, TSF_MEM);
	cr_assert_eq(sf_check_vm(f, vm), -EINVAL);
	vm_destroy(vm);
	sf_free(f);
	tsf_cleanup(&t);
}

static uint64_t file_digest(const char *path)
{
	uint64_t h = 1469598103934665603ull, size = tsf_size(path);
	static uint8_t buf[1 << 16];

	for (uint64_t off = 0; off < size; off += sizeof(buf)) {
		size_t n = (size_t)MIN((uint64_t)sizeof(buf), size - off);

		tsf_read(path, off, buf, n);
		for (size_t i = 0; i < n; i++)
			h = (h ^ buf[i]) * 1099511628211ull;
	}
	return h;
}

Test(savefile_vm, a_write_error_keeps_the_earlier_file_and_leaves_nothing_else)
{
	struct sf_progress pr = { 0 };
	struct rlimit small = { 1 << 20, RLIM_INFINITY }, old;
	struct tsf t;
	uint64_t before;
	int rc;

	tsf_make(&t, 1, "dirty", dirty_args, 100);
	before = file_digest(t.path);
	/* A file-size limit makes the write fail half-way, as a full disk does. */
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	setrlimit(RLIMIT_FSIZE, &small);
	rc = sf_save(t.src, t.path, 0, &pr, NULL);
	setrlimit(RLIMIT_FSIZE, &old);
	cr_assert_eq(rc, -EFBIG, "the save did not fail: %s", ferr_msg(rc));
	cr_assert(strstr(ferr_msg(rc), "saving to") && strstr(ferr_msg(rc), "File too large"),
		  "%s", ferr_msg(rc));
	cr_assert_gt(atomic_load(&pr.bytes_written), 0, "it failed before writing anything");
	cr_assert_eq(file_digest(t.path), before, "the earlier file changed");
	cr_assert_eq(tsf_dir_entries(t.dir), 1, "a temporary file was left behind");
	cr_assert_eq(vm_run_state(t.src), VM_PAUSED);
	tsf_cleanup(&t);
}

struct bg_save {
	struct vm *vm;
	const char *path;
	struct sf_progress pr;
	int rc;
	char msg[512];
};

static void *bg_save_thread(void *arg)
{
	struct bg_save *b = arg;

	/* 4 MB/s: the 16 MiB working set takes seconds. */
	b->rc = sf_save(b->vm, b->path, 4000000, &b->pr, NULL);
	snprintf(b->msg, sizeof(b->msg), "%s", ferr_msg(b->rc));
	return NULL;
}

Test(savefile_vm, a_cancel_or_a_resume_during_a_save_leaves_no_file)
{
	struct tsf t;
	struct bg_save b;
	pthread_t th;
	char path[160];

	tsf_make(&t, 1, "dirty", dirty_args, 100);
	snprintf(path, sizeof(path), "%s/second.save", t.dir);
	b = (struct bg_save){ .vm = t.src, .path = path };
	pthread_create(&th, NULL, bg_save_thread, &b);
	tsleep_ms(300);
	atomic_store(&b.pr.cancel, true);
	pthread_join(th, NULL);
	cr_assert_eq(b.rc, -ECANCELED, "%s", b.msg);
	cr_assert_eq(tsf_dir_entries(t.dir), 1, "the cancelled save left a file");

	b = (struct bg_save){ .vm = t.src, .path = path };
	pthread_create(&th, NULL, bg_save_thread, &b);
	tsleep_ms(300);
	vm_resume(t.src);
	pthread_join(th, NULL);
	cr_assert_eq(b.rc, -ESTALE, "%s", b.msg);
	cr_assert(strstr(b.msg, "ran or ended while it was being saved"), "%s", b.msg);
	cr_assert_eq(tsf_dir_entries(t.dir), 1, "the stale save left a file");
	cr_assert_eq(sf_save(t.src, path, 0, &b.pr, NULL), -EINVAL, "saved a running VM");
	tsf_cleanup(&t);
}

static enum sf_job_state job_run(struct vm *vm, const char *path, bool resume, char *err)
{
	struct sf_job_params p = { .resume = resume };
	struct sf_job_stats st;
	struct sf_job *j;

	snprintf(p.path, sizeof(p.path), "%s", path);
	cr_assert_eq(sf_job_start(vm, &p, NULL, &j), 0);
	while (!sf_job_finished(j))
		tsleep_ms(5);
	sf_job_query(j, &st);
	snprintf(err, 512, "%s", st.error);
	sf_job_free(j);
	return st.state;
}

Test(savefile_vm, the_save_job_pauses_and_resumes_as_asked)
{
	struct tsf t;
	char path[160], err[512];

	tsf_make(&t, 1, "idle", (const char *const[]){ "wss=4M", NULL }, 50);
	snprintf(path, sizeof(path), "%s/job.save", t.dir);
	vm_resume(t.src);
	cr_assert_eq(job_run(t.src, path, true, err), SF_JOB_COMPLETED, "%s", err);
	cr_assert_eq(vm_run_state(t.src), VM_RUNNING, "a checkpoint must leave the VM running");
	cr_assert_eq(job_run(t.src, path, false, err), SF_JOB_COMPLETED, "%s", err);
	cr_assert_eq(vm_run_state(t.src), VM_PAUSED, "a save to move the VM leaves it paused");
	vm_resume(t.src);
	cr_assert_eq(job_run(t.src, "/nonexistent-dir/x.save", false, err), SF_JOB_FAILED);
	cr_assert(strstr(err, "cannot open the directory /nonexistent-dir"), "%s", err);
	cr_assert_eq(vm_run_state(t.src), VM_RUNNING, "a failed save must leave the VM running");
	tsf_cleanup(&t);
}
