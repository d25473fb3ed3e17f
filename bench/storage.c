/*
 * bench/storage: IOPS and throughput of the storage VSP, through the
 * channel from a guest program, next to fio on the same backing file in the
 * same run.  Four jobs: 4 KiB random read and write at queue depth 32, and
 * 1 MiB sequential read and write at queue depth 4; each runs --seconds,
 * --reps times, alternating ferry and fio; the table has the medians.
 *
 * Both sides use the host page cache (buffered I/O, no O_DIRECT, and fio
 * with --invalidate=0: by default it drops the file from the page cache
 * first, and its reads then come from the disk) and io_uring, so the
 * difference is the channel: the guest building requests
 * in ring 3, doorbells, the VSP thread, bounce copies of reads.  fio runs
 * with --norandommap and --gtod_reduce=1: its random-block map and its
 * per-I/O clock reads cost it up to 5x on these machines, and it is here
 * as the best the host's storage stack does, not as a rival to beat.
 *
 * usage: bench/storage [--file PATH] [--size SIZE] [--seconds N] [--reps N]
 *                      [--no-ioeventfd] [--threads] [--job MODE] [--no-fio]
 * (needs fio in PATH and the guest images: FERRY_GUEST_DIR)
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/boot.h"
#include "core/loader.h"
#include "core/util.h"
#include "core/vm.h"
#include "vsp/vsp.h"

struct job {
	const char *mode, *fio_rw, *bs;
	unsigned qd;
};

static const struct job jobs[] = {
	{ "randread", "randread", "4k", 32 },
	{ "randwrite", "randwrite", "4k", 32 },
	{ "seqread", "read", "1M", 4 },
	{ "seqwrite", "write", "1M", 4 },
};

struct result {
	double iops, mbps;
	double doorbells, signals;    /* per request (ferry only) */
};

static struct {
	const char *file;
	uint64_t size;
	unsigned seconds, reps;
	bool no_ioeventfd, threads, no_fio;
	const char *only;
} opt = { "/var/tmp/ferry-bench-disk.img", 256ull << 20, 5, 3, false, false, false, NULL };

static uint64_t progress(struct vm *vm, const char *key)
{
	struct vcpu_progress p[VCPU_PROGRESS_MAX];
	unsigned n = vm_progress_get(vm, 0, p, VCPU_PROGRESS_MAX);

	for (unsigned i = 0; i < n; i++)
		if (strcmp(p[i].key, key) == 0)
			return p[i].value;
	return 0;
}

static int run_ferry(const struct job *j, struct result *out)
{
	struct vm_config cfg = { .mem_size = 256ull << 20, .ncpus = 1 };
	struct vsp_config vc = { .ndisks = 1, .console_in_fd = -1,
				 .no_ioeventfd = opt.no_ioeventfd };
	char a_mode[32], a_bs[32], a_qd[32], a_sec[32], msg[256];
	char *args[] = { a_mode, a_bs, a_qd, a_sec };
	struct vsp_bus *bus = NULL;
	struct vm *vm = NULL;
	int rc;

	snprintf(a_mode, sizeof(a_mode), "mode=%s", j->mode);
	snprintf(a_bs, sizeof(a_bs), "bs=%s", j->bs);
	snprintf(a_qd, sizeof(a_qd), "qd=%u", j->qd);
	snprintf(a_sec, sizeof(a_sec), "seconds=%u", opt.seconds);
	snprintf(vc.disks[0].path, sizeof(vc.disks[0].path), "%s", opt.file);
	vc.disks[0].force_threads = opt.threads;
	rc = vm_create(&vm, &cfg);
	if (!rc)
		rc = vsp_bus_create(vm, &vc, &bus);
	if (!rc)
		rc = boot_program(vm, "disk", args, 4);
	if (!rc)
		rc = vsp_bus_start(bus);
	if (rc) {
		fprintf(stderr, "bench/storage: %s\n", ferr_msg(rc));
		goto out;
	}
	vm->console_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	vm_start(vm);
	rc = vm_wait_end(vm, msg, sizeof(msg));
	if (rc) {
		fprintf(stderr, "bench/storage: the guest failed: %s\n", msg);
		goto out;
	}
	out->iops = (double)progress(vm, "ops") * 1e6 / (double)MAX(progress(vm, "us"), 1);
	out->mbps = (double)progress(vm, "bytes") / (double)MAX(progress(vm, "us"), 1);
	{
		struct vsp_chan_info in;
		double ops = (double)MAX(progress(vm, "ops"), 1);

		vsp_bus_query(bus, 2, &in);
		out->doorbells = (double)in.doorbells / ops;
		out->signals = (double)in.signals / ops;
	}
out:
	vsp_bus_destroy(bus);
	if (vm) {
		if (vm->console_fd > 2)
			close(vm->console_fd);
		vm_destroy(vm);
	}
	return rc ? -1 : 0;
}

static int run_fio(const struct job *j, struct result *out)
{
	char cmd[1024], *text = NULL;
	size_t len = 0, cap = 0;
	json_t *root, *side;
	json_error_t err;
	FILE *p;

	snprintf(cmd, sizeof(cmd),
		 "fio --name=bench --filename=%s --rw=%s --bs=%s --iodepth=%u --ioengine=io_uring "
		 "--direct=0 --invalidate=0 --size=%llu --runtime=%u --time_based --numjobs=1 "
		 "--norandommap --randrepeat=0 --gtod_reduce=1 "
		 "--output-format=json 2>/dev/null", opt.file, j->fio_rw, j->bs, j->qd,
		 (unsigned long long)opt.size, opt.seconds);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	for (;;) {
		if (len + 4096 > cap) {
			char *t = realloc(text, cap = cap ? cap * 2 : 65536);

			if (!t)
				break;
			text = t;
		}
		size_t n = fread(text + len, 1, cap - len - 1, p);

		if (n == 0)
			break;
		len += n;
	}
	pclose(p);
	if (!text)
		return -1;
	text[len] = 0;
	root = json_loads(text, 0, &err);
	free(text);
	if (!root) {
		fprintf(stderr, "bench/storage: fio gave no JSON (is fio installed?)\n");
		return -1;
	}
	side = json_object_get(json_array_get(json_object_get(root, "jobs"), 0),
			       strstr(j->fio_rw, "read") ? "read" : "write");
	out->iops = json_number_value(json_object_get(side, "iops"));
	out->mbps = json_number_value(json_object_get(side, "bw_bytes")) / 1e6;
	json_decref(root);
	return out->iops > 0 ? 0 : -1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[n / 2];
}

/* Writes the whole file once so that reads find data, not holes. */
static int prepare_file(void)
{
	static uint8_t buf[1 << 20];
	int fd = open(opt.file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return ferr_sys(errno, "cannot create %s", opt.file);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	for (uint64_t off = 0; off < opt.size; off += sizeof(buf))
		if (write_all(fd, buf, sizeof(buf)) < 0) {
			close(fd);
			return ferr_sys(errno, "cannot fill %s", opt.file);
		}
	fsync(fd);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "file", required_argument, NULL, 'f' },
		{ "size", required_argument, NULL, 's' },
		{ "seconds", required_argument, NULL, 't' },
		{ "reps", required_argument, NULL, 'r' },
		{ "no-ioeventfd", no_argument, NULL, 'n' },
		{ "threads", no_argument, NULL, 'T' },
		{ "job", required_argument, NULL, 'j' },
		{ "no-fio", no_argument, NULL, 'F' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int o, rc;

	while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (o == 'f')
			opt.file = optarg;
		else if (o == 's' && parse_size(optarg, &opt.size) == 0 && opt.size >= (8u << 20))
			continue;
		else if (o == 't' && parse_u64(optarg, &v) == 0 && v > 0 && v < 600)
			opt.seconds = (unsigned)v;
		else if (o == 'r' && parse_u64(optarg, &v) == 0 && v > 0 && v < 100)
			opt.reps = (unsigned)v;
		else if (o == 'n')
			opt.no_ioeventfd = true;
		else if (o == 'T')
			opt.threads = true;
		else if (o == 'j')
			opt.only = optarg;
		else if (o == 'F')
			opt.no_fio = true;
		else {
			fprintf(stderr, "usage: bench/storage [--file PATH] [--size SIZE>=8M] "
				"[--seconds N] [--reps N] [--no-ioeventfd] [--threads]\n"
				"                     [--job randread|randwrite|seqread|seqwrite] [--no-fio]\n");
			return 2;
		}
	}
	rc = prepare_file();
	if (rc) {
		fprintf(stderr, "bench/storage: %s\n", ferr_msg(rc));
		return 1;
	}
	printf("| job | qd | ferry IOPS | ferry MB/s | fio IOPS | fio MB/s | ferry/fio | "
	       "doorbells/req | wake-ups/req |\n");
	printf("|---|---|---|---|---|---|---|---|---|\n");
	for (unsigned i = 0; i < ARRAY_SIZE(jobs); i++) {
		double fi[100], fm[100], gi[100], gm[100], db[100], sg[100];

		if (opt.only && strcmp(opt.only, jobs[i].mode) != 0)
			continue;
		for (unsigned r = 0; r < opt.reps; r++) {
			struct result a, b;

			b = (struct result){ .iops = 1 };
			if (run_ferry(&jobs[i], &a) || (!opt.no_fio && run_fio(&jobs[i], &b)))
				return 1;
			fi[r] = a.iops;
			fm[r] = a.mbps;
			gi[r] = b.iops;
			gm[r] = b.mbps;
			db[r] = a.doorbells;
			sg[r] = a.signals;
		}
		double mfi = median(fi, opt.reps), mgi = median(gi, opt.reps);

		printf("| %s %s | %u | %.0f | %.1f | ", jobs[i].mode, jobs[i].bs, jobs[i].qd, mfi,
		       median(fm, opt.reps));
		if (opt.no_fio)
			printf("– | – | – | ");
		else
			printf("%.0f | %.1f | %.2f | ", mgi, median(gm, opt.reps), mfi / mgi);
		printf("%.3f | %.3f |\n", median(db, opt.reps), median(sg, opt.reps));
		fflush(stdout);
	}
	unlink(opt.file);
	return 0;
}
