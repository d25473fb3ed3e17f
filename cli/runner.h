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
};

/* The VM, or NULL (and an error recorded in c) when there is none yet. */
struct ctl_call;
struct vm *runner_vm(struct runner *r, struct ctl_call *c);
/* True while an outgoing migration is handing the VM over. */
bool runner_handing_over(struct runner *r);

int vm_commands_register(struct ctl_server *s, struct runner *r);
int mig_commands_register(struct ctl_server *s, struct runner *r);

#endif
