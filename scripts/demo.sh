#!/usr/bin/env bash
# The main job of `make demo` (which runs `make all` first): a live migration
# between two ferry processes on this machine.
#
#   1. a destination `ferry run --incoming` waits on a loopback port;
#   2. a source runs the `dirty` guest program on 2 vCPUs, which writes its
#      256 MiB working set over and over, checking every page as it goes;
#   3. `ferry migrate --verify` moves the running VM: pre-copy while the
#      guest keeps writing, a stop-and-copy of a few milliseconds, and a
#      digest of every page compared before the destination takes over;
#   4. the guest carries on at the destination, then is asked to finish and
#      verifies its whole memory there.
#
# Exits 0 only if the migration completed and the guest verified every page.
set -euo pipefail
cd "$(dirname "$0")/.."

FERRY=${FERRY:-build/ferry}
NCPUS=2
WARM_SECONDS=3          # the guest runs this long before the migration
AFTER_SECONDS=2         # and this long at the destination afterwards

[ -x "$FERRY" ] || { echo "demo: $FERRY is not built (run make all)" >&2; exit 1; }
command -v jq >/dev/null || { echo "demo: jq is missing (scripts/deps.sh installs it)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/ferry-demo.XXXXXX)
src_pid=
dst_pid=
cleanup() {
	for p in $src_pid $dst_pid; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -t 1 ]; then tty=1; else tty=0; fi
live=0

say() {
	if [ "$live" = 1 ]; then printf '\n'; live=0; fi
	printf '%s\n' "$*"
}

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
	for log in "$tmp"/*.log; do
		[ -s "$log" ] || continue
		echo "  --- $(basename "$log")" >&2
		sed 's/^/  | /' "$log" >&2
	done
	exit 1
}

wait_socket() {
	for _ in $(seq 1 200); do
		"$FERRY" ctl "$1" status >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	die "no answer on $1"
}

# progress SOCK LABEL SECONDS: the guest's own figures, twice a second.
progress() {
	local end=$(( $(date +%s) + $3 )) line
	while [ "$(date +%s)" -lt "$end" ]; do
		line=$("$FERRY" ctl "$1" query-guest 2>/dev/null | jq -r '
			[.vcpus[] | "\(.pass // 0) passes, \(((.rate_pps // 0) / 1000) | floor)k pages/s"]
			| to_entries | map("vCPU \(.key): \(.value)") | join("   ")') || line="?"
		show "  $2  $line"
		sleep 0.5
	done
	say ""
}

say "ferry demo: live migration of a running VM between two local ferry processes"
say ""
say "destination:  $FERRY run --incoming tcp:127.0.0.1:0 --control DST"
"$FERRY" run --incoming tcp:127.0.0.1:0 --control "$tmp/dst.sock" >"$tmp/dst.log" 2>&1 &
dst_pid=$!
wait_socket "$tmp/dst.sock"
port=$(sed -nE 's/.*incoming migration on tcp:127\.0\.0\.1:([0-9]+).*/\1/p' "$tmp/dst.log")
[ -n "$port" ] || die "the destination did not say which port it listens on"

say "source:       $FERRY run --guest dirty --cpus $NCPUS --mem 512M --guest-arg wss=256M --control SRC"
"$FERRY" run --guest dirty --cpus "$NCPUS" --mem 512M --guest-arg wss=256M \
	--guest-arg report_ms=250 --control "$tmp/src.sock" >"$tmp/src.log" 2>&1 &
src_pid=$!
wait_socket "$tmp/src.sock"
say ""
say "the guest writes its working set on both vCPUs, checking every page it overwrites:"
progress "$tmp/src.sock" "source     " "$WARM_SECONDS"

say "migrating:    $FERRY migrate SRC tcp:127.0.0.1:$port --verify"
"$FERRY" migrate "$tmp/src.sock" "tcp:127.0.0.1:$port" --verify --json >"$tmp/mig.json" \
	2>"$tmp/migrate.log" || die "the migration failed: $(cat "$tmp/migrate.log")"
jq -r 'def r: . * 100 | floor / 100;
       "  completed in \(.total_ms | floor) ms, \(.iteration) iterations, \((.transferred_bytes / 1048576) | floor) MiB on the wire",
       "  downtime \(.downtime_ms | r) ms, from the last source vCPU stopping:",
       "    final dirty pages sent        \(.switchover.pages_sent_ms | r) ms",
       "    state + page digests sent     \(.switchover.state_sent_ms | r) ms  (--verify hashes all guest memory here)",
       "    loaded and verified there     \(.switchover.loaded_ms | r) ms",
       "    running at the destination    \(.switchover.running_ms | r) ms",
       "  every page of guest memory compared by digest before the switch: identical"' \
	"$tmp/mig.json"
wait "$src_pid" || die "the source ferry did not exit cleanly after the migration"
src_pid=
grep -q "the VM migrated to" "$tmp/src.log" 2>/dev/null || true
say "  the source ferry has exited; the VM runs at the destination:"
"$FERRY" ctl "$tmp/dst.sock" status | jq -c '{state, guest, vcpus, memory}' | sed 's/^/  /'
say ""
progress "$tmp/dst.sock" "destination" "$AFTER_SECONDS"

say "asking the guest to finish: it verifies all its memory at the destination"
"$FERRY" ctl "$tmp/dst.sock" shutdown >/dev/null || die "shutdown failed"
rc=0
wait "$dst_pid" || rc=$?
dst_pid=
grep "verified" "$tmp/dst.log" | sed 's/^/  /'
[ "$rc" = 0 ] || die "the guest reported a problem (exit status $rc)"
[ "$(grep -c "verified" "$tmp/dst.log")" = "$NCPUS" ] || die "not every vCPU verified its memory"
say ""
say "demo: OK"
