/*
 * What one `ferry run` process is running: the VM (which an incoming
 * destination only gets once the source has described it), the last
 * outgoing migration, and the incoming one.  The control commands reach
 * everything through it.
 */
#ifndef FERRY_RUNNER_H
#define FERRY_RUNNER_H

#include <pthread.h>
#include <stdbool.h>

#include "../core/vm.h"
#include "../dirtylog/dirtylog.h"
#include "../migrate/migrate.h"
#include "../migrate/receiver.h"

struct runner {
	pthread_mutex_t lock;
	struct vm *vm;                /* (lock) NULL until it exists */
	struct mig_out *mig;          /* (lock) the latest outgoing migration */
	struct mig_in *incoming;      /* set before the control server starts */
	enum dlog_backend dirty_log;  /* resolved backend for this VM */
	bool final_status_read;       /* (lock) a client saw the migration end */
	pthread_cond_t cond;
	/* Quick migration (cli/save_commands.c, cli/restore.c). */
	struct sf_job *save;          /* (lock) the latest save */
	struct sf_lazy *lazy;         /* a lazy restore's loader; set before the control server */
	const char *restore_path;     /* the file this VM was restored from, or NULL */
	uint64_t restore_t0, restore_ns;
};

/* The VM, or NULL (and an error recorded in c) when there is none yet. */
struct ctl_call;
struct vm *runner_vm(struct runner *r, struct ctl_call *c);
/* True while an outgoing migration is handing the VM over. */
bool runner_handing_over(struct runner *r);

int vm_commands_register(struct ctl_server *s, struct runner *r);
int mig_commands_register(struct ctl_server *s, struct runner *r);

struct sf_job;
struct sf_lazy;
int save_commands_register(struct ctl_server *s, struct runner *r);
/*
 * Called before an outgoing migration starts: false (error in c) while a
 * save runs; waits for a lazy restore to bring in all of RAM first.
 */
bool runner_ready_to_migrate(struct runner *r, struct ctl_call *c);
/* Ends a running save and the lazy loader; call before vm_destroy(). */
void runner_save_cleanup(struct runner *r);
/*
 * `ferry run --restore`: loads the VM saved in path (eagerly, or lazily)
 * into a VM made by create_vm; returns it ready to start.  Main thread.
 */
int runner_restore(struct runner *r, const char *path, bool lazy, mig_create_vm_fn create_vm,
		   void *opaque, struct vm **out);
/* Records (and logs) how long the restore took once the VM runs, or not. */
void runner_restore_started(struct runner *r, bool running);

#endif
