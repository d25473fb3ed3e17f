/* The control API's request handling, without a socket. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/control.h"

static json_t *echo(struct ctl_call *c, void *opaque)
{
	uint64_t n = 0;
	const char *s = "none";
	bool b = false;
	static const char *const keys[] = { "n", "s", "b", NULL };

	(void)opaque;
	if (!ctl_args_only(c, keys) || !ctl_arg_u64(c, "n", false, 0, 100, &n) ||
	    !ctl_arg_str(c, "s", false, &s) || !ctl_arg_bool(c, "b", &b))
		return NULL;
	return json_pack("{s:I, s:s, s:b}", "n", (json_int_t)n, "s", s, "b", b);
}

static json_t *fails(struct ctl_call *c, void *opaque)
{
	(void)opaque;
	return ctl_fail(c, "InvalidState", "not now");
}

static struct ctl_server *srv;

static void setup(void)
{
	static const struct ctl_command cmds[] = {
		{ "echo", echo, "echoes its arguments" },
		{ "fails", fails, "always fails" },
	};

	cr_assert_eq(ctl_server_create(&srv), 0);
	cr_assert_eq(ctl_register(srv, cmds, 2, NULL), 0);
}

static void teardown(void)
{
	ctl_server_destroy(srv);
}

TestSuite(control, .init = setup, .fini = teardown);

static json_t *call(const char *line)
{
	char *reply = ctl_dispatch(srv, line, strlen(line));
	json_t *j;

	cr_assert_not_null(reply);
	j = json_loads(reply, 0, NULL);
	cr_assert_not_null(j, "reply is not JSON: %s", reply);
	free(reply);
	return j;
}

static void expect_error(const char *line, const char *cls, const char *needle)
{
	json_t *r = call(line), *e = json_object_get(r, "error");

	cr_assert_not_null(e, "no error for %s", line);
	cr_assert_str_eq(json_string_value(json_object_get(e, "class")), cls, "for %s", line);
	cr_assert(strstr(json_string_value(json_object_get(e, "desc")), needle),
		  "desc '%s' lacks '%s'", json_string_value(json_object_get(e, "desc")), needle);
	json_decref(r);
}

Test(control, runs_a_command_and_echoes_id)
{
	json_t *r = call("{\"execute\":\"echo\",\"arguments\":{\"n\":7,\"s\":\"x\",\"b\":true},\"id\":\"a1\"}");
	json_t *ret = json_object_get(r, "return");

	cr_assert_not_null(ret);
	cr_assert_eq(json_integer_value(json_object_get(ret, "n")), 7);
	cr_assert_str_eq(json_string_value(json_object_get(r, "id")), "a1");
	json_decref(r);
	r = call("{\"execute\":\"echo\",\"arguments\":{\"n\":\"64\"}}");
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(r, "return"), "n")), 64);
	json_decref(r);
}

Test(control, rejects_malformed_requests)
{
	expect_error("{\"execute\":", "ParseError", "malformed JSON");
	expect_error("not json at all", "ParseError", "malformed JSON");
	expect_error("[1,2]", "InvalidRequest", "\"execute\"");
	expect_error("{\"exec\":\"echo\"}", "InvalidRequest", "\"execute\"");
	expect_error("{\"execute\":5}", "InvalidRequest", "\"execute\"");
	expect_error("{\"execute\":\"echo\",\"arguments\":[]}", "InvalidRequest", "object");
	expect_error("{\"execute\":\"echo\",\"execute\":\"echo\"}", "ParseError", "duplicate");
	expect_error("{\"execute\":\"nope\"}", "CommandNotFound", "unknown command 'nope'");
}

Test(control, checks_arguments)
{
	expect_error("{\"execute\":\"echo\",\"arguments\":{\"n\":101}}", "InvalidParameter", "outside");
	expect_error("{\"execute\":\"echo\",\"arguments\":{\"n\":-1}}", "InvalidParameter", "non-negative");
	expect_error("{\"execute\":\"echo\",\"arguments\":{\"n\":\"lots\"}}", "InvalidParameter", "integer");
	expect_error("{\"execute\":\"echo\",\"arguments\":{\"s\":3}}", "InvalidParameter", "string");
	expect_error("{\"execute\":\"echo\",\"arguments\":{\"b\":1}}", "InvalidParameter", "true or false");
	expect_error("{\"execute\":\"echo\",\"arguments\":{\"zz\":1}}", "InvalidParameter", "unknown argument 'zz'");
	expect_error("{\"execute\":\"fails\"}", "InvalidState", "not now");
}

Test(control, lists_commands)
{
	json_t *r = call("{\"execute\":\"query-commands\"}");

	cr_assert_eq(json_array_size(json_object_get(r, "return")), 3);
	json_decref(r);
}
