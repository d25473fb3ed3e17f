#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static __thread char err_buf[512];

static int verr(int err, bool with_errno, const char *fmt, va_list ap)
{
	int code = err < 0 ? -err : err;
	int n;

	if (code == 0)
		code = EINVAL;
	n = vsnprintf(err_buf, sizeof(err_buf), fmt, ap);
	if (with_errno && n >= 0 && (size_t)n < sizeof(err_buf))
		snprintf(err_buf + n, sizeof(err_buf) - (size_t)n, ": %s",
			 strerror(code));
	return -code;
}

int ferr(int err, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = verr(err, false, fmt, ap);
	va_end(ap);
	return rc;
}

int ferr_sys(int err, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = verr(err, true, fmt, ap);
	va_end(ap);
	return rc;
}

const char *ferr_msg(int err)
{
	if (err_buf[0])
		return err_buf;
	return strerror(err < 0 ? -err : err);
}

void ferr_clear(void)
{
	err_buf[0] = 0;
}

void flog(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	/* One write per line so lines from different threads do not mix. */
	fprintf(stderr, "ferry: %.*s%s", n, line,
		n && line[n - 1] == '\n' ? "" : "\n");
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
uint64_t realtime_ns(void) { return clock_ns(CLOCK_REALTIME); }
uint64_t process_cpu_ns(void) { return clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -EINVAL;
	for (; *s; s++) {
		unsigned d;

		if (*s < '0' || *s > '9')
			return -EINVAL;
		d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	char num[32];
	size_t i = 0;
	unsigned shift = 0;
	uint64_t v;
	int rc;

	if (!s)
		return -EINVAL;
	while (s[i] >= '0' && s[i] <= '9') {
		if (i == sizeof(num) - 1)
			return -ERANGE;
		num[i] = s[i];
		i++;
	}
	num[i] = 0;
	switch (s[i]) {
	case 'k': case 'K': shift = 10; i++; break;
	case 'm': case 'M': shift = 20; i++; break;
	case 'g': case 'G': shift = 30; i++; break;
	case 't': case 'T': shift = 40; i++; break;
	default: break;
	}
	if (shift && s[i] == 'i' && s[i + 1] == 'B')
		i += 2;
	else if (s[i] == 'B')
		i++;
	if (s[i] != 0)
		return -EINVAL;
	rc = parse_u64(num, &v);
	if (rc)
		return rc;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = v << shift;
	return 0;
}

const char *fmt_size(char *buf, size_t len, uint64_t bytes)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)bytes;
	unsigned u = 0;

	while (v >= 1024 && u < ARRAY_SIZE(units) - 1) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

int read_file(const char *path, size_t max_len, uint8_t **out, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ferr_sys(errno, "cannot open %s", path);
	if (fstat(fd, &st) < 0) {
		rc = ferr_sys(errno, "cannot stat %s", path);
		goto close_fd;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = ferr(EINVAL, "%s is not a regular file", path);
		goto close_fd;
	}
	if ((uint64_t)st.st_size > max_len) {
		rc = ferr(EFBIG, "%s is %lld bytes, more than the %zu allowed",
			  path, (long long)st.st_size, max_len);
		goto close_fd;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto close_fd;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? ferr_sys(errno, "cannot read %s", path)
				   : ferr(EIO, "%s shrank while being read", path);
			free(buf);
			goto close_fd;
		}
		got += (size_t)n;
	}
	*out = buf;
	*len = got;
	rc = 0;
close_fd:
	close(fd);
	return rc;
}

int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
