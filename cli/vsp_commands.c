/*
 * Control commands of the synthetic devices: query-vsp (every channel's
 * state, negotiated version, counters, the heartbeat's health and the
 * disks) and console-send (host input for the guest console).  They run on
 * the control thread; the bus locks each channel while it reads it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../core/util.h"
#include "../vsp/vsp.h"
#include "cli.h"
#include "runner.h"

#define CONSOLE_SEND_MAX (64u << 10)

static struct vsp_bus *runner_bus(struct runner *r, struct ctl_call *c)
{
	struct vm *vm = runner_vm(r, c);
	struct vsp_bus *bus;

	if (!vm)
		return NULL;
	bus = vsp_bus_of(vm);
	if (!bus)
		ctl_fail(c, "InvalidState", "this VM has no synthetic devices");
	return bus;
}

static json_t *chan_json(const struct vsp_chan_info *in)
{
	json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:s, s:s, s:I, s:I}",
			      "name", in->name, "type", in->kind, "channel", (int)in->channel,
			      "instance", (int)in->instance, "state", in->state,
			      "version", "", "doorbells", (json_int_t)in->doorbells,
			      "signals", (json_int_t)in->signals);
	char ver[16];

	if (!o)
		return NULL;
	if (in->version)
		snprintf(ver, sizeof(ver), "%u.%u", in->version >> 16, in->version & 0xffff);
	else
		ver[0] = 0;
	json_object_set_new(o, "version", json_string(ver));
	if (in->error[0])
		json_object_set_new(o, "error", json_string(in->error));
	for (unsigned i = 0; i < in->nstats; i++)
		json_object_set_new(o, in->stats[i].key, json_integer((json_int_t)in->stats[i].value));
	if (strcmp(in->kind, "heartbeat") == 0) {
		json_object_set_new(o, "health", json_string(in->health ? in->health : "unknown"));
		json_object_set_new(o, "last_beat_ms", in->last_beat_ms < 0 ? json_null() :
				    json_integer((json_int_t)in->last_beat_ms));
	}
	if (strcmp(in->kind, "storage") == 0) {
		json_object_set_new(o, "path", json_string(in->path));
		json_object_set_new(o, "readonly", json_boolean(in->readonly));
		if (in->health)
			json_object_set_new(o, "engine", json_string(in->health));
	}
	return o;
}

static json_t *cmd_query_vsp(struct ctl_call *c, void *opaque)
{
	static const char *const no_args[] = { NULL };
	struct vsp_bus *bus;
	json_t *list;

	if (!ctl_args_only(c, no_args) || !(bus = runner_bus(opaque, c)))
		return NULL;
	list = json_array();
	for (unsigned i = 0; i < vsp_bus_count(bus); i++) {
		struct vsp_chan_info info;

		if (vsp_bus_query(bus, i, &info) == 0)
			json_array_append_new(list, chan_json(&info));
	}
	return json_pack("{s:b, s:o}", "ioeventfd", vsp_bus_uses_ioeventfd(bus),
			 "channels", list);
}

static json_t *cmd_console_send(struct ctl_call *c, void *opaque)
{
	static const char *const keys[] = { "data", NULL };
	const char *data;
	struct vsp_bus *bus;
	size_t len;
	int rc;

	if (!ctl_args_only(c, keys) || !ctl_arg_str(c, "data", true, &data) ||
	    !(bus = runner_bus(opaque, c)))
		return NULL;
	len = strlen(data);
	if (len > CONSOLE_SEND_MAX)
		return ctl_fail(c, "InvalidParameter", "data is %zu bytes; at most %u", len,
				CONSOLE_SEND_MAX);
	rc = vsp_console_send(bus, data, len);
	if (rc)
		return ctl_fail(c, "GenericError", "%s", ferr_msg(rc));
	return json_pack("{s:I}", "queued", (json_int_t)len);
}

static const struct ctl_command vsp_cmds[] = {
	{ "query-vsp", cmd_query_vsp,
	  "synthetic devices: channel state, version, counters, heartbeat health, disks" },
	{ "console-send", cmd_console_send,
	  "queues input for the guest's synthetic console (argument data)" },
};

int vsp_commands_register(struct ctl_server *s, struct runner *r)
{
	return ctl_register(s, vsp_cmds, ARRAY_SIZE(vsp_cmds), r);
}
