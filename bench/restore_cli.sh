#!/usr/bin/env bash
# bench/restore_cli.sh: a lazy restore as an operator runs it, in a fresh
# process: `ferry run --restore FILE --lazy`, timed by ferry itself from the
# start of the restore to the VM being started (its "restored ... the VM was
# started X ms after the restore began" line).  bench/quick times the same
# path inside one process; this adds what a new process costs (its first
# allocations, the control socket, the VSP threads) and repeats each restore
# with the file in the page cache and dropped from it.
#
# It saves an `idle` guest of --mem bytes once, then restores it --reps
# times each way, three seconds apart (see bench/quick.c for why).  The
# median of an even count is the lower of the two middle values.
#
# usage: bench/restore_cli.sh [--mem SIZE] [--reps N] [--build DIR]
# Runs under an exclusive lock on /tmp/ferry-cpu.lock.
set -euo pipefail
MEM=1G
REPS=11
BUILD=build
usage() { echo "usage: bench/restore_cli.sh [--mem SIZE] [--reps N] [--build DIR]" >&2; exit 2; }
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || usage
	case $1 in
	--mem) MEM=$2; shift 2 ;;
	--reps) REPS=$2; shift 2 ;;
	--build) BUILD=$2; shift 2 ;;
	*) usage ;;
	esac
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || usage
cd "$(dirname "$0")/.."
FERRY=$BUILD/ferry
[ -x "$FERRY" ] || { echo "bench/restore_cli.sh: build $FERRY first (make)" >&2; exit 1; }
export FERRY_GUEST_DIR=${FERRY_GUEST_DIR:-$BUILD/guest}
if [ -z "${FERRY_BENCH_LOCKED:-}" ]; then
	exec env FERRY_BENCH_LOCKED=1 flock -x /tmp/ferry-cpu.lock "$0" --mem "$MEM" --reps "$REPS" \
		--build "$BUILD"
fi
W=$(mktemp -d /tmp/ferry-restore.XXXXXX)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT

# wait_for PATTERN FILE: up to 10 s for a line matching PATTERN in FILE.
wait_for() {
	for _ in $(seq 1 200); do
		grep -qE "$1" "$2" 2>/dev/null && return 0
		sleep 0.05
	done
	echo "bench/restore_cli.sh: no '$1' in $2:" >&2
	cat "$2" >&2
	exit 1
}

echo "bench/restore_cli.sh: $MEM, $REPS restores each way, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null)" >&2
"$FERRY" run --guest idle --mem "$MEM" --control "$W/src.sock" >"$W/src.out" 2>&1 &
for _ in $(seq 1 200); do [ -S "$W/src.sock" ] && break; sleep 0.05; done
sleep 0.5
"$FERRY" save "$W/src.sock" "$W/vm.save" >/dev/null
"$FERRY" ctl "$W/src.sock" quit >/dev/null
wait

# one_restore COLD: prints the ms of one restore.
one_restore() {
	local out=$W/restore.out sock=$W/r.sock
	rm -f "$sock"
	if [ "$1" = cold ]; then
		dd if="$W/vm.save" iflag=nocache count=0 status=none
	else
		cat "$W/vm.save" >/dev/null
	fi
	sleep 3
	"$FERRY" run --restore "$W/vm.save" --lazy --control "$sock" >"$out" 2>&1 &
	wait_for "the VM was started" "$out"
	for _ in $(seq 1 200); do [ -S "$sock" ] && break; sleep 0.05; done
	"$FERRY" ctl "$sock" quit >/dev/null
	wait
	sed -nE 's/.*the VM was started ([0-9.]+) ms after.*/\1/p' "$out"
}

# summary NAME VALUES...: "NAME: median M ms (min A, max B) over N".
summary() {
	local name=$1
	shift
	printf '%s\n' "$@" | sort -n | awk -v name="$name" '
		{ v[NR] = $1 }
		END { printf "%s: median %.1f ms (min %.1f, max %.1f) over %d restores\n",
		      name, v[int((NR + 1) / 2)], v[1], v[NR], NR }'
}

warm=() cold=()
for i in $(seq 1 "$REPS"); do
	warm+=("$(one_restore warm)")
	cold+=("$(one_restore cold)")
	echo "bench/restore_cli.sh: restore $i of $REPS: warm ${warm[-1]} ms, cold ${cold[-1]} ms" >&2
done
summary "ferry run --restore --lazy, $MEM, warm cache" "${warm[@]}"
summary "ferry run --restore --lazy, $MEM, cold cache" "${cold[@]}"
