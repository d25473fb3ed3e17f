/*
 * The migration stream's encoders and decoders against malformed input:
 * section headers, the preamble, the VM description and the VM/vCPU state
 * records.  Every decoder must refuse damage with a message naming it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "migrate/codec.h"
#include "migrate/stream.h"

static void expect_msg(int rc, const char *needle)
{
	cr_assert_lt(rc, 0, "accepted; expected an error about '%s'", needle);
	cr_assert(strstr(ferr_msg(rc), needle), "message '%s' lacks '%s'", ferr_msg(rc), needle);
}

Test(stream, section_header_round_trip_and_damage)
{
	struct mig_section in = {
		.type = MIG_SEC_VCPU_STATE, .id = 3, .version = 1, .flags = MIG_SECF_OPTIONAL,
		.length = 12345, .payload_csum = 0xdeadbeef,
	}, out;
	uint8_t hdr[MIG_SECTION_HDR_SIZE];

	mig_section_encode(&in, hdr);
	cr_assert_eq(mig_section_decode(hdr, &out), 0);
	cr_assert(out.type == in.type && out.id == in.id && out.version == in.version &&
		  out.flags == in.flags && out.length == in.length &&
		  out.payload_csum == in.payload_csum);
	for (unsigned byte = 0; byte < MIG_SECTION_HDR_SIZE; byte++) {
		hdr[byte] ^= 0x40;
		expect_msg(mig_section_decode(hdr, &out), "corrupt section header");
		hdr[byte] ^= 0x40;
	}
	in.length = MIG_MAX_SECTION + 1ull;
	mig_section_encode(&in, hdr);
	expect_msg(mig_section_decode(hdr, &out), "more than");
}

Test(stream, preamble_rejects_foreign_and_future_streams)
{
	uint8_t p[MIG_PREAMBLE_SIZE];

	mig_preamble_encode(p);
	cr_assert_eq(mig_preamble_check(p), 0);
	p[0] = 'X';
	expect_msg(mig_preamble_check(p), "not a ferry migration stream");
	mig_preamble_encode(p);
	put_le32(p + 8, MIG_VERSION + 1);
	expect_msg(mig_preamble_check(p), "stream format version 2; this ferry reads version 1");
}

static struct vm *vm;

static void setup(void)
{
	vm = tvm_create(2, 64ull << 20);
	tvm_boot(vm, "hello", NULL);
}

static void teardown(void)
{
	vm_destroy(vm);
}

Test(stream, vmdesc_round_trip, .init = setup, .fini = teardown)
{
	struct mig_vmdesc a, b;
	struct dbuf buf;

	mig_vmdesc_from_vm(vm, &a);
	a.nchannels = 4;
	a.flags = MIG_FLAG_VERIFY;
	dbuf_init(&buf);
	mig_vmdesc_encode(&a, &buf);
	cr_assert_eq(mig_vmdesc_decode(buf.data, buf.len, &b), 0, "%s", ferr_msg(-1));
	cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0);
	cr_assert_eq(mig_vmdesc_check(&b, vm), 0, "%s", ferr_msg(-1));
	/* Any truncation is refused, as are trailing bytes. */
	for (size_t len = 0; len < buf.len; len += 7)
		cr_assert_lt(mig_vmdesc_decode(buf.data, len, &b), 0, "cut at %zu accepted", len);
	dbuf_put_u8(&buf, 0);
	expect_msg(mig_vmdesc_decode(buf.data, buf.len, &b), "trailing bytes");
	dbuf_free(&buf);
}

/* Encodes `d`, lets `mutate` damage the encoding, expects `needle`. */
static void vmdesc_field(struct mig_vmdesc *d, size_t off, uint32_t value, const char *needle)
{
	struct mig_vmdesc out;
	struct dbuf buf;

	dbuf_init(&buf);
	mig_vmdesc_encode(d, &buf);
	put_le32(buf.data + off, value);
	expect_msg(mig_vmdesc_decode(buf.data, buf.len, &out), needle);
	dbuf_free(&buf);
}

Test(stream, vmdesc_rejects_bad_fields, .init = setup, .fini = teardown)
{
	struct mig_vmdesc d;

	mig_vmdesc_from_vm(vm, &d);
	d.nchannels = 1;
	vmdesc_field(&d, 24, 8192, "page size 8192");
	vmdesc_field(&d, 28, 0, "0 vCPUs");
	vmdesc_field(&d, 28, 65, "65 vCPUs");
	vmdesc_field(&d, 32, 2, "2 memory slots");
	vmdesc_field(&d, 16, 12345, "is not one ferry can run");
	/* nmsrs sits after uuid, mem, page size, ncpus, slots, names, khz, xsave. */
	vmdesc_field(&d, 16 + 8 + 4 + 4 + 4 + 16 + 32 + 16 + 4 + 4, 100000, "100000 MSRs");
}

Test(stream, vmdesc_check_names_what_this_host_lacks, .init = setup, .fini = teardown)
{
	struct mig_vmdesc d;

	mig_vmdesc_from_vm(vm, &d);
	d.tsc_khz += 1000;
	expect_msg(mig_vmdesc_check(&d, vm), "TSC scaling is not supported");
	mig_vmdesc_from_vm(vm, &d);
	d.xsave_size += 64;
	expect_msg(mig_vmdesc_check(&d, vm), "bytes of XSAVE state");
	mig_vmdesc_from_vm(vm, &d);
	d.msr_index[d.nmsrs++] = 0x12345678;
	expect_msg(mig_vmdesc_check(&d, vm), "cannot hold the source's MSR 0x12345678");
	mig_vmdesc_from_vm(vm, &d);
	for (unsigned i = 0; i < d.ncpuid; i++)
		if (d.cpuid[i].function == 7 && d.cpuid[i].index == 0)
			d.cpuid[i].ebx = ~0u;
	expect_msg(mig_vmdesc_check(&d, vm), "CPUID 7.0.EBX");
}

Test(stream, state_records_round_trip_and_damage, .init = setup, .fini = teardown)
{
	struct vm_state st, back;
	struct vcpu_state *v;
	struct dbuf buf;

	cr_assert_eq(vm_state_alloc(&st, 2), 0);
	cr_assert_eq(vm_state_alloc(&back, 2), 0);
	cr_assert_eq(vm_capture(vm, &st), 0, "%s", ferr_msg(-1));
	dbuf_init(&buf);

	mig_vm_state_encode(&st, &buf);
	cr_assert_eq(mig_vm_state_decode(buf.data, buf.len, &back), 0, "%s", ferr_msg(-1));
	cr_assert_eq(back.mem_size, st.mem_size);
	cr_assert_eq(memcmp(back.irqchip, st.irqchip, sizeof(st.irqchip)), 0);
	for (size_t len = 1; len < buf.len; len += 11)
		cr_assert_lt(mig_vm_state_decode(buf.data, len, &back), 0, "VM state cut at %zu", len);

	dbuf_reset(&buf);
	mig_vcpu_state_encode(&st.vcpus[1], &buf);
	v = calloc(1, sizeof(*v));
	cr_assert_eq(mig_vcpu_state_decode(buf.data, buf.len, v), 0, "%s", ferr_msg(-1));
	cr_assert_eq(memcmp(v, &st.vcpus[1], sizeof(*v)), 0, "vCPU state changed on the way");
	for (size_t len = 1; len < buf.len; len += 97)
		cr_assert_lt(mig_vcpu_state_decode(buf.data, len, v), 0, "vCPU state cut at %zu", len);
	/* The first record is INDEX (tag 1, 4 bytes): damage its tag, then its length. */
	put_le32(buf.data, 99);
	expect_msg(mig_vcpu_state_decode(buf.data, buf.len, v), "unknown record 99");
	put_le32(buf.data, 1);
	put_le32(buf.data + 4, 5);
	cr_assert_lt(mig_vcpu_state_decode(buf.data, buf.len, v), 0);
	put_le32(buf.data + 4, 4);
	/* A record sent twice. */
	dbuf_put(&buf, buf.data, 12);
	expect_msg(mig_vcpu_state_decode(buf.data, buf.len, v), "appears twice");
	/* A state missing its registers: keep only the INDEX record. */
	expect_msg(mig_vcpu_state_decode(buf.data, 12, v), "lacks records");

	free(v);
	dbuf_free(&buf);
	vm_state_free(&st);
	vm_state_free(&back);
}
