/*
 * Live migration, destination side.  `ferry run --incoming URI` listens,
 * takes one migration and runs the VM only after the source commits.
 *
 * The receiver is an explicit state machine: each section is accepted only
 * in the states where it belongs, and anything else ends the migration with
 * an error naming the section and the state.  Every count, length, address
 * and checksum in the stream is checked before guest memory is written.
 */
#ifndef FERRY_MIG_RECEIVER_H
#define FERRY_MIG_RECEIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/vm.h"
#include "../transport/xport.h"
#include "codec.h"

enum mig_in_state {
	MIG_IN_LISTENING,   /* waiting for the source */
	MIG_IN_DESCRIBED,   /* got the VM description, checking it */
	MIG_IN_PRECOPY,     /* receiving pages while the source runs */
	MIG_IN_SWITCHOVER,  /* the source stopped; the rest is coming */
	MIG_IN_LOADED,      /* everything loaded and verified; awaiting COMMIT */
	MIG_IN_RUNNING,     /* committed and resumed */
	MIG_IN_FAILED,
};

const char *mig_in_state_name(enum mig_in_state s);

/*
 * Creates the destination VM for a description (the CLI decides how: its
 * own --mem/--cpus must agree, its dirty-log choice applies).  Returns
 * -errno with a message that becomes the REJECT text.
 */
typedef int (*mig_create_vm_fn)(void *opaque, const struct mig_vmdesc *d, struct vm **out);

struct mig_in;

struct mig_in_stats {
	enum mig_in_state state;
	uint64_t total_ns;
	uint64_t downtime_ns;     /* source stop to our first vCPU running */
	uint64_t bytes;
	uint64_t pages;
	uint64_t iteration;
	unsigned channels;
	char source[96];
	char error[512];
};

int mig_in_create(struct mig_in **out);
/*
 * Runs one incoming migration on the main thread: accepts the source on
 * `l`, builds the VM through create_vm, receives and verifies everything,
 * and on COMMIT resumes the VM, which *vm_out then holds.  On failure the
 * VM (if any) is destroyed and never ran.
 */
int mig_in_run(struct mig_in *in, struct xport_listener *l, mig_create_vm_fn create_vm,
	       void *opaque, struct vm **vm_out);
/* Makes mig_in_run fail at once (any thread). */
void mig_in_abort(struct mig_in *in, const char *why);
void mig_in_query(struct mig_in *in, struct mig_in_stats *st);
void mig_in_free(struct mig_in *in);

#endif
