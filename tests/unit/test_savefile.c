/*
 * The save-file reader against damaged files: truncation at every kind of
 * place, a bit flipped in each part of the file, other format versions,
 * foreign files, extra bytes and a HOT_PIECES section that makes no sense.
 * Each is rejected with its own message (checked by substring), never a
 * crash, and a damaged RAM block is caught by the eager load before
 * anything runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate/stream.h"
#include "test_savefile.h"

/* Section indices in a pristine file of one device. */
enum { S_VMDESC, S_VM_STATE, S_VCPU, S_DEVICE, S_HOT, S_MAP, S_END, NSEC };

struct layout {
	uint64_t sec[16];        /* offsets of the sections, in file order */
	unsigned nsec;
	uint64_t map_end, ram_off, ram_size, end_off, size;
	uint32_t data_block, zero_block;
};

static const char *const idle_args[] = { "wss=4M", NULL };

static void learn_layout(const char *path, struct layout *l)
{
	int rc;
	struct sf_file *f = tsf_open(path, &rc);

	cr_assert_eq(rc, 0, "the pristine file does not load: %s", ferr_msg(rc));
	memset(l, 0, sizeof(*l));
	cr_assert_eq(f->nsec, NSEC, "expected VMDESC, VM_STATE, VCPU_STATE, DEVICE, HOT_PIECES, "
		     "RAM_MAP, END");
	cr_assert_eq(f->sec[S_HOT].s.type, MIG_SEC_HOT_PIECES);
	cr_assert(f->have_hot && f->nhot > 0, "the file lists no hot pieces");
	for (unsigned i = 0; i < f->nsec; i++)
		l->sec[i] = f->sec[i].offset;
	l->nsec = f->nsec;
	l->map_end = f->sec[S_MAP].offset + MIG_SECTION_HDR_SIZE + f->sec[S_MAP].s.length;
	l->ram_off = f->ram_off;
	l->ram_size = f->ram_size;
	l->end_off = f->ram_off + f->ram_size;
	l->size = f->file_size;
	l->data_block = l->zero_block = UINT32_MAX;
	for (uint32_t b = 0; b < f->nblocks; b++) {
		if (f->block_pages[b] && l->data_block == UINT32_MAX)
			l->data_block = b;
		if (!f->block_pages[b])
			l->zero_block = b;
	}
	cr_assert(l->data_block != UINT32_MAX && l->zero_block != UINT32_MAX);
	cr_assert(l->map_end < l->ram_off, "no padding before the RAM area to test");
	sf_free(f);
}

static void expect_error(const char *path, const char *what, const char *want)
{
	int rc;
	struct sf_file *f = tsf_open(path, &rc);

	cr_assert_neq(rc, 0, "%s: the file loaded", what);
	cr_assert(strstr(ferr_msg(rc), want), "%s: message '%s' lacks '%s'", what, ferr_msg(rc),
		  want);
	sf_free(f);
}

/* A fresh copy of the pristine file to damage. */
static const char *victim(const struct tsf *t)
{
	static char path[160];

	snprintf(path, sizeof(path), "%s/victim.save", t->dir);
	tsf_copy(t->path, path);
	return path;
}

Test(savefile, pristine_file_loads_and_every_block_checks)
{
	struct tsf t;
	struct sf_file *f;
	uint8_t *buf = malloc(SF_BLOCK_SIZE);
	int rc;

	tsf_make(&t, 2, "idle", idle_args, 50);
	f = tsf_open(t.path, &rc);
	cr_assert_eq(rc, 0, "%s", ferr_msg(rc));
	cr_assert_eq(f->desc.ncpus, 2);
	cr_assert_eq(f->desc.mem_size, TSF_MEM);
	cr_assert_str_eq(f->desc.guest_name, "idle");
	cr_assert_eq(f->ndev, 1);
	cr_assert_str_eq(f->dev[0].name, TSF_DEV_NAME);
	cr_assert_eq(f->dev[0].len, strlen(TSF_DEV_STATE));
	cr_assert_eq(f->ram_off % SF_RAM_ALIGN, 0);
	cr_assert_eq(f->nblocks, TSF_MEM / SF_BLOCK_SIZE);
	for (uint32_t b = 0; b < f->nblocks; b++)
		cr_assert_eq(sf_read_block(f, b, buf), 0, "block %u: %s", b, ferr_msg(-1));
	/* The untouched part of RAM costs nothing: far fewer pages than RAM. */
	cr_assert_lt(f->stored_pages * GMEM_PAGE_SIZE, TSF_MEM / 4);
	sf_free(f);
	free(buf);
	tsf_cleanup(&t);
}

Test(savefile, truncation_anywhere_is_named)
{
	enum { RAM = 100, END };
	struct tsf t;
	struct layout l;
	const struct { const char *what; int which; uint64_t add; const char *want; } cuts[] = {
		{ "empty file", -1, 0, "less than the 16-byte preamble" },
		{ "inside the preamble", -1, 10, "less than the 16-byte preamble" },
		{ "right after the preamble", -1, 16, "before its RAM map" },
		{ "inside the first section header", 0, 10, "inside the section header at byte 16" },
		{ "inside VMDESC", 0, 100, "inside the VMDESC section at byte 16" },
		{ "inside a VCPU_STATE", S_VCPU, 500, "inside the VCPU_STATE section" },
		{ "inside HOT_PIECES", S_HOT, 40, "inside the HOT_PIECES section" },
		{ "inside the RAM map", S_MAP, 40, "inside the RAM_MAP section" },
		{ "inside the RAM area", RAM, 1 << 20, "inside the RAM area" },
		{ "where END starts", END, 0, "where its END section should start" },
		{ "inside END's header", END, 20, "inside the section header at byte" },
		{ "inside END's payload", END, 40, "inside the END section" },
	};

	tsf_make(&t, 1, "idle", idle_args, 50);
	learn_layout(t.path, &l);
	for (unsigned i = 0; i < ARRAY_SIZE(cuts); i++) {
		const char *v = victim(&t);
		uint64_t at = cuts[i].which < 0 ? 0 : cuts[i].which == RAM ? l.ram_off :
			      cuts[i].which == END ? l.end_off : l.sec[cuts[i].which];

		tsf_truncate(v, at + cuts[i].add);
		expect_error(v, cuts[i].what, cuts[i].want);
		expect_error(v, cuts[i].what, "truncated");
	}
	tsf_cleanup(&t);
}

Test(savefile, a_flipped_bit_in_each_part_is_named)
{
	struct tsf t;
	struct layout l;
	char want[S_END + 1][96];
	struct { const char *what; uint64_t off; uint8_t mask; const char *want; } flips[] = {
		{ "magic", 0, 0x01, "is not a ferry save file" },
		{ "format flags", 12, 0x01, "is a ferry migration stream, not a save file" },
		{ "unknown flag", 13, 0x01, "uses format flags 0x100" },
		{ "VMDESC header", 0, 0x10, "the section header at byte 16 fails its checksum" },
		{ "VMDESC payload", 0, 0x04, want[S_VMDESC] },
		{ "VM_STATE payload", 0, 0x04, want[S_VM_STATE] },
		{ "VCPU_STATE payload", 0, 0x80, want[S_VCPU] },
		{ "DEVICE payload", 0, 0x02, want[S_DEVICE] },
		{ "HOT_PIECES payload", 0, 0x08, want[S_HOT] },
		{ "RAM_MAP payload", 0, 0x01, want[S_MAP] },
		{ "padding", 0, 0x01, "in the padding before the RAM area" },
		{ "END header", 0, 0x01, want[S_END] },
		{ "END payload", 0, 0x01, "the END section at byte" },
	};

	tsf_make(&t, 1, "idle", idle_args, 50);
	learn_layout(t.path, &l);
	flips[3].off = l.sec[0] + 4;
	for (unsigned s = 0; s < S_END; s++) {
		flips[4 + s].off = l.sec[s] + MIG_SECTION_HDR_SIZE + 9;
		snprintf(want[s], sizeof(want[s]), "section at byte %llu fails its checksum",
			 (unsigned long long)l.sec[s]);
	}
	flips[10].off = l.map_end + 7;
	flips[11].off = l.end_off + 2;
	snprintf(want[S_END], sizeof(want[S_END]), "the section header at byte %llu fails its "
		 "checksum", (unsigned long long)l.end_off);
	flips[12].off = l.end_off + MIG_SECTION_HDR_SIZE + 3;
	for (unsigned i = 0; i < ARRAY_SIZE(flips); i++) {
		const char *v = victim(&t);

		tsf_flip(v, flips[i].off, flips[i].mask);
		expect_error(v, flips[i].what, flips[i].want);
	}
	tsf_cleanup(&t);
}

/* RAM is checked block by block: sf_load passes, the RAM load does not. */
static void expect_ram_error(const char *path, uint32_t block)
{
	struct vm *vm = tvm_create(1, TSF_MEM);
	char want[64];
	int rc;
	struct sf_file *f = tsf_open(path, &rc);

	cr_assert_eq(rc, 0, "a RAM flip must not fail the header checks: %s", ferr_msg(rc));
	tsf_add_device(vm, 1);
	cr_assert_eq(sf_check_vm(f, vm), 0, "%s", ferr_msg(-1));
	rc = sf_load_ram(f, &vm->mem, 2);
	snprintf(want, sizeof(want), "RAM block %u (guest-physical", block);
	cr_assert_eq(rc, -EBADMSG, "the eager load took a damaged block");
	cr_assert(strstr(ferr_msg(rc), want), "'%s' lacks '%s'", ferr_msg(rc), want);
	cr_assert(strstr(ferr_msg(rc), "fails its checksum"), "%s", ferr_msg(rc));
	sf_free(f);
	vm_destroy(vm);
}

Test(savefile, a_flipped_bit_in_ram_is_caught_before_the_vm_runs)
{
	struct tsf t;
	struct layout l;
	const char *v;
	uint8_t one = 1;

	tsf_make(&t, 1, "idle", idle_args, 50);
	learn_layout(t.path, &l);
	/* In a stored page of a block that holds data. */
	v = victim(&t);
	tsf_flip(v, l.ram_off + sf_block_gpa(l.data_block) + 12345, 0x20);
	expect_ram_error(v, l.data_block);
	/* Data where the map says the block is all zero (a hole in the file). */
	v = victim(&t);
	tsf_write(v, l.ram_off + sf_block_gpa(l.zero_block) + 777, &one, 1);
	expect_ram_error(v, l.zero_block);
	tsf_cleanup(&t);
}

Test(savefile, other_versions_are_refused_by_name)
{
	struct tsf t;
	struct layout l;
	struct sf_file *f;
	const char *v;
	uint8_t two[4];
	char want[128];
	int rc;

	tsf_make(&t, 1, "idle", idle_args, 50);
	learn_layout(t.path, &l);
	put_le32(two, 2);
	v = victim(&t);
	tsf_write(v, 8, two, 4);
	expect_error(v, "future file", "is format version 2, written by a newer ferry; this ferry "
		     "reads version 1");
	v = victim(&t);
	tsf_set_header(v, l.sec[S_MAP], 8, 2);
	snprintf(want, sizeof(want), "the RAM_MAP section at byte %llu is version 2; this ferry "
		 "reads version 1", (unsigned long long)l.sec[S_MAP]);
	expect_error(v, "future RAM map", want);
	/* A later HOT_PIECES is a hint this ferry skips, as it is marked optional... */
	v = victim(&t);
	tsf_set_header(v, l.sec[S_HOT], 8, 2);
	f = tsf_open(v, &rc);
	cr_assert_eq(rc, 0, "a later optional HOT_PIECES must be skipped: %s", ferr_msg(rc));
	cr_assert(!f->have_hot && f->nhot == 0);
	sf_free(f);
	/* ...but refused without that flag. */
	tsf_set_header(v, l.sec[S_HOT], 12, 0);
	snprintf(want, sizeof(want), "the HOT_PIECES section at byte %llu is version 2",
		 (unsigned long long)l.sec[S_HOT]);
	expect_error(v, "future HOT_PIECES, not optional", want);
	v = victim(&t);
	tsf_set_header(v, l.sec[0], 8, 7);
	expect_error(v, "future VMDESC", "the VMDESC section at byte 16 is version 7");
	v = victim(&t);
	tsf_set_header(v, l.end_off, 8, 3);
	expect_error(v, "future END", "the END section at byte");
	tsf_cleanup(&t);
}

Test(savefile, foreign_and_malformed_files_are_refused)
{
	static const char text[] = "#!/bin/sh\necho this is not a save file\n";
	struct tsf t;
	struct layout l;
	char path[160], want[128];
	const char *v;
	struct sf_file *f;
	int fd, rc;

	tsf_make(&t, 1, "idle", idle_args, 50);
	learn_layout(t.path, &l);
	snprintf(path, sizeof(path), "%s/foreign", t.dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd >= 0 && write(fd, text, sizeof(text)) == (ssize_t)sizeof(text));
	close(fd);
	expect_error(path, "a shell script", "is not a ferry save file");
	expect_error(t.dir, "a directory", "is not a regular file");
	snprintf(path, sizeof(path), "%s/missing", t.dir);
	expect_error(path, "a missing file", "cannot open");
	/* Bytes after END. */
	v = victim(&t);
	tsf_write(v, l.size, "extra", 5);
	expect_error(v, "trailing bytes", "(5 bytes follow END)");
	/* A section type this ferry does not know, not marked optional. */
	v = victim(&t);
	tsf_set_header(v, l.sec[3], 0, 99);
	snprintf(want, sizeof(want), "unexpected unknown section (type 99) at byte %llu",
		 (unsigned long long)l.sec[3]);
	expect_error(v, "unknown section", want);
	/* The same section marked optional is skipped. */
	tsf_set_header(v, l.sec[3], 12, MIG_SECF_OPTIONAL);
	f = tsf_open(v, &rc);
	cr_assert_eq(rc, 0, "an optional unknown section must be skipped: %s", ferr_msg(rc));
	cr_assert_eq(f->ndev, 0);
	sf_free(f);
	/* Sections out of order: VM_STATE where a VCPU_STATE belongs. */
	v = victim(&t);
	tsf_set_header(v, l.sec[2], 0, MIG_SEC_VM_STATE);
	expect_error(v, "a repeated VM_STATE", "unexpected VM_STATE section");
	/* A vCPU section for the wrong vCPU. */
	v = victim(&t);
	tsf_set_header(v, l.sec[2], 4, 5);
	expect_error(v, "VCPU_STATE for vCPU 5", "VCPU_STATE for vCPU 5 at byte");
	tsf_cleanup(&t);
}

/*
 * HOT_PIECES is a hint, but from outside: a section whose checksums match
 * and whose contents do not make sense, alone or against the RAM map,
 * still refuses the file, naming what is wrong.
 */
Test(savefile, a_malformed_hot_pieces_section_is_refused)
{
	struct tsf t;
	struct layout l;
	struct sf_file *f;
	uint64_t first, second;
	unsigned nhot;
	char want[160];
	const char *v;
	uint8_t b[8];
	int rc;

	tsf_make(&t, 1, "idle", idle_args, 50);
	learn_layout(t.path, &l);
	f = tsf_open(t.path, &rc);
	cr_assert(f->nhot >= 2, "need two hot pieces, the file lists %u", f->nhot);
	first = f->hot_gpa[0];
	second = f->hot_gpa[1];
	nhot = f->nhot;
	cr_assert(!f->block_pages[(TSF_MEM - 1) >> SF_BLOCK_SHIFT], "the last block holds data");
	cr_assert(f->block_pages[f->hot_gpa[nhot - 1] >> SF_BLOCK_SHIFT],
		  "the last hot piece holds no data");
	cr_assert_eq(first % SF_PIECE_SIZE, 0);
	cr_assert_lt(first, second);
	sf_free(f);
	snprintf(want, sizeof(want), "the HOT_PIECES section at byte %llu is malformed",
		 (unsigned long long)l.sec[S_HOT]);

	v = victim(&t);
	put_le32(b, 4096);
	tsf_set_payload(v, l.sec[S_HOT], 0, b, 4);
	expect_error(v, "another piece size", want);
	v = victim(&t);
	put_le32(b, SF_HOT_MAX + 1);
	tsf_set_payload(v, l.sec[S_HOT], 4, b, 4);
	expect_error(v, "too many pieces", want);
	v = victim(&t);
	put_le64(b, first + GMEM_PAGE_SIZE);
	tsf_set_payload(v, l.sec[S_HOT], SF_HOT_HDR_SIZE, b, 8);
	expect_error(v, "a piece off its boundary", "HOT_PIECES entry 0 (guest-physical");
	v = victim(&t);
	put_le64(b, TSF_MEM);
	tsf_set_payload(v, l.sec[S_HOT], SF_HOT_HDR_SIZE, b, 8);
	expect_error(v, "a piece beyond RAM", "is not the start of a piece of guest RAM");
	v = victim(&t);
	put_le64(b, first);
	tsf_set_payload(v, l.sec[S_HOT], SF_HOT_HDR_SIZE + SF_HOT_ENTRY_SIZE, b, 8);
	expect_error(v, "a piece listed twice", "HOT_PIECES entry 1 (guest-physical");
	/* The last piece moved to the empty end of RAM, keeping its data's checksum. */
	v = victim(&t);
	put_le64(b, TSF_MEM - SF_PIECE_SIZE);
	tsf_set_payload(v, l.sec[S_HOT], SF_HOT_HDR_SIZE + (uint64_t)(nhot - 1) * SF_HOT_ENTRY_SIZE,
			b, 8);
	expect_error(v, "a data checksum for an empty block", "lies in a block the RAM map says is "
		     "empty, but its checksum is not that of zeros");
	tsf_cleanup(&t);
}
