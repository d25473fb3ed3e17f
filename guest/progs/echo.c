/*
 * echo: the console both ways.  vCPU 0 opens the console and heartbeat
 * channels, prints a greeting, then answers every input line with
 * "echo: LINE" until it reads "quit", the host's input ends (EOF) or
 * shutdown is requested.  It beats on the heartbeat channel while it waits,
 * so it also serves the heartbeat tests.  Its last line says how many lines
 * it echoed and how many beats it sent.
 */
#include "../rt/vmbus.h"

FERRY_PROGRAM("echo", "seconds");

#define LINE_MAX 256

int guest_main(unsigned cpu)
{
	char line[LINE_MAX], buf[64];
	uint64_t seconds = 0, start, lines = 0;
	size_t len = 0;
	const char *v;
	int rc;

	if (cpu != 0)
		return 0;
	if ((v = garg("seconds")) && !gparse_u64(v, &seconds))
		gusage_fail(cpu, "seconds: '%s' is not a number", v);
	rc = vcon_open();
	GASSERT(rc == 0, "echo: cannot open the console channel (%d)", rc);
	rc = vhb_open();
	GASSERT(rc == 0, "echo: cannot open the heartbeat channel (%d)", rc);
	vcon_printf("echo: ready (heartbeat every %lu ms)\n",
		    (unsigned long)(vhb_interval_us() / 1000));
	start = gtime_us();
	while (!gstop_requested() && (!seconds || gtime_us() - start < seconds * 1000000)) {
		int n = vcon_read(buf, sizeof(buf), 200000);

		if (n < 0)
			break;
		for (int i = 0; i < n; i++) {
			if (buf[i] != '\n' && len < LINE_MAX - 1) {
				line[len++] = buf[i];
				continue;
			}
			if (buf[i] != '\n')
				continue;
			line[len] = 0;
			if (strcmp(line, "quit") == 0)
				goto out;
			vcon_printf("echo: %s\n", line);
			lines++;
			len = 0;
		}
	}
out:
	vcon_printf("echo: done, %lu lines echoed, %lu beats\n", (unsigned long)lines,
		    (unsigned long)vhb_beats());
	vcon_flush();
	return 0;
}
