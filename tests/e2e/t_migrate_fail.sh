# Live migration when things go wrong: cancels in every source state, a
# destination that dies, a damaged stream.  In every case the source VM must
# keep running with its memory intact, the destination must exit non-zero,
# and a later migration must still work.

# migrate_in_background [ARGS...]: `ferry migrate` to $DEST_PORT in the
# background, output in $T/mig.log.
migrate_in_background() {
	"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT" "$@" >"$T/mig.log" 2>&1 &
	echo $! >"$T/mig.pid"
}

# expect_mig_status WANT: waits for the background `ferry migrate`.
expect_mig_status() {
	local rc=0
	wait "$(cat "$T/mig.pid")" || rc=$?
	[ "$rc" = "$1" ] || fail "ferry migrate exited $rc, expected $1: $(cat "$T/mig.log")"
}

# The source must be running, its migration in state $1, and a fresh
# migration to a new destination must then succeed with the guest intact.
source_survives() {
	ctl "$T/src.sock" query-migrate | json ".state == \"$1\"" >/dev/null \
		|| fail "source migration is not $1: $(ctl "$T/src.sock" query-migrate)"
	ctl "$T/src.sock" status | json '.state == "running"' >/dev/null \
		|| fail "the source VM is not running"
	sleep 0.3
	start_dest dst2
	expect_status 0 ferry migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT" --verify
	expect_exit src 0
	guest_verifies dst2 "${2:-1}"
}

test_cancel_during_setup() {
	start_dest dst
	start_src src --guest dirty --mem 128M --guest-arg wss=32M
	kill -STOP "$(cat "$T/dst.pid")"          # it will never answer READY
	migrate_in_background
	wait_mig_state "$T/src.sock" setup
	sleep 0.3
	ctl "$T/src.sock" migrate-cancel >/dev/null
	expect_mig_status 1
	grep -q "migration cancelled" "$T/mig.log"
	kill -CONT "$(cat "$T/dst.pid")"
	expect_exit dst 1
	source_survives cancelled
}

test_cancel_during_active() {
	start_dest dst
	start_src src --guest dirty --mem 128M --cpus 2 --guest-arg wss=64M --guest-arg pattern=random
	migrate_in_background --max-bandwidth 16M --compress none
	wait_mig_state "$T/src.sock" active
	sleep 0.5
	ctl "$T/src.sock" migrate-cancel >/dev/null
	expect_mig_status 1
	expect_exit dst 1
	grep -q "cancelled or failed there); this VM never ran" "$T/dst.log" || fail "unclear destination error"
	source_survives cancelled 2
}

test_cancel_during_stop_copy() {
	start_dest dst
	start_src src --guest dirty --mem 128M --guest-arg wss=24M --guest-arg report_ms=100
	wait_guest_progress "$T/src.sock" pass 1
	# A huge downtime target makes the whole dirty set go in stop-copy,
	# and the bandwidth limit makes that take seconds.
	migrate_in_background --max-bandwidth 8M --downtime-ms 60000 --compress none
	wait_mig_state "$T/src.sock" stop-copy
	ctl "$T/src.sock" status | json '.state == "paused"' >/dev/null || fail "not paused in stop-copy"
	ctl "$T/src.sock" migrate-cancel >/dev/null
	expect_mig_status 1
	expect_exit dst 1
	source_survives cancelled
}

# Brings a migration to "completing" with a stopped destination: the final
# 2 MiB fit in the socket buffers, but a stopped destination never says
# LOADED, so the source waits there.
stuck_in_completing() {
	start_dest dst
	start_src src --guest dirty --mem 128M --guest-arg wss=2M --guest-arg rate=2 \
		--guest-arg report_ms=100
	wait_guest_progress "$T/src.sock" pass 1    # all 2 MiB written: 2 s to send
	migrate_in_background --max-bandwidth 1M --downtime-ms 60000 --compress none
	wait_mig_state "$T/src.sock" stop-copy
	kill -STOP "$(cat "$T/dst.pid")"
	wait_mig_state "$T/src.sock" completing
}

test_cancel_while_completing() {
	stuck_in_completing
	ctl "$T/src.sock" migrate-cancel >/dev/null
	expect_mig_status 1
	kill -CONT "$(cat "$T/dst.pid")"
	expect_exit dst 1
	source_survives cancelled
}

test_destination_killed_mid_migration() {
	start_dest dst
	start_src src --guest dirty --mem 128M --guest-arg wss=64M
	migrate_in_background --max-bandwidth 16M --compress none
	wait_mig_state "$T/src.sock" active
	sleep 0.3
	kill -9 "$(cat "$T/dst.pid")"
	expect_mig_status 1
	grep -Eq "migration failed: .*(lost the destination|connection|Broken pipe)" "$T/mig.log" \
		|| fail "unclear failure: $(cat "$T/mig.log")"
	wait_exit dst
	source_survives failed
}

test_destination_killed_mid_switchover() {
	stuck_in_completing
	kill -9 "$(cat "$T/dst.pid")"
	expect_mig_status 1
	wait_exit dst
	source_survives failed
}

# damaged_stream MODE ARG EXPECTED-DESTINATION-MESSAGE
damaged_stream() {
	start_dest dst
	start_src src --guest dirty --mem 128M --guest-arg wss=64M
	"$TOOLS/mig_proxy" "$T/proxy.port" "$DEST_PORT" "$1" "$2" &
	local i
	for i in $(seq 1 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
	expect_status 1 ferry migrate "$T/src.sock" "tcp:127.0.0.1:$(cat "$T/proxy.port")" --compress none
	expect_output "migration failed"
	expect_exit dst 1
	grep -q "$3" "$T/dst.log" || fail "destination log lacks '$3': $(cat "$T/dst.log")"
	source_survives failed
}

test_flipped_bit_in_a_page_batch() {
	damaged_stream flip 300000 "page batch checksum mismatch"
}

test_truncated_stream() {
	damaged_stream truncate 500000 "the stream ended inside a PAGES section (truncated)"
}

test_two_network_namespaces_as_hosts() {
	local a=ferry-a-$$ b=ferry-b-$$
	ip netns add "$a"
	ip netns add "$b"
	trap 'jobs -p | xargs -r kill -9 2>/dev/null || true; wait 2>/dev/null || true
	      ip netns del '"$a"' 2>/dev/null || true; ip netns del '"$b"' 2>/dev/null || true' EXIT
	ip link add "va$$" type veth peer name "vb$$"
	ip link set "va$$" netns "$a"
	ip link set "vb$$" netns "$b"
	ip -n "$a" addr add 10.77.0.1/24 dev "va$$"
	ip -n "$b" addr add 10.77.0.2/24 dev "vb$$"
	ip -n "$a" link set "va$$" up
	ip -n "$b" link set "vb$$" up
	ip -n "$a" link set lo up
	ip -n "$b" link set lo up
	ip netns exec "$b" "$FERRY" run --incoming tcp:10.77.0.2:4444 --control "$T/dst.sock" \
		>"$T/dst.log" 2>&1 &
	echo $! >"$T/dst.pid"
	ip netns exec "$a" "$FERRY" run --guest dirty --mem 256M --cpus 2 --guest-arg wss=96M \
		--control "$T/src.sock" >"$T/src.log" 2>&1 &
	echo $! >"$T/src.pid"
	wait_socket "$T/src.sock"
	wait_socket "$T/dst.sock"
	# The source's namespace cannot reach the host's loopback at all.
	expect_status 1 ferry migrate "$T/src.sock" tcp:127.0.0.1:4444
	expect_status 0 ferry migrate "$T/src.sock" tcp:10.77.0.2:4444 --verify --channels 2
	expect_output "^migration completed"
	grep -q "incoming migration from 10.77.0.1:" "$T/dst.log"
	expect_exit src 0
	guest_verifies dst 2
}

test_timeout_cancels_by_default() {
	start_dest dst
	start_src src --guest dirty --mem 256M --guest-arg wss=96M --guest-arg report_ms=100
	wait_guest_progress "$T/src.sock" pass 1
	ctl "$T/src.sock" pause >/dev/null
	expect_status 1 ferry migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT" \
		--max-bandwidth 4M --timeout 2 --compress none
	expect_output "did not converge within 2 s"
	expect_exit dst 1
	# It was paused by its operator before: it must still be paused.
	ctl "$T/src.sock" status | json '.state == "paused"' >/dev/null \
		|| fail "a failed migration resumed a VM its operator had paused"
	ctl "$T/src.sock" resume >/dev/null
	source_survives failed
}

test_timeout_can_force_the_switchover() {
	start_dest dst
	start_src src --guest dirty --mem 256M --guest-arg wss=96M --guest-arg report_ms=100
	wait_guest_progress "$T/src.sock" pass 1
	expect_status 0 ferry migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT" --verify \
		--max-bandwidth 16M --timeout 2 --on-timeout switchover --compress none
	# The first pass over 96 MiB at 16 MB/s takes about 6 s, but the guest's
	# increment pattern keeps one byte per page: when its pass counter wraps
	# (1 pass in 256), the pages it has not reached yet are all zero and cost
	# almost nothing to send, so that pass can end within the 2 s and the
	# timeout lands in a later iteration.
	grep -Eq "timeout reached in iteration [0-9]+; switching over" "$T/src.log" \
		|| fail "pre-copy was not cut short: $(cat "$T/src.log")"
	expect_exit src 0
	guest_verifies dst 1
}
