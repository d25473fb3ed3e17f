#!/usr/bin/env bash
# bench/migrate.sh: the live-migration goals of issue 4, measured on loopback
# with 1 vCPU, median of REPS (default 5) real migrations between two ferry
# processes, next to iperf3 on loopback in the same run.
#
#   1 GiB idle                         total ≤ 50 ms, downtime ≤ 2 ms
#   1 GiB dirty increment, unlimited   downtime ≤ 10 ms, total ≤ 2 s
#   1 GiB dirty random at 100 MB/s     converges, downtime ≤ 10 ms
#   first pass over incompressible RAM ≥ 60% of iperf3
#
# A thin wrapper: the migrations are run and measured by `ferry bench`
# (docs/benchmarks.md); this script picks the four configurations, adds
# iperf3, and prints the figures these goals are stated in.
#
# usage: bench/migrate.sh [--reps N] [--build DIR]
# Prints a Markdown table.  Runs under an exclusive lock on
# /tmp/ferry-cpu.lock so that nothing else built here loads the machine.
set -euo pipefail
REPS=5
BUILD=build
while [ $# -gt 0 ]; do
	case $1 in
	--reps) REPS=$2; shift 2 ;;
	--build) BUILD=$2; shift 2 ;;
	*) echo "usage: bench/migrate.sh [--reps N] [--build DIR]" >&2; exit 2 ;;
	esac
done
cd "$(dirname "$0")/.."
FERRY=$BUILD/ferry
[ -x "$FERRY" ] || { echo "bench/migrate.sh: build $FERRY first (make)" >&2; exit 1; }
if [ -z "${FERRY_BENCH_LOCKED:-}" ]; then
	exec env FERRY_BENCH_LOCKED=1 flock -x /tmp/ferry-cpu.lock "$0" --reps "$REPS" --build "$BUILD"
fi
W=$(mktemp -d /tmp/ferry-bench.XXXXXX)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT

echo "bench/migrate.sh: $REPS runs per configuration, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null)" >&2
iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
sleep 0.5
IPERF=$(iperf3 -c 127.0.0.1 -p 5299 -t 3 -J | jq '.end.sum_received.bits_per_second / 8 / 1e6')
wait || true

# The same order as the names below.
"$FERRY" bench --reps "$REPS" --out "$W" \
	--config mem=1G,workload=idle \
	--config mem=1G,workload=increment \
	--config mem=1G,workload=random,rate=100 \
	--config mem=1G,workload=idle,wss=900M,compress=none >"$W/bench.md" || true
[ -s "$W/results.json" ] || { cat "$W/bench.md"; echo "bench/migrate.sh: ferry bench wrote no results" >&2; exit 1; }

echo "| configuration (1 vCPU, 1 GiB) | ok | total ms | downtime ms | guest stall ms | iterations | first pass MB/s |"
echo "|---|---|---|---|---|---|---|"
jq -r '.configs as $c | ["idle", "increment", "random-100MBps", "first-pass-incompressible"]
	| to_entries[] | . as $e | $c[$e.key].ferry as $f | $f.metrics as $m
	| def v(k; d): ($m[k].median // null) as $x | if $x == null then "–" else ($x * pow(10; d) | round / pow(10; d) | tostring) end;
	"| \($e.value) | \($f.runs - $f.failed)/\($f.runs) | \(v("total_ms"; 1)) | \(v("downtime_ms"; 2)) | \(v("guest_stall_ms"; 1)) | \(v("iterations"; 0)) | \(v("first_pass_mbps"; 0)) |"' \
	"$W/results.json"
fp=$(jq '.configs[3].ferry.metrics.first_pass_mbps.median // 0' "$W/results.json")
printf '\niperf3 loopback: %.0f MB/s; first pass over incompressible memory: %.0f MB/s = %.0f%% of it\n' \
	"$IPERF" "$fp" "$(echo "$fp $IPERF" | awk '{print 100 * $1 / $2}')"
jq -r '.runs[] | select(.ok | not) | "failed: config \(.config) run \(.rep): \(.error)"' "$W/results.json" >&2
