#include "loader.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define MAX_PHDRS 16

static int guest_dir(unsigned which, char *dir, size_t len)
{
	const char *env = getenv("FERRY_GUEST_DIR");
	char exe[PATH_MAX];
	ssize_t n;
	char *slash;

	if (which == 0) {
		if (!env || !*env)
			return -ENOENT;
		if ((size_t)snprintf(dir, len, "%s", env) >= len)
			return -ENAMETOOLONG;
		return 0;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return -ENOENT;
	exe[n] = 0;
	slash = strrchr(exe, '/');
	if (!slash)
		return -ENOENT;
	*slash = 0;
	if ((size_t)snprintf(dir, len, "%s/guest", exe) >= len)
		return -ENAMETOOLONG;
	return 0;
}

static bool valid_program_name(const char *name)
{
	if (!*name || strlen(name) > 31)
		return false;
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
		      *c == '_' || *c == '-'))
			return false;
	return true;
}

int loader_find_image(const char *name, char *path, size_t path_len)
{
	char dir[PATH_MAX], list[256];
	struct stat st;

	if (strchr(name, '/')) {
		snprintf(path, path_len, "%s", name);
		return 0;
	}
	if (!valid_program_name(name))
		return ferr(EINVAL, "'%s' is not a guest program name", name);
	for (unsigned which = 0; which < 2; which++) {
		if (guest_dir(which, dir, sizeof(dir)) < 0)
			continue;
		if ((size_t)snprintf(path, path_len, "%s/%s.elf", dir, name) >= path_len)
			continue;
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
			return 0;
	}
	loader_list_programs(list, sizeof(list));
	return ferr(ENOENT, "unknown guest program '%s' (available: %s)", name,
		    list[0] ? list : "none found; run make");
}

void loader_list_programs(char *out, size_t len)
{
	char dir[PATH_MAX];
	size_t used = 0;

	out[0] = 0;
	for (unsigned which = 0; which < 2 && !out[0]; which++) {
		struct dirent *de;
		DIR *d;

		if (guest_dir(which, dir, sizeof(dir)) < 0 || !(d = opendir(dir)))
			continue;
		while ((de = readdir(d))) {
			size_t n = strlen(de->d_name);

			if (n < 5 || strcmp(de->d_name + n - 4, ".elf") != 0)
				continue;
			used += (size_t)snprintf(out + used, len - MIN(used, len), "%s%.*s",
						 used ? ", " : "", (int)(n - 4), de->d_name);
			if (used >= len)
				break;
		}
		closedir(d);
	}
}

static int check_header(const struct ferry_image_header *h, uint64_t e_entry)
{
	uint64_t stubs_end;

	if (h->magic != FERRY_IMAGE_MAGIC)
		return ferr(EINVAL, "no ferry image header at %#llx (not a ferry guest program?)",
			    (unsigned long long)FERRY_IMAGE_GPA);
	if (h->abi_version != FERRY_ABI_VERSION)
		return ferr(EINVAL, "the image uses guest ABI %u; this ferry speaks %u",
			    h->abi_version, FERRY_ABI_VERSION);
	if (h->isr_stub_size != FERRY_ISR_STUB_SIZE)
		return ferr(EINVAL, "the image's interrupt stubs are %u bytes, expected %u",
			    h->isr_stub_size, FERRY_ISR_STUB_SIZE);
	if (h->entry < FERRY_IMAGE_GPA || h->entry >= FERRY_IMAGE_END || h->entry != e_entry)
		return ferr(EINVAL, "the image entry point %#llx is outside the image",
			    (unsigned long long)h->entry);
	stubs_end = h->isr_stubs + 256ull * FERRY_ISR_STUB_SIZE;
	if (h->isr_stubs < FERRY_IMAGE_GPA || stubs_end > FERRY_IMAGE_END ||
	    stubs_end < h->isr_stubs)
		return ferr(EINVAL, "the image's interrupt stubs lie outside the image");
	if (!memchr(h->name, 0, sizeof(h->name)) || !memchr(h->args, 0, sizeof(h->args)))
		return ferr(EINVAL, "the image header's name or argument list is not terminated");
	return 0;
}

int loader_load_elf(struct guest_mem *m, const uint8_t *elf, size_t len,
		    struct ferry_image_header *hdr)
{
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)elf;
	bool header_loaded = false;
	unsigned loads = 0;
	int rc;

	if (len < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
		return ferr(EINVAL, "not an ELF file");
	if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh->e_machine != EM_X86_64)
		return ferr(EINVAL, "not a 64-bit little-endian x86-64 ELF file");
	if (eh->e_type != ET_EXEC)
		return ferr(EINVAL, "not a static executable (ELF type %u)", eh->e_type);
	if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 ||
	    eh->e_phnum > MAX_PHDRS || eh->e_phoff > len ||
	    (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > len - eh->e_phoff)
		return ferr(EINVAL, "the ELF program header table is malformed");
	if (m->size < FERRY_IMAGE_END)
		return ferr(EINVAL, "guest RAM is too small for the image area");

	for (unsigned i = 0; i < eh->e_phnum; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, elf + eh->e_phoff + i * sizeof(Elf64_Phdr), sizeof(ph));
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		if (ph.p_filesz > ph.p_memsz || ph.p_offset > len ||
		    ph.p_filesz > len - ph.p_offset)
			return ferr(EINVAL, "ELF segment %u points outside the file", i);
		if (ph.p_vaddr < FERRY_IMAGE_GPA || ph.p_vaddr > FERRY_IMAGE_END ||
		    ph.p_memsz > FERRY_IMAGE_END - ph.p_vaddr)
			return ferr(EINVAL,
				    "ELF segment %u [%#llx, +%#llx) lies outside the image area [%#llx, %#llx)",
				    i, (unsigned long long)ph.p_vaddr,
				    (unsigned long long)ph.p_memsz,
				    (unsigned long long)FERRY_IMAGE_GPA,
				    (unsigned long long)FERRY_IMAGE_END);
		rc = gmem_write(m, ph.p_vaddr, elf + ph.p_offset, ph.p_filesz);
		if (rc)
			return rc;
		memset(m->hva + ph.p_vaddr + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
		gmem_mark_dirty(m, ph.p_vaddr, ph.p_memsz);
		if (ph.p_vaddr == FERRY_IMAGE_GPA && ph.p_filesz >= sizeof(*hdr))
			header_loaded = true;
		loads++;
	}
	if (!loads)
		return ferr(EINVAL, "the ELF file has nothing to load");
	if (!header_loaded)
		return ferr(EINVAL, "no ferry image header at %#llx (not a ferry guest program?)",
			    (unsigned long long)FERRY_IMAGE_GPA);
	memcpy(hdr, m->hva + FERRY_IMAGE_GPA, sizeof(*hdr));
	return check_header(hdr, eh->e_entry);
}

int loader_load_file(struct guest_mem *m, const char *path,
		     struct ferry_image_header *hdr)
{
	uint8_t *buf;
	size_t len;
	int rc;

	rc = read_file(path, GUEST_IMAGE_MAX_BYTES, &buf, &len);
	if (rc)
		return rc;
	rc = loader_load_elf(m, buf, len, hdr);
	if (rc)
		rc = ferr(rc, "guest image %s: %s", path, ferr_msg(rc));
	free(buf);
	return rc;
}

static bool key_declared(const struct ferry_image_header *hdr, const char *key,
			 size_t klen)
{
	const char *p = hdr->args;

	while (*p) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);

		if (n == klen && memcmp(p, key, klen) == 0)
			return true;
		p += n;
		if (*p == ',')
			p++;
	}
	return false;
}

int loader_check_args(const struct ferry_image_header *hdr,
		      char *const *args, unsigned nargs)
{
	size_t total = 0;

	for (unsigned i = 0; i < nargs; i++) {
		const char *eq = strchr(args[i], '=');
		size_t klen;

		if (!eq || eq == args[i])
			return ferr(EINVAL, "guest argument '%s' is not KEY=VALUE", args[i]);
		klen = (size_t)(eq - args[i]);
		for (size_t j = 0; j < klen; j++) {
			char c = args[i][j];

			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
				return ferr(EINVAL, "guest argument key '%.*s' may hold only a-z, 0-9 and _",
					    (int)klen, args[i]);
		}
		if (!key_declared(hdr, args[i], klen))
			return ferr(EINVAL, "guest program '%s' takes no argument '%.*s' (it takes: %s)",
				    hdr->name, (int)klen, args[i],
				    hdr->args[0] ? hdr->args : "none");
		for (unsigned k = 0; k < i; k++)
			if (strncmp(args[k], args[i], klen + 1) == 0)
				return ferr(EINVAL, "guest argument '%.*s' is given twice",
					    (int)klen, args[i]);
		total += strlen(args[i]) + 1;
	}
	if (total > FERRY_ARGS_MAX)
		return ferr(E2BIG, "guest arguments take %zu bytes, more than %u", total,
			    FERRY_ARGS_MAX);
	return 0;
}
