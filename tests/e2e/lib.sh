# Helpers for the end-to-end tests.  Each test is a shell function named
# test_* in a t_*.sh file; run.sh runs each in its own subshell with `set -eu`
# and a scratch directory in $T.  A test fails on the first failing command.

FERRY=${FERRY:-build/ferry}
TOOLS=${TOOLS:-build/tests}
# One ferry run may not take longer than this many seconds.
RUN_TIMEOUT=${RUN_TIMEOUT:-120}

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# expect_status WANT CMD...: runs CMD (stdout+stderr to $T/out) and checks
# its exit status.
expect_status() {
	local want=$1 got=0
	shift
	"$@" >"$T/out" 2>&1 || got=$?
	if [ "$got" != "$want" ]; then
		sed 's/^/    | /' "$T/out" >&2
		fail "'$*' exited $got, expected $want"
	fi
}

# expect_output PATTERN: grep -E PATTERN in the last command's output.
expect_output() {
	grep -Eq -- "$1" "$T/out" || { sed 's/^/    | /' "$T/out" >&2; fail "output lacks /$1/"; }
}

# expect_lines N PATTERN: exactly N lines of the last output match.
expect_lines() {
	local n
	n=$(grep -Ec -- "$2" "$T/out" || true)
	[ "$n" = "$1" ] || { sed 's/^/    | /' "$T/out" >&2; fail "$n lines match /$2/, expected $1"; }
}

ferry() {
	timeout "$RUN_TIMEOUT" "$FERRY" "$@"
}

# start_ferry NAME ARGS...: runs `ferry ARGS` in the background, its output
# in $T/NAME.log and its pid in $T/NAME.pid.  (Its lifetime is bounded by
# wait_exit and by run.sh killing a test's leftover jobs.)
start_ferry() {
	local name=$1
	shift
	"$FERRY" "$@" >"$T/$name.log" 2>&1 &
	echo $! >"$T/$name.pid"
}

# wait_exit NAME [SECONDS]: waits for a start_ferry process and sets
# $STATUS to its exit status.  (Not in a $(...): only this shell can wait.)
wait_exit() {
	local pid i
	pid=$(cat "$T/$1.pid")
	for i in $(seq 1 $((${2:-60} * 10))); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid"
		sed 's/^/    | /' "$T/$1.log" >&2
		fail "$1 did not exit within ${2:-60} s"
	fi
	STATUS=0
	wait "$pid" || STATUS=$?
}

# expect_exit NAME WANT [SECONDS]: wait_exit, then check the status.
expect_exit() {
	wait_exit "$1" "${3:-60}"
	[ "$STATUS" = "$2" ] || { sed 's/^/    | /' "$T/$1.log" >&2; fail "$1 exited $STATUS, expected $2"; }
}

# wait_socket PATH: waits until a control socket answers.
wait_socket() {
	local i
	for i in $(seq 1 200); do
		"$FERRY" ctl "$1" status >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	fail "control socket $1 never answered"
}

# ctl SOCKET COMMAND [K=V]...: prints the reply's "return" as JSON; says
# so on stderr when the command fails.
ctl() {
	"$FERRY" ctl "$@" || { echo "ctl $*: failed (exit $?)" >&2; return 1; }
}

# json FILTER: applies a jq filter to stdin.
json() {
	jq -er "$1"
}

# start_dest NAME [RUN-ARGS...]: a destination `ferry run --incoming` on a
# free loopback port with control socket $T/NAME.sock; sets DEST_PORT.
start_dest() {
	local name=$1 i
	shift
	start_ferry "$name" run --incoming tcp:127.0.0.1:0 --control "$T/$name.sock" "$@"
	for i in $(seq 1 200); do
		DEST_PORT=$(sed -nE 's/.*waiting for an incoming migration on tcp:127\.0\.0\.1:([0-9]+).*/\1/p' \
			"$T/$name.log" 2>/dev/null)
		[ -n "$DEST_PORT" ] && return 0
		sleep 0.05
	done
	fail "destination $name never listened: $(cat "$T/$name.log")"
}

# start_src NAME [RUN-ARGS...]: a source VM with control socket $T/NAME.sock.
start_src() {
	local name=$1
	shift
	start_ferry "$name" run --control "$T/$name.sock" "$@"
	wait_socket "$T/$name.sock"
}

# wait_mig_state SOCKET STATE...: waits until query-migrate reports one of
# the states (any role); fails after 60 s.
wait_mig_state() {
	local sock=$1 s i
	shift
	for i in $(seq 1 1200); do
		s=$(ctl "$sock" query-migrate 2>/dev/null | jq -r .state)
		for want in "$@"; do
			[ "$s" = "$want" ] && return 0
		done
		sleep 0.05
	done
	fail "migration on $sock never reached $* (last: $s)"
}

# guest_verifies NAME N: asks the VM behind $T/NAME.sock to finish and checks
# that it exits 0 with N "verified" lines (the guest's own memory check).
guest_verifies() {
	ctl "$T/$1.sock" shutdown >/dev/null
	expect_exit "$1" 0
	local n
	n=$(grep -c "verified" "$T/$1.log" || true)
	[ "$n" = "$2" ] || { cat "$T/$1.log" >&2; fail "$1: $n verified lines, expected $2"; }
}

# wait_guest_progress SOCKET KEY MIN: until vCPU 0 of the VM behind SOCKET
# reported KEY >= MIN (e.g. "pass" 1: the dirty program has written its
# whole working set once).
wait_guest_progress() {
	local i v
	for i in $(seq 1 1200); do
		v=$(ctl "$1" query-guest 2>/dev/null | jq -r ".vcpus[0].$2 // 0")
		[ "$v" -ge "$3" ] && return 0
		sleep 0.05
	done
	fail "the guest behind $1 never reported $2 >= $3"
}

# wait_file FILE PATTERN [SECONDS]: waits up to SECONDS (20) for PATTERN in
# FILE; on failure shows the file.
wait_file() {
	local i
	for i in $(seq 1 $((${3:-20} * 20))); do
		grep -Eq -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	sed 's/^/    | /' "$1" >&2 2>/dev/null
	fail "$1 never showed /$2/"
}

# disk_ops SOCKET: reads + writes of the VM's synthetic disk so far.
disk_ops() {
	ctl "$1" query-vsp | jq -er '.channels[] | select(.type == "storage") | .writes + .reads'
}

# wait_disk_io SOCKET N: waits up to 5 s for N more disk requests than now.
wait_disk_io() {
	local i w1 w2
	w1=$(disk_ops "$1")
	for i in $(seq 1 100); do
		w2=$(disk_ops "$1")
		[ "$w2" -gt $((w1 + $2)) ] && return 0
		sleep 0.05
	done
	fail "no disk I/O behind $1 ($w1 -> $w2)"
}
