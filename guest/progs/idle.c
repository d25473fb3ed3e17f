/*
 * idle: sleeps in the host between short wake-ups, like a guest kernel's idle
 * loop.  vCPU 0 fills `wss` bytes with a known pattern first and checks it
 * when the program finishes, so a migrated idle guest proves its memory too.
 */
#include "../rt/ferry_guest.h"

FERRY_PROGRAM("idle", "wss,interval_ms,seconds");

static uint64_t pattern_word(uint64_t index)
{
	return gmix64(index ^ 0x1d1e1d1eull);
}

int guest_main(unsigned cpu)
{
	const struct ferry_bootinfo *bi = gboot();
	uint64_t wss = 4ull << 20, interval_ms = 10, seconds = 0;
	uint64_t *data = (uint64_t *)(uintptr_t)bi->data_base;
	uint64_t words, start;
	const char *v;

	if ((v = garg("wss")) && !gparse_size(v, &wss))
		gusage_fail(cpu, "wss: '%s' is not a size", v);
	if (wss > bi->data_end - bi->data_base)
		gusage_fail(cpu, "wss: %lu bytes does not fit the %lu-byte data area",
			    (unsigned long)wss,
			    (unsigned long)(bi->data_end - bi->data_base));
	if ((v = garg("interval_ms")) && (!gparse_u64(v, &interval_ms) || !interval_ms))
		gusage_fail(cpu, "interval_ms: '%s' is not a positive number", v);
	if ((v = garg("seconds")) && !gparse_u64(v, &seconds))
		gusage_fail(cpu, "seconds: '%s' is not a number", v);

	words = wss / sizeof(uint64_t);
	if (cpu == 0) {
		for (uint64_t i = 0; i < words; i++)
			data[i] = pattern_word(i);
		gprogress("filled_kib", wss >> 10);
	}

	start = gtime_us();
	while (!gstop_requested() &&
	       (!seconds || gtime_us() - start < seconds * 1000000))
		ghalt_us(interval_ms * 1000);

	if (cpu != 0)
		return 0;
	for (uint64_t i = 0; i < words; i++)
		GASSERT(data[i] == pattern_word(i),
			"idle: word %lu at %p holds %lx, expected %lx",
			(unsigned long)i, (void *)&data[i],
			(unsigned long)data[i], (unsigned long)pattern_word(i));
	gprintf("idle: %lu KiB verified\n", (unsigned long)(wss >> 10));
	return 0;
}
