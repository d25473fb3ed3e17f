/*
 * disk: drives the storage VSC.  vCPU 0 does the I/O; the others finish at
 * once.  Output goes through the console VSC and the program beats on the
 * heartbeat channel while it runs.
 *
 * mode=verify (default) loops over a region of the disk, pass after pass:
 * write every block with a pattern of (pass, block), FLUSH, read every block
 * back and check every word.  Up to qd requests are in flight.  Each
 * completion must answer a request in flight with the same id (so a lost or
 * duplicated completion shows) and carry status OK.  On shutdown it drains
 * what is in flight and reads the whole region once more: blocks before the
 * write cursor must hold this pass, the others the previous one (blocks no
 * pass has written yet are not checked).  A live migration in the middle of
 * any of this must change nothing.
 *
 * mode=randread|randwrite|seqread|seqwrite measures: qd requests of bs bytes
 * in flight for `seconds`, at random bs-aligned offsets or in order, then
 * reports ops, bytes and microseconds as progress values and in one line.
 */
#include "../rt/vmbus.h"

FERRY_PROGRAM("disk", "mode,size,bs,qd,passes,seconds,report_ms,seed,disk");

#define MAX_QD 128u
#define MAGIC 0xD15C000000000000ull

enum mode { M_VERIFY, M_RANDREAD, M_RANDWRITE, M_SEQREAD, M_SEQWRITE };
static const char *const mode_names[] = { "verify", "randread", "randwrite", "seqread",
					  "seqwrite" };

struct cfg {
	enum mode mode;
	uint64_t size, bs, qd, passes, seconds, report_ms, seed, disk;
};

struct req {
	bool busy;
	uint16_t op;
	uint64_t id, block, pass;
	uint64_t *buf;
};

static struct vstor d;
static struct req reqs[MAX_QD];
static uint64_t next_gen = 1, nblocks;
static uint64_t n_writes, n_reads, n_flushes, n_checked, last_report_tsc, max_gap_tsc, last_tsc;
static struct cfg c;

#define say(...) (vcon_is_open() ? vcon_printf(__VA_ARGS__) : gprintf(__VA_ARGS__))

static void parse(unsigned cpu)
{
	const char *v;

	c = (struct cfg){ .size = 16ull << 20, .bs = 4096, .qd = 16, .report_ms = 500,
			  .seed = 1, .seconds = 0 };
	if ((v = garg("mode"))) {
		unsigned i;

		for (i = 0; i < 5 && strcmp(v, mode_names[i]) != 0; i++)
			;
		if (i == 5)
			gusage_fail(cpu, "mode: '%s' is not verify, randread, randwrite, seqread or seqwrite", v);
		c.mode = (enum mode)i;
		if (c.mode != M_VERIFY)
			c.seconds = 5;
	}
	if ((v = garg("size")) && !gparse_size(v, &c.size))
		gusage_fail(cpu, "size: '%s' is not a size", v);
	if ((v = garg("bs")) && (!gparse_size(v, &c.bs) || !c.bs || c.bs % VSTOR_SECTOR ||
				 c.bs > VSTOR_MAX_XFER))
		gusage_fail(cpu, "bs: '%s' is not a multiple of 512 up to 1M", v);
	if ((v = garg("qd")) && (!gparse_u64(v, &c.qd) || !c.qd || c.qd > MAX_QD))
		gusage_fail(cpu, "qd: '%s' is not 1 to %u", v, MAX_QD);
	if ((v = garg("passes")) && !gparse_u64(v, &c.passes))
		gusage_fail(cpu, "passes: '%s' is not a number", v);
	if ((v = garg("seconds")) && !gparse_u64(v, &c.seconds))
		gusage_fail(cpu, "seconds: '%s' is not a number", v);
	if ((v = garg("report_ms")) && !gparse_u64(v, &c.report_ms))
		gusage_fail(cpu, "report_ms: '%s' is not a number", v);
	if ((v = garg("seed")) && !gparse_u64(v, &c.seed))
		gusage_fail(cpu, "seed: '%s' is not a number", v);
	if ((v = garg("disk")) && !gparse_u64(v, &c.disk))
		gusage_fail(cpu, "disk: '%s' is not a number", v);
	if (c.qd * c.bs > gboot()->data_end - gboot()->data_base)
		gusage_fail(cpu, "qd x bs does not fit the data area");
}

static inline uint64_t word(uint64_t pass, uint64_t block, uint64_t j)
{
	if (j == 0)
		return MAGIC | block;
	if (j == 1)
		return pass;
	return gmix64((pass << 44) ^ (block << 12) ^ j ^ (c.seed << 56));
}

static void fill(uint64_t *buf, uint64_t pass, uint64_t block)
{
	for (uint64_t j = 0; j < c.bs / 8; j++)
		buf[j] = word(pass, block, j);
}

static void check(const uint64_t *buf, uint64_t pass, uint64_t block)
{
	for (uint64_t j = 0; j < c.bs / 8; j++)
		GASSERT(buf[j] == word(pass, block, j),
			"disk: block %lu word %lu is %lx, expected %lx (the block says block %lu "
			"pass %lu; expected pass %lu)", (unsigned long)block, (unsigned long)j,
			(unsigned long)buf[j], (unsigned long)word(pass, block, j),
			(unsigned long)(buf[0] & ~MAGIC), (unsigned long)buf[1],
			(unsigned long)pass);
	n_checked++;
}

static void step_clock(void)
{
	uint64_t now = grdtsc();

	if (last_tsc && now - last_tsc > max_gap_tsc)
		max_gap_tsc = now - last_tsc;
	last_tsc = now;
	vhb_tick();
	if (c.report_ms && now - last_report_tsc >= c.report_ms * gboot()->tsc_khz) {
		gprogress("writes", n_writes);
		gprogress("reads", n_reads);
		gprogress("checked", n_checked);
		last_report_tsc = now;
	}
}

/* Handles one completion; returns its request. */
static struct req *complete_one(bool block)
{
	uint64_t id;
	uint32_t status, bytes;
	struct req *r;
	int rc;

	for (;;) {
		rc = vstor_poll(&d, &id, &status, &bytes);
		GASSERT(rc >= 0, "disk: the storage channel failed (%d)", rc);
		if (rc > 0)
			break;
		if (!block)
			return NULL;
		step_clock();
		vstor_wait(&d, 100000);
	}
	r = &reqs[id & 0xff];
	GASSERT((id & 0xff) < c.qd && r->busy && r->id == id,
		"disk: completion for id %lx, which is not in flight (lost or duplicated)",
		(unsigned long)id);
	GASSERT(status == VSTOR_OK, "disk: request %lx (block %lu) failed with status %u",
		(unsigned long)id, (unsigned long)r->block, status);
	GASSERT(r->op == VSTOR_FLUSH || bytes == c.bs,
		"disk: request %lx moved %u bytes, expected %lu", (unsigned long)id, bytes,
		(unsigned long)c.bs);
	r->busy = false;
	if (r->op == VSTOR_READ) {
		n_reads++;
		if (c.mode == M_VERIFY && r->pass)
			check(r->buf, r->pass, r->block);
	} else if (r->op == VSTOR_WRITE) {
		n_writes++;
	} else {
		n_flushes++;
	}
	return r;
}

/* A free request slot, waiting for a completion if all are busy. */
static struct req *free_req(void)
{
	for (;;) {
		for (uint64_t i = 0; i < c.qd; i++)
			if (!reqs[i].busy)
				return &reqs[i];
		complete_one(true);
	}
}

static void submit(struct req *r, uint16_t op, uint64_t block, uint64_t pass)
{
	struct vstor_seg seg[2];
	uint32_t nseg = 0;
	int rc;

	r->op = op;
	r->block = block;
	r->pass = pass;
	r->id = (next_gen++ << 8) | (uint64_t)(r - reqs);
	if (op != VSTOR_FLUSH) {
		uint64_t half = c.bs >= 8192 && c.bs % 1024 == 0 ? c.bs / 2 : c.bs;

		seg[nseg++] = (struct vstor_seg){ .gpa = (uintptr_t)r->buf, .len = (uint32_t)half };
		if (half != c.bs)
			seg[nseg++] = (struct vstor_seg){ .gpa = (uintptr_t)r->buf + half,
							  .len = (uint32_t)half };
	}
	while ((rc = vstor_submit(&d, op, r->id, block * (c.bs / VSTOR_SECTOR), seg, nseg)) ==
	       -VMBUS_EAGAIN)
		complete_one(true);
	GASSERT(rc == 0, "disk: cannot submit a request (%d)", rc);
	r->busy = true;
	vmbus_notify(&d.ch);
}

static void drain(void)
{
	vmbus_notify(&d.ch);
	while (d.inflight)
		complete_one(true);
}

static bool stopping(uint64_t start_us)
{
	return gstop_requested() ||
	       (c.seconds && gtime_us() - start_us >= c.seconds * 1000000);
}

/* One phase over blocks [0, n): returns the cursor it reached. */
static uint64_t phase(uint16_t op, uint64_t pass, uint64_t start_us)
{
	uint64_t b;

	for (b = 0; b < nblocks; b++) {
		struct req *r;

		if (stopping(start_us))
			break;
		r = free_req();
		if (op == VSTOR_WRITE)
			fill(r->buf, pass, b);
		submit(r, op, b, op == VSTOR_READ ? pass : 0);
		step_clock();
	}
	drain();
	return b;
}

static void run_verify(void)
{
	uint64_t pass = 0, cursor = nblocks, start = gtime_us();

	while (!stopping(start) && (!c.passes || pass < c.passes)) {
		pass++;
		cursor = phase(VSTOR_WRITE, pass, start);
		submit(free_req(), VSTOR_FLUSH, 0, 0);
		drain();
		if (cursor < nblocks)
			break;
		phase(VSTOR_READ, pass, start);
		gprogress("pass", pass);
	}
	/* The final check: every block, whatever stopped us. */
	for (uint64_t b = 0; b < nblocks; b++) {
		uint64_t want = b < cursor ? pass : pass - 1;
		struct req *r = free_req();

		submit(r, VSTOR_READ, b, want);
		step_clock();
	}
	drain();
	say("disk: verified %lu blocks of %lu bytes (%lu passes, %lu writes, %lu reads, "
	    "%lu flushes, %lu block checks, longest stall %lu us)\n",
	    (unsigned long)nblocks, (unsigned long)c.bs, (unsigned long)pass,
	    (unsigned long)n_writes, (unsigned long)n_reads, (unsigned long)n_flushes,
	    (unsigned long)n_checked, (unsigned long)(max_gap_tsc * 1000 / gboot()->tsc_khz));
}

static void run_bench(void)
{
	bool write = c.mode == M_RANDWRITE || c.mode == M_SEQWRITE;
	bool rnd = c.mode == M_RANDREAD || c.mode == M_RANDWRITE;
	uint64_t rng = c.seed, next = 0, start = gtime_us(), us, ops;

	for (uint64_t i = 0; i < c.qd; i++)
		fill(reqs[i].buf, 1, i);
	while (!stopping(start)) {
		struct req *r = free_req();
		uint64_t b = rnd ? grand(&rng) % nblocks : next++ % nblocks;

		submit(r, write ? VSTOR_WRITE : VSTOR_READ, b, 0);
		step_clock();
	}
	drain();
	us = gtime_us() - start;
	ops = n_reads + n_writes;
	gprogress("ops", ops);
	gprogress("bytes", ops * c.bs);
	gprogress("us", us);
	say("disk: %s bs=%lu qd=%lu: %lu ops in %lu us: %lu IOPS, %lu MB/s\n",
	    mode_names[c.mode], (unsigned long)c.bs, (unsigned long)c.qd, (unsigned long)ops,
	    (unsigned long)us, (unsigned long)(us ? ops * 1000000 / us : 0),
	    (unsigned long)(us ? ops * c.bs / us : 0));
}

int guest_main(unsigned cpu)
{
	int rc;

	if (cpu != 0)
		return 0;
	parse(cpu);
	vcon_open();
	vhb_open();
	rc = vstor_open(&d, (uint32_t)c.disk);
	if (rc < 0) {
		say("disk: there is no disk %lu (%d): start ferry with --disk PATH\n",
		    (unsigned long)c.disk, rc);
		vcon_flush();
		return 1;
	}
	if (d.readonly && c.mode != M_RANDREAD && c.mode != M_SEQREAD) {
		say("disk: disk %lu is read-only; mode %s writes\n", (unsigned long)c.disk,
		    mode_names[c.mode]);
		vcon_flush();
		return 1;
	}
	if (c.mode != M_VERIFY && !garg("size"))
		c.size = d.sectors * VSTOR_SECTOR;
	if (c.size > d.sectors * VSTOR_SECTOR)
		c.size = d.sectors * VSTOR_SECTOR;
	nblocks = c.size / c.bs;
	if (nblocks == 0) {
		say("disk: the disk is smaller than one %lu-byte block\n", (unsigned long)c.bs);
		vcon_flush();
		return 1;
	}
	for (uint64_t i = 0; i < c.qd; i++)
		reqs[i].buf = (uint64_t *)(uintptr_t)(gboot()->data_base + i * c.bs);
	last_report_tsc = grdtsc();
	if (c.mode == M_VERIFY)
		run_verify();
	else
		run_bench();
	vcon_flush();
	return 0;
}
