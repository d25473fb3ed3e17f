/* The guest image loader against malformed and hostile images. */
#include <criterion/criterion.h>
#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/loader.h"
#include "core/util.h"

static struct guest_mem mem;
static uint8_t *image;
static size_t image_len;

static void setup(void)
{
	char path[512];

	cr_assert_eq(gmem_create(&mem, 64ull << 20), 0);
	cr_assert_eq(loader_find_image("dirty", path, sizeof(path)), 0, "%s", ferr_msg(-1));
	cr_assert_eq(read_file(path, GUEST_IMAGE_MAX_BYTES, &image, &image_len), 0);
}

static void teardown(void)
{
	gmem_destroy(&mem);
	free(image);
}

TestSuite(loader, .init = setup, .fini = teardown);

static Elf64_Ehdr *ehdr(void) { return (Elf64_Ehdr *)image; }
static Elf64_Phdr *phdr(unsigned i) { return (Elf64_Phdr *)(image + ehdr()->e_phoff) + i; }

static void expect_reject(const char *what, const char *needle)
{
	struct ferry_image_header hdr;
	int rc = loader_load_elf(&mem, image, image_len, &hdr);

	cr_assert_lt(rc, 0, "%s was accepted", what);
	cr_assert(strstr(ferr_msg(rc), needle), "%s: message '%s' lacks '%s'", what,
		  ferr_msg(rc), needle);
}

Test(loader, loads_a_real_image)
{
	struct ferry_image_header hdr;

	cr_assert_eq(loader_load_elf(&mem, image, image_len, &hdr), 0, "%s", ferr_msg(-1));
	cr_assert_str_eq(hdr.name, "dirty");
	cr_assert_eq(hdr.entry, ehdr()->e_entry);
	cr_assert_eq(memcmp(mem.hva + FERRY_IMAGE_GPA, &hdr, sizeof(hdr)), 0);
}

Test(loader, rejects_non_elf_and_wrong_kinds)
{
	image[1] = 'X';
	expect_reject("bad magic", "not an ELF file");
	image[1] = 'E';
	image[EI_CLASS] = ELFCLASS32;
	expect_reject("32-bit", "64-bit");
	image[EI_CLASS] = ELFCLASS64;
	ehdr()->e_machine = EM_AARCH64;
	expect_reject("arm64", "x86-64");
	ehdr()->e_machine = EM_X86_64;
	ehdr()->e_type = ET_DYN;
	expect_reject("shared object", "static executable");
}

Test(loader, rejects_truncation_anywhere)
{
	size_t full = 0;

	/* Anything cut before the last loaded byte must be refused. */
	for (unsigned i = 0; i < ehdr()->e_phnum; i++)
		if (phdr(i)->p_type == PT_LOAD)
			full = MAX(full, phdr(i)->p_offset + phdr(i)->p_filesz);
	cr_assert_gt(full, 0);
	for (size_t cut = 0; cut < full; cut += full / 37 + 1) {
		struct ferry_image_header hdr;

		image_len = cut;
		cr_assert_lt(loader_load_elf(&mem, image, image_len, &hdr), 0,
			     "an image cut at %zu of %zu bytes was accepted", cut, full);
	}
}

Test(loader, rejects_bad_program_headers)
{
	ehdr()->e_phoff = image_len - 8;
	expect_reject("phdrs past the end", "program header table");
	ehdr()->e_phoff = sizeof(Elf64_Ehdr);
	ehdr()->e_phnum = 60000;
	expect_reject("huge phnum", "program header table");
	ehdr()->e_phnum = 2;
	ehdr()->e_phentsize = 12;
	expect_reject("odd phentsize", "program header table");
}

Test(loader, rejects_segments_outside_file_or_image)
{
	Elf64_Phdr saved = *phdr(0);

	phdr(0)->p_offset = image_len;
	expect_reject("segment past EOF", "outside the file");
	*phdr(0) = saved;
	phdr(0)->p_filesz = phdr(0)->p_memsz + 1;
	expect_reject("filesz > memsz", "outside the file");
	*phdr(0) = saved;
	phdr(0)->p_vaddr = 0x1000;
	expect_reject("segment over the page tables", "outside the image area");
	*phdr(0) = saved;
	phdr(0)->p_vaddr = UINT64_MAX - 0x100;
	expect_reject("wrapping segment", "outside the image area");
	*phdr(0) = saved;
	phdr(0)->p_memsz = FERRY_IMAGE_END;
	expect_reject("huge segment", "outside the image area");
}

Test(loader, rejects_bad_image_headers)
{
	struct ferry_image_header *h = (struct ferry_image_header *)(image + phdr(0)->p_offset);
	struct ferry_image_header saved = *h;

	h->magic ^= 1;
	expect_reject("header magic", "no ferry image header");
	*h = saved;
	h->abi_version = 99;
	expect_reject("future ABI", "guest ABI 99");
	*h = saved;
	h->entry = 0x1000;
	expect_reject("entry outside", "entry point");
	*h = saved;
	h->isr_stubs = FERRY_IMAGE_END - 16;
	expect_reject("stubs outside", "interrupt stubs");
	*h = saved;
	memset(h->name, 'a', sizeof(h->name));
	expect_reject("unterminated name", "not terminated");
}

Test(loader, checks_guest_arguments)
{
	struct ferry_image_header hdr;
	char *good[] = { "wss=16M", "pattern=random", "rate=unlimited" };
	char *unknown[] = { "wss=16M", "colour=blue" };
	char *twice[] = { "wss=1M", "wss=2M" };
	char *no_eq[] = { "wss" };
	char *bad_key[] = { "W$S=1" };
	char *empty_key[] = { "=1" };

	cr_assert_eq(loader_load_elf(&mem, image, image_len, &hdr), 0);
	cr_assert_eq(loader_check_args(&hdr, good, 3), 0, "%s", ferr_msg(-1));
	cr_assert_eq(loader_check_args(&hdr, unknown, 2), -EINVAL);
	cr_assert(strstr(ferr_msg(-1), "takes no argument 'colour'"), "%s", ferr_msg(-1));
	cr_assert_eq(loader_check_args(&hdr, twice, 2), -EINVAL);
	cr_assert(strstr(ferr_msg(-1), "given twice"));
	cr_assert_eq(loader_check_args(&hdr, no_eq, 1), -EINVAL);
	cr_assert_eq(loader_check_args(&hdr, bad_key, 1), -EINVAL);
	cr_assert_eq(loader_check_args(&hdr, empty_key, 1), -EINVAL);
}

Test(loader, names_unknown_programs)
{
	char path[512];

	cr_assert_eq(loader_find_image("nosuch", path, sizeof(path)), -ENOENT);
	cr_assert(strstr(ferr_msg(-1), "unknown guest program 'nosuch'"));
	cr_assert(strstr(ferr_msg(-1), "hello"), "%s", ferr_msg(-1));
	cr_assert_eq(loader_find_image("../etc", path, sizeof(path)), 0,
		     "a name with a slash is a path");
	cr_assert_eq(loader_find_image("Bad Name", path, sizeof(path)), -EINVAL);
}
