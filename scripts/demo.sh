#!/usr/bin/env bash
# The main job of `make demo` (which runs `make all` first): run the `dirty`
# guest program on 2 vCPUs, show its progress live through the control API,
# pause and resume it once, then ask it to finish so that it verifies its
# own memory, and report what it found.
#
# Live migration is not merged yet.  Once it lands, this becomes a live
# migration between two local ferry processes, with the same guest checking
# its memory on the destination.
#
# Exits 0 only if the guest ran, paused, resumed and verified every page.
set -euo pipefail
cd "$(dirname "$0")/.."

FERRY=${FERRY:-build/ferry}
RUN_SECONDS=8           # how long the guest runs before `shutdown`
PAUSE_AT=4              # when to pause it, in seconds
PAUSE_HOLD=0.5          # how long it stays paused
NCPUS=2

[ -x "$FERRY" ] || { echo "demo: $FERRY is not built (run make all)" >&2; exit 1; }
command -v jq >/dev/null || { echo "demo: jq is missing (scripts/deps.sh installs it)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/ferry-demo.XXXXXX)
sock=$tmp/control.sock
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -t 1 ]; then tty=1; else tty=0; fi
live=0   # a progress line is on screen without its newline

# say TEXT: prints a message line, first ending any live progress line.
say() {
	if [ "$live" = 1 ]; then printf '\n'; live=0; fi
	printf '%s\n' "$*"
}

# show TEXT: the progress display (rewritten in place on a terminal).
show() {
	if [ "$tty" = 1 ]; then
		printf '\r%s\033[K' "$*"
		live=1
	else
		printf '%s\n' "$*"
	fi
}

die() {
	say "demo: FAILED: $*" >&2
	if [ -s "$tmp/ferry.log" ]; then
		sed 's/^/  | /' "$tmp/ferry.log" >&2
	fi
	exit 1
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ctl COMMAND: one control-API command; its "return" as compact JSON.
ctl() {
	"$FERRY" ctl "$sock" "$@" | jq -c .
}

say "ferry demo: guest program 'dirty' on $NCPUS vCPUs, 512 MiB of RAM, 256 MiB working set"
say "  $FERRY run --guest dirty --cpus $NCPUS --mem 512M --guest-arg wss=256M --control SOCK"
"$FERRY" run --guest dirty --cpus "$NCPUS" --mem 512M --guest-arg wss=256M \
	--control "$sock" >"$tmp/ferry.log" 2>&1 &
pid=$!

for _ in $(seq 1 100); do
	"$FERRY" ctl "$sock" status >/dev/null 2>&1 && break
	kill -0 "$pid" 2>/dev/null || die "ferry exited before its control socket answered"
	sleep 0.05
done
state=$(ctl status | jq -r .state) || die "the control socket does not answer"
[ "$state" = running ] || die "the VM is '$state', expected 'running'"

# One line per poll: elapsed time, then pass count and rate per vCPU.  The
# guest reports once a second, so a value holds for two polls.
progress_filter='[.vcpus[] | .pass // 0, .rate_pps // 0] | @tsv'
progress_format='{
	printf "%4.1fs ", t / 1000
	for (i = 1; i < NF; i += 2)
		printf "  vCPU %d: pass %6d, %5.1f M pages/s", (i - 1) / 2, $i, $(i + 1) / 1e6
	printf "\n"
}'

start=$(now_ms)
paused=0
while :; do
	elapsed=$(( $(now_ms) - start ))
	[ "$elapsed" -lt $((RUN_SECONDS * 1000)) ] || break
	kill -0 "$pid" 2>/dev/null || die "ferry exited while the guest should be running"
	line=$(ctl query-guest | jq -r "$progress_filter" |
	       awk -v t="$elapsed" "$progress_format") || die "query-guest failed"
	show "$line"

	if [ "$paused" = 0 ] && [ "$elapsed" -ge $((PAUSE_AT * 1000)) ]; then
		lat=$(ctl pause | jq -r '.latency_us * 10 | round / 10') || die "pause failed"
		state=$(ctl status | jq -r .state)
		[ "$state" = paused ] || die "after pause the VM is '$state'"
		say "pause: all $NCPUS vCPUs out of KVM_RUN in $lat µs (state: $state);" \
			"holding ${PAUSE_HOLD}s"
		sleep "$PAUSE_HOLD"
		ctl resume >/dev/null || die "resume failed"
		state=$(ctl status | jq -r .state)
		[ "$state" = running ] || die "after resume the VM is '$state'"
		say "resume: the guest carries on where it stopped (state: $state)"
		paused=1
	fi
	sleep 0.5
done
[ "$paused" = 1 ] || die "the pause never happened"

say "shutdown: asking the guest to finish and verify its memory"
ctl shutdown >/dev/null || die "shutdown failed"
for _ in $(seq 1 600); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$pid" 2>/dev/null && die "ferry did not exit within 60 s of shutdown"
status=0
wait "$pid" || status=$?
pid=

grep -E '^dirty: vCPU [0-9]+ verified' "$tmp/ferry.log" | sed 's/^/  /' || true
verified=$(grep -Ec '^dirty: vCPU [0-9]+ verified' "$tmp/ferry.log" || true)
say "ferry exited with status $status; $verified of $NCPUS vCPUs verified their memory"
say "(the longest stall each vCPU saw includes the ${PAUSE_HOLD}s pause: the guest's TSC kept running)"
[ "$status" = 0 ] || die "ferry exited with status $status"
[ "$verified" = "$NCPUS" ] || die "only $verified of $NCPUS vCPUs verified their memory"
say "demo: OK"
