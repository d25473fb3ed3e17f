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

median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}'; }

# wait_progress SOCK KEY MIN: until vCPU 0 reported KEY >= MIN.
wait_progress() {
	local i v
	for i in $(seq 1 1200); do
		v=$("$FERRY" ctl "$1" query-guest 2>/dev/null | jq -r ".vcpus[0].$2 // 0")
		[ "$v" -ge "$3" ] && return 0
		sleep 0.1
	done
	echo "bench: the guest never reported $2 >= $3" >&2
	return 1
}

# one_run NAME WARM-KEY WARM-MIN MIGRATE-ARGS -- RUN-ARGS: prints the JSON.
one_run() {
	local key=$1 min=$2 migargs=() runargs=() port
	shift 2
	while [ "$1" != "--" ]; do migargs+=("$1"); shift; done
	shift
	runargs=("$@")
	rm -f "$W"/*.sock "$W"/*.log
	"$FERRY" run --incoming tcp:127.0.0.1:0 --control "$W/dst.sock" >"$W/dst.log" 2>&1 &
	local dpid=$!
	"$FERRY" run "${runargs[@]}" --control "$W/src.sock" >"$W/src.log" 2>&1 &
	local spid=$!
	for i in $(seq 1 200); do
		port=$(sed -nE 's/.*incoming migration on tcp:127\.0\.0\.1:([0-9]+).*/\1/p' "$W/dst.log")
		[ -n "$port" ] && [ -S "$W/src.sock" ] && break
		sleep 0.05
	done
	wait_progress "$W/src.sock" "$key" "$min"
	"$FERRY" migrate "$W/src.sock" "tcp:127.0.0.1:$port" --json "${migargs[@]}" >"$W/mig.json" || true
	sleep 0.3   # let the guest report its longest stall (every 100 ms)
	"$FERRY" ctl "$W/dst.sock" query-guest >"$W/guest.json" 2>/dev/null || echo '{}' >"$W/guest.json"
	"$FERRY" ctl "$W/dst.sock" shutdown >/dev/null 2>&1 || true
	wait "$dpid" 2>/dev/null && ok=1 || ok=0
	wait "$spid" 2>/dev/null || true
	jq -c --argjson ok "$ok" --slurpfile g "$W/guest.json" \
		'. + {guest_ok: ($ok == 1), stall_us: ($g[0].vcpus[0].stall_us // null)}' "$W/mig.json"
}

# config NAME KEY MIN MIGRATE-ARGS -- RUN-ARGS: REPS runs, one summary line.
config() {
	local name=$1 f="$W/$1.jsonl"
	shift
	: >"$f"
	for r in $(seq 1 "$REPS"); do
		one_run "$@" >>"$f"
		printf '.' >&2
	done
	printf '\n' >&2
	local ok total down fp stall iters
	ok=$(jq -s '[.[] | select(.state == "completed" and .guest_ok)] | length' "$f")
	total=$(jq -r 'select(.state == "completed") | .total_ms' "$f" | median)
	down=$(jq -r 'select(.state == "completed") | .downtime_ms' "$f" | median)
	fp=$(jq -r 'select(.state == "completed") | .first_pass_bps / 1e6' "$f" | median)
	stall=$(jq -r 'select(.state == "completed") | (.stall_us // 0) / 1000' "$f" | median)
	iters=$(jq -r 'select(.state == "completed") | .iteration' "$f" | median)
	printf '| %s | %s/%s | %.1f | %.2f | %.1f | %s | %.0f |\n' "$name" "$ok" "$REPS" \
		"$total" "$down" "$stall" "$iters" "$fp"
	echo "$fp" >"$W/$name.fp"
}

echo "bench/migrate.sh: $REPS runs per configuration, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null)" >&2
iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
sleep 0.5
IPERF=$(iperf3 -c 127.0.0.1 -p 5299 -t 3 -J | jq '.end.sum_received.bits_per_second / 8 / 1e6')
wait || true

echo "| configuration (1 vCPU, 1 GiB) | ok | total ms | downtime ms | guest stall ms | iterations | first pass MB/s |"
echo "|---|---|---|---|---|---|---|"
config idle filled_kib 4096 -- --guest idle --mem 1G
config increment pass 2 -- --guest dirty --mem 1G --guest-arg pattern=increment \
	--guest-arg report_ms=100
config random-100MBps pass 0 -- --guest dirty --mem 1G --guest-arg pattern=random \
	--guest-arg rate=100 --guest-arg report_ms=100
config first-pass-incompressible filled_kib 921600 --compress none -- \
	--guest idle --mem 1G --guest-arg wss=900M
fp=$(cat "$W/first-pass-incompressible.fp")
printf '\niperf3 loopback: %.0f MB/s; first pass over incompressible memory: %.0f MB/s = %.0f%% of it\n' \
	"$IPERF" "$fp" "$(echo "$fp $IPERF" | awk '{print 100 * $1 / $2}')"
