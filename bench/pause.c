/*
 * bench/pause: how long vm_pause() takes to bring every vCPU out of KVM_RUN,
 * for 1, 2, 4 and 8 vCPUs running `dirty` (always in the guest) and `idle`
 * (mostly sleeping in the host).  Prints a Markdown table of median, p90
 * and max over --reps pauses, each after 20 ms of running.
 *
 * usage: bench/pause [--reps N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/boot.h"
#include "core/loader.h"
#include "core/util.h"
#include "core/vm.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { 0, (long)ms * 1000000 };

	nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
	static const unsigned cpus[] = { 1, 2, 4, 8 };
	static const char *const progs[] = { "dirty", "idle" };
	unsigned reps = 200;
	uint64_t *lat;

	if (argc == 3 && strcmp(argv[1], "--reps") == 0)
		reps = (unsigned)atoi(argv[2]);
	if (reps == 0) {
		fprintf(stderr, "usage: bench/pause [--reps N]\n");
		return 2;
	}
	lat = calloc(reps, sizeof(*lat));
	printf("| guest | vCPUs | pauses | median µs | p90 µs | max µs |\n");
	printf("|---|---|---|---|---|---|\n");
	for (unsigned p = 0; p < 2; p++) {
		for (unsigned c = 0; c < 4; c++) {
			struct vm_config cfg = { .mem_size = 256ull << 20, .ncpus = cpus[c] };
			char *args[] = { "wss=64M" };
			struct vm *vm;
			int rc = vm_create(&vm, &cfg);

			if (!rc)
				rc = boot_program(vm, progs[p], args, 1);
			if (rc) {
				fprintf(stderr, "bench/pause: %s\n", ferr_msg(rc));
				return 1;
			}
			vm_start(vm);
			sleep_ms(100);
			for (unsigned r = 0; r < reps; r++) {
				vm_pause(vm, &lat[r]);
				vm_resume(vm);
				sleep_ms(20);
			}
			qsort(lat, reps, sizeof(*lat), cmp_u64);
			printf("| %s | %u | %u | %.1f | %.1f | %.1f |\n", progs[p], cpus[c], reps,
			       lat[reps / 2] / 1e3, lat[reps * 9 / 10] / 1e3, lat[reps - 1] / 1e3);
			fflush(stdout);
			vm_end(vm, 0, "benchmark done");
			vm_destroy(vm);
		}
	}
	free(lat);
	return 0;
}
