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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/boot.h"
#include "../core/loader.h"
#include "../core/util.h"
#include "../transport/xport.h"
#include "../vsp/vsp.h"
#include "cli.h"
#include "runner.h"

#define MAX_GUEST_ARGS 64

static const char run_usage[] =
	"usage: ferry run [--mem SIZE] [--cpus N] [--guest NAME] [--guest-arg KEY=VALUE]...\n"
	"                 [--control SOCKET] [--console FILE] [--dirty-log BACKEND]\n"
	"                 [--disk PATH[,readonly]]... [--console-in FILE]\n"
	"       ferry run --incoming tcp:ADDR:PORT [--mem SIZE] [--cpus N] [--control SOCKET]\n"
	"                 [--console FILE] [--dirty-log BACKEND]\n"
	"       ferry run --restore FILE [--lazy] [--paused] [--mem SIZE] [--cpus N]\n"
	"                 [--control SOCKET] [--console FILE] [--dirty-log BACKEND]\n"
	"\n"
	"  --mem SIZE          guest RAM, e.g. 256M or 16G (default 256M)\n"
	"  --cpus N            vCPUs, 1 to 64 (default 1)\n"
	"  --guest NAME        guest program: hello, idle, dirty, disk, crash\n"
	"                      (default hello; see docs/cli.md)\n"
	"  --guest-arg K=V     an argument for the guest program (repeatable)\n"
	"  --control SOCKET    serve the JSON control API on this unix socket\n"
	"  --console FILE      write guest output to FILE instead of stdout\n"
	"  --dirty-log B       dirty-page tracking for migrations: auto, bitmap, clear\n"
	"                      or ring (default auto; see docs/dirtylog.md)\n"
	"  --disk PATH[,readonly]  a synthetic disk backed by PATH (repeatable, up to 4;\n"
	"                      a migration's destination names the same shared disks)\n"
	"  --console-in FILE   input for the guest's synthetic console (- for stdin)\n"
	"  --incoming URI      wait for one live migration on URI, then run that VM;\n"
	"                      --mem and --cpus, if given, must match the source\n"
	"  --restore FILE      run the VM saved in FILE by `ferry save`; --mem and --cpus,\n"
	"                      if given, must match it\n"
	"  --lazy              with --restore: run at once, load memory on first touch\n"
	"  --paused            with --restore: stay paused until the control command resume\n";

struct run_opts {
	uint64_t mem;
	unsigned cpus;
	bool mem_given, cpus_given;
	const char *guest;
	char *args[MAX_GUEST_ARGS];
	unsigned nargs;
	const char *control;
	const char *console;
	const char *incoming;
	const char *restore;
	bool lazy, paused;
	enum dlog_backend dirty_log;
	struct vsp_config vsp;
	const char *console_in;
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
		{ "incoming", required_argument, NULL, 'i' },
		{ "dirty-log", required_argument, NULL, 'D' },
		{ "disk", required_argument, NULL, 'k' },
		{ "console-in", required_argument, NULL, 'I' },
		{ "restore", required_argument, NULL, 'R' },
		{ "lazy", no_argument, NULL, 'L' },
		{ "paused", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int opt;

	*o = (struct run_opts){ .mem = 256ull << 20, .cpus = 1, .guest = "hello" };
	o->vsp.console_in_fd = -1;
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
			o->mem_given = true;
			break;
		case 'c':
			if (parse_u64(optarg, &v) < 0)
				return usage_error("run", "invalid --cpus '%s': expected a number", optarg);
			if (v == 0 || v > FERRY_MAX_VCPUS)
				return usage_error("run", "--cpus %s is out of range: 1 to %u", optarg,
						   FERRY_MAX_VCPUS);
			o->cpus = (unsigned)v;
			o->cpus_given = true;
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
		case 'i':
			o->incoming = optarg;
			break;
		case 'D':
			if (dlog_parse(optarg, &o->dirty_log) < 0)
				return usage_error("run", "--dirty-log '%s' must be auto, bitmap, clear or ring",
						   optarg);
			break;
		case 'k':
			if (o->vsp.ndisks == VSP_MAX_DISKS)
				return usage_error("run", "more than %d --disk options", VSP_MAX_DISKS);
			if (vsp_disk_parse(optarg, &o->vsp.disks[o->vsp.ndisks]) < 0)
				return usage_error("run", "%s", ferr_msg(-EINVAL));
			o->vsp.ndisks++;
			break;
		case 'I':
			o->console_in = optarg;
			break;
		case 'R':
			o->restore = optarg;
			break;
		case 'L':
			o->lazy = true;
			break;
		case 'P':
			o->paused = true;
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
	if (o->incoming && (o->nargs || strcmp(o->guest, "hello") != 0))
		return usage_error("run", "--incoming takes the guest from the source; "
				   "--guest and --guest-arg do not apply");
	if (o->restore && (o->incoming || o->nargs || strcmp(o->guest, "hello") != 0))
		return usage_error("run", "--restore takes the VM from the file; --incoming, --guest "
				   "and --guest-arg do not apply");
	if ((o->lazy || o->paused) && !o->restore)
		return usage_error("run", "--lazy and --paused go with --restore");
	return 0;
}

struct run_ctx {
	struct run_opts o;
	struct runner r;
	struct vm_config cfg;
	int console_fd;
	sigset_t signals;
	struct vsp_bus *vsp;
};

/* The synthetic devices, registered before any vCPU runs (vsp/vsp.h). */
static int setup_vsp(struct run_ctx *ctx, struct vm *vm)
{
	int rc = vsp_bus_create(vm, &ctx->o.vsp, &ctx->vsp);
	char why[256];

	if (rc) {
		snprintf(why, sizeof(why), "%s", ferr_msg(rc));
		return ferr(rc, "cannot set up the synthetic devices: %s", why);
	}
	return 0;
}

static void *signal_thread(void *arg)
{
	struct run_ctx *ctx = arg;
	int sig;

	pthread_setname_np(pthread_self(), "ferry-signals");
	while (sigwait(&ctx->signals, &sig) == 0) {
		struct vm *vm = runner_vm(&ctx->r, NULL);

		if (vm)
			vm_end(vm, 128 + sig, "stopped by signal %d (%s)", sig, strsignal(sig));
		else if (ctx->r.incoming)
			mig_in_abort(ctx->r.incoming, "stopped by a signal");
	}
	return NULL;
}

/* Builds the destination VM for an incoming migration's description. */
static int create_incoming_vm(void *opaque, const struct mig_vmdesc *d, struct vm **out)
{
	struct run_ctx *ctx = opaque;
	char a[32], b[32];
	struct vm *vm;
	int rc;

	if (ctx->o.mem_given && ctx->o.mem != d->mem_size)
		return ferr(EINVAL, "memory size mismatch: the source VM has %s, this destination "
			    "was started with --mem %s", fmt_size(a, sizeof(a), d->mem_size),
			    fmt_size(b, sizeof(b), ctx->o.mem));
	if (ctx->o.cpus_given && ctx->o.cpus != d->ncpus)
		return ferr(EINVAL, "vCPU count mismatch: the source VM has %u, this destination "
			    "was started with --cpus %u", d->ncpus, ctx->o.cpus);
	ctx->cfg.mem_size = d->mem_size;
	ctx->cfg.ncpus = d->ncpus;
	rc = vm_create(&vm, &ctx->cfg);
	if (rc)
		return rc;
	rc = setup_vsp(ctx, vm);
	if (rc) {
		vm_destroy(vm);
		return rc;
	}
	memcpy(vm->uuid, d->uuid, sizeof(vm->uuid));
	snprintf(vm->guest_name, sizeof(vm->guest_name), "%s", d->guest_name);
	dlog_attach(vm, ctx->r.dirty_log);
	vm->console_fd = ctx->console_fd;
	*out = vm;
	return 0;
}

static int boot_guest(struct run_ctx *ctx, struct vm **out)
{
	struct ferry_image_header hdr;
	char image[PATH_MAX];
	struct vm *vm;
	int rc;

	rc = loader_find_image(ctx->o.guest, image, sizeof(image));
	if (rc)
		return usage_error("run", "%s", ferr_msg(rc));
	ctx->cfg.mem_size = ctx->o.mem;
	ctx->cfg.ncpus = ctx->o.cpus;
	rc = vm_create(&vm, &ctx->cfg);
	if (rc) {
		fprintf(stderr, "ferry run: %s\n", ferr_msg(rc));
		return EXIT_RUNTIME;
	}
	vm->console_fd = ctx->console_fd;
	dlog_attach(vm, ctx->r.dirty_log);
	rc = setup_vsp(ctx, vm);
	if (rc) {
		fprintf(stderr, "ferry run: %s\n", ferr_msg(rc));
		vm_destroy(vm);
		return EXIT_RUNTIME;
	}
	rc = loader_load_file(&vm->mem, image, &hdr);
	if (rc) {
		fprintf(stderr, "ferry run: %s\n", ferr_msg(rc));
		vm_destroy(vm);
		return EXIT_RUNTIME;
	}
	rc = loader_check_args(&hdr, ctx->o.args, ctx->o.nargs);
	if (rc) {
		vm_destroy(vm);
		return usage_error("run", "%s", ferr_msg(rc));
	}
	rc = boot_setup_memory(vm, &hdr, ctx->o.args, ctx->o.nargs);
	if (!rc)
		rc = boot_setup_vcpus(vm, &hdr);
	if (rc) {
		fprintf(stderr, "ferry run: cannot boot the guest: %s\n", ferr_msg(rc));
		vm_destroy(vm);
		return EXIT_RUNTIME;
	}
	*out = vm;
	return 0;
}

static int start_control(struct run_ctx *ctx, struct ctl_server **out)
{
	int rc;

	*out = NULL;
	if (!ctx->o.control)
		return 0;
	rc = ctl_server_create(out);
	if (!rc)
		rc = vm_commands_register(*out, &ctx->r);
	if (!rc)
		rc = mig_commands_register(*out, &ctx->r);
	if (!rc)
		rc = vsp_commands_register(*out, &ctx->r);
	if (!rc)
		rc = save_commands_register(*out, &ctx->r);
	if (!rc)
		rc = ctl_server_listen(*out, ctx->o.control);
	if (rc)
		fprintf(stderr, "ferry run: %s\n", ferr_msg(rc));
	return rc;
}

/* Receives the VM; returns 0 with the VM resumed, else an exit status. */
static int run_incoming(struct run_ctx *ctx, struct ctl_server **ctl, struct vm **out)
{
	struct xport_listener *l;
	struct mig_in_stats st;
	int rc;

	rc = xport_listen(ctx->o.incoming, &l);
	if (rc) {
		fprintf(stderr, "ferry run: %s\n", ferr_msg(rc));
		return EXIT_RUNTIME;
	}
	rc = mig_in_create(&ctx->r.incoming);
	if (!rc)
		rc = start_control(ctx, ctl);
	if (rc) {
		xport_listener_close(l);
		return EXIT_RUNTIME;
	}
	flog("waiting for an incoming migration on %s:%s", l->scheme, l->addr);
	rc = mig_in_run(ctx->r.incoming, l, create_incoming_vm, ctx, out);
	xport_listener_close(l);
	if (rc) {
		fprintf(stderr, "ferry run: incoming migration failed: %s\n", ferr_msg(rc));
		return EXIT_RUNTIME;
	}
	mig_in_query(ctx->r.incoming, &st);
	flog("incoming migration from %s complete: downtime %.2f ms, %.1f MiB in %.1f ms",
	     st.source, st.downtime_ns / 1e6, st.bytes / 1048576.0, st.total_ns / 1e6);
	return 0;
}

/* Loads a saved VM; returns 0 with the VM ready to start, else an exit status. */
static int run_restore(struct run_ctx *ctx, struct ctl_server **ctl, struct vm **out)
{
	int rc = runner_restore(&ctx->r, ctx->o.restore, ctx->o.lazy, create_incoming_vm, ctx, out);

	if (rc) {
		fprintf(stderr, "ferry run: %s\n", ferr_msg(rc));
		return EXIT_RUNTIME;
	}
	return start_control(ctx, ctl) ? EXIT_RUNTIME : 0;
}

/* After the VM left for a destination, let `ferry migrate` read the end. */
static void linger_for_migration_client(struct run_ctx *ctx)
{
	uint64_t deadline = now_ns() + 3000000000ull;

	pthread_mutex_lock(&ctx->r.lock);
	while (ctx->r.mig && !ctx->r.final_status_read && now_ns() < deadline) {
		struct timespec ts;

		pthread_mutex_unlock(&ctx->r.lock);
		ts = (struct timespec){ 0, 20000000 };
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&ctx->r.lock);
		if (ctx->r.mig && !mig_out_finished(ctx->r.mig))
			deadline = now_ns() + 3000000000ull;
	}
	pthread_mutex_unlock(&ctx->r.lock);
}

int cmd_run(int argc, char **argv)
{
	/* One per process: the signal thread may look at it until exit. */
	static struct run_ctx the_ctx;
	struct run_ctx *ctx = &the_ctx;
	struct ctl_server *ctl = NULL;
	struct vm *vm = NULL;
	char msg[512];
	pthread_t sig_thread;
	int rc, status = EXIT_RUNTIME;

	ctx->console_fd = STDOUT_FILENO;
	pthread_mutex_init(&ctx->r.lock, NULL);
	pthread_cond_init(&ctx->r.cond, NULL);
	rc = parse_run_opts(argc, argv, &ctx->o);
	if (rc) {
		status = rc;
		goto free_ctx;
	}
	rc = dlog_prepare(ctx->o.dirty_log, &ctx->cfg, &ctx->r.dirty_log);
	if (rc) {
		fprintf(stderr, "ferry run: %s\n", ferr_msg(rc));
		goto free_ctx;
	}

	/* Signals that end ferry are taken by one thread, never by a vCPU. */
	sigemptyset(&ctx->signals);
	sigaddset(&ctx->signals, SIGINT);
	sigaddset(&ctx->signals, SIGTERM);
	sigaddset(&ctx->signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &ctx->signals, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (pthread_create(&sig_thread, NULL, signal_thread, ctx) == 0)
		pthread_detach(sig_thread);

	if (ctx->o.console) {
		ctx->console_fd = open(ctx->o.console, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (ctx->console_fd < 0) {
			fprintf(stderr, "ferry run: cannot open console file %s: %s\n",
				ctx->o.console, strerror(errno));
			ctx->console_fd = STDOUT_FILENO;
			goto free_ctx;
		}
	}
	if (ctx->o.console_in) {
		ctx->o.vsp.console_in_fd = strcmp(ctx->o.console_in, "-") == 0 ? STDIN_FILENO :
			open(ctx->o.console_in, O_RDONLY | O_CLOEXEC);
		if (ctx->o.vsp.console_in_fd < 0) {
			fprintf(stderr, "ferry run: cannot open console input %s: %s\n",
				ctx->o.console_in, strerror(errno));
			goto free_ctx;
		}
	}
	if (ctx->o.incoming) {
		status = run_incoming(ctx, &ctl, &vm);
		if (status)
			goto cleanup;
	} else if (ctx->o.restore) {
		status = run_restore(ctx, &ctl, &vm);
		if (status)
			goto cleanup;
	} else {
		status = boot_guest(ctx, &vm);
		if (status)
			goto cleanup;
		status = EXIT_RUNTIME;
		if (start_control(ctx, &ctl))
			goto cleanup;
	}
	pthread_mutex_lock(&ctx->r.lock);
	ctx->r.vm = vm;
	pthread_mutex_unlock(&ctx->r.lock);
	if (vsp_bus_start(ctx->vsp)) {
		vm_end(vm, EXIT_RUNTIME, "%s", ferr_msg(-EIO));
		fprintf(stderr, "ferry run: %s\n", ferr_msg(-EIO));
	}
	if (!ctx->o.incoming && !ctx->o.paused)
		vm_start(vm);
	runner_restore_started(&ctx->r, !ctx->o.paused);
	status = vm_wait_end(vm, msg, sizeof(msg));
	if (status != 0)
		fprintf(stderr, "ferry: %s\n", msg);
	linger_for_migration_client(ctx);

cleanup:
	ctl_server_destroy(ctl);
	if (ctx->r.mig)
		mig_out_free(ctx->r.mig);
	runner_save_cleanup(&ctx->r);
	pthread_mutex_lock(&ctx->r.lock);
	ctx->r.vm = NULL;
	pthread_mutex_unlock(&ctx->r.lock);
	vsp_bus_destroy(ctx->vsp);
	ctx->vsp = NULL;
	vm_destroy(vm);
	mig_in_free(ctx->r.incoming);
	ctx->r.incoming = NULL;
	if (ctx->console_fd != STDOUT_FILENO)
		close(ctx->console_fd);
	if (ctx->o.vsp.console_in_fd > STDIN_FILENO)
		close(ctx->o.vsp.console_in_fd);
free_ctx:
	return status;
}
