/*
 * bench/quick: quick migration figures.  For each guest size and memory
 * content it saves a paused VM with sf_save() (what `ferry save` runs),
 * times `dd` writing the same number of bytes to the same directory with
 * conv=fsync right after (the two alternate which goes first), then
 * restores the file into fresh VMs: eagerly and lazily with the file in the
 * page cache, then eagerly and lazily with the file dropped from it.  The
 * first repetition checks every restored page against the source's digest.
 * Each restore starts after a three-second pause, since the VM destroyed
 * just before has freed gigabytes the kernel is still putting away: this
 * host's kernel reports free memory to its hypervisor in 8 MiB chunks
 * about two seconds after it is freed (page_reporting_order=11 on its
 * command line), and a restore that overlaps that work measures the
 * benchmark's own previous step.
 *
 * Filling guest memory from inside the guest would take minutes here (the
 * first touch of a page costs ~20 us on kvm_pvm), so the VM runs `idle`
 * (wss=4M) and the benchmark fills the data area above 64 MiB from the
 * host: "random" with a xorshift stream (incompressible), "zero" with
 * allocated zero pages (present in the memfd, so the save has to scan them),
 * "untouched" leaves it as holes.
 *
 * Lazy restore is timed to the first guest instruction: from opening the
 * file to the first exit of vCPU 0 (the restored idle loop makes one within
 * microseconds of running), with the steps in between for the warm cache.
 * With a cold cache the pieces that the first instructions need (page
 * tables, code, stack: a few 64 KiB pieces) come from the disk.  Beside
 * them, each repetition times vm_create() alone for a VM of the same shape:
 * the floor a restore cannot go below, measured in the same run since this
 * host's timings drift by tens of percent over an hour.
 *
 * usage: bench/quick [--sizes 1G,4G] [--contents untouched,zero,random]
 *                    [--reps N] [--dir DIR]
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/boot.h"
#include "core/loader.h"
#include "core/util.h"
#include "core/vm.h"
#include "migrate/lazy.h"
#include "migrate/ramscan.h"
#include "migrate/savefile.h"

#define FILL_FROM (64ull << 20)
#define MAX_REPS 16

struct row {
	uint64_t save_ns[MAX_REPS], dd_ns[MAX_REPS], written[MAX_REPS], sync_ns[MAX_REPS];
	uint64_t eager_ns[MAX_REPS], cold_ns[MAX_REPS];
	uint64_t lazy_ns[MAX_REPS], lazy_load_ns[MAX_REPS], lazy_create_ns[MAX_REPS];
	uint64_t lazy_cold_ns[MAX_REPS];
	uint64_t lazy_done_ns[MAX_REPS], lazy_open_ns[MAX_REPS], lazy_attach_ns[MAX_REPS];
	uint64_t lazy_state_ns[MAX_REPS];
	uint64_t bare_ns[MAX_REPS];     /* vm_create alone, same shape, same run */
};

/* The two tables, one line per size and content, printed at the end. */
#define MAX_ROWS 16
static char save_rows[MAX_ROWS][512], lazy_rows[MAX_ROWS][512];
static unsigned nrows;

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double med_ms(const uint64_t *v, unsigned n)
{
	uint64_t s[MAX_REPS];

	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_u64);
	return s[n / 2] / 1e6;
}

/* "median (min-max)" in ms, for the figures with a goal. */
static const char *spread_ms(char *out, size_t len, const uint64_t *v, unsigned n)
{
	uint64_t lo = v[0], hi = v[0];

	for (unsigned i = 1; i < n; i++) {
		lo = MIN(lo, v[i]);
		hi = MAX(hi, v[i]);
	}
	snprintf(out, len, "%.2f (%.1f–%.1f)", med_ms(v, n), lo / 1e6, hi / 1e6);
	return out;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench/quick: %s: %s\n", what, ferr_msg(rc));
	exit(1);
}

struct fill_job {
	uint8_t *p;
	uint64_t len, seed;
};

static void *fill_random(void *arg)
{
	struct fill_job *j = arg;
	uint64_t *w = (uint64_t *)j->p, x = j->seed | 1;

	for (uint64_t i = 0; i < j->len / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x * 0x2545f4914f6cdd1dull;
	}
	return NULL;
}

static void fill(struct vm *vm, const char *content)
{
	uint64_t len = vm->mem.size - FILL_FROM, half = len / 2;
	struct fill_job a = { vm->mem.hva + FILL_FROM, half, 0x1234 };
	struct fill_job b = { vm->mem.hva + FILL_FROM + half, len - half, 0x9876 };
	pthread_t th;

	if (strcmp(content, "untouched") == 0)
		return;
	if (fallocate(vm->mem.fd, 0, (off_t)FILL_FROM, (off_t)len) < 0)
		die("fallocate", -errno);
	if (strcmp(content, "random") == 0) {
		pthread_create(&th, NULL, fill_random, &b);
		fill_random(&a);
		pthread_join(th, NULL);
	}
	gmem_mark_dirty(&vm->mem, FILL_FROM, len);
}

static struct vm *new_vm(uint64_t mem)
{
	struct vm_config cfg = { .mem_size = mem, .ncpus = 1 };
	struct vm *vm;
	int rc = vm_create(&vm, &cfg);

	if (rc)
		die("vm_create", rc);
	return vm;
}

static struct vm *boot_idle(uint64_t mem)
{
	char *args[] = { "wss=4M", "interval_ms=1" };
	struct vm *vm = new_vm(mem);
	int rc = boot_program(vm, "idle", args, 2);

	if (rc)
		die("booting idle", rc);
	return vm;
}

static void check_same(struct vm *vm, const uint64_t *want, const char *what)
{
	uint64_t *got = malloc(vm->mem.npages * sizeof(uint64_t));
	int rc = got ? mig_digest_ram(&vm->mem, got, 2) : -ENOMEM;

	if (rc)
		die("digest", rc);
	for (uint64_t p = 0; p < vm->mem.npages; p++)
		if (got[p] != want[p]) {
			fprintf(stderr, "bench/quick: %s: page %llu differs from the source\n", what,
				(unsigned long long)p);
			exit(1);
		}
	free(got);
}

static uint64_t run_dd(const char *dir, uint64_t bytes)
{
	char of[4200], count[32];
	uint64_t t0 = now_ns();
	int status;
	pid_t pid;

	snprintf(of, sizeof(of), "of=%s/quick-bench.dd", dir);
	snprintf(count, sizeof(count), "count=%llu", (unsigned long long)DIV_ROUND_UP(bytes, 1 << 20));
	pid = fork();
	if (pid == 0) {
		execlp("dd", "dd", "if=/dev/zero", of, "bs=1M", count, "conv=fsync", "status=none",
		       (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		die("dd", -EIO);
	t0 = now_ns() - t0;
	snprintf(of, sizeof(of), "%s/quick-bench.dd", dir);
	unlink(of);
	return t0;
}

static struct sf_file *open_file(const char *path)
{
	struct sf_file *f = sf_alloc();
	int rc = f ? sf_load(f, path) : -ENOMEM;

	if (rc)
		die("sf_load", rc);
	return f;
}

static uint64_t restore_eager(const char *path, uint64_t mem, const uint64_t *want, bool check)
{
	uint64_t t0 = now_ns();
	struct sf_file *f = open_file(path);
	struct vm *vm = new_vm(mem);
	int rc = sf_check_vm(f, vm);

	if (!rc)
		rc = sf_load_ram(f, &vm->mem, 2);
	if (!rc)
		rc = sf_load_state(f, vm);
	if (rc)
		die("eager restore", rc);
	t0 = now_ns() - t0;
	sf_free(f);
	if (check)
		check_same(vm, want, "eager restore");
	vm_destroy(vm);
	return t0;
}

static void drop_cache(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die("open", -errno);
	fdatasync(fd);
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
}

/*
 * A lazy restore timed to the first guest instruction; for the warm cache
 * also the steps on the way and the time until all of memory is in.
 */
static void restore_lazy(const char *path, uint64_t mem, const uint64_t *want, bool check,
			 struct row *r, unsigned rep, bool cold)
{
	uint64_t t0 = now_ns(), t_open, t_create, t_attach, t_start, t_first;
	struct sf_file *f = open_file(path);
	struct sf_lazy *lz;
	struct vm *vm;
	int rc;

	/* As `ferry run --restore --lazy` does (cli/restore.c). */
	rc = sf_lazy_prepare(f, &lz);
	if (rc)
		die("lazy prepare", rc);
	t_open = now_ns();
	vm = new_vm(mem);
	t_create = now_ns();
	rc = sf_check_vm(f, vm);
	if (!rc)
		rc = sf_lazy_attach(lz, vm);
	t_attach = now_ns();
	if (!rc)
		rc = sf_load_state(f, vm);
	if (rc)
		die("lazy restore", rc);
	vm_start(vm);
	t_start = now_ns();
	while (atomic_load(&vm->vcpus[0].exits) == 0) {
		struct timespec ts = { 0, 20000 };

		if (now_ns() - t_start > 5000000000ull)
			die("waiting for the first exit", -ETIMEDOUT);
		nanosleep(&ts, NULL);
	}
	t_first = now_ns();
	rc = sf_lazy_wait(lz, NULL);
	if (rc)
		die("lazy load", rc);
	if (cold) {
		r->lazy_cold_ns[rep] = t_first - t0;
	} else {
		r->lazy_ns[rep] = t_first - t0;
		r->lazy_open_ns[rep] = t_open - t0;
		r->lazy_create_ns[rep] = t_create - t_open;
		r->lazy_attach_ns[rep] = t_attach - t_create;
		r->lazy_state_ns[rep] = t_start - t_attach;
		r->lazy_load_ns[rep] = t_start - t0;
		r->lazy_done_ns[rep] = now_ns() - t0;
	}
	vm_pause(vm, NULL);
	if (check)
		check_same(vm, want, "lazy restore");
	vm_end(vm, 0, "done");
	sf_lazy_free(lz);
	vm_destroy(vm);
}

/* Reads the whole file once, so that it is in the page cache. */
static void warm_cache(const char *path)
{
	static char buf[1 << 20];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die("open", -errno);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
}

static void settle(void)
{
	nanosleep(&(struct timespec){ 3, 0 }, NULL);
}

static void run_case(uint64_t mem, const char *content, unsigned reps, const char *dir)
{
	char path[4200], sz[32], warm[48], cold[48], floor[48];
	struct vm *bare;
	struct sf_save_result res;
	struct row r = { 0 };
	struct vm *src = boot_idle(mem);
	uint64_t *want = malloc(src->mem.npages * sizeof(uint64_t));
	int rc;

	snprintf(path, sizeof(path), "%s/quick-bench.save", dir);
	vm_start(src);
	nanosleep(&(struct timespec){ 0, 200000000 }, NULL);
	fill(src, content);
	vm_pause(src, NULL);
	rc = want ? mig_digest_ram(&src->mem, want, 2) : -ENOMEM;
	if (rc)
		die("digest", rc);
	/* The disk is slower on the first large write after a while: warm it up. */
	run_dd(dir, 256ull << 20);
	for (unsigned i = 0; i < reps; i++) {
		struct sf_progress pr = { 0 };
		uint64_t t0;

		fprintf(stderr, "bench/quick: %s RAM, %s: repetition %u of %u\n",
			fmt_size(sz, sizeof(sz), mem), content, i + 1, reps);
		/* Alternate which of the two writes first. */
		if (i % 2)
			r.dd_ns[i] = run_dd(dir, r.written[0]);
		t0 = now_ns();
		rc = sf_save(src, path, 0, &pr, &res);
		if (rc)
			die("sf_save", rc);
		r.save_ns[i] = now_ns() - t0;
		r.written[i] = res.bytes_written;
		r.sync_ns[i] = res.sync_ns;
		if (!(i % 2))
			r.dd_ns[i] = run_dd(dir, res.bytes_written);
		/* Each restore starts on a settled host: the one before it has
		 * just freed gigabytes, which the kernel is still putting away. */
		warm_cache(path);
		settle();
		r.eager_ns[i] = restore_eager(path, mem, want, i == 0);
		settle();
		restore_lazy(path, mem, want, i == 0, &r, i, false);
		drop_cache(path);
		settle();
		r.cold_ns[i] = restore_eager(path, mem, want, false);
		drop_cache(path);
		settle();
		restore_lazy(path, mem, want, false, &r, i, true);
		/* The floor: creating a VM of this shape and nothing else. */
		settle();
		t0 = now_ns();
		bare = new_vm(mem);
		r.bare_ns[i] = now_ns() - t0;
		vm_destroy(bare);
		unlink(path);
	}
	vm_end(src, 0, "done");
	vm_destroy(src);
	free(want);
	fmt_size(sz, sizeof(sz), mem);
	snprintf(save_rows[nrows], sizeof(save_rows[nrows]),
		 "| %s | %s | %.1f | %.1f (fsync %.1f) | %.0f | %.1f | %.0f | %.0f%% | %.1f | %.1f |",
		 sz, content, r.written[0] / 1048576.0, med_ms(r.save_ns, reps),
		 med_ms(r.sync_ns, reps), r.written[0] / 1048576.0 / (med_ms(r.save_ns, reps) / 1e3),
		 med_ms(r.dd_ns, reps), r.written[0] / 1048576.0 / (med_ms(r.dd_ns, reps) / 1e3),
		 100.0 * med_ms(r.dd_ns, reps) / med_ms(r.save_ns, reps), med_ms(r.eager_ns, reps),
		 med_ms(r.cold_ns, reps));
	snprintf(lazy_rows[nrows], sizeof(lazy_rows[nrows]),
		 "| %s | %s | %s | %s | %.2f, %.2f, %.2f, %.2f | %s | %.2f | %.1f |", sz, content,
		 spread_ms(warm, sizeof(warm), r.lazy_ns, reps),
		 spread_ms(cold, sizeof(cold), r.lazy_cold_ns, reps), med_ms(r.lazy_open_ns, reps),
		 med_ms(r.lazy_create_ns, reps), med_ms(r.lazy_attach_ns, reps),
		 med_ms(r.lazy_state_ns, reps), spread_ms(floor, sizeof(floor), r.bare_ns, reps),
		 med_ms(r.lazy_load_ns, reps), med_ms(r.lazy_done_ns, reps));
	nrows++;
	fprintf(stderr, "%s\n%s\n", save_rows[nrows - 1], lazy_rows[nrows - 1]);
}

/* Items in a comma-separated list. */
static unsigned count_items(const char *list)
{
	unsigned n = 1;

	for (const char *p = list; *p; p++)
		n += *p == ',';
	return n;
}

int main(int argc, char **argv)
{
	const char *sizes = "1G,4G", *contents = "untouched,zero,random", *dir = "/tmp";
	unsigned reps = 3;
	char list[256], clist[256], *save1, *save2;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--sizes") == 0)
			sizes = argv[i + 1];
		else if (strcmp(argv[i], "--contents") == 0)
			contents = argv[i + 1];
		else if (strcmp(argv[i], "--reps") == 0)
			reps = (unsigned)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--dir") == 0)
			dir = argv[i + 1];
		else
			reps = 0;
	}
	if (argc % 2 == 0 || reps == 0 || reps > MAX_REPS) {
		fprintf(stderr, "usage: bench/quick [--sizes 1G,4G] [--contents untouched,zero,random]"
			" [--reps 1-%d] [--dir DIR]\n", MAX_REPS);
		return 2;
	}
	if (count_items(sizes) * count_items(contents) > MAX_ROWS) {
		fprintf(stderr, "bench/quick: at most %d size and content pairs\n", MAX_ROWS);
		return 2;
	}
	snprintf(list, sizeof(list), "%s", sizes);
	for (char *s = strtok_r(list, ",", &save1); s; s = strtok_r(NULL, ",", &save1)) {
		uint64_t mem;

		if (parse_size(s, &mem) < 0) {
			fprintf(stderr, "bench/quick: bad size '%s'\n", s);
			return 2;
		}
		snprintf(clist, sizeof(clist), "%s", contents);
		for (char *c = strtok_r(clist, ",", &save2); c; c = strtok_r(NULL, ",", &save2))
			run_case(mem, c, reps, dir);
	}
	printf("Save and eager restore (medians of %u):\n\n", reps);
	printf("| RAM | content | MiB written | save ms | save MiB/s | dd ms | dd MiB/s | "
	       "save/dd throughput | eager restore ms (warm) | eager restore ms (cold) |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|\n");
	for (unsigned i = 0; i < nrows; i++)
		printf("%s\n", save_rows[i]);
	printf("\nLazy restore, time to the first guest instruction (median (min–max) of %u):\n\n",
	       reps);
	printf("| RAM | content | warm cache ms | cold cache ms | of which (warm): open, vm_create, "
	       "attach, state+start ms | vm_create alone ms | vm_start at ms (warm) | all in ms "
	       "(warm) |\n");
	printf("|---|---|---|---|---|---|---|---|\n");
	for (unsigned i = 0; i < nrows; i++)
		printf("%s\n", lazy_rows[i]);
	return 0;
}
