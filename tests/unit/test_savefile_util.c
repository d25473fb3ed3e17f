#include "test_savefile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char tsf_dev_loaded[64];

static int tdev_save(void *opaque, struct dbuf *out)
{
	(void)opaque;
	dbuf_put(out, TSF_DEV_STATE, strlen(TSF_DEV_STATE));
	return 0;
}

static int tdev_load(void *opaque, uint32_t version, const uint8_t *data, size_t len)
{
	(void)opaque;
	(void)version;
	if (len >= sizeof(tsf_dev_loaded))
		return ferr(EINVAL, "test device state too long");
	memcpy(tsf_dev_loaded, data, len);
	tsf_dev_loaded[len] = 0;
	return 0;
}

void tsf_add_device(struct vm *vm, uint32_t version)
{
	static struct vm_device_ops ops[4];
	static unsigned n;
	struct vm_device_ops *o;

	cr_assert(n < 4);
	o = &ops[n++];
	*o = (struct vm_device_ops){ .name = TSF_DEV_NAME, .version = version, .save = tdev_save,
				     .load = tdev_load };
	cr_assert_eq(vm_device_register(vm, o, NULL), 0);
}

void tsf_make(struct tsf *t, unsigned ncpus, const char *prog, const char *const *args,
	      unsigned run_ms)
{
	struct sf_progress pr = { 0 };
	struct sf_save_result res;
	int rc;

	snprintf(t->dir, sizeof(t->dir), "/tmp/ferry-sf.XXXXXX");
	cr_assert(mkdtemp(t->dir), "mkdtemp");
	snprintf(t->path, sizeof(t->path), "%s/vm.save", t->dir);
	t->src = tvm_create(ncpus, TSF_MEM);
	tsf_add_device(t->src, 1);
	tvm_boot(t->src, prog, args);
	vm_start(t->src);
	tsleep_ms(run_ms);
	vm_pause(t->src, NULL);
	rc = sf_save(t->src, t->path, 0, &pr, &res);
	cr_assert_eq(rc, 0, "sf_save: %s", ferr_msg(rc));
}

void tsf_cleanup(struct tsf *t)
{
	DIR *d = opendir(t->dir);
	struct dirent *e;
	char p[512];

	while (d && (e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(p, sizeof(p), "%s/%s", t->dir, e->d_name);
			unlink(p);
		}
	}
	if (d)
		closedir(d);
	rmdir(t->dir);
	if (t->src) {
		vm_end(t->src, 0, "test over");
		vm_destroy(t->src);
	}
}

struct sf_file *tsf_open(const char *path, int *rc)
{
	struct sf_file *f = sf_alloc();

	cr_assert(f);
	*rc = sf_load(f, path);
	return f;
}

void tsf_copy(const char *from, const char *to)
{
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	static char buf[1 << 20];
	off_t pos = 0;

	cr_assert(in >= 0 && out >= 0, "copy %s to %s", from, to);
	/* Keep the holes: copy only the data extents. */
	for (;;) {
		off_t d = lseek(in, pos, SEEK_DATA), h;

		if (d < 0)
			break;
		h = lseek(in, d, SEEK_HOLE);
		while (d < h) {
			ssize_t n = pread(in, buf, (size_t)(h - d < (off_t)sizeof(buf) ? h - d
										: (off_t)sizeof(buf)), d);

			cr_assert(n > 0 && pwrite(out, buf, (size_t)n, d) == n);
			d += n;
		}
		pos = h;
	}
	cr_assert(ftruncate(out, lseek(in, 0, SEEK_END)) == 0);
	close(in);
	close(out);
}

void tsf_write(const char *path, uint64_t off, const void *bytes, size_t len)
{
	int fd = open(path, O_WRONLY);

	cr_assert(fd >= 0 && pwrite(fd, bytes, len, (off_t)off) == (ssize_t)len);
	close(fd);
}

void tsf_read(const char *path, uint64_t off, void *bytes, size_t len)
{
	int fd = open(path, O_RDONLY);

	cr_assert(fd >= 0 && pread(fd, bytes, len, (off_t)off) == (ssize_t)len);
	close(fd);
}

void tsf_flip(const char *path, uint64_t off, uint8_t mask)
{
	uint8_t b;

	tsf_read(path, off, &b, 1);
	b ^= mask;
	tsf_write(path, off, &b, 1);
}

void tsf_set_header(const char *path, uint64_t hdr_off, unsigned field, uint32_t v)
{
	uint8_t hdr[MIG_SECTION_HDR_SIZE];

	tsf_read(path, hdr_off, hdr, sizeof(hdr));
	put_le32(hdr + field, v);
	put_le32(hdr + 28, mig_csum32(hdr, 28));
	tsf_write(path, hdr_off, hdr, sizeof(hdr));
}

void tsf_set_payload(const char *path, uint64_t hdr_off, uint64_t at, const void *bytes,
		     size_t len)
{
	uint8_t hdr[MIG_SECTION_HDR_SIZE], *payload;
	uint64_t plen;

	tsf_read(path, hdr_off, hdr, sizeof(hdr));
	plen = get_le64(hdr + 16);
	cr_assert_leq(at + len, plen);
	payload = malloc(plen);
	cr_assert(payload);
	tsf_read(path, hdr_off + MIG_SECTION_HDR_SIZE, payload, plen);
	memcpy(payload + at, bytes, len);
	put_le32(hdr + 24, mig_csum32(payload, plen));
	put_le32(hdr + 28, mig_csum32(hdr, 28));
	tsf_write(path, hdr_off, hdr, sizeof(hdr));
	tsf_write(path, hdr_off + MIG_SECTION_HDR_SIZE, payload, plen);
	free(payload);
}

void tsf_truncate(const char *path, uint64_t len)
{
	cr_assert(truncate(path, (off_t)len) == 0);
}

uint64_t tsf_size(const char *path)
{
	struct stat sb;

	cr_assert(stat(path, &sb) == 0);
	return (uint64_t)sb.st_size;
}

unsigned tsf_dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	unsigned n = 0;

	cr_assert(d);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}
