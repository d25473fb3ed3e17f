/* Shared set-up for the save-file tests (test_savefile*.c). */
#ifndef FERRY_TEST_SAVEFILE_H
#define FERRY_TEST_SAVEFILE_H

#include <stdint.h>

#include "helpers.h"
#include "migrate/savefile.h"

#define TSF_MEM (64ull << 20)

struct tsf {
	char dir[64];          /* a fresh directory, removed by tsf_cleanup */
	char path[128];        /* dir/vm.save */
	struct vm *src;        /* the saved VM, left paused */
};

/* The test device every tsf_make VM carries: name, state it saves. */
#define TSF_DEV_NAME "test-dev"
#define TSF_DEV_STATE "test device state, 32 bytes long"
/* Registers the test device on a VM that has not run; loads land in tsf_dev_loaded. */
void tsf_add_device(struct vm *vm, uint32_t version);
extern char tsf_dev_loaded[64];

/*
 * Boots `prog` (NULL-terminated args) on ncpus vCPUs in TSF_MEM of RAM with
 * the test device, lets it run run_ms, pauses it and saves it to t->path.
 */
void tsf_make(struct tsf *t, unsigned ncpus, const char *prog, const char *const *args,
	      unsigned run_ms);
void tsf_cleanup(struct tsf *t);
/* sf_alloc + sf_load; *rc gets the result. */
struct sf_file *tsf_open(const char *path, int *rc);
void tsf_copy(const char *from, const char *to);
void tsf_write(const char *path, uint64_t off, const void *bytes, size_t len);
void tsf_read(const char *path, uint64_t off, void *bytes, size_t len);
void tsf_flip(const char *path, uint64_t off, uint8_t mask);
/* Rewrites the u32 at byte `field` of the section header at hdr_off, and its checksum. */
void tsf_set_header(const char *path, uint64_t hdr_off, unsigned field, uint32_t v);
/* Rewrites len bytes at `at` in that section's payload; both checksums are fixed. */
void tsf_set_payload(const char *path, uint64_t hdr_off, uint64_t at, const void *bytes,
		     size_t len);
void tsf_truncate(const char *path, uint64_t len);
uint64_t tsf_size(const char *path);
/* Number of entries in a directory besides . and .. */
unsigned tsf_dir_entries(const char *dir);

#endif
