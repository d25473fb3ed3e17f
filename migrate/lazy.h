/*
 * Lazy restore: guest RAM is filled from a save file on first touch, so a
 * restored VM runs again before its memory has been read.
 *
 * Guest RAM stays the VM's memfd.  The guest-physical ranges the file holds
 * data for are registered with userfaultfd in MISSING mode; every first
 * touch of such a page (by a vCPU, by KVM itself, or by any ferry thread)
 * stops until the loader thread has read the page's 2 MiB block from the
 * file, checked the block's checksum and copied the pages in with
 * UFFDIO_COPY.  Blocks the file holds no data for are never registered:
 * the memfd fills them with zeros on its own.  Between faults the same
 * thread brings in every remaining block in order, so after a while all of
 * memory is present, userfaultfd is closed and the file released.
 *
 * A block is verified when it is first needed, not up front: checking every
 * block before the VM runs means reading the whole file, which is exactly
 * what a lazy restore avoids.  A block that fails its checksum is never
 * copied in; the VM is ended at once with an error naming the block.
 * docs/quick-migration.md explains the trade-off.
 */
#ifndef FERRY_MIG_LAZY_H
#define FERRY_MIG_LAZY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "savefile.h"

struct sf_lazy;

struct sf_lazy_stats {
	bool complete;               /* all of RAM is present; the file is closed */
	bool failed;
	uint64_t data_blocks;        /* blocks the file holds data for */
	uint64_t blocks_done;        /* of those, fully present */
	uint64_t faults;             /* first touches served */
	uint64_t fault_max_ns;       /* longest fault, from reading the message to the copy */
	uint64_t first_fault_ns;     /* since the loader started (0: none yet) */
	uint64_t complete_ns;        /* since the loader started (0: not yet) */
	uint64_t bytes_read;         /* from the file, checksummed, for faults and the fill */
	uint64_t hot_read_bytes;     /* read to check the first instructions' pieces */
	char error[512];
};

/*
 * Starts lazy loading from `f` (sf_load()ed) as early as possible: the
 * loader thread reads and checks, while the caller creates the VM, the
 * blocks the saved vCPUs will touch first.  The loader takes f over, even
 * on failure: it closes the file once all of RAM is in and frees f in
 * sf_lazy_free(); until then the caller may still read f's state.
 */
int sf_lazy_prepare(struct sf_file *f, struct sf_lazy **out);
/*
 * Registers `vm`'s RAM (created with the file's size) with userfaultfd and
 * lets the loader serve it: the first pages go in at once.  Call before any
 * vCPU runs.  -errno with a message: no userfaultfd, or a first block that
 * failed its checksum (the VM must then not run).
 */
int sf_lazy_attach(struct sf_lazy *lz, struct vm *vm);
/* sf_lazy_prepare() then sf_lazy_attach(); frees everything on failure. */
int sf_lazy_start(struct sf_file *f, struct vm *vm, struct sf_lazy **out);
void sf_lazy_query(struct sf_lazy *lz, struct sf_lazy_stats *st);
/*
 * Waits until all of RAM is present.  0; -EIO (with the loader's message)
 * if loading failed; -ECANCELED once *cancel is set.  Any thread but the
 * loader's.
 */
int sf_lazy_wait(struct sf_lazy *lz, const _Atomic bool *cancel);
/*
 * Stops the loader and releases userfaultfd, the file and everything else.
 * Pages not yet loaded then read as zeros, so call it only once the VM has
 * ended (or loading is complete).  Not on a vCPU thread.
 */
void sf_lazy_free(struct sf_lazy *lz);

#endif
