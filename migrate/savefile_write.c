/*
 * Writing a save file.  The VM is paused for the whole save: what lands in
 * the file is one instant.  Order of work:
 *
 *   1. capture the vCPU/VM/device state and encode the sections before RAM,
 *      with room for HOT_PIECES (the pieces the vCPUs touch first);
 *   2. create a temporary file beside the target and write those sections;
 *   3. for every 2 MiB block of RAM with written pages (SEEK_DATA on the
 *      memfd, so never-written memory is not even read): copy it out of
 *      guest RAM, find its non-zero pages, checksum the copy, write the
 *      non-zero pages at their place in the RAM area (zero pages become
 *      holes); a hot piece's checksum is taken from the same copy;
 *   4. write HOT_PIECES and the RAM map into the room left for them, then
 *      END;
 *   5. fsync, rename over the target, fsync the directory.
 *
 * The copy in step 3 is what makes the checksum match the file even if
 * something in the host writes guest RAM meanwhile (a control command, a
 * device).  Any failure unlinks the temporary file; the target is only
 * ever replaced by a complete, synced file.
 */
#include "savefile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "../core/util.h"
#include "pages.h"
#include "ramscan.h"

#define WRITEBACK_CHUNK (32ull << 20)

struct writer {
	struct vm *vm;
	const char *path;
	struct sf_progress *pr;
	uint64_t max_bandwidth;
	int dirfd, fd;
	char tmpname[NAME_MAX + 1];     /* inside dirfd */
	uint64_t pause_tsc;             /* the pause instant the VM must keep */
	struct dbuf head;               /* preamble + sections before RAM_MAP */
	uint32_t nsections;
	uint64_t hot_off;               /* of HOT_PIECES in head */
	unsigned nhot;
	uint64_t hot_gpa[SF_HOT_MAX], hot_csum[SF_HOT_MAX];
	uint64_t map_off, ram_off;
	uint32_t nblocks;
	uint16_t *block_pages;
	uint64_t *block_csum;
	uint64_t *data_bm;              /* pages in written extents of the memfd */
	uint8_t *buf;                   /* one block, copied out of guest RAM */
	uint64_t flushed;               /* writeback started up to here */
	uint64_t t_start;
	struct sf_save_result res;
};

/* Appends section s (its length and checksum filled in here) to b. */
static void add_section(struct dbuf *b, struct mig_section s, const void *payload, size_t len)
{
	uint8_t *hdr = dbuf_reserve(b, MIG_SECTION_HDR_SIZE);

	if (!hdr)
		return;
	s.length = len;
	s.payload_csum = mig_csum32(payload, len);
	mig_section_encode(&s, hdr);
	b->len += MIG_SECTION_HDR_SIZE;
	dbuf_put(b, payload, len);
}

/* A section of the file; each is counted once, for END. */
static void put_section(struct writer *w, struct dbuf *b, uint32_t type, uint32_t id,
			uint32_t version, const void *payload, size_t len)
{
	add_section(b, (struct mig_section){ .type = type, .id = id, .version = version },
		    payload, len);
	w->nsections++;
}

static const uint8_t *ram_page(void *opaque, uint64_t gpa, int *rc)
{
	const struct writer *w = opaque;

	(void)rc;
	return w->vm->mem.hva + gpa;
}

/*
 * The pieces the saved vCPUs touch first.  Their checksums are filled in
 * as the RAM is written, from the same copy (save_block); until then they
 * are those of zeros, which is what a piece in a block without data holds.
 */
static int find_hot(struct writer *w, const struct vm_state *st)
{
	uint64_t pages[SF_HOT_MAX];
	int n = sf_hot_pages(st, w->vm->ncpus, w->vm->mem.size, ram_page, w, pages, SF_HOT_MAX);

	if (n < 0)
		return n;
	w->nhot = sf_hot_pieces_of(pages, (unsigned)n, w->hot_gpa);
	for (unsigned i = 0; i < w->nhot; i++)
		w->hot_csum[i] = sf_zero_piece_csum();
	return 0;
}

static void put_hot(struct writer *w, struct dbuf *b, bool count)
{
	struct dbuf p;

	dbuf_init(&p);
	dbuf_put_le32(&p, SF_PIECE_SIZE);
	dbuf_put_le32(&p, w->nhot);
	for (unsigned i = 0; i < w->nhot; i++) {
		dbuf_put_le64(&p, w->hot_gpa[i]);
		dbuf_put_le64(&p, w->hot_csum[i]);
	}
	if (p.failed)
		b->failed = true;
	else
		add_section(b, (struct mig_section){ .type = MIG_SEC_HOT_PIECES,
						     .flags = MIG_SECF_OPTIONAL,
						     .version = SF_HOT_VERSION },
			    p.data, p.len);
	if (count)
		w->nsections++;
	dbuf_free(&p);
}

/* Step 1: everything before the RAM map, into w->head. */
static int encode_state(struct writer *w)
{
	struct vm *vm = w->vm;
	struct mig_vmdesc *d = calloc(1, sizeof(*d));
	uint8_t pre[MIG_PREAMBLE_SIZE];
	struct vm_state st;
	struct dbuf buf;
	int rc;

	if (!d)
		return -ENOMEM;
	rc = vm_state_alloc(&st, vm->ncpus);
	if (rc) {
		free(d);
		return rc;
	}
	dbuf_init(&buf);
	rc = vm_capture(vm, &st);
	if (rc) {
		rc = sf_errwrap(rc, "capturing the VM state");
		goto out;
	}
	mig_preamble_encode(pre);
	put_le32(pre + 12, SF_PREAMBLE_SAVE_FILE);
	dbuf_put(&w->head, pre, sizeof(pre));
	mig_vmdesc_from_vm(vm, d);
	d->nchannels = 1;
	snprintf(d->dirty_log, sizeof(d->dirty_log), "%s", vm->dirty_log);
	mig_vmdesc_encode(d, &buf);
	put_section(w, &w->head, MIG_SEC_VMDESC, 0, MIG_VMDESC_VERSION, buf.data, buf.len);
	dbuf_reset(&buf);
	mig_vm_state_encode(&st, &buf);
	put_section(w, &w->head, MIG_SEC_VM_STATE, 0, MIG_STATE_VERSION, buf.data, buf.len);
	for (unsigned i = 0; i < vm->ncpus; i++) {
		dbuf_reset(&buf);
		mig_vcpu_state_encode(&st.vcpus[i], &buf);
		put_section(w, &w->head, MIG_SEC_VCPU_STATE, i, MIG_STATE_VERSION, buf.data,
			    buf.len);
	}
	for (unsigned i = 0; i < vm->ndevices; i++) {
		const struct vm_device *dev = &vm->devices[i];

		dbuf_reset(&buf);
		dbuf_put_str(&buf, dev->ops->name, VM_DEVICE_NAME_MAX);
		rc = dev->ops->save(dev->opaque, &buf);
		if (rc) {
			rc = sf_errwrap(rc, "saving device %s", dev->ops->name);
			goto out;
		}
		put_section(w, &w->head, MIG_SEC_DEVICE, i, dev->ops->version, buf.data, buf.len);
	}
	rc = find_hot(w, &st);
	if (rc) {
		rc = sf_errwrap(rc, "finding the pages the vCPUs touch first");
		goto out;
	}
	w->hot_off = w->head.len;
	put_hot(w, &w->head, true);
	if (buf.failed || w->head.failed)
		rc = -ENOMEM;
out:
	dbuf_free(&buf);
	vm_state_free(&st);
	free(d);
	return rc;
}

static int write_at(struct writer *w, const void *p, size_t len, uint64_t off)
{
	const uint8_t *b = p;

	while (len) {
		ssize_t n = pwrite(w->fd, b, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ferr_sys(errno, "writing %zu bytes at byte %llu", len,
					(unsigned long long)off);
		if (n == 0)
			return ferr(EIO, "writing at byte %llu made no progress",
				    (unsigned long long)off);
		b += n;
		len -= (size_t)n;
		off += (uint64_t)n;
		atomic_fetch_add(&w->pr->bytes_written, (uint64_t)n);
	}
	return 0;
}

/* Marks in data_bm every page lying in a written extent of guest RAM. */
static int scan_extents(struct writer *w)
{
	uint64_t pages;
	int rc = mig_mark_written(&w->vm->mem, w->data_bm, &pages);

	if (!rc)
		atomic_store(&w->pr->ram_total, pages << GMEM_PAGE_SHIFT);
	return rc;
}

/* The VM must still be stopped at the instant the state was captured. */
static int check_still_paused(struct writer *w)
{
	struct vm *vm = w->vm;
	bool same;

	pthread_mutex_lock(&vm->lock);
	same = (vm->state == VM_PAUSED || vm->state == VM_CREATED) &&
	       vm->pause_host_tsc == w->pause_tsc;
	pthread_mutex_unlock(&vm->lock);
	if (!same)
		return ferr(ESTALE, "the VM ran or ended while it was being saved, so the file "
			    "would not hold one instant");
	return 0;
}

/* Sleeps as long as the bandwidth limit asks; false if cancelled. */
static bool pace(struct writer *w)
{
	uint64_t want_ns, elapsed;

	if (!w->max_bandwidth)
		return true;
	want_ns = (uint64_t)((double)atomic_load(&w->pr->bytes_written) * 1e9 /
			     (double)w->max_bandwidth);
	while ((elapsed = now_ns() - w->t_start) < want_ns) {
		uint64_t d = MIN(want_ns - elapsed, 50000000ull);
		struct timespec ts = { 0, (long)d };

		if (atomic_load(&w->pr->cancel))
			return false;
		nanosleep(&ts, NULL);
	}
	return true;
}

/* Step 3 for one block. */
static int save_block(struct writer *w, uint32_t b)
{
	const struct guest_mem *m = &w->vm->mem;
	uint64_t first = (uint64_t)b * SF_BLOCK_PAGES, words = SF_BLOCK_PAGES / 64;
	uint64_t any = 0, scanned = 0;
	uint16_t stored = 0;
	int rc;

	for (uint64_t i = 0; i < words; i++)
		any |= w->data_bm[first / 64 + i];
	if (!any) {
		w->block_csum[b] = sf_zero_block_csum();
		return 0;
	}
	for (uint32_t i = 0; i < SF_BLOCK_PAGES; i++) {
		uint64_t p = first + i;
		uint8_t *dst = w->buf + (size_t)i * GMEM_PAGE_SIZE;

		if ((w->data_bm[p / 64] >> (p % 64)) & 1) {
			memcpy(dst, m->hva + (p << GMEM_PAGE_SHIFT), GMEM_PAGE_SIZE);
			scanned += GMEM_PAGE_SIZE;
		} else {
			memset(dst, 0, GMEM_PAGE_SIZE);
		}
	}
	w->block_csum[b] = XXH3_64bits(w->buf, SF_BLOCK_SIZE);
	for (unsigned h = 0; h < w->nhot; h++)
		if (w->hot_gpa[h] >> SF_BLOCK_SHIFT == b)
			w->hot_csum[h] = XXH3_64bits(w->buf + (w->hot_gpa[h] - sf_block_gpa(b)),
						     SF_PIECE_SIZE);
	/* Write the runs of non-zero pages; zero pages stay holes. */
	for (uint32_t i = 0; i < SF_BLOCK_PAGES;) {
		uint32_t j;

		if (mig_page_is_zero(w->buf + (size_t)i * GMEM_PAGE_SIZE)) {
			i++;
			continue;
		}
		for (j = i + 1; j < SF_BLOCK_PAGES &&
				!mig_page_is_zero(w->buf + (size_t)j * GMEM_PAGE_SIZE); j++)
			;
		rc = write_at(w, w->buf + (size_t)i * GMEM_PAGE_SIZE,
			      (size_t)(j - i) * GMEM_PAGE_SIZE,
			      w->ram_off + sf_block_gpa(b) + (uint64_t)i * GMEM_PAGE_SIZE);
		if (rc)
			return rc;
		stored += (uint16_t)(j - i);
		i = j;
	}
	w->block_pages[b] = stored;
	atomic_fetch_add(&w->pr->ram_done, scanned);
	return 0;
}

/*
 * Starts writeback of what was written since the last call, without
 * waiting for it, once there is WRITEBACK_CHUNK of it: the disk then works
 * while the next blocks are prepared, and the final fsync has less left.
 * A hint only; the fsync reports any error.
 */
static void start_writeback(struct writer *w, uint64_t upto)
{
	if (upto < w->flushed + WRITEBACK_CHUNK)
		return;
	(void)sync_file_range(w->fd, (off_t)w->flushed, (off_t)(upto - w->flushed),
			      SYNC_FILE_RANGE_WRITE);
	w->flushed = upto;
}

static int write_ram(struct writer *w)
{
	int rc;

	rc = scan_extents(w);
	w->flushed = w->ram_off;
	for (uint32_t b = 0; b < w->nblocks && !rc; b++) {
		if (atomic_load(&w->pr->cancel))
			return ferr(ECANCELED, "the save was cancelled");
		rc = save_block(w, b);
		start_writeback(w, w->ram_off + sf_block_gpa(b + 1));
		if (!rc && (b % 64 == 63))
			rc = check_still_paused(w);
		if (!rc && !pace(w))
			return ferr(ECANCELED, "the save was cancelled");
	}
	return rc;
}

/* Step 4: HOT_PIECES and the RAM map in their room, then END after the RAM area. */
static int write_map_and_end(struct writer *w)
{
	struct dbuf map, sec;
	uint8_t end[SF_END_PAYLOAD];
	uint64_t end_off = w->ram_off + w->vm->mem.size;
	int rc;

	dbuf_init(&map);
	dbuf_init(&sec);
	put_hot(w, &sec, false);
	rc = sec.failed ? -ENOMEM : write_at(w, sec.data, sec.len, w->hot_off);
	if (rc)
		goto out;
	dbuf_reset(&sec);
	dbuf_put_le64(&map, w->ram_off);
	dbuf_put_le64(&map, w->vm->mem.size);
	dbuf_put_le32(&map, SF_BLOCK_SIZE);
	dbuf_put_le32(&map, w->nblocks);
	dbuf_put_le32(&map, SF_CSUM_XXH3);
	dbuf_put_le32(&map, 0);
	for (uint32_t b = 0; b < w->nblocks; b++) {
		dbuf_put_le32(&map, w->block_pages[b] ? SF_BLOCK_DATA : 0);
		dbuf_put_le32(&map, w->block_pages[b]);
		dbuf_put_le64(&map, w->block_csum[b]);
		if (w->block_pages[b]) {
			w->res.data_blocks++;
			w->res.stored_pages += w->block_pages[b];
		}
	}
	put_section(w, &sec, MIG_SEC_RAM_MAP, 0, SF_MAP_VERSION, map.data, map.len);
	rc = map.failed || sec.failed ? -ENOMEM : write_at(w, sec.data, sec.len, w->map_off);
	w->res.file_size = end_off + MIG_SECTION_HDR_SIZE + SF_END_PAYLOAD;
	put_le64(end, w->res.file_size);
	put_le32(end + 8, w->nsections);
	put_le32(end + 12, 0);
	dbuf_reset(&sec);
	put_section(w, &sec, MIG_SEC_END, 0, SF_END_VERSION, end, sizeof(end));
	if (!rc)
		rc = sec.failed ? -ENOMEM : write_at(w, sec.data, sec.len, end_off);
out:
	dbuf_free(&map);
	dbuf_free(&sec);
	return rc;
}

/* Opens the directory of `path` and a fresh temporary file in it. */
static int create_temp(struct writer *w)
{
	char dbuf[PATH_MAX], bbuf[PATH_MAX];
	const char *dir, *base;
	struct stat sb;

	if (strlen(w->path) >= PATH_MAX || !*w->path)
		return ferr(ENAMETOOLONG, "the file name is empty or too long");
	snprintf(dbuf, sizeof(dbuf), "%s", w->path);
	snprintf(bbuf, sizeof(bbuf), "%s", w->path);
	dir = dirname(dbuf);
	base = basename(bbuf);
	if (strlen(base) + 16 > NAME_MAX || strcmp(base, "/") == 0 || strcmp(base, ".") == 0 ||
	    strcmp(base, "..") == 0)
		return ferr(EINVAL, "'%s' does not name a file", w->path);
	if (stat(w->path, &sb) == 0 && !S_ISREG(sb.st_mode))
		return ferr(EEXIST, "%s exists and is not a regular file", w->path);
	w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->dirfd < 0)
		return ferr_sys(errno, "cannot open the directory %s", dir);
	for (unsigned attempt = 0; attempt < 100; attempt++) {
		snprintf(w->tmpname, sizeof(w->tmpname), ".%s.%08x.saving", base,
			 (unsigned)(now_ns() ^ ((uint64_t)getpid() << 16) ^ attempt * 2654435761u));
		w->fd = openat(w->dirfd, w->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (w->fd >= 0 || errno != EEXIST)
			break;
	}
	if (w->fd < 0) {
		int rc = ferr_sys(errno, "cannot create a file in %s", dir);

		w->tmpname[0] = 0;
		return rc;
	}
	return 0;
}

/* Step 5. */
static int commit_file(struct writer *w)
{
	uint64_t t0 = now_ns();
	const char *base = strrchr(w->path, '/') ? strrchr(w->path, '/') + 1 : w->path;

	atomic_store(&w->pr->phase, SF_PHASE_SYNC);
	if (fsync(w->fd) < 0)
		return ferr_sys(errno, "fsync of the new file");
	if (close(w->fd) < 0) {
		w->fd = -1;
		return ferr_sys(errno, "closing the new file");
	}
	w->fd = -1;
	if (renameat(w->dirfd, w->tmpname, w->dirfd, base) < 0)
		return ferr_sys(errno, "renaming the new file into place");
	w->tmpname[0] = 0;
	/* The rename is durable only once the directory is. */
	if (fsync(w->dirfd) < 0)
		return ferr_sys(errno, "fsync of the directory");
	w->res.sync_ns = now_ns() - t0;
	return 0;
}

static int alloc_writer(struct writer *w)
{
	const struct guest_mem *m = &w->vm->mem;

	w->nblocks = (uint32_t)(m->size >> SF_BLOCK_SHIFT);
	w->block_pages = calloc(w->nblocks, sizeof(*w->block_pages));
	w->block_csum = calloc(w->nblocks, sizeof(*w->block_csum));
	w->data_bm = calloc(DIV_ROUND_UP(m->npages, 64), sizeof(uint64_t));
	w->buf = aligned_alloc(GMEM_PAGE_SIZE, SF_BLOCK_SIZE);
	return w->block_pages && w->block_csum && w->data_bm && w->buf ? 0 : -ENOMEM;
}

int sf_save(struct vm *vm, const char *path, uint64_t max_bandwidth, struct sf_progress *pr,
	    struct sf_save_result *res)
{
	struct writer w = {
		.vm = vm, .path = path, .pr = pr, .max_bandwidth = max_bandwidth,
		.dirfd = -1, .fd = -1, .t_start = now_ns(),
	};
	enum vm_run_state rs = vm_run_state(vm);
	int rc;

	dbuf_init(&w.head);
	if (rs == VM_RUNNING || rs == VM_ENDED)
		return ferr(EINVAL, "the VM must be paused to be saved (it is %s)",
			    vm_run_state_name(rs));
	if (vm->mem.size % SF_BLOCK_SIZE)
		return ferr(EINVAL, "guest RAM is not a whole number of 2 MiB blocks");
	pthread_mutex_lock(&vm->lock);
	w.pause_tsc = vm->pause_host_tsc;
	pthread_mutex_unlock(&vm->lock);
	atomic_store(&pr->phase, SF_PHASE_STATE);
	rc = alloc_writer(&w);
	if (!rc)
		rc = encode_state(&w);
	if (!rc)
		rc = create_temp(&w);
	if (rc)
		goto out;
	w.map_off = w.head.len;
	w.ram_off = w.map_off + MIG_SECTION_HDR_SIZE + SF_MAP_HDR_SIZE +
		    (uint64_t)w.nblocks * SF_MAP_ENTRY_SIZE;
	w.ram_off = (w.ram_off + SF_RAM_ALIGN - 1) / SF_RAM_ALIGN * SF_RAM_ALIGN;
	rc = write_at(&w, w.head.data, w.head.len, 0);
	atomic_store(&pr->phase, SF_PHASE_RAM);
	if (!rc)
		rc = write_ram(&w);
	if (!rc)
		rc = write_map_and_end(&w);
	if (!rc)
		rc = check_still_paused(&w);
	w.res.write_ns = now_ns() - w.t_start;
	if (!rc)
		rc = commit_file(&w);
out:
	if (rc)
		rc = sf_errwrap(rc, "saving to %s failed", path);
	if (w.fd >= 0)
		close(w.fd);
	if (w.tmpname[0] && w.dirfd >= 0)
		unlinkat(w.dirfd, w.tmpname, 0);
	if (w.dirfd >= 0)
		close(w.dirfd);
	w.res.bytes_written = atomic_load(&pr->bytes_written);
	if (!rc) {
		atomic_store(&pr->phase, SF_PHASE_DONE);
		if (res)
			*res = w.res;
	}
	dbuf_free(&w.head);
	free(w.block_pages);
	free(w.block_csum);
	free(w.data_bm);
	free(w.buf);
	return rc;
}
