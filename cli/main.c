/* ferry: a VM runtime on KVM whose centerpiece is live migration. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
	"usage: ferry COMMAND [ARGS]\n"
	"\n"
	"  run       run a guest program in a new VM\n"
	"  ctl       send one command to a running ferry's control socket\n"
	"  migrate   live-migrate a running VM to another ferry\n"
	"  save      save a running VM to a file (ferry run --restore runs it again)\n"
	"  inspect   show what a save file holds and check it\n"
	"  bench     benchmark live migration (downtime, total time; --qemu side by side)\n"
	"\n"
	"`ferry COMMAND --help` describes each command; docs/cli.md has them all.\n";

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "run") == 0)
		return cmd_run(argc - 1, argv + 1);
	if (strcmp(argv[1], "ctl") == 0)
		return cmd_ctl(argc - 1, argv + 1);
	if (strcmp(argv[1], "migrate") == 0)
		return cmd_migrate(argc - 1, argv + 1);
	if (strcmp(argv[1], "save") == 0)
		return cmd_save(argc - 1, argv + 1);
	if (strcmp(argv[1], "inspect") == 0)
		return cmd_inspect(argc - 1, argv + 1);
	if (strcmp(argv[1], "bench") == 0)
		return cmd_bench(argc - 1, argv + 1);
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	fprintf(stderr, "ferry: unknown command '%s'\n%s", argv[1], usage);
	return EXIT_USAGE;
}
