/*
 * dirty: the migration workload.  Every vCPU owns one slice of the working
 * set and writes it with one of three patterns, checking as it goes and
 * verifying its whole slice when it finishes:
 *
 *   increment  adds 1 to the first byte of each page, pass after pass.  At
 *              any moment the pages before the cursor hold pass+1 and the
 *              rest hold pass; every write first checks the old value.
 *   random     writes a pseudo-random 8-byte value to a random slot of a
 *              random page.  Word 0 of a page counts its writes, word 1 is a
 *              checksum of the page, and the counts sum to the vCPU's total,
 *              so a lost update, a stale page and a torn page all show.
 *   stamp      writes the iteration number into random pages (word 0), with
 *              the page's index (word 1) and a write count (word 2).  The
 *              iteration is the host's sequence number when a harness sets
 *              one, else the pass count.
 *
 * The rate limit counts dirtied page bytes: each page write is 4 KiB.
 */
#include "../rt/ferry_guest.h"

FERRY_PROGRAM("dirty", "wss,rate,pattern,passes,seconds,report_ms,seed");

#define WORDS_PER_PAGE (FERRY_PAGE_SIZE / sizeof(uint64_t))
#define STEP_PAGES 64

enum pattern { PAT_INCREMENT, PAT_RANDOM, PAT_STAMP };
static const char *const pattern_names[] = { "increment", "random", "stamp" };

struct config {
	uint64_t wss, rate_mbs, passes, seconds, report_ms, seed;
	enum pattern pattern;
};

struct slice {
	uint64_t *base;
	uint64_t npages;
	uint64_t first_page;   /* index of base within the whole working set */
};

struct state {
	uint64_t pass, pos, total, rng, iteration;
};

static void parse_config(unsigned cpu, struct config *c)
{
	const struct ferry_bootinfo *bi = gboot();
	uint64_t area = bi->data_end - bi->data_base;
	const char *v;

	*c = (struct config){ .wss = area, .report_ms = 1000, .seed = 1 };
	if ((v = garg("wss")) && !gparse_size(v, &c->wss))
		gusage_fail(cpu, "wss: '%s' is not a size", v);
	if (c->wss > area)
		gusage_fail(cpu, "wss: %lu bytes does not fit the %lu-byte data area",
			    (unsigned long)c->wss, (unsigned long)area);
	if (c->wss / FERRY_PAGE_SIZE < bi->ncpus)
		gusage_fail(cpu, "wss: %lu bytes is less than a page per vCPU",
			    (unsigned long)c->wss);
	if ((v = garg("rate")) && strcmp(v, "unlimited") != 0 &&
	    !gparse_u64(v, &c->rate_mbs))
		gusage_fail(cpu, "rate: '%s' is neither MB/s nor 'unlimited'", v);
	if ((v = garg("pattern"))) {
		unsigned i;

		for (i = 0; i < 3 && strcmp(v, pattern_names[i]) != 0; i++)
			;
		if (i == 3)
			gusage_fail(cpu, "pattern: '%s' is not increment, random or stamp", v);
		c->pattern = (enum pattern)i;
	}
	if ((v = garg("passes")) && !gparse_u64(v, &c->passes))
		gusage_fail(cpu, "passes: '%s' is not a number", v);
	if ((v = garg("seconds")) && !gparse_u64(v, &c->seconds))
		gusage_fail(cpu, "seconds: '%s' is not a number", v);
	if ((v = garg("report_ms")) && !gparse_u64(v, &c->report_ms))
		gusage_fail(cpu, "report_ms: '%s' is not a number", v);
	if ((v = garg("seed")) && !gparse_u64(v, &c->seed))
		gusage_fail(cpu, "seed: '%s' is not a number", v);
}

static struct slice slice_of(const struct config *c, unsigned cpu)
{
	const struct ferry_bootinfo *bi = gboot();
	uint64_t pages = c->wss / FERRY_PAGE_SIZE, per = pages / bi->ncpus;
	struct slice s = { .first_page = per * cpu, .npages = per };

	if (cpu == bi->ncpus - 1)
		s.npages = pages - per * cpu;
	s.base = (uint64_t *)(uintptr_t)(bi->data_base + s.first_page * FERRY_PAGE_SIZE);
	return s;
}

static inline uint64_t *page(const struct slice *s, uint64_t i)
{
	return s->base + i * WORDS_PER_PAGE;
}

/* The checksum contribution of a page's write count (0 for a fresh page). */
static inline uint64_t count_tag(uint64_t global_page, uint64_t count)
{
	return count ? gmix64((global_page << 24) ^ count) : 0;
}

static void write_increment(const struct slice *s, struct state *st)
{
	uint64_t *w = page(s, st->pos);

	GASSERT(w[0] == (st->pass & 0xff),
		"increment: page %lu (gpa %p) holds %lu in pass %lu, expected %lu",
		(unsigned long)(s->first_page + st->pos), (void *)w,
		(unsigned long)w[0], (unsigned long)st->pass,
		(unsigned long)(st->pass & 0xff));
	w[0] = (st->pass + 1) & 0xff;
	if (++st->pos == s->npages) {
		st->pos = 0;
		st->pass++;
	}
}

static void write_random(const struct slice *s, struct state *st)
{
	uint64_t p = grand(&st->rng) % s->npages;
	uint64_t slot = 2 + grand(&st->rng) % (WORDS_PER_PAGE - 2);
	uint64_t val = grand(&st->rng), *w = page(s, p);
	uint64_t gp = s->first_page + p, count = w[0];

	w[1] ^= w[slot] ^ val ^ count_tag(gp, count) ^ count_tag(gp, count + 1);
	w[slot] = val;
	w[0] = count + 1;
	if (++st->total % s->npages == 0)
		st->pass++;
}

static void write_stamp(const struct slice *s, struct state *st)
{
	uint64_t p = grand(&st->rng) % s->npages, *w = page(s, p);
	uint64_t seq = ghost_seq();

	st->iteration = seq ? seq : st->pass;
	w[0] = st->iteration;
	w[1] = s->first_page + p + 1;
	w[2]++;
	if (++st->total % s->npages == 0)
		st->pass++;
}

static void verify_increment(const struct slice *s, const struct state *st)
{
	for (uint64_t i = 0; i < s->npages; i++) {
		const uint64_t *w = page(s, i);
		uint64_t want = (i < st->pos ? st->pass + 1 : st->pass) & 0xff;

		GASSERT(w[0] == want,
			"increment: page %lu holds %lu, expected %lu (pass %lu, cursor %lu)",
			(unsigned long)(s->first_page + i), (unsigned long)w[0],
			(unsigned long)want, (unsigned long)st->pass,
			(unsigned long)st->pos);
		for (uint64_t j = 1; j < WORDS_PER_PAGE; j++)
			GASSERT(w[j] == 0, "increment: page %lu word %lu is %lx, expected 0",
				(unsigned long)(s->first_page + i),
				(unsigned long)j, (unsigned long)w[j]);
	}
}

static void verify_random(const struct slice *s, const struct state *st)
{
	uint64_t sum = 0;

	for (uint64_t i = 0; i < s->npages; i++) {
		const uint64_t *w = page(s, i);
		uint64_t x = count_tag(s->first_page + i, w[0]);

		for (uint64_t j = 2; j < WORDS_PER_PAGE; j++)
			x ^= w[j];
		GASSERT(x == w[1], "random: page %lu checksum %lx, expected %lx",
			(unsigned long)(s->first_page + i), (unsigned long)w[1],
			(unsigned long)x);
		sum += w[0];
	}
	GASSERT(sum == st->total,
		"random: pages record %lu writes, the vCPU made %lu (a page is stale or lost)",
		(unsigned long)sum, (unsigned long)st->total);
}

static void verify_stamp(const struct slice *s, const struct state *st)
{
	uint64_t sum = 0;

	for (uint64_t i = 0; i < s->npages; i++) {
		const uint64_t *w = page(s, i);
		uint64_t gp = s->first_page + i;

		if (w[2] == 0)
			GASSERT(w[0] == 0 && w[1] == 0,
				"stamp: unwritten page %lu is not zero", (unsigned long)gp);
		else
			GASSERT(w[1] == gp + 1 && w[0] <= st->iteration,
				"stamp: page %lu holds index %lu iteration %lu (latest %lu)",
				(unsigned long)gp, (unsigned long)w[1] - 1,
				(unsigned long)w[0], (unsigned long)st->iteration);
		for (uint64_t j = 3; j < WORDS_PER_PAGE; j++)
			GASSERT(w[j] == 0, "stamp: page %lu word %lu is %lx, expected 0",
				(unsigned long)gp, (unsigned long)j, (unsigned long)w[j]);
		sum += w[2];
	}
	GASSERT(sum == st->total,
		"stamp: pages record %lu writes, the vCPU made %lu (a page is stale or lost)",
		(unsigned long)sum, (unsigned long)st->total);
}

int guest_main(unsigned cpu)
{
	struct config c;
	struct slice s;
	struct state st = { 0 };
	struct gpacer pacer;
	uint64_t start, steps = 0;

	parse_config(cpu, &c);
	s = slice_of(&c, cpu);
	st.rng = gmix64(c.seed * 1000003 + cpu);
	gpacer_init(&pacer, c.rate_mbs * 1000000, c.report_ms);
	start = gtime_us();

	for (;;) {
		for (unsigned i = 0; i < STEP_PAGES; i++) {
			if (c.pattern == PAT_INCREMENT)
				write_increment(&s, &st);
			else if (c.pattern == PAT_RANDOM)
				write_random(&s, &st);
			else
				write_stamp(&s, &st);
		}
		steps++;
		if (gpacer_step(&pacer, STEP_PAGES * FERRY_PAGE_SIZE))
			gpacer_report(&pacer, st.pass);
		if (c.passes && st.pass >= c.passes)
			break;
		if (gstop_requested() ||
		    (c.seconds && gtime_us() - start >= c.seconds * 1000000))
			break;
	}

	if (c.pattern == PAT_INCREMENT)
		verify_increment(&s, &st);
	else if (c.pattern == PAT_RANDOM)
		verify_random(&s, &st);
	else
		verify_stamp(&s, &st);
	gprogress("stall_us", gpacer_max_gap_us(&pacer));
	gprintf("dirty: vCPU %u verified %lu pages (%s, %lu passes, %lu page writes, "
		"longest stall %lu us)\n",
		cpu, (unsigned long)s.npages, pattern_names[c.pattern],
		(unsigned long)st.pass, (unsigned long)(steps * STEP_PAGES),
		(unsigned long)gpacer_max_gap_us(&pacer));
	return 0;
}
