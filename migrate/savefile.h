/*
 * Quick migration: a whole VM in one file.  A save file is a migration
 * stream (migrate/stream.h) laid out for random access: the same preamble,
 * the same section headers and state encoders, and guest RAM as a flat,
 * page-aligned image so that a restore can read or map any page where it
 * lies.  docs/stream-format.md ("Save files") has the layout byte by byte;
 * docs/quick-migration.md the design.
 *
 *   preamble      "FERRYMIG", version 1, flags SF_PREAMBLE_SAVE_FILE
 *   VMDESC        the VM description (codec.h), nchannels 1
 *   VM_STATE      kvmclock and irqchips
 *   VCPU_STATE    one per vCPU, id = index, in order
 *   DEVICE        one per registered device (name[32] + the device's bytes)
 *   HOT_PIECES    optional: the 64 KiB pieces of RAM the saved vCPUs touch
 *                 first (page tables, code, stack), each with its XXH3-64,
 *                 so a lazy restore can check them without whole blocks
 *   RAM_MAP       where the RAM area is, and per 2 MiB block: stored pages
 *                 and the XXH3-64 of the block's bytes
 *   zero padding  up to the RAM area's page-aligned offset
 *   RAM area      guest-physical byte X at file offset ram_offset + X; pages
 *                 that are all zero may be holes (they read as zeros)
 *   END           u64 file size, u32 sections before END, u32 0
 *
 * Every section header and payload carries its checksum; every RAM block
 * its own.  Readers treat the file as hostile: sf_load() checks everything
 * but the RAM blocks (which sf_read_block() or sf_load_ram() check as they
 * read them) and names what is wrong, with the byte offset.
 */
#ifndef FERRY_MIG_SAVEFILE_H
#define FERRY_MIG_SAVEFILE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/cpustate.h"
#include "../core/vm.h"
#include "codec.h"
#include "stream.h"

#define SF_PREAMBLE_SAVE_FILE 0x1u       /* preamble flag: this is a save file */
#define SF_BLOCK_SHIFT 21
#define SF_BLOCK_SIZE (1u << SF_BLOCK_SHIFT)
#define SF_BLOCK_PAGES (SF_BLOCK_SIZE / GMEM_PAGE_SIZE)
#define SF_RAM_ALIGN 4096u
#define SF_MAP_VERSION 1u
#define SF_END_VERSION 1u
#define SF_MAP_HDR_SIZE 32u
#define SF_MAP_ENTRY_SIZE 16u
#define SF_END_PAYLOAD 16u
#define SF_CSUM_XXH3 1u
#define SF_BLOCK_DATA 0x1u               /* the block has pages stored in the file */
#define SF_HOT_VERSION 1u
#define SF_HOT_MAX 64u                   /* pieces a HOT_PIECES section may list */
#define SF_HOT_HDR_SIZE 8u
#define SF_HOT_ENTRY_SIZE 16u
#define SF_MAX_SECTIONS 128u

/* Prefixes this thread's last message ("prefix: message"); returns -|rc|. */
int sf_errwrap(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- writing (savefile_write.c) ---- */

enum sf_phase { SF_PHASE_STATE, SF_PHASE_RAM, SF_PHASE_SYNC, SF_PHASE_DONE };

/* Shared with a thread that watches or cancels a save. */
struct sf_progress {
	_Atomic uint64_t ram_done;      /* bytes of written extents scanned so far */
	_Atomic uint64_t ram_total;     /* bytes of written extents to scan */
	_Atomic uint64_t bytes_written; /* bytes written to the file so far */
	_Atomic int phase;              /* enum sf_phase */
	_Atomic bool cancel;            /* set by anyone: stop, leave nothing behind */
};

struct sf_save_result {
	uint64_t file_size;             /* logical size of the file */
	uint64_t bytes_written;         /* what was really written (holes excluded) */
	uint64_t data_blocks;           /* blocks holding at least one non-zero page */
	uint64_t stored_pages;
	uint64_t write_ns, sync_ns;     /* writing, then fsync + rename + fsync(dir) */
};

/*
 * Writes `vm` (paused, or created and never run) to `path` through a
 * temporary file in the same directory that is fsynced and renamed into
 * place, so an earlier file at `path` survives any failure or crash.  On
 * failure nothing is left behind.  max_bandwidth (bytes/s, 0: none) paces
 * the RAM writes.  Fails with -ESTALE if the VM ran again while being
 * saved (the file would not be one instant).  Controller thread.
 */
int sf_save(struct vm *vm, const char *path, uint64_t max_bandwidth, struct sf_progress *pr,
	    struct sf_save_result *res);

/* ---- a save on its own thread, for the control API (savefile_job.c) ---- */

struct sf_lazy;
struct sf_job;

enum sf_job_state {
	SF_JOB_WAITING,       /* for a lazy restore to bring in all of RAM */
	SF_JOB_SAVING,        /* the VM is paused and being written */
	SF_JOB_COMPLETED,
	SF_JOB_FAILED,
	SF_JOB_CANCELLED,
};

struct sf_job_params {
	char path[4096];
	bool resume;                    /* resume the VM after a successful save */
	uint64_t max_bandwidth;         /* bytes/s, 0: no limit */
};

struct sf_job_stats {
	enum sf_job_state state;
	enum sf_phase phase;
	char path[4096];
	bool resume;
	uint64_t ram_done, ram_total, bytes_written;
	uint64_t total_ns;              /* so far, or in all once finished */
	uint64_t paused_ns;             /* how long the save kept the VM paused */
	struct sf_save_result res;      /* once completed */
	char error[512];
};

const char *sf_job_state_name(enum sf_job_state s);
const char *sf_phase_name(enum sf_phase p);
/*
 * Starts saving `vm` on a thread: wait for `lazy` (if not NULL) to finish
 * loading, pause, sf_save(), then resume if asked.  A failed or cancelled
 * save puts the VM back as it was (running stays running).  Any thread.
 */
int sf_job_start(struct vm *vm, const struct sf_job_params *p, struct sf_lazy *lazy,
		 struct sf_job **out);
void sf_job_query(struct sf_job *j, struct sf_job_stats *st);
/* -EINVAL with a message if the save has already finished. */
int sf_job_cancel(struct sf_job *j);
bool sf_job_finished(struct sf_job *j);
/* Waits for the thread and frees the job. */
void sf_job_free(struct sf_job *j);

/* ---- reading (savefile_read.c) ---- */

struct sf_device_state {
	char name[VM_DEVICE_NAME_MAX];
	uint32_t version;
	uint8_t *data;
	size_t len;
};

struct sf_section_info {
	uint64_t offset;                /* of the section header in the file */
	struct mig_section s;
	bool csum_ok;                   /* its payload matches its checksum */
};

struct sf_file {
	int fd;
	char path[4096];
	uint64_t file_size;
	uint32_t version, flags;
	struct mig_vmdesc desc;
	struct vm_state st;             /* vcpus allocated once VMDESC is read */
	bool have_vm_state;
	unsigned nvcpus_read;
	struct sf_device_state dev[VM_DEVICES_MAX];
	unsigned ndev;
	/* RAM_MAP */
	bool have_map;
	uint64_t ram_off, ram_size;
	uint32_t nblocks;
	uint16_t *block_pages;          /* pages stored per block; 0: all zero */
	uint64_t *block_csum;
	uint64_t data_blocks, stored_pages;
	/* HOT_PIECES, if the file has one: piece addresses, ascending */
	bool have_hot;
	unsigned nhot;
	uint64_t hot_gpa[SF_HOT_MAX], hot_csum[SF_HOT_MAX];
	bool have_end;
	/* What was read, in file order (for `ferry inspect`). */
	struct sf_section_info sec[SF_MAX_SECTIONS];
	unsigned nsec;
};

struct sf_file *sf_alloc(void);
/*
 * Opens and checks a save file: preamble, every section (checksums,
 * versions, order, contents), the RAM map, the padding and END.  Nothing
 * of RAM is read.  On failure -errno with a message naming the file, the
 * byte offset and the problem; f keeps what was read until then.
 */
int sf_load(struct sf_file *f, const char *path);
void sf_free(struct sf_file *f);

/*
 * Reads exactly len bytes at off; a short file is reported as truncation
 * "inside <what>".  Any thread (pread only).
 */
int sf_read_at(const struct sf_file *f, void *buf, size_t len, uint64_t off, const char *what);

/* Guest-physical range of block b. */
static inline uint64_t sf_block_gpa(uint32_t b)
{
	return (uint64_t)b << SF_BLOCK_SHIFT;
}

/*
 * Reads block b into buf (SF_BLOCK_SIZE bytes) and checks its checksum.
 * -EBADMSG or -EIO with a message.  Any thread (pread only).
 */
int sf_read_block(const struct sf_file *f, uint32_t b, uint8_t *buf);

/*
 * Reads block b SF_PIECE_SIZE bytes at a time, checks its checksum over the
 * whole block, and leaves piece number `piece` of it in out (SF_PIECE_SIZE
 * bytes).  The same checks and errors as sf_read_block(), without a 2 MiB
 * buffer: out holds nothing usable unless it returns 0.
 */
#define SF_PIECE_SIZE (64u << 10)
int sf_read_block_piece(const struct sf_file *f, uint32_t b, uint32_t piece, uint8_t *out);

/* XXH3-64 of an all-zero block (what a block without data must carry). */
uint64_t sf_zero_block_csum(void);
/* XXH3-64 of an all-zero SF_PIECE_SIZE piece. */
uint64_t sf_zero_piece_csum(void);

/* ---- the pieces a restored VM touches first (savefile_hot.c) ---- */

/*
 * Fills out[max] with the guest-physical pages the saved vCPUs touch first:
 * the page-table walk for each one's RIP and RSP and the pages they land
 * on.  page(opaque, gpa) returns the contents of a page (trusted: the
 * caller has checked it), or NULL and *rc on failure.  Returns how many
 * (at most max), or -errno.
 */
typedef const uint8_t *(*sf_page_fn)(void *opaque, uint64_t gpa, int *rc);
int sf_hot_pages(const struct vm_state *st, unsigned ncpus, uint64_t ram_size, sf_page_fn page,
		 void *opaque, uint64_t *out, unsigned max);
/* The distinct SF_PIECE_SIZE pieces holding pages[n], ascending; returns how many. */
unsigned sf_hot_pieces_of(const uint64_t *pages, unsigned n, uint64_t *pieces);
/* Index in f->hot_gpa of the piece holding gpa, or -1. */
int sf_hot_find(const struct sf_file *f, uint64_t gpa);
/* Reads HOT_PIECES entry i into out (SF_PIECE_SIZE bytes) and checks it. */
int sf_read_hot_piece(const struct sf_file *f, unsigned i, uint8_t *out);
/* Checks every listed piece against guest RAM at ram (after an eager load). */
int sf_check_hot_ram(const struct sf_file *f, const uint8_t *ram);

/* ---- restoring (savefile_restore.c) ---- */

/*
 * Checks that `vm` (created with the file's shape, its devices registered)
 * can take the saved VM, before anything is loaded.  -ENOTSUP/-EINVAL with
 * a message naming the mismatch.
 */
int sf_check_vm(const struct sf_file *f, struct vm *vm);

/*
 * Reads every RAM block into guest memory and checks it, with `threads`
 * threads.  Pages that are holes in the file stay holes in guest RAM.
 * -EBADMSG naming the first bad block.  The VM must not be running.
 */
int sf_load_ram(const struct sf_file *f, struct guest_mem *m, unsigned threads);

/* Loads the saved device states, then the vCPU and VM state (clock runs on). */
int sf_load_state(const struct sf_file *f, struct vm *vm);

#endif
