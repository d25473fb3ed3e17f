# ferry bench on a tiny configuration: real migrations (ferry and QEMU),
# whose outputs must exist and hold sane values.  Timings are not asserted,
# only their relations (downtime within total, bytes on the wire at least
# the written memory, every guest's own memory check passed).

test_bench_tiny_matrix_writes_sane_results() {
	local out=$T/res
	expect_status 0 ferry bench --config mem=64M,workload=increment \
		--config mem=64M,workload=random,rate=20,channels=2,compress=none \
		--config mem=64M,workload=idle,downtime=2 --reps 2 --out "$out"
	expect_output "^ferry bench: 3 configurations, 6 runs; estimated"
	expect_output "Failed runs: 0 of 6\."
	for f in results.csv results.json results.md downtime.png timeline.png downtime.dat timeline.dat; do
		[ -s "$out/$f" ] || fail "$f is missing or empty"
	done
	for f in downtime.png timeline.png; do
		head -c 8 "$out/$f" | od -An -tx1 | grep -q "89 50 4e 47 0d 0a 1a 0a" || fail "$f is not a PNG"
	done
	# CSV: a header and six runs, all ok, one per (config, rep).
	[ "$(wc -l <"$out/results.csv")" = 7 ] || fail "results.csv: $(cat "$out/results.csv")"
	[ "$(awk -F, 'NR > 1 && $1 == "ferry" && $12 == 1' "$out/results.csv" | wc -l)" = 6 ] ||
		fail "not every run is ok in results.csv: $(cat "$out/results.csv")"
	# JSON: every run completed with sane relations between its figures.
	json '.runs | length == 6 and all(.ok)' <"$out/results.json" >/dev/null || fail "runs"
	json '[.runs[] | select(.downtime_ms > 0 and .downtime_ms < .total_ms
		and .setup_ms < .total_ms and .iterations >= 1 and .throughput_mbps > 0
		and .src_rss_mib > 0 and .dst_rss_mib > 0 and .src_cpu_s >= 0)] | length == 6' \
		<"$out/results.json" >/dev/null || fail "implausible figures: $(jq -c '.runs[]' "$out/results.json")"
	# The random guests wrote pages (holes are never sent), with no compression.
	json '[.runs[] | select(.config == 1)] | all(.wire_mib > 5 and .guest_stall_ms > 0
		and .dirty_before_mbps > 5 and .iterations >= 2)' <"$out/results.json" >/dev/null ||
		fail "random runs: $(jq -c '.runs[] | select(.config == 1)' "$out/results.json")"
	json '.configs[2].label == "64M idle 1cpu 1ch auto 2ms" and .configs[2].ferry.runs == 2
		and .configs[2].ferry.failed == 0 and .configs[2].ferry.metrics.downtime_ms.n == 2
		and .configs[2].ferry.metrics.downtime_ms.median <= .configs[2].ferry.metrics.downtime_ms.max' \
		<"$out/results.json" >/dev/null || fail "summary: $(jq -c '.configs[2]' "$out/results.json")"
	json '[.runs[] | .timeline[0].pages_sent > 0 and .timeline[-1].iteration == .iterations] | all' \
		<"$out/results.json" >/dev/null || fail "no timeline"
	grep -q "^| 64M increment 1cpu 1ch auto 10ms | 2/2 |" "$out/results.md" || fail "markdown table"
	grep -q "downtime.dat' index 0" "$out/plots.gp" || fail "plot script"
}

test_bench_qemu_side_by_side() {
	local out=$T/res
	expect_status 0 ferry bench --qemu --config mem=64M,workload=increment --reps 1 --out "$out"
	expect_output "^ferry bench: 1 configurations, 2 runs \(with QEMU\)"
	expect_output "ferry and QEMU side by side"
	expect_output "^\| 64M increment 1cpu 1ch auto 10ms \| 1/1 \| 1/1 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|"
	json '.meta.qemu and (.meta.qemu_version | test("QEMU emulator version"))' \
		<"$out/results.json" >/dev/null || fail "meta"
	# QEMU's downtime comes from its STOP and RESUME events, within its total.
	json '.runs[] | select(.engine == "qemu") | .ok and .downtime_ms > 0 and .downtime_ms < .total_ms
		and .wire_mib >= 40 and .iterations >= 1 and .dirty_before_mbps > 0' \
		<"$out/results.json" >/dev/null || fail "qemu run: $(jq -c '.runs[]' "$out/results.json")"
	[ "$(awk -F, '$1 == "qemu"' "$out/results.csv" | wc -l)" = 1 ] || fail "qemu row"
}

test_bench_usage_errors() {
	expect_status 2 ferry bench --reps 0
	expect_output "ferry bench: --reps '0' must be 1 to 1000"
	expect_status 2 ferry bench --config workload=busy
	expect_output "workload=busy must be idle, increment or random"
	expect_status 2 ferry bench --config mem=64M,rate=5
	expect_output "rate applies to workload=random only"
	expect_status 2 ferry bench extra
	expect_status 0 ferry bench --help
	expect_output "usage: ferry bench"
}
