/*
 * The destination's state machine, fed crafted streams over a real socket:
 * every section out of place is refused by name, unknown optional sections
 * are skipped, and the VM is never started without a COMMIT.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/cpustate.h"
#include "helpers.h"
#include "migrate/codec.h"
#include "migrate/pages.h"
#include "migrate/receiver.h"
#include "migrate/stream.h"

struct fixture {
	struct mig_in *in;
	struct xport_listener *l;
	pthread_t thread;
	int rc;
	char err[512];
	struct vm *dst;
	struct vm *src;          /* supplies a genuine VM description and state */
	struct xport *x;         /* our end: the "source" */
	struct dbuf reply;
};

static struct fixture f;

static int create_vm(void *opaque, const struct mig_vmdesc *d, struct vm **out)
{
	struct vm_config cfg = { .mem_size = d->mem_size, .ncpus = d->ncpus };

	(void)opaque;
	return vm_create(out, &cfg);
}

static void *receiver(void *arg)
{
	(void)arg;
	f.rc = mig_in_run(f.in, f.l, create_vm, NULL, &f.dst);
	snprintf(f.err, sizeof(f.err), "%s", f.rc ? ferr_msg(f.rc) : "");
	return NULL;
}

static void setup(void)
{
	char uri[128];

	memset(&f, 0, sizeof(f));
	dbuf_init(&f.reply);
	f.src = tvm_create(1, 64ull << 20);
	tvm_boot(f.src, "hello", NULL);
	cr_assert_eq(xport_listen("tcp:127.0.0.1:0", &f.l), 0);
	cr_assert_eq(mig_in_create(&f.in), 0);
	cr_assert_eq(pthread_create(&f.thread, NULL, receiver, NULL), 0);
	snprintf(uri, sizeof(uri), "tcp:%s", f.l->addr);
	cr_assert_eq(xport_connect(uri, 5000, &f.x), 0, "%s", ferr_msg(-1));
}

static void teardown(void)
{
	xport_close(f.x);
	pthread_join(f.thread, NULL);
	if (f.dst) {
		vm_end(f.dst, 0, "test over");
		vm_destroy(f.dst);
	}
	mig_in_free(f.in);
	xport_listener_close(f.l);
	vm_destroy(f.src);
	dbuf_free(&f.reply);
}

TestSuite(receiver, .init = setup, .fini = teardown);

static void send_section(uint32_t type, uint32_t id, uint32_t flags, const void *p, size_t len)
{
	cr_assert_eq(mig_send_section(f.x, type, id, 1, flags, p, len), 0);
}

/* Preamble and a genuine VM description; expects READY. */
static void describe(void)
{
	uint8_t pre[MIG_PREAMBLE_SIZE];
	struct mig_vmdesc d;
	struct mig_section s;
	char text[400] = "";
	struct dbuf b;
	int rc;

	mig_preamble_encode(pre);
	cr_assert_eq(xport_send(f.x, pre, sizeof(pre)), 0);
	mig_vmdesc_from_vm(f.src, &d);
	d.nchannels = 1;
	dbuf_init(&b);
	mig_vmdesc_encode(&d, &b);
	send_section(MIG_SEC_VMDESC, 0, 0, b.data, b.len);
	dbuf_free(&b);
	rc = mig_recv_section(f.x, &s, &f.reply);
	cr_assert_eq(rc, 0, "no READY: %s", ferr_msg(rc));
	if (s.type == MIG_SEC_REJECT)
		mig_text(f.reply.data, f.reply.len, text, sizeof(text));
	cr_assert_eq(s.type, MIG_SEC_READY, "got %s %s", mig_section_name(s.type), text);
}

/* The receiver must fail with `needle` and tell the source (ERROR/REJECT). */
static void expect_failure(const char *needle)
{
	struct mig_section s;

	pthread_join(f.thread, NULL);
	f.thread = pthread_self();
	cr_assert_lt(f.rc, 0, "the receiver accepted the stream");
	cr_assert(strstr(f.err, needle), "'%s' lacks '%s'", f.err, needle);
	cr_assert_null(f.dst, "a VM was handed over");
	while (mig_recv_section(f.x, &s, &f.reply) == 0)
		if (s.type == MIG_SEC_ERROR || s.type == MIG_SEC_REJECT)
			return;
	cr_assert_fail("the source was not told");
}

static void end_iteration(uint64_t iter)
{
	uint8_t p[8];

	put_le64(p, iter);
	send_section(MIG_SEC_ITER_END, 0, 0, p, 8);
}

Test(receiver, the_stream_must_start_with_the_description)
{
	uint8_t pre[MIG_PREAMBLE_SIZE];

	mig_preamble_encode(pre);
	cr_assert_eq(xport_send(f.x, pre, sizeof(pre)), 0);
	send_section(MIG_SEC_PAGES, 0, 0, "x", 1);
	expect_failure("the stream starts with PAGES, not VMDESC");
}

Test(receiver, a_foreign_stream_is_refused)
{
	cr_assert_eq(xport_send(f.x, "GARBAGE!GARBAGE!", 16), 0);
	expect_failure("not a ferry migration stream");
}

Test(receiver, state_before_the_switchover_is_out_of_place)
{
	describe();
	send_section(MIG_SEC_VM_STATE, 0, 0, "x", 1);
	expect_failure("unexpected VM_STATE section (type 6) while receiving");
}

Test(receiver, end_before_the_switchover_is_out_of_place)
{
	describe();
	send_section(MIG_SEC_END, 0, 0, NULL, 0);
	expect_failure("unexpected END section (type 10) while receiving");
}

Test(receiver, a_description_twice_is_out_of_place)
{
	describe();
	send_section(MIG_SEC_VMDESC, 0, 0, "x", 1);
	expect_failure("unexpected VMDESC section");
}

Test(receiver, unknown_sections_are_skipped_only_if_optional)
{
	describe();
	send_section(99, 0, MIG_SECF_OPTIONAL, "later ferry", 11);
	send_section(99, 0, 0, "later ferry", 11);
	expect_failure("unexpected unknown section (type 99)");
}

Test(receiver, optional_unknown_sections_do_not_end_it)
{
	describe();
	send_section(99, 0, MIG_SECF_OPTIONAL, "later ferry", 11);
	mig_send_text(f.x, MIG_SEC_ABORT, "changed my mind");
	expect_failure("the source abandoned the migration: changed my mind");
}

Test(receiver, batches_must_belong_to_the_current_iteration)
{
	struct mig_batch b;
	uint8_t *p;
	size_t len;

	describe();
	cr_assert_eq(mig_batch_init(&b), 0);
	mig_batch_reset(&b, 2);
	mig_batch_add(&b, &f.src->mem, FERRY_IMAGE_GPA >> 12, false);
	mig_batch_seal(&b, false);
	len = MIG_BATCH_HDR_SIZE + 8 + b.data_len;
	p = malloc(len);
	memcpy(p, b.hdr, MIG_BATCH_HDR_SIZE);
	memcpy(p + MIG_BATCH_HDR_SIZE, b.entries, 8);
	memcpy(p + MIG_BATCH_HDR_SIZE + 8, b.data, b.data_len);
	send_section(MIG_SEC_PAGES, 0, MIG_SECF_NO_CSUM, p, len);
	free(p);
	mig_batch_free(&b);
	expect_failure("a batch of iteration 2 arrived in iteration 1");
}

Test(receiver, iteration_ends_must_be_in_order)
{
	describe();
	end_iteration(1);
	end_iteration(3);
	expect_failure("ITER_END for the wrong iteration (expected 2)");
}

Test(receiver, extents_outside_ram_are_refused)
{
	uint8_t e[16];

	describe();
	put_le64(e, 1ull << 40);
	put_le64(e + 8, 1);
	send_section(MIG_SEC_EXTENTS, 0, MIG_SECF_OPTIONAL, e, sizeof(e));
	expect_failure("EXTENTS entry 0");
}

static void switchover(uint64_t iter)
{
	uint8_t sw[40] = { 0 };

	put_le64(sw + 24, iter);
	send_section(MIG_SEC_SWITCHOVER, 0, 0, sw, sizeof(sw));
}

Test(receiver, end_needs_the_final_pages_and_all_state)
{
	describe();
	switchover(1);
	send_section(MIG_SEC_END, 0, 0, NULL, 0);
	expect_failure("END arrived before the final pages");
}

/* A switchover with no pages, then the VM state and, if asked, vCPU 0's. */
static void send_state(bool with_vcpu)
{
	struct vm_state st;
	struct dbuf b;

	switchover(1);
	end_iteration(1);
	cr_assert_eq(vm_state_alloc(&st, 1), 0);
	cr_assert_eq(vm_capture(f.src, &st), 0);
	dbuf_init(&b);
	mig_vm_state_encode(&st, &b);
	send_section(MIG_SEC_VM_STATE, 0, 0, b.data, b.len);
	if (with_vcpu) {
		dbuf_reset(&b);
		mig_vcpu_state_encode(&st.vcpus[0], &b);
		send_section(MIG_SEC_VCPU_STATE, 0, 0, b.data, b.len);
	}
	dbuf_free(&b);
	vm_state_free(&st);
}

Test(receiver, end_needs_every_vcpu)
{
	describe();
	send_state(false);
	send_section(MIG_SEC_END, 0, 0, NULL, 0);
	expect_failure("END arrived without the state of vCPU 0");
}

Test(receiver, a_loaded_vm_never_runs_without_commit)
{
	struct mig_section s;

	describe();
	send_state(true);
	send_section(MIG_SEC_END, 0, 0, NULL, 0);
	cr_assert_eq(mig_recv_section(f.x, &s, &f.reply), 0);
	cr_assert_eq(s.type, MIG_SEC_LOADED, "got %s", mig_section_name(s.type));
	mig_send_text(f.x, MIG_SEC_ABORT, "the source resumed instead");
	expect_failure("the source abandoned the migration: the source resumed instead");
}
