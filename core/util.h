/*
 * Small helpers every module uses: error messages, clocks, number parsing.
 *
 * Errors: library functions return 0 or a negative errno.  Where the errno
 * alone would not tell a user what went wrong, the function also records a
 * one-line message with ferr(); the caller that decides to give up prints
 * ferr_msg().  Messages are per thread.
 */
#ifndef FERRY_UTIL_H
#define FERRY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))

/* Records a message for this thread and returns -|err| (or -EINVAL if 0). */
int ferr(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Like ferr(), but appends ": strerror(err)". */
int ferr_sys(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The last message recorded on this thread, or strerror of `err`. */
const char *ferr_msg(int err);
void ferr_clear(void);

/* Logging to stderr, prefixed with "ferry: ". */
void flog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t now_ns(void);          /* CLOCK_MONOTONIC */
uint64_t realtime_ns(void);     /* CLOCK_REALTIME */
uint64_t process_cpu_ns(void);  /* CPU time of the whole process */

static inline uint64_t host_rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

/*
 * "512M", "4G", "4GiB", "1536k", "65536": binary multiples.  Rejects
 * anything else, including overflow.  Returns 0 or -EINVAL/-ERANGE.
 */
int parse_size(const char *s, uint64_t *out);
/* A plain decimal number with no sign, suffix or spaces. */
int parse_u64(const char *s, uint64_t *out);
/* "1.5 GiB"-style rendering into buf; returns buf. */
const char *fmt_size(char *buf, size_t len, uint64_t bytes);

/* Reads a whole small file; caps it at max_len.  Caller frees *out. */
int read_file(const char *path, size_t max_len, uint8_t **out, size_t *len);
/* write() the whole buffer, retrying on short writes and EINTR. */
int write_all(int fd, const void *buf, size_t len);

#endif
