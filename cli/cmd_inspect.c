/*
 * `ferry inspect FILE [--json] [--no-ram]`: what a save file holds and
 * whether it is whole.  It prints the preamble, every section with its
 * offset, size and checksum status, the VM it describes, the RAM map and
 * the hot pieces, and (unless --no-ram) checks every RAM block and every hot
 * piece against its checksum.  A file that fails a check is shown as far as
 * it could be read, followed by the error: the tool to reach for when a
 * restore fails.  Exits 0 only when everything checks out.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/util.h"
#include "../migrate/savefile.h"
#include "cli.h"

#define MAX_BAD_SHOWN 16

static const char inspect_usage[] =
	"usage: ferry inspect FILE [--json] [--no-ram]\n"
	"\n"
	"Shows what a save file (from `ferry save`) holds and checks it: the header,\n"
	"every section with its size and checksum, every RAM block and every hot piece.\n"
	"\n"
	"  --json     print it all as one JSON object\n"
	"  --no-ram   do not read RAM (the rest is still checked)\n"
	"\n"
	"Exit status: 0 the file is whole; 1 it is not (the error says why); 2 usage.\n";

struct ram_check {
	uint64_t checked;
	uint64_t bad;
	uint32_t bad_blocks[MAX_BAD_SHOWN];
	unsigned hot_bad;               /* HOT_PIECES entries that fail */
	char first_error[512];
};

static void check_ram(const struct sf_file *f, struct ram_check *rc)
{
	uint8_t *buf = malloc(SF_BLOCK_SIZE);

	memset(rc, 0, sizeof(*rc));
	if (!buf) {
		snprintf(rc->first_error, sizeof(rc->first_error), "out of memory");
		rc->bad = 1;
		return;
	}
	for (uint32_t b = 0; b < f->nblocks; b++) {
		int err = sf_read_block(f, b, buf);

		rc->checked++;
		if (!err)
			continue;
		if (!rc->bad)
			snprintf(rc->first_error, sizeof(rc->first_error), "%s", ferr_msg(err));
		if (rc->bad < MAX_BAD_SHOWN)
			rc->bad_blocks[rc->bad] = b;
		rc->bad++;
	}
	for (unsigned i = 0; i < f->nhot; i++) {
		int err = sf_read_hot_piece(f, i, buf);

		if (!err)
			continue;
		if (!rc->bad && !rc->hot_bad)
			snprintf(rc->first_error, sizeof(rc->first_error), "%s", ferr_msg(err));
		rc->hot_bad++;
	}
	free(buf);
}

static void print_uuid(const uint8_t *u, char *out)
{
	for (unsigned i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", u[i]);
}

static json_t *to_json(const struct sf_file *f, const struct ram_check *rc, bool ram_checked,
		       const char *error)
{
	json_t *o = json_object(), *secs = json_array(), *devs = json_array();
	char uuid[33];

	json_object_set_new(o, "file", json_string(f->path));
	json_object_set_new(o, "size", json_integer((json_int_t)f->file_size));
	json_object_set_new(o, "version", json_integer(f->version));
	json_object_set_new(o, "ok", json_boolean(!error));
	if (error)
		json_object_set_new(o, "error", json_string(error));
	for (unsigned i = 0; i < f->nsec; i++)
		json_array_append_new(secs, json_pack(
			"{s:I, s:s, s:i, s:i, s:i, s:I, s:b}", "offset", (json_int_t)f->sec[i].offset,
			"type", mig_section_name(f->sec[i].s.type), "type_id", (int)f->sec[i].s.type,
			"id", (int)f->sec[i].s.id, "version", (int)f->sec[i].s.version,
			"length", (json_int_t)f->sec[i].s.length, "checksum_ok", f->sec[i].csum_ok));
	json_object_set_new(o, "sections", secs);
	if (f->st.vcpus) {
		print_uuid(f->desc.uuid, uuid);
		json_object_set_new(o, "vm", json_pack(
			"{s:s, s:s, s:I, s:i, s:i}", "guest", f->desc.guest_name, "uuid", uuid,
			"memory", (json_int_t)f->desc.mem_size, "vcpus", (int)f->desc.ncpus,
			"tsc_khz", (int)f->desc.tsc_khz));
	}
	for (unsigned i = 0; i < f->ndev; i++)
		json_array_append_new(devs, json_pack("{s:s, s:i, s:I}", "name", f->dev[i].name,
						      "version", (int)f->dev[i].version,
						      "bytes", (json_int_t)f->dev[i].len));
	json_object_set_new(o, "devices", devs);
	if (f->have_map) {
		json_t *ram = json_pack("{s:I, s:I, s:i, s:I, s:I}", "offset",
					(json_int_t)f->ram_off, "size", (json_int_t)f->ram_size,
					"blocks", (int)f->nblocks, "data_blocks",
					(json_int_t)f->data_blocks, "stored_pages",
					(json_int_t)f->stored_pages);

		if (ram_checked) {
			json_t *bad = json_array();

			for (uint64_t i = 0; i < MIN(rc->bad, (uint64_t)MAX_BAD_SHOWN); i++)
				json_array_append_new(bad, json_integer(rc->bad_blocks[i]));
			json_object_set_new(ram, "checked_blocks", json_integer((json_int_t)rc->checked));
			json_object_set_new(ram, "bad_blocks", json_integer((json_int_t)rc->bad));
			json_object_set_new(ram, "bad_block_list", bad);
		}
		json_object_set_new(o, "ram", ram);
	}
	if (f->have_hot) {
		json_t *hot = json_object(), *list = json_array();

		for (unsigned i = 0; i < f->nhot; i++)
			json_array_append_new(list, json_integer((json_int_t)f->hot_gpa[i]));
		json_object_set_new(hot, "piece_size", json_integer(SF_PIECE_SIZE));
		json_object_set_new(hot, "pieces", list);
		if (ram_checked)
			json_object_set_new(hot, "bad_pieces", json_integer(rc->hot_bad));
		json_object_set_new(o, "hot", hot);
	}
	return o;
}

static void print_text(const struct sf_file *f, const struct ram_check *rc, bool ram_checked)
{
	char a[32], b[32], uuid[33];

	printf("file:     %s (%s", f->path, fmt_size(a, sizeof(a), f->file_size));
	printf(", %llu bytes)\n", (unsigned long long)f->file_size);
	if (f->version)
		printf("format:   ferry save file, format version %u\n", f->version);
	if (f->st.vcpus) {
		print_uuid(f->desc.uuid, uuid);
		printf("VM:       guest '%s', %u vCPU%s, %s of RAM, TSC %u kHz, uuid %s\n",
		       f->desc.guest_name, f->desc.ncpus, f->desc.ncpus == 1 ? "" : "s",
		       fmt_size(a, sizeof(a), f->desc.mem_size), f->desc.tsc_khz, uuid);
	}
	if (f->nsec) {
		printf("sections:\n  %12s  %-11s %4s %4s %12s  %s\n", "offset", "type", "id", "ver",
		       "bytes", "checksum");
		for (unsigned i = 0; i < f->nsec; i++) {
			const struct sf_section_info *s = &f->sec[i];

			printf("  %12llu  %-11s %4u %4u %12llu  %s\n", (unsigned long long)s->offset,
			       mig_section_name(s->s.type), s->s.id, s->s.version,
			       (unsigned long long)s->s.length, s->csum_ok ? "ok" : "BAD");
		}
	}
	for (unsigned i = 0; i < f->ndev; i++)
		printf("device:   %s, state version %u, %zu bytes\n", f->dev[i].name,
		       f->dev[i].version, f->dev[i].len);
	if (f->have_map) {
		printf("RAM:      bytes %llu to %llu of the file: %u blocks of %s, %llu holding data "
		       "(%llu pages, %s stored), %llu all zero\n",
		       (unsigned long long)f->ram_off, (unsigned long long)(f->ram_off + f->ram_size),
		       f->nblocks, fmt_size(a, sizeof(a), SF_BLOCK_SIZE),
		       (unsigned long long)f->data_blocks, (unsigned long long)f->stored_pages,
		       fmt_size(b, sizeof(b), f->stored_pages * GMEM_PAGE_SIZE),
		       (unsigned long long)(f->nblocks - f->data_blocks));
	}
	if (f->have_hot)
		printf("hot:      %u pieces of %s that the vCPUs touch first (HOT_PIECES)\n", f->nhot,
		       fmt_size(a, sizeof(a), SF_PIECE_SIZE));
	if (ram_checked) {
		if (f->nhot && !rc->hot_bad)
			printf("checked:  all %u hot pieces match their checksums\n", f->nhot);
		else if (f->nhot)
			printf("checked:  %u of %u hot pieces fail their checksums\n", rc->hot_bad,
			       f->nhot);
		if (!rc->bad) {
			printf("checked:  all %llu RAM blocks match their checksums\n",
			       (unsigned long long)rc->checked);
		} else {
			printf("checked:  %llu of %llu RAM blocks fail their checksums:",
			       (unsigned long long)rc->bad, (unsigned long long)rc->checked);
			for (uint64_t i = 0; i < MIN(rc->bad, (uint64_t)MAX_BAD_SHOWN); i++)
				printf(" %u", rc->bad_blocks[i]);
			printf("%s\n", rc->bad > MAX_BAD_SHOWN ? " ..." : "");
		}
	}
}

int cmd_inspect(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "no-ram", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool as_json = false, no_ram = false, ram_checked = false;
	struct ram_check rc = { 0 };
	char error[600] = "";
	struct sf_file *f;
	int opt, err;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			as_json = true;
			break;
		case 'n':
			no_ram = true;
			break;
		case 'h':
			fputs(inspect_usage, stdout);
			return 0;
		default:
			return usage_error("inspect", "option '%s' is unknown (see ferry inspect --help)",
					   argv[optind - 1]);
		}
	}
	if (argc - optind != 1)
		return usage_error("inspect", "usage: ferry inspect FILE [--json] [--no-ram]");
	f = sf_alloc();
	if (!f)
		return EXIT_RUNTIME;
	err = sf_load(f, argv[optind]);
	if (err) {
		snprintf(error, sizeof(error), "%s", ferr_msg(err));
	} else if (!no_ram) {
		check_ram(f, &rc);
		ram_checked = true;
		if (rc.bad || rc.hot_bad)
			snprintf(error, sizeof(error), "%s", rc.first_error);
	}
	if (as_json) {
		json_t *o = to_json(f, &rc, ram_checked, error[0] ? error : NULL);

		json_dumpf(o, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
		json_decref(o);
	} else {
		print_text(f, &rc, ram_checked);
		printf("result:   %s\n", error[0] ? "NOT OK" : "OK");
	}
	if (error[0])
		fprintf(stderr, "ferry inspect: %s\n", error);
	sf_free(f);
	return error[0] ? EXIT_RUNTIME : 0;
}
