/*
 * The runtime every ferry guest program links against.  It runs in ring 3 at
 * native speed; talking to the host costs one exit (tens of microseconds on
 * kvm_pvm), so output is buffered per vCPU and flushed a line at a time.
 *
 * A program defines its header with FERRY_PROGRAM() and a
 * `int guest_main(unsigned cpu)` that every vCPU runs.  When guest_main
 * returns, that vCPU is finished; the VM ends when every vCPU has finished
 * (with the first non-zero status) or when any vCPU calls gexit().
 */
#ifndef FERRY_GUEST_H
#define FERRY_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../abi.h"

extern char _start[];
extern char ferry_isr_stubs[];

#define FERRY_PROGRAM(prog_name, arg_keys)                                     \
	__attribute__((section(".ferry_header"), used))                          \
	const struct ferry_image_header ferry_image_header = {                   \
		.magic = FERRY_IMAGE_MAGIC,                                      \
		.abi_version = FERRY_ABI_VERSION,                                \
		.isr_stub_size = FERRY_ISR_STUB_SIZE,                            \
		.entry = (uint64_t)(uintptr_t)_start,                            \
		.isr_stubs = (uint64_t)(uintptr_t)ferry_isr_stubs,               \
		.name = prog_name,                                               \
		.args = arg_keys,                                                \
	}

int guest_main(unsigned cpu);

/* Boot information and time. */
const struct ferry_bootinfo *gboot(void);
unsigned gncpus(void);
static inline uint64_t grdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}
uint64_t gtime_us(void);
static inline void gpause(void) { __asm__ volatile("pause"); }

/* Guest -> host calls. */
void gprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void gflush(void);
__attribute__((noreturn)) void gexit(int status);
void gprogress(const char *key, uint64_t value);
void ghalt_us(uint64_t us);
__attribute__((noreturn)) void gassert_fail(const char *file, int line,
					    const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define GASSERT(cond, ...)                                                     \
	do {                                                                   \
		if (!(cond))                                                   \
			gassert_fail(__FILE__, __LINE__, __VA_ARGS__);         \
	} while (0)
/* A bad --guest-arg: print the reason (once, from vCPU 0) and exit 2. */
__attribute__((noreturn)) void gusage_fail(unsigned cpu, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Host requests. */
bool gstop_requested(void);
uint64_t ghost_seq(void);

/* Arguments: NULL when the key was not given. */
const char *garg(const char *key);
bool gparse_u64(const char *s, uint64_t *out);
bool gparse_size(const char *s, uint64_t *out);

/* Small libc. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int gvsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int gsnprintf(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A fast, well-mixed 64-bit generator (splitmix64). */
static inline uint64_t gmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}
static inline uint64_t grand(uint64_t *state)
{
	*state += 0x9e3779b97f4a7c15ull;
	return gmix64(*state);
}

/*
 * Paces a workload to a rate limit and tracks the longest gap it observed
 * between two of its own steps (the guest-observed stall).  The TSC keeps
 * running across a migration, so a switchover shows up as one long gap.
 */
struct gpacer {
	uint64_t bytes_per_sec;   /* 0: unlimited */
	uint64_t start_tsc;
	uint64_t last_tsc;
	uint64_t done_bytes;
	uint64_t max_gap_tsc;
	uint64_t report_tsc;
	uint64_t report_bytes;
	uint64_t report_every_tsc;
};
void gpacer_init(struct gpacer *p, uint64_t bytes_per_sec, uint64_t report_ms);
/* Account `bytes` of work; sleeps if ahead of the limit.  Returns true when
 * a progress report is due (the caller then calls gpacer_report). */
bool gpacer_step(struct gpacer *p, uint64_t bytes);
void gpacer_report(struct gpacer *p, uint64_t pass);
uint64_t gpacer_max_gap_us(const struct gpacer *p);

#endif
