/*
 * Inside the lazy loader (lazy.c: the loader thread; lazy_setup.c: its
 * creation, userfaultfd and the calls other threads make; the pages a
 * restored vCPU needs first are found by savefile_hot.c).  Not for use
 * outside migrate/lazy*.
 */
#ifndef FERRY_MIG_LAZY_INT_H
#define FERRY_MIG_LAZY_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lazy.h"

#define CACHE_SLOTS 16          /* 32 MiB of verified blocks */
#define FAULT_PAGES 16u         /* 64 KiB around a fault */
#define FILL_PAGES 64u          /* 256 KiB per background step */
#define MAX_HOT 64u             /* pages copied in before the first fault */
/* The background fill waits for the first fault or this long (lazy.c). */
#define FILL_DELAY_MS 20

struct slot {
	int64_t block;              /* -1: empty */
	uint64_t last_use;
	uint8_t *buf;
};

/* A verified FAULT_PAGES piece of guest RAM around a hot page (lazy.c). */
struct hot_piece {
	uint64_t first;             /* its first guest page */
	uint8_t *buf;               /* SF_PIECE_SIZE bytes */
};

struct sf_lazy {
	struct sf_file *f;
	struct vm *vm;              /* set by attach */
	uint8_t *hva;               /* set by attach */
	uint64_t npages;
	int uffd;                   /* set by attach */
	int stopfd;
	pthread_t thread;
	bool thread_started;
	uint64_t t_start;

	/* The loader thread's own (no lock). */
	uint64_t *present;          /* one bit per guest page */
	uint16_t *block_present;    /* pages present per block */
	uint32_t fill_cursor;       /* next block to fill in order */
	struct slot slots[CACHE_SLOTS];
	uint64_t use_clock;
	uint64_t hot[MAX_HOT];      /* guest-physical pages to copy in first */
	struct hot_piece pieces[MAX_HOT];  /* their verified pieces, until attach */
	unsigned npieces;

	uint8_t *slab;              /* the slots' buffers, one mapping */
	size_t slab_len;
	uint64_t data_blocks;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool prepared;              /* (lock) the hot blocks are read and checked */
	int prepare_rc;             /* (lock) */
	bool attached;              /* (lock) */
	bool stopping;              /* (lock) sf_lazy_free() wants the thread gone */
	bool complete, failed;      /* (lock) */
	char error[512];            /* (lock) */
	_Atomic uint64_t blocks_done, faults, fault_max_ns, first_fault_ns, complete_ns;
	_Atomic uint64_t bytes_read, hot_read_bytes;
};

/* The loader thread (lazy.c). */
void *sf_lazy_thread(void *arg);
/*
 * Copies the hot pages in (lazy.c).  Called by sf_lazy_attach() on the
 * attaching thread while the loader thread still waits for the attach, so
 * the two never touch the loader's state at once: doing it there spares the
 * restore a wait for the loader thread to get a core.
 */
int sf_lazy_copy_hot(struct sf_lazy *lz);
/* Frees the hot pieces (sf_lazy_copy_hot() does it too). */
void sf_lazy_free_hot(struct sf_lazy *lz);

#endif
