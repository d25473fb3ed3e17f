/*
 * The benchmark's result files: results.csv (one row per run, failed runs
 * included with their reason), results.json (the metadata, the summary per
 * configuration and every run with its per-iteration timeline) and
 * results.md (the summary tables, the failed runs, and ferry/QEMU ratios).
 * A figure that was not measured is an empty CSV field, a JSON null and
 * "–" in Markdown.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/util.h"
#include "bench.h"

static const char *engine_name(enum bench_engine e)
{
	return e == BENCH_QEMU ? "qemu" : "ferry";
}

const char *bench_csv_field(const char *s, char *buf, size_t len)
{
	size_t o = 0;

	if (!strpbrk(s, ",\"\n\r")) {
		snprintf(buf, len, "%s", s);
		return buf;
	}
	/* RFC 4180: quote the field, double the quotes inside. */
	if (len < 3) {
		buf[0] = 0;
		return buf;
	}
	buf[o++] = '"';
	for (; *s && o + 3 < len; s++) {
		if (*s == '"')
			buf[o++] = '"';
		buf[o++] = *s == '\n' || *s == '\r' ? ' ' : *s;
	}
	buf[o++] = '"';
	buf[o] = 0;
	return buf;
}

int bench_write_csv(const char *path, const struct bench_cfg *cfgs,
		    const struct bench_result *r, unsigned nr)
{
	FILE *f = fopen(path, "we");
	char label[96], w[32], err[600];

	if (!f)
		return ferr_sys(errno, "cannot create %s", path);
	fputs("engine,config,mem_mib,workload,rate_mbps,vcpus,channels,compress,"
	      "downtime_target_ms,wss_mib,rep,ok,error", f);
	for (unsigned m = 0; m < BM_COUNT; m++)
		fprintf(f, ",%s", bench_metrics[m].key);
	fputc('\n', f);
	for (unsigned i = 0; i < nr; i++) {
		const struct bench_cfg *c = &cfgs[r[i].cfg];

		fprintf(f, "%s,%s,%u,%s,%u,%u,%u,%s,%u,%u,%u,%d,%s", engine_name(r[i].engine),
			bench_cfg_label(c, label, sizeof(label)), c->mem_mib,
			bench_workload_name(c, w, sizeof(w)), c->rate_mbs, c->vcpus, c->channels,
			c->compress_none ? "none" : "auto", c->downtime_ms,
			(unsigned)(bench_wss(c) >> 20), r[i].rep, r[i].ok,
			bench_csv_field(r[i].ok ? "" : r[i].error, err, sizeof(err)));
		for (unsigned m = 0; m < BM_COUNT; m++) {
			if (isfinite(r[i].v[m]))
				fprintf(f, ",%.*f", bench_metrics[m].decimals + 2, r[i].v[m]);
			else
				fputc(',', f);
		}
		fputc('\n', f);
	}
	if (fclose(f) != 0)
		return ferr_sys(errno, "cannot write %s", path);
	return 0;
}

static json_t *jnum(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static json_t *summary(const struct bench_result *r, unsigned nr, unsigned cfg,
		       enum bench_engine e)
{
	json_t *o = json_object(), *ms = json_object();
	unsigned runs, failed;

	bench_count(r, nr, cfg, e, &runs, &failed);
	json_object_set_new(o, "runs", json_integer(runs));
	json_object_set_new(o, "failed", json_integer(failed));
	for (unsigned m = 0; m < BM_COUNT; m++) {
		struct bench_stat s = bench_stat_metric(r, nr, cfg, e, m);

		json_object_set_new(ms, bench_metrics[m].key,
				    json_pack("{s:i, s:o, s:o, s:o}", "n", (int)s.n,
					      "median", jnum(s.median), "p90", jnum(s.p90),
					      "max", jnum(s.max)));
	}
	json_object_set_new(o, "metrics", ms);
	return o;
}

static json_t *cfg_json(const struct bench_cfg *c)
{
	char label[96], w[32];

	return json_pack("{s:s, s:i, s:s, s:i, s:i, s:i, s:s, s:i, s:i}",
			 "label", bench_cfg_label(c, label, sizeof(label)), "mem_mib", (int)c->mem_mib,
			 "workload", bench_workload_name(c, w, sizeof(w)), "rate_mbps", (int)c->rate_mbs,
			 "vcpus", (int)c->vcpus, "channels", (int)c->channels,
			 "compress", c->compress_none ? "none" : "auto",
			 "downtime_target_ms", (int)c->downtime_ms,
			 "wss_mib", (int)(bench_wss(c) >> 20));
}

int bench_write_json(const char *path, const struct bench_meta *m, const struct bench_cfg *cfgs,
		     unsigned ncfg, const struct bench_result *r, unsigned nr)
{
	json_t *root = json_object(), *cs = json_array(), *runs = json_array();
	int rc = 0;

	json_object_set_new(root, "meta", json_pack(
		"{s:s, s:s, s:s, s:i, s:b, s:b, s:s?, s:f}", "date", m->date, "commit", m->commit,
		"host", m->host, "reps", (int)m->reps, "quick", m->quick, "qemu", m->qemu,
		"qemu_version", m->qemu_version, "elapsed_s", m->elapsed_s));
	for (unsigned i = 0; i < ncfg; i++) {
		json_t *c = cfg_json(&cfgs[i]);

		json_object_set_new(c, "ferry", summary(r, nr, i, BENCH_FERRY));
		if (m->qemu && bench_qemu_can_run(&cfgs[i]))
			json_object_set_new(c, "qemu", summary(r, nr, i, BENCH_QEMU));
		json_array_append_new(cs, c);
	}
	for (unsigned i = 0; i < nr; i++) {
		json_t *o = json_pack("{s:i, s:s, s:i, s:b}", "config", (int)r[i].cfg,
				      "engine", engine_name(r[i].engine), "rep", (int)r[i].rep,
				      "ok", r[i].ok);

		if (!r[i].ok)
			json_object_set_new(o, "error", json_string(r[i].error));
		for (unsigned k = 0; k < BM_COUNT; k++)
			json_object_set_new(o, bench_metrics[k].key, jnum(r[i].v[k]));
		if (r[i].iterations)
			json_object_set(o, "timeline", r[i].iterations);
		json_array_append_new(runs, o);
	}
	json_object_set_new(root, "configs", cs);
	json_object_set_new(root, "runs", runs);
	if (json_dump_file(root, path, JSON_INDENT(1)) < 0)
		rc = ferr(EIO, "cannot write %s", path);
	json_decref(root);
	return rc;
}

static void cell(FILE *f, double v, int decimals)
{
	if (isfinite(v))
		fprintf(f, " %.*f |", decimals, v);
	else
		fputs(" – |", f);
}

static void ratio(FILE *f, double a, double b)
{
	if (isfinite(a) && isfinite(b) && b > 0)
		fprintf(f, " %.2f |", a / b);
	else
		fputs(" – |", f);
}

static void ferry_table(FILE *f, const struct bench_cfg *cfgs, unsigned ncfg,
			const struct bench_result *r, unsigned nr, enum bench_engine e)
{
	char label[96];

	fputs("| configuration | ok/runs | downtime ms median | p90 | max |", f);
	for (unsigned m = 1; m < BM_COUNT; m++)
		if (bench_metrics[m].in_md)
			fprintf(f, " %s |", bench_metrics[m].title);
	fputs("\n|---|---|---|---|---|", f);
	for (unsigned m = 1; m < BM_COUNT; m++)
		if (bench_metrics[m].in_md)
			fputs("---|", f);
	fputc('\n', f);
	for (unsigned i = 0; i < ncfg; i++) {
		struct bench_stat d = bench_stat_metric(r, nr, i, e, BM_DOWNTIME);
		unsigned runs, failed;

		bench_count(r, nr, i, e, &runs, &failed);
		if (!runs)
			continue;
		fprintf(f, "| %s | %u/%u |", bench_cfg_label(&cfgs[i], label, sizeof(label)),
			runs - failed, runs);
		cell(f, d.median, 2);
		cell(f, d.p90, 2);
		cell(f, d.max, 2);
		for (unsigned m = 1; m < BM_COUNT; m++)
			if (bench_metrics[m].in_md)
				cell(f, bench_stat_metric(r, nr, i, e, m).median,
				     bench_metrics[m].decimals);
		fputc('\n', f);
	}
}

static void comparison(FILE *f, const struct bench_cfg *cfgs, unsigned ncfg,
		       const struct bench_result *r, unsigned nr)
{
	static const enum bench_metric ms[] = { BM_TOTAL, BM_DOWNTIME, BM_THROUGHPUT };
	char label[96];

	fputs("\n### ferry and QEMU side by side (medians; ratio = ferry / QEMU)\n\n"
	      "| configuration | ok ferry | ok QEMU | total ms ferry | QEMU | ratio "
	      "| downtime ms ferry | QEMU | ratio | throughput MB/s ferry | QEMU | ratio "
	      "| guest stall ms ferry | QEMU |\n"
	      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n", f);
	for (unsigned i = 0; i < ncfg; i++) {
		unsigned fr, ff, qr, qf;

		bench_count(r, nr, i, BENCH_QEMU, &qr, &qf);
		if (!qr)
			continue;
		bench_count(r, nr, i, BENCH_FERRY, &fr, &ff);
		fprintf(f, "| %s | %u/%u | %u/%u |", bench_cfg_label(&cfgs[i], label, sizeof(label)),
			fr - ff, fr, qr - qf, qr);
		for (unsigned k = 0; k < ARRAY_SIZE(ms); k++) {
			double a = bench_stat_metric(r, nr, i, BENCH_FERRY, ms[k]).median;
			double b = bench_stat_metric(r, nr, i, BENCH_QEMU, ms[k]).median;

			cell(f, a, bench_metrics[ms[k]].decimals);
			cell(f, b, bench_metrics[ms[k]].decimals);
			ratio(f, a, b);
		}
		cell(f, bench_stat_metric(r, nr, i, BENCH_FERRY, BM_STALL).median, 1);
		cell(f, bench_stat_metric(r, nr, i, BENCH_QEMU, BM_STALL).median, 1);
		fputc('\n', f);
	}
}

static void failures(FILE *f, const struct bench_cfg *cfgs, const struct bench_result *r,
		     unsigned nr)
{
	char label[96];
	unsigned n = 0;

	for (unsigned i = 0; i < nr; i++)
		n += !r[i].ok;
	fprintf(f, "\nFailed runs: %u of %u.\n", n, nr);
	for (unsigned i = 0; i < nr; i++)
		if (!r[i].ok)
			fprintf(f, "- %s, %s, run %u: %s\n", engine_name(r[i].engine),
				bench_cfg_label(&cfgs[r[i].cfg], label, sizeof(label)), r[i].rep,
				r[i].error);
}

static void write_md(FILE *f, const struct bench_meta *m, const struct bench_cfg *cfgs,
		     unsigned ncfg, const struct bench_result *r, unsigned nr)
{
	fprintf(f, "## ferry bench%s%s: %u runs per configuration\n\n"
		"%s, commit %s, %s, %.0f s. Medians over the successful runs; "
		"p90 and max for the downtime.\n\n",
		m->quick ? " --quick" : "", m->qemu ? " --qemu" : "", m->reps, m->date, m->commit,
		m->host, m->elapsed_s);
	ferry_table(f, cfgs, ncfg, r, nr, BENCH_FERRY);
	if (m->qemu) {
		fprintf(f, "\n### QEMU (%s)\n\n", m->qemu_version ? m->qemu_version : "not run");
		ferry_table(f, cfgs, ncfg, r, nr, BENCH_QEMU);
		comparison(f, cfgs, ncfg, r, nr);
	}
	failures(f, cfgs, r, nr);
}

int bench_write_md(const char *path, FILE *out, const struct bench_meta *m,
		   const struct bench_cfg *cfgs, unsigned ncfg, const struct bench_result *r,
		   unsigned nr)
{
	FILE *f = fopen(path, "we");

	if (!f)
		return ferr_sys(errno, "cannot create %s", path);
	write_md(f, m, cfgs, ncfg, r, nr);
	if (fclose(f) != 0)
		return ferr_sys(errno, "cannot write %s", path);
	if (out)
		write_md(out, m, cfgs, ncfg, r, nr);
	return 0;
}
