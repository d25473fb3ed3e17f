# The synthetic devices (vsp/): the console both ways, the disk program's
# own block-by-block verification, the heartbeat across a pause, and live
# and quick migration in the middle of disk I/O on a shared disk.

# mkdisk NAME MiB: a zero-filled disk image in $T.
mkdisk() {
	truncate -s "${2}M" "$T/$1"
}

# wait_log NAME PATTERN: waits up to 20 s for PATTERN in $T/NAME.log.
wait_log() {
	wait_file "$T/$1.log" "$2"
}

# vsp SOCKET FILTER: query-vsp through a jq filter on the channel list.
vsp() {
	ctl "$1" query-vsp | jq -er ".channels[] | $2"
}

test_console_both_ways() {
	printf 'hello\nworld, and more\nquit\nnot echoed\n' >"$T/in"
	expect_status 0 ferry run --guest echo --console-in "$T/in"
	expect_output '^echo: ready'
	expect_output '^echo: hello$'
	expect_output '^echo: world, and more$'
	expect_output '^echo: done, 2 lines echoed'
	grep -q "not echoed" "$T/out" && fail "echo went past quit"

	# Input from the control API, output to --console FILE.
	start_ferry vm run --guest echo --control "$T/s" --console "$T/console"
	wait_socket "$T/s"
	for i in $(seq 1 100); do grep -q "echo: ready" "$T/console" && break; sleep 0.05; done
	ctl "$T/s" console-send data=$'from the host\n' | json '.queued == 14' >/dev/null
	for i in $(seq 1 100); do grep -q "echo: from the host" "$T/console" && break; sleep 0.05; done
	grep -qx "echo: from the host" "$T/console" || fail "console-send did not reach the guest"
	vsp "$T/s" 'select(.type == "console") | .bytes_in == 14 and .state == "open"' >/dev/null
	ctl "$T/s" console-send data=$'quit\n' >/dev/null
	expect_exit vm 0
	grep -q "echo: done, 1 lines echoed" "$T/console"
	[ ! -s "$T/vm.log" ] || { cat "$T/vm.log" >&2; fail "guest output leaked to stdout"; }
}

test_disk_verifies_every_block() {
	mkdisk disk.img 16
	expect_status 0 ferry run --guest disk --disk "$T/disk.img" --guest-arg size=8M \
		--guest-arg passes=2 --guest-arg bs=16k
	expect_output '^disk: verified 512 blocks of 16384 bytes \(2 passes, 1024 writes, 1536 reads, 2 flushes, 1536 block checks'
	# The pattern is really on the disk: block 3 of pass 2 at its offset.
	od -An -tx8 -j $((3 * 16384)) -N 16 "$T/disk.img" | grep -q "d15c000000000003 0000000000000002" ||
		fail "block 3 is not on the disk: $(od -An -tx8 -j $((3 * 16384)) -N 16 "$T/disk.img")"

	# Read-only: the program refuses to write; a missing disk: ferry refuses.
	expect_status 1 ferry run --guest disk --disk "$T/disk.img,readonly"
	expect_output 'disk: disk 0 is read-only'
	expect_status 1 ferry run --guest disk --disk "$T/nope.img"
	expect_output 'cannot open disk .*nope.img'
	expect_status 1 ferry run --guest disk
	expect_output 'there is no disk 0'
	expect_status 2 ferry run --guest disk --disk ",readonly"
}

test_heartbeat_stops_when_paused_and_resumes() {
	start_ferry vm run --guest echo --control "$T/s"
	wait_socket "$T/s"
	for i in $(seq 1 100); do
		[ "$(vsp "$T/s" 'select(.type == "heartbeat") | .health')" = healthy ] && break
		sleep 0.05
	done
	vsp "$T/s" 'select(.type == "heartbeat") | .health == "healthy" and .interval_ms == 200' >/dev/null
	ctl "$T/s" pause >/dev/null
	s1=$(vsp "$T/s" 'select(.type == "heartbeat") | .seq')
	sleep 1
	vsp "$T/s" "select(.type == \"heartbeat\") | .seq == $s1 and .health == \"paused\"
		and .last_beat_ms >= 1000" >/dev/null || fail "the heartbeat went on while paused"
	ctl "$T/s" resume >/dev/null
	for i in $(seq 1 100); do
		s2=$(vsp "$T/s" 'select(.type == "heartbeat") | .seq')
		[ "$s2" -gt $((s1 + 2)) ] && break
		sleep 0.05
	done
	[ "$s2" -gt $((s1 + 2)) ] || fail "the heartbeat did not resume ($s1 -> $s2)"
	vsp "$T/s" 'select(.type == "heartbeat") | .health == "healthy"' >/dev/null
	ctl "$T/s" shutdown >/dev/null
	expect_exit vm 0
}

test_live_migration_in_the_middle_of_disk() {
	mkdisk disk.img 32
	start_dest dst --disk "$T/disk.img"
	start_src src --guest disk --disk "$T/disk.img" --mem 128M --guest-arg size=8M
	for i in $(seq 1 100); do
		[ "$(vsp "$T/src.sock" 'select(.type == "storage") | .writes')" -gt 3000 ] && break
		sleep 0.05
	done
	expect_status 0 ferry migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT" --verify
	expect_output "^migration completed"
	expect_exit src 0
	# The program goes on on the destination, with the channel still open.
	wait_disk_io "$T/dst.sock" 2000
	vsp "$T/dst.sock" 'select(.type == "storage") | .state == "open" and .errors == 0' >/dev/null
	vsp "$T/dst.sock" 'select(.type == "heartbeat") | .health == "healthy"' >/dev/null
	guest_verifies dst 1
	grep -Eq '^disk: verified 2048 blocks of 4096 bytes \([1-9][0-9]* passes' "$T/dst.log" ||
		fail "no full pass: $(cat "$T/dst.log")"
}

test_migration_needs_the_same_disks() {
	mkdisk disk.img 8
	mkdisk other.img 4
	# A destination without the disk, then one with a different disk.
	for dst_args in "" "--disk $T/other.img"; do
		# shellcheck disable=SC2086
		start_dest dst $dst_args
		start_src src --guest disk --disk "$T/disk.img" --guest-arg size=4M
		sleep 0.3
		expect_status 1 ferry migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT"
		expect_output 'vmbus: the source offers 3 channels, this VM 2|vsp-storage0 differs'
		expect_exit dst 1
		guest_verifies src 1
	done
}

test_quick_migration_in_the_middle_of_disk() {
	local mode
	mkdisk disk.img 32
	for mode in "" --lazy; do
		start_src src --guest disk --disk "$T/disk.img" --mem 128M --guest-arg size=8M
		for i in $(seq 1 100); do
			[ "$(vsp "$T/src.sock" 'select(.type == "storage") | .writes')" -gt 3000 ] && break
			sleep 0.05
		done
		expect_status 0 ferry save "$T/src.sock" "$T/vm.save"
		ctl "$T/src.sock" quit >/dev/null
		expect_exit src 0
		# shellcheck disable=SC2086
		start_ferry dst run --restore "$T/vm.save" --disk "$T/disk.img" --control "$T/dst.sock" $mode
		wait_socket "$T/dst.sock"
		wait_disk_io "$T/dst.sock" 2000
		vsp "$T/dst.sock" 'select(.type == "storage") | .state == "open" and .errors == 0' >/dev/null
		guest_verifies dst 1
		rm -f "$T/vm.save"
	done
	# A restore without the disk is refused, naming it.
	start_src src --guest disk --disk "$T/disk.img" --guest-arg size=4M
	sleep 0.3
	expect_status 0 ferry save "$T/src.sock" "$T/vm.save"
	ctl "$T/src.sock" quit >/dev/null
	expect_exit src 0
	expect_status 1 ferry run --restore "$T/vm.save"
	expect_output 'vmbus: the source offers 3 channels, this VM 2|vsp-storage0'
}
