/*
 * Guest runtime: guest->host calls, buffered console output, arguments,
 * pacing, and the few libc routines the compiler may call.  Runs in ring 3.
 */
#include "ferry_guest.h"

#define PRINT_BUF 512

struct percpu {
	char buf[PRINT_BUF];
	unsigned len;
};
static struct percpu percpu[FERRY_MAX_VCPUS];

static inline const struct ferry_bootinfo *bootinfo(void)
{
	return (const struct ferry_bootinfo *)(uintptr_t)FERRY_BOOTINFO_GPA;
}

/* The vCPU index follows from which stack slot we are running on. */
static inline unsigned gcpu(void)
{
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
	return (unsigned)((sp - FERRY_STACKS_GPA) / FERRY_STACK_PER_VCPU);
}

static void ucall(struct ferry_ucall *uc)
{
	uint32_t gpa = (uint32_t)(uintptr_t)uc;

	uc->cpu = gcpu();
	__asm__ volatile("outl %0, %1"
			 :
			 : "a"(gpa), "Nd"((uint16_t)FERRY_PORT_UCALL)
			 : "memory");
}

static void ucall2(uint32_t nr, uint64_t a0, uint64_t a1)
{
	struct ferry_ucall uc = { .nr = nr, .args = { a0, a1 } };

	ucall(&uc);
}

const struct ferry_bootinfo *gboot(void) { return bootinfo(); }
unsigned gncpus(void) { return bootinfo()->ncpus; }
bool gstop_requested(void) { return bootinfo()->stop_request != 0; }
uint64_t ghost_seq(void) { return bootinfo()->host_seq; }

uint64_t gtime_us(void)
{
	uint64_t tsc = grdtsc(), khz = bootinfo()->tsc_khz;

	return tsc / khz * 1000 + (tsc % khz) * 1000 / khz;
}

void gflush(void)
{
	struct percpu *pc = &percpu[gcpu()];

	if (pc->len) {
		ucall2(FERRY_UC_PRINT, (uintptr_t)pc->buf, pc->len);
		pc->len = 0;
	}
}

static void put_text(const char *s, size_t n)
{
	struct percpu *pc = &percpu[gcpu()];

	for (size_t i = 0; i < n; i++) {
		pc->buf[pc->len++] = s[i];
		if (s[i] == '\n' || pc->len == PRINT_BUF)
			gflush();
	}
}

void gprintf(const char *fmt, ...)
{
	char line[PRINT_BUF];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = gvsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	put_text(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void gexit(int status)
{
	gflush();
	ucall2(FERRY_UC_EXIT, (uint64_t)status, 0);
	for (;;)
		ghalt_us(1000000);
}

void gprogress(const char *key, uint64_t value)
{
	struct ferry_ucall uc = {
		.nr = FERRY_UC_PROGRESS,
		.args = { (uintptr_t)key, strlen(key), value },
	};

	ucall(&uc);
}

void ghalt_us(uint64_t us)
{
	ucall2(FERRY_UC_HALT, us, 0);
}

void gassert_fail(const char *file, int line, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	struct ferry_ucall uc = { .nr = FERRY_UC_ASSERT };

	va_start(ap, fmt);
	gvsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	gflush();
	uc.args[0] = (uintptr_t)file;
	uc.args[1] = strlen(file);
	uc.args[2] = (uint64_t)line;
	uc.args[3] = (uintptr_t)msg;
	uc.args[4] = strlen(msg);
	ucall(&uc);
	for (;;)
		ghalt_us(1000000);
}

void gusage_fail(unsigned cpu, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (cpu != 0) {
		for (;;)
			ghalt_us(1000000);
	}
	va_start(ap, fmt);
	gvsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	gprintf("%s: %s\n", ((const struct ferry_image_header *)
			     (uintptr_t)FERRY_IMAGE_GPA)->name, msg);
	gexit(2);
}

__attribute__((noreturn)) void ferry_rt_start(unsigned cpu);
void ferry_rt_start(unsigned cpu)
{
	int status = guest_main(cpu);

	gflush();
	ucall2(FERRY_UC_DONE, (uint64_t)status, 0);
	for (;;)
		ghalt_us(1000000);
}

/* ---- arguments ---- */

const char *garg(const char *key)
{
	const struct ferry_bootinfo *bi = bootinfo();
	size_t klen = strlen(key);
	uint32_t off = 0;

	while (off < bi->args_len && off < FERRY_ARGS_MAX) {
		const char *kv = &bi->args[off];
		size_t n = strlen(kv);

		if (n > klen && kv[klen] == '=' && memcmp(kv, key, klen) == 0)
			return kv + klen + 1;
		off += (uint32_t)n + 1;
	}
	return NULL;
}

bool gparse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

bool gparse_size(const char *s, uint64_t *out)
{
	char num[24];
	size_t i = 0;
	unsigned shift = 0;
	uint64_t v;

	if (!s)
		return false;
	while (s[i] >= '0' && s[i] <= '9' && i < sizeof(num) - 1) {
		num[i] = s[i];
		i++;
	}
	num[i] = 0;
	switch (s[i]) {
	case 'k': case 'K': shift = 10; i++; break;
	case 'm': case 'M': shift = 20; i++; break;
	case 'g': case 'G': shift = 30; i++; break;
	case 't': case 'T': shift = 40; i++; break;
	}
	if (shift && s[i] == 'i' && s[i + 1] == 'B')
		i += 2;
	else if (s[i] == 'B')
		i++;
	if (s[i] != 0 || !gparse_u64(num, &v) || (shift && v > (UINT64_MAX >> shift)))
		return false;
	*out = v << shift;
	return true;
}

/* ---- pacing ---- */

static uint64_t tsc_to_us(uint64_t tsc)
{
	uint64_t khz = bootinfo()->tsc_khz;

	return tsc / khz * 1000 + (tsc % khz) * 1000 / khz;
}

void gpacer_init(struct gpacer *p, uint64_t bytes_per_sec, uint64_t report_ms)
{
	memset(p, 0, sizeof(*p));
	p->bytes_per_sec = bytes_per_sec;
	p->start_tsc = p->last_tsc = p->report_tsc = grdtsc();
	p->report_every_tsc = report_ms * bootinfo()->tsc_khz;
}

bool gpacer_step(struct gpacer *p, uint64_t bytes)
{
	uint64_t now = grdtsc();

	if (now - p->last_tsc > p->max_gap_tsc)
		p->max_gap_tsc = now - p->last_tsc;
	p->last_tsc = now;
	p->done_bytes += bytes;
	if (p->bytes_per_sec) {
		uint64_t bps = p->bytes_per_sec, done = p->done_bytes;
		uint64_t due_us = done / bps * 1000000 + (done % bps) * 1000000 / bps;
		uint64_t elapsed_us = tsc_to_us(now - p->start_tsc);

		if (due_us > elapsed_us + 2000) {
			ghalt_us(due_us - elapsed_us);
			p->last_tsc = grdtsc();  /* a chosen sleep is not a stall */
		} else {
			while (due_us > tsc_to_us(grdtsc() - p->start_tsc))
				gpause();
			p->last_tsc = grdtsc();
		}
	}
	return p->report_every_tsc && now - p->report_tsc >= p->report_every_tsc;
}

void gpacer_report(struct gpacer *p, uint64_t pass)
{
	uint64_t now = grdtsc();
	uint64_t us = tsc_to_us(now - p->report_tsc);
	uint64_t bytes = p->done_bytes - p->report_bytes;

	gprogress("pass", pass);
	if (us)
		gprogress("rate_pps", bytes / FERRY_PAGE_SIZE * 1000000 / us);
	gprogress("stall_us", gpacer_max_gap_us(p));
	p->report_tsc = now;
	p->report_bytes = p->done_bytes;
}

uint64_t gpacer_max_gap_us(const struct gpacer *p)
{
	return tsc_to_us(p->max_gap_tsc);
}

/* ---- libc ---- */

void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;

	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;

	while (n--)
		*dp++ = *sp++;
	return d;
}

void *memmove(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;

	if (dp < sp)
		return memcpy(d, s, n);
	while (n--)
		dp[n] = sp[n];
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] - y[i];
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (unsigned char)*a - (unsigned char)*b;
}
