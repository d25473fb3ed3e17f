/*
 * `ferry run`: create a VM, load a guest program, serve the control API and
 * wait for the guest to finish.  The exit status is the guest's.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/boot.h"
#include "../core/loader.h"
#include "../core/util.h"
#include "cli.h"

#define MAX_GUEST_ARGS 64

static const char run_usage[] =
	"usage: ferry run [--mem SIZE] [--cpus N] [--guest NAME] [--guest-arg KEY=VALUE]...\n"
	"                 [--control SOCKET] [--console FILE]\n"
	"\n"
	"  --mem SIZE          guest RAM, e.g. 256M or 16G (default 256M)\n"
	"  --cpus N            vCPUs, 1 to 64 (default 1)\n"
	"  --guest NAME        guest program: hello, idle, dirty (default hello)\n"
	"  --guest-arg K=V     an argument for the guest program (repeatable)\n"
	"  --control SOCKET    serve the JSON control API on this unix socket\n"
	"  --console FILE      write guest output to FILE instead of stdout\n";

struct run_opts {
	uint64_t mem;
	unsigned cpus;
	const char *guest;
	char *args[MAX_GUEST_ARGS];
	unsigned nargs;
	const char *control;
	const char *console;
};

int usage_error(const char *sub, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ferry %s: %s\n", sub, msg);
	return EXIT_USAGE;
}

static int parse_run_opts(int argc, char **argv, struct run_opts *o)
{
	static const struct option longopts[] = {
		{ "mem", required_argument, NULL, 'm' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "guest", required_argument, NULL, 'g' },
		{ "guest-arg", required_argument, NULL, 'a' },
		{ "control", required_argument, NULL, 'C' },
		{ "console", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int opt;

	*o = (struct run_opts){ .mem = 256ull << 20, .cpus = 1, .guest = "hello" };
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'm':
			if (parse_size(optarg, &o->mem) < 0)
				return usage_error("run", "invalid --mem '%s': expected a size such as 512M or 4G",
						   optarg);
			if (o->mem < FERRY_MIN_MEM || o->mem > FERRY_MAX_MEM)
				return usage_error("run", "--mem %s is out of range: 32M to 64G", optarg);
			if (o->mem % (2ull << 20))
				return usage_error("run", "--mem %s is not a multiple of 2M", optarg);
			break;
		case 'c':
			if (parse_u64(optarg, &v) < 0)
				return usage_error("run", "invalid --cpus '%s': expected a number", optarg);
			if (v == 0 || v > FERRY_MAX_VCPUS)
				return usage_error("run", "--cpus %s is out of range: 1 to %u", optarg,
						   FERRY_MAX_VCPUS);
			o->cpus = (unsigned)v;
			break;
		case 'g':
			o->guest = optarg;
			break;
		case 'a':
			if (o->nargs == MAX_GUEST_ARGS)
				return usage_error("run", "more than %d --guest-arg options", MAX_GUEST_ARGS);
			o->args[o->nargs++] = optarg;
			break;
		case 'C':
			o->control = optarg;
			break;
		case 'o':
			o->console = optarg;
			break;
		case 'h':
			fputs(run_usage, stdout);
			exit(0);
		default:
			if (optopt)
				return usage_error("run", "option -%c is unknown or needs a value (see ferry run --help)",
						   optopt);
			return usage_error("run", "option '%s' is unknown or needs a value (see ferry run --help)",
					   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("run", "unexpected argument '%s'", argv[optind]);
	return 0;
}

struct signal_waiter {
	struct vm *vm;
	sigset_t set;
};

static void *signal_thread(void *arg)
{
	struct signal_waiter *w = arg;
	int sig;

	pthread_setname_np(pthread_self(), "ferry-signals");
	while (sigwait(&w->set, &sig) == 0)
		vm_end(w->vm, 128 + sig, "stopped by signal %d (%s)", sig, strsignal(sig));
	return NULL;
}

int cmd_run(int argc, char **argv)
{
	struct vm_config cfg = { 0 };
	struct ferry_image_header hdr;
	struct ctl_server *ctl = NULL;
	struct signal_waiter waiter;
	struct run_opts o;
	struct vm *vm = NULL;
	char image[PATH_MAX], msg[512];
	pthread_t sig_thread;
	int rc, status = EXIT_RUNTIME;

	rc = parse_run_opts(argc, argv, &o);
	if (rc)
		return rc;
	rc = loader_find_image(o.guest, image, sizeof(image));
	if (rc)
		return usage_error("run", "%s", ferr_msg(rc));

	/* Signals that end ferry are taken by one thread, never by a vCPU. */
	sigemptyset(&waiter.set);
	sigaddset(&waiter.set, SIGINT);
	sigaddset(&waiter.set, SIGTERM);
	sigaddset(&waiter.set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &waiter.set, NULL);
	signal(SIGPIPE, SIG_IGN);

	cfg.mem_size = o.mem;
	cfg.ncpus = o.cpus;
	rc = vm_create(&vm, &cfg);
	if (rc) {
		fprintf(stderr, "ferry run: %s\n", ferr_msg(rc));
		return EXIT_RUNTIME;
	}
	rc = loader_load_file(&vm->mem, image, &hdr);
	if (rc) {
		fprintf(stderr, "ferry run: %s\n", ferr_msg(rc));
		goto destroy;
	}
	rc = loader_check_args(&hdr, o.args, o.nargs);
	if (rc) {
		status = usage_error("run", "%s", ferr_msg(rc));
		goto destroy;
	}
	rc = boot_setup_memory(vm, &hdr, o.args, o.nargs);
	if (!rc)
		rc = boot_setup_vcpus(vm, &hdr);
	if (rc) {
		fprintf(stderr, "ferry run: cannot boot the guest: %s\n", ferr_msg(rc));
		goto destroy;
	}
	if (o.console) {
		vm->console_fd = open(o.console, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (vm->console_fd < 0) {
			fprintf(stderr, "ferry run: cannot open console file %s: %s\n",
				o.console, strerror(errno));
			vm->console_fd = STDOUT_FILENO;
			goto destroy;
		}
	}
	if (o.control) {
		rc = ctl_server_create(&ctl);
		if (!rc)
			rc = vm_commands_register(ctl, vm);
		if (!rc)
			rc = ctl_server_listen(ctl, o.control);
		if (rc) {
			fprintf(stderr, "ferry run: %s\n", ferr_msg(rc));
			goto destroy;
		}
	}
	waiter.vm = vm;
	if (pthread_create(&sig_thread, NULL, signal_thread, &waiter) == 0)
		pthread_detach(sig_thread);

	vm_start(vm);
	status = vm_wait_end(vm, msg, sizeof(msg));
	if (status != 0)
		fprintf(stderr, "ferry: %s\n", msg);

destroy:
	ctl_server_destroy(ctl);
	if (vm && vm->console_fd != STDOUT_FILENO)
		close(vm->console_fd);
	vm_destroy(vm);
	return status;
}
