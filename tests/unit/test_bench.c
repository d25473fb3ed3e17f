/*
 * The benchmark harness's own logic: statistics, configuration parsing,
 * CSV/JSON/Markdown output and QMP message handling.  No VM runs here.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/bench.h"
#include "core/util.h"

Test(bench, stats_median_p90_max_over_odd_and_even_counts)
{
	double five[] = { 5, 1, 4, 2, 3 };
	double ten[] = { 10, 9, 8, 7, 6, 5, 4, 3, 2, 1 };
	double one[] = { 42 };
	struct bench_stat s = bench_stat_of(five, 5);

	cr_assert_eq(s.n, 5);
	cr_assert_float_eq(s.median, 3, 1e-9);
	cr_assert_float_eq(s.p90, 5, 1e-9, "nearest rank: ceil(0.9*5) = 5th");
	cr_assert_float_eq(s.max, 5, 1e-9);
	s = bench_stat_of(ten, 10);
	cr_assert_float_eq(s.median, 5.5, 1e-9);
	cr_assert_float_eq(s.p90, 9, 1e-9, "ceil(0.9*10) = 9th of 10");
	cr_assert_float_eq(s.max, 10, 1e-9);
	s = bench_stat_of(one, 1);
	cr_assert(s.median == 42 && s.p90 == 42 && s.max == 42);
}

Test(bench, stats_leave_out_unmeasured_values)
{
	double v[] = { NAN, 7, INFINITY, 3, NAN };
	double none[] = { NAN, NAN };
	struct bench_stat s = bench_stat_of(v, 5);

	cr_assert_eq(s.n, 2);
	cr_assert_float_eq(s.median, 5, 1e-9);
	cr_assert_float_eq(s.max, 7, 1e-9);
	s = bench_stat_of(none, 2);
	cr_assert_eq(s.n, 0);
	cr_assert(isnan(s.median) && isnan(s.p90) && isnan(s.max));
	s = bench_stat_of(NULL, 0);
	cr_assert_eq(s.n, 0);
}

static struct bench_result run(unsigned cfg, enum bench_engine e, bool ok, double downtime)
{
	struct bench_result r = { .cfg = cfg, .engine = e, .ok = ok, .rep = 1 };

	for (unsigned i = 0; i < BM_COUNT; i++)
		r.v[i] = NAN;
	r.v[BM_DOWNTIME] = downtime;
	r.v[BM_TOTAL] = downtime * 10;
	if (!ok)
		snprintf(r.error, sizeof(r.error), "migration failed: \"boom\", twice");
	return r;
}

Test(bench, failed_runs_are_counted_and_not_averaged)
{
	struct bench_result r[] = {
		run(0, BENCH_FERRY, true, 2), run(0, BENCH_FERRY, false, 1000),
		run(0, BENCH_FERRY, true, 4), run(1, BENCH_FERRY, true, 50),
		run(0, BENCH_QEMU, true, 9),
	};
	unsigned runs, failed;
	struct bench_stat s;

	bench_count(r, 5, 0, BENCH_FERRY, &runs, &failed);
	cr_assert_eq(runs, 3);
	cr_assert_eq(failed, 1);
	s = bench_stat_metric(r, 5, 0, BENCH_FERRY, BM_DOWNTIME);
	cr_assert_eq(s.n, 2);
	cr_assert_float_eq(s.median, 3, 1e-9);
	cr_assert_float_eq(s.max, 4, 1e-9, "the failed run's 1000 ms must not count");
	s = bench_stat_metric(r, 5, 0, BENCH_QEMU, BM_DOWNTIME);
	cr_assert_eq(s.n, 1);
	cr_assert_float_eq(s.median, 9, 1e-9);
}

Test(bench, config_specs_parse_and_reject)
{
	struct bench_cfg c;
	char label[96];

	cr_assert_eq(bench_parse_cfg("mem=256M,workload=random,rate=200,cpus=2,channels=2,"
				     "compress=none,downtime=5", &c), 0);
	cr_assert_eq(c.mem_mib, 256);
	cr_assert_eq(c.workload, BW_RANDOM);
	cr_assert_eq(c.rate_mbs, 200);
	cr_assert_eq(c.vcpus, 2);
	cr_assert_eq(c.channels, 2);
	cr_assert(c.compress_none);
	cr_assert_eq(c.downtime_ms, 5);
	cr_assert_str_eq(bench_cfg_label(&c, label, sizeof(label)),
			 "256M random-200MBps 2cpu 2ch none 5ms");
	cr_assert_eq(bench_parse_cfg("", &c), 0, "the baseline");
	cr_assert_str_eq(bench_cfg_label(&c, label, sizeof(label)),
			 "1G increment 1cpu 1ch auto 10ms");
	cr_assert_eq(bench_wss(&c), 1008ull << 20, "dirty's default: all above 16 MiB");
	cr_assert_eq(bench_parse_cfg("mem=1G,workload=idle,wss=900M", &c), 0);
	cr_assert_eq(bench_wss(&c), 900ull << 20);
	cr_assert_str_eq(bench_cfg_label(&c, label, sizeof(label)),
			 "1G idle 1cpu 1ch auto 10ms wss 900M");
	cr_assert_eq(bench_parse_cfg("workload=idle", &c), 0);
	cr_assert_eq(bench_wss(&c), 4ull << 20, "idle's default: 4 MiB");

	static const char *const bad[] = {
		"mem=33M", "mem=32M", "mem=1T", "workload=busy", "cpus=0", "channels=17", "downtime=0",
		"compress=lz4", "colour=blue", "mem", "=1G", "rate=50", "cpus=-1",
		"mem=256M,wss=250M", "wss=0", "wss=1536k",
	};
	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++)
		cr_assert_eq(bench_parse_cfg(bad[i], &c), -EINVAL, "'%s' was accepted", bad[i]);
}

Test(bench, matrices_hold_every_dimension)
{
	struct bench_cfg *v;
	unsigned n, mems = 0, cpus2 = 0, ch2 = 0, none = 0, rnd = 0, idle = 0;

	cr_assert_eq(bench_matrix(false, &v, &n), 0);
	for (unsigned i = 0; i < n; i++) {
		mems |= v[i].mem_mib == 256 ? 1 : v[i].mem_mib == 1024 ? 2 : v[i].mem_mib == 4096 ? 4 : 8;
		cpus2 += v[i].vcpus == 2;
		ch2 += v[i].channels == 2;
		none += v[i].compress_none;
		rnd += v[i].workload == BW_RANDOM;
		idle += v[i].workload == BW_IDLE;
		for (unsigned j = 0; j < i; j++)
			cr_assert(memcmp(&v[i], &v[j], sizeof(v[i])) != 0, "config %u repeats %u", i, j);
	}
	cr_assert_eq(mems, 7, "256M, 1G and 4G, nothing else");
	cr_assert(cpus2 && ch2 && none && rnd && idle);
	free(v);
	cr_assert_eq(bench_matrix(true, &v, &n), 0);
	cr_assert(n >= 5 && n <= 16);
	for (unsigned i = 0; i < n; i++)
		cr_assert(v[i].mem_mib <= 1024, "--quick stays small");
	free(v);
}

Test(bench, csv_fields_are_quoted_when_needed)
{
	char buf[64];

	cr_assert_str_eq(bench_csv_field("plain", buf, sizeof(buf)), "plain");
	cr_assert_str_eq(bench_csv_field("a,b", buf, sizeof(buf)), "\"a,b\"");
	cr_assert_str_eq(bench_csv_field("say \"hi\"", buf, sizeof(buf)), "\"say \"\"hi\"\"\"");
	cr_assert_str_eq(bench_csv_field("two\nlines", buf, sizeof(buf)), "\"two lines\"");
	bench_csv_field("\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"", buf, 16);
	cr_assert(strlen(buf) < 16);
}

static char *slurp(const char *path)
{
	uint8_t *d;
	size_t len;

	cr_assert_eq(read_file(path, 1 << 20, &d, &len), 0, "%s", path);
	d = realloc(d, len + 1);
	d[len] = 0;
	return (char *)d;
}

Test(bench, csv_json_and_markdown_hold_every_run)
{
	struct bench_cfg cfgs[2];
	struct bench_result r[] = {
		run(0, BENCH_FERRY, true, 2), run(0, BENCH_FERRY, false, 0),
		run(1, BENCH_FERRY, true, 8), run(1, BENCH_QEMU, true, 16),
	};
	struct bench_meta m = { .date = "today", .commit = "abc", .host = "here", .reps = 2,
				.qemu = true, .qemu_version = "QEMU 7.2" };
	char dir[] = "/tmp/ferry-test-bench.XXXXXX", path[128], *text, *line;
	json_t *root, *runs;
	unsigned lines = 0;

	cr_assert_eq(bench_parse_cfg("mem=256M,workload=random,rate=50", &cfgs[0]), 0);
	cr_assert_eq(bench_parse_cfg("mem=256M,workload=increment", &cfgs[1]), 0);
	r[0].iterations = json_pack("[{s:i, s:i}]", "iteration", 1, "pages_sent", 10);
	cr_assert(mkdtemp(dir));

	snprintf(path, sizeof(path), "%s/r.csv", dir);
	cr_assert_eq(bench_write_csv(path, cfgs, r, 4), 0);
	text = slurp(path);
	for (line = text; (line = strchr(line, '\n')); line++)
		lines++;
	cr_assert_eq(lines, 5, "a header and one row per run, failed ones too");
	cr_assert(strstr(text, "engine,config,mem_mib,workload,rate_mbps,vcpus,channels,"
			       "compress,downtime_target_ms,wss_mib,rep,ok,error,downtime_ms,"));
	cr_assert(strstr(text, "ferry,256M random-50MBps 1cpu 1ch auto 10ms,256,random-50MBps,50,"
			       "1,1,auto,10,240,1,1,,2.0000,"));
	cr_assert(strstr(text, ",0,\"migration failed: \"\"boom\"\", twice\","),
		  "the failure reason, quoted: %s", text);
	cr_assert(strstr(text, "qemu,256M increment"));
	free(text);
	unlink(path);

	snprintf(path, sizeof(path), "%s/r.json", dir);
	cr_assert_eq(bench_write_json(path, &m, cfgs, 2, r, 4), 0);
	root = json_load_file(path, 0, NULL);
	cr_assert(root);
	runs = json_object_get(root, "runs");
	cr_assert_eq(json_array_size(runs), 4);
	cr_assert(json_is_false(json_object_get(json_array_get(runs, 1), "ok")));
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(runs, 1), "error")),
			 "migration failed: \"boom\", twice");
	cr_assert(json_is_null(json_object_get(json_array_get(runs, 0), "guest_stall_ms")));
	cr_assert_eq(json_array_size(json_object_get(json_array_get(runs, 0), "timeline")), 1);
	{
		json_t *c0 = json_array_get(json_object_get(root, "configs"), 0);
		json_t *f = json_object_get(c0, "ferry");
		json_t *d = json_object_get(json_object_get(f, "metrics"), "downtime_ms");

		cr_assert_eq(json_integer_value(json_object_get(f, "runs")), 2);
		cr_assert_eq(json_integer_value(json_object_get(f, "failed")), 1);
		cr_assert_float_eq(json_number_value(json_object_get(d, "median")), 2, 1e-9);
		cr_assert(!json_object_get(c0, "qemu"), "QEMU does not run random");
		cr_assert(json_object_get(json_array_get(json_object_get(root, "configs"), 1), "qemu"));
	}
	json_decref(root);
	unlink(path);

	snprintf(path, sizeof(path), "%s/r.md", dir);
	cr_assert_eq(bench_write_md(path, NULL, &m, cfgs, 2, r, 4), 0);
	text = slurp(path);
	cr_assert(strstr(text, "| 256M random-50MBps 1cpu 1ch auto 10ms | 1/2 | 2.00 |"), "%s", text);
	cr_assert(strstr(text, "Failed runs: 1 of 4."));
	cr_assert(strstr(text, "- ferry, 256M random-50MBps 1cpu 1ch auto 10ms, run 1: migration failed"));
	/* ferry 8 ms against QEMU 16 ms: ratio 0.50, and totals 80 vs 160. */
	cr_assert(strstr(text, "| 256M increment 1cpu 1ch auto 10ms | 1/1 | 1/1 | 80.0 | 160.0 | 0.50 "
			       "| 8.00 | 16.00 | 0.50 |"), "%s", text);
	free(text);
	unlink(path);
	rmdir(dir);
	json_decref(r[0].iterations);
}

Test(bench, qmp_messages_are_classified)
{
	json_t *m;

	m = json_loads("{\"QMP\": {\"version\": {}, \"capabilities\": []}}", 0, NULL);
	cr_assert_eq(bench_qmp_classify(m), 0);
	json_decref(m);
	m = json_loads("{\"return\": {}}", 0, NULL);
	cr_assert_eq(bench_qmp_classify(m), 1);
	cr_assert_null(bench_qmp_error(m));
	json_decref(m);
	m = json_loads("{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}", 0, NULL);
	cr_assert_eq(bench_qmp_classify(m), 1);
	cr_assert_str_eq(bench_qmp_error(m), "no");
	json_decref(m);
	m = json_loads("{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1700000000, "
		       "\"microseconds\": 250500}}", 0, NULL);
	cr_assert_eq(bench_qmp_classify(m), 2);
	json_decref(m);
	static const char *const bad[] = { "[]", "{}", "{\"event\": 3}", "{\"error\": \"x\"}", "7" };
	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		m = json_loads(bad[i], JSON_DECODE_ANY, NULL);
		cr_assert_eq(bench_qmp_classify(m), -EPROTO, "%s", bad[i]);
		json_decref(m);
	}
}

Test(bench, qmp_event_timestamps_give_the_downtime)
{
	json_t *stop = json_loads("{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1700000000, "
				  "\"microseconds\": 998000}}", 0, NULL);
	json_t *resume = json_loads("{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": "
				    "1700000001, \"microseconds\": 4500}}", 0, NULL);
	double a, b;

	cr_assert_eq(bench_qmp_event_ms(stop, &a), 0);
	cr_assert_eq(bench_qmp_event_ms(resume, &b), 0);
	cr_assert_float_eq(b - a, 6.5, 1e-6, "STOP .998 s to RESUME 1.0045 s is 6.5 ms");
	json_decref(stop);
	json_decref(resume);

	static const char *const bad[] = {
		"{\"event\": \"STOP\"}",
		"{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1}}",
		"{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 1000000}}",
		"{\"event\": \"STOP\", \"timestamp\": {\"seconds\": -1, \"microseconds\": 0}}",
		"{\"event\": \"STOP\", \"timestamp\": {\"seconds\": \"1\", \"microseconds\": 0}}",
	};
	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		json_t *e = json_loads(bad[i], 0, NULL);

		cr_assert_eq(bench_qmp_event_ms(e, &a), -EPROTO, "%s", bad[i]);
		json_decref(e);
	}
}

/* A fake QMP server on a unix socket: greeting, capabilities, then a script. */
struct fake_qmp {
	char path[108];
	int listen_fd;
	const char *script;   /* sent after the second command arrives */
};

static void *fake_qmp_thread(void *arg)
{
	struct fake_qmp *f = arg;
	int fd = accept(f->listen_fd, NULL, NULL);
	char buf[4096];
	const char *greet = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n";

	if (fd < 0)
		return NULL;
	write_all(fd, greet, strlen(greet));
	for (int cmd = 0; cmd < 2; cmd++) {
		size_t got = 0;

		while (got < sizeof(buf) - 1) {
			ssize_t n = read(fd, buf + got, 1);

			if (n <= 0 || buf[got] == '\n')
				break;
			got++;
		}
		if (cmd == 0)
			write_all(fd, "{\"return\": {}}\n", 15);
	}
	write_all(fd, f->script, strlen(f->script));
	close(fd);
	return NULL;
}

static void fake_start(struct fake_qmp *f, pthread_t *t, const char *script)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	snprintf(f->path, sizeof(f->path), "/tmp/ferry-test-qmp.%d", (int)getpid());
	unlink(f->path);
	strcpy(a.sun_path, f->path);
	f->script = script;
	f->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert(f->listen_fd >= 0);
	cr_assert_eq(bind(f->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(f->listen_fd, 1), 0);
	cr_assert_eq(pthread_create(t, NULL, fake_qmp_thread, f), 0);
}

static void fake_stop(struct fake_qmp *f, pthread_t t)
{
	pthread_join(t, NULL);
	close(f->listen_fd);
	unlink(f->path);
}

Test(bench, qmp_client_queues_events_that_arrive_before_a_reply)
{
	struct fake_qmp f;
	struct bench_qmp q;
	pthread_t t;
	json_t *ret, *ev;
	double a, b;

	fake_start(&f, &t, "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 10, \"microseconds\": 0}}\n"
			   "{\"return\": {\"status\": \"completed\"}}\n"
			   "{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 10, \"microseconds\": 7000}}\n");
	cr_assert_eq(bench_qmp_connect(&q, f.path, 5000), 0, "%s", ferr_msg(-EIO));
	cr_assert_eq(bench_qmp_exec(&q, "query-migrate", NULL, &ret), 0);
	cr_assert_str_eq(json_string_value(json_object_get(ret, "status")), "completed");
	json_decref(ret);
	cr_assert_eq(bench_qmp_wait_event(&q, "RESUME", 5000, &ev), 0);
	cr_assert_eq(bench_qmp_event_ms(ev, &b), 0);
	json_decref(ev);
	cr_assert_eq(bench_qmp_wait_event(&q, "STOP", 10, &ev), 0, "the queued STOP is kept");
	cr_assert_eq(bench_qmp_event_ms(ev, &a), 0);
	json_decref(ev);
	cr_assert_float_eq(b - a, 7, 1e-9);
	cr_assert_eq(bench_qmp_wait_event(&q, "SHUTDOWN", 100, &ev), -EPIPE, "QEMU went away");
	bench_qmp_close(&q);
	fake_stop(&f, t);
}

Test(bench, qmp_client_rejects_garbage_and_reports_errors)
{
	struct fake_qmp f;
	struct bench_qmp q;
	pthread_t t;
	json_t *ret;

	fake_start(&f, &t, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n"
			   "this is not json\n");
	cr_assert_eq(bench_qmp_connect(&q, f.path, 5000), 0);
	cr_assert_eq(bench_qmp_exec(&q, "migrate", json_pack("{s:s}", "uri", "tcp:x"), &ret), -EIO);
	cr_assert_null(ret);
	cr_assert(strstr(ferr_msg(-EIO), "QMP migrate: nope"), "%s", ferr_msg(-EIO));
	cr_assert_eq(bench_qmp_wait_event(&q, "STOP", 1000, &ret), -EPROTO);
	bench_qmp_close(&q);
	fake_stop(&f, t);
}
