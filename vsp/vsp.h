/*
 * ferry's VMBus-style synthetic devices: the bus that offers channels to the
 * guest and the service providers behind them (console, storage, heartbeat).
 * docs/vsp.md describes the protocol, the threads and migration.
 *
 * Life cycle, all on the main thread:
 *   vsp_bus_create()  after vm_create() and before any vCPU runs: registers
 *                     the control and doorbell ports, the doorbell
 *                     ioeventfds and one migratable device per provider (so
 *                     an incoming migration can load their state);
 *   vsp_bus_start()   starts the providers' threads (they touch guest
 *                     memory and the disks only while the VM is running);
 *   vsp_bus_destroy() stops them; call it before vm_destroy().  A bus
 *                     whose threads never started may be destroyed after
 *                     its VM (an incoming migration that failed).
 */
#ifndef FERRY_VSP_H
#define FERRY_VSP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct vsp_bus;

#define VSP_MAX_DISKS 4
#define VSP_PATH_MAX 256
#define VSP_DEFAULT_HEARTBEAT_MS 200

struct vsp_disk_cfg {
	char path[VSP_PATH_MAX];
	bool readonly;
	bool force_threads;         /* the thread-pool engine even if io_uring works */
};

struct vsp_config {
	struct vsp_disk_cfg disks[VSP_MAX_DISKS];
	unsigned ndisks;
	int console_in_fd;          /* host input for the guest console, or -1 */
	uint32_t heartbeat_ms;      /* 0: VSP_DEFAULT_HEARTBEAT_MS */
	bool no_ioeventfd;          /* doorbells through the port handler only */
};

/* Parses "PATH[,readonly]" (the --disk option). */
int vsp_disk_parse(const char *spec, struct vsp_disk_cfg *out);

int vsp_bus_create(struct vm *vm, const struct vsp_config *cfg, struct vsp_bus **out);
int vsp_bus_start(struct vsp_bus *bus);
void vsp_bus_destroy(struct vsp_bus *bus);
/* The bus registered with `vm`, or NULL (any thread). */
struct vsp_bus *vsp_bus_of(struct vm *vm);

/* What query-vsp reports about one channel.  Any thread. */
#define VSP_STATS_MAX 12
struct vsp_stat {
	const char *key;
	uint64_t value;
};
struct vsp_chan_info {
	char name[32];              /* its device section: vsp-storage0 */
	const char *kind;           /* console, storage, heartbeat */
	uint32_t channel, instance;
	uint32_t version;           /* negotiated; 0 unless open */
	const char *state;          /* offered, open, failed */
	char error[192];            /* why it failed */
	uint64_t doorbells;         /* guest -> host signals */
	uint64_t signals;           /* host -> guest wake-ups */
	struct vsp_stat stats[VSP_STATS_MAX];
	unsigned nstats;
	const char *health;         /* heartbeat only (else NULL) */
	int64_t last_beat_ms;       /* heartbeat: age of the last beat, -1 none */
	char path[VSP_PATH_MAX];    /* storage only */
	bool readonly;
};
unsigned vsp_bus_count(struct vsp_bus *bus);
int vsp_bus_query(struct vsp_bus *bus, unsigned index, struct vsp_chan_info *out);
bool vsp_bus_uses_ioeventfd(struct vsp_bus *bus);

/*
 * Queues host input for the guest console (control command console-send).
 * -ENOSPC when the queue (64 KiB) cannot take it all; nothing is queued then.
 */
int vsp_console_send(struct vsp_bus *bus, const void *data, size_t len);

#endif
