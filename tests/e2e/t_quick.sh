# Quick migration: `ferry save` and `ferry run --restore [--lazy]`.  Every
# restore ends with the guest's own memory check; the lazy and eager
# restores are compared page by page; a killed or failing save must leave
# the earlier file intact and nothing else behind.

# start_restore NAME FILE [RUN-ARGS...]: a restored VM with control socket
# $T/NAME.sock.
start_restore() {
	local name=$1 file=$2
	shift 2
	start_ferry "$name" run --restore "$file" --control "$T/$name.sock" "$@"
	wait_socket "$T/$name.sock"
}

# save_ok SOCKET FILE [SAVE-ARGS...]: a save that must succeed.
save_ok() {
	expect_status 0 ferry save "$@"
	expect_output "^saved to $2: .* written in [0-9.]+ ms"
}

# ram_area FILE: "OFFSET SIZE" of the RAM area, from ferry inspect --json.
ram_area() {
	"$FERRY" inspect "$1" --json --no-ram | jq -er '"\(.ram.offset) \(.ram.size)"'
}

# same_ram FILE1 FILE2: the RAM areas of two save files are byte-identical.
same_ram() {
	local a b
	read -r a size < <(ram_area "$1")
	read -r b _ < <(ram_area "$2")
	cmp -i "$a:$b" -n "$size" "$1" "$2" || fail "the RAM of $1 and $2 differ"
}

test_save_and_restore_each_program_on_1_and_4_vcpus() {
	local n mode how i=0
	for n in 1 4; do
		for prog in "idle wss=32M" "dirty increment" "dirty random" "dirty stamp"; do
			set -- $prog
			i=$((i + 1))
			# Alternate eager and lazy restores over the cases.
			mode=$([ $((i % 2)) = 0 ] && echo --lazy || true)
			how=$([ -n "$mode" ] && echo lazy || echo eager)
			if [ "$1" = idle ]; then
				start_src src --guest idle --mem 128M --cpus "$n" --guest-arg "$2"
			else
				start_src src --guest dirty --mem 128M --cpus "$n" \
					--guest-arg wss=48M --guest-arg pattern="$2"
			fi
			sleep 0.3
			save_ok "$T/src.sock" "$T/vm.save"
			ctl "$T/src.sock" status | json '.state == "paused"' >/dev/null \
				|| fail "a save without --resume must leave the VM paused"
			ctl "$T/src.sock" quit >/dev/null
			expect_exit src 0
			start_restore dst "$T/vm.save" $mode
			ctl "$T/dst.sock" query-restore | json ".mode == \"$how\"" >/dev/null \
				|| fail "query-restore: $(ctl "$T/dst.sock" query-restore)"
			sleep 0.2
			guest_verifies dst "$([ "$1" = idle ] && echo 1 || echo "$n")"
			grep -q "restored $T/vm.save ($how): the VM was started" "$T/dst.log" \
				|| fail "no restore line in $(cat "$T/dst.log")"
		done
	done
}

test_checkpoint_with_resume_then_both_run() {
	start_src src --guest dirty --mem 128M --cpus 2 --guest-arg wss=48M --guest-arg pattern=random
	sleep 0.3
	save_ok "$T/src.sock" "$T/ckpt.save" --resume
	expect_output "the VM was paused [0-9.]+ ms and is running again"
	ctl "$T/src.sock" status | json '.state == "running"' >/dev/null || fail "not resumed"
	start_restore copy "$T/ckpt.save" --lazy
	sleep 0.5
	ctl "$T/copy.sock" query-guest | json '.vcpus[0].pass > 0' >/dev/null
	guest_verifies src 2
	guest_verifies copy 2
}

test_lazy_and_eager_restores_give_the_same_memory() {
	start_src src --guest dirty --mem 128M --cpus 2 --guest-arg wss=64M --guest-arg pattern=random
	sleep 0.5
	save_ok "$T/src.sock" "$T/orig.save"
	ctl "$T/src.sock" quit >/dev/null
	expect_exit src 0
	start_restore eager "$T/orig.save" --paused
	start_restore lazy "$T/orig.save" --lazy --paused
	ctl "$T/eager.sock" status | json '.state == "created"' >/dev/null || fail "not paused"
	# Saving each restored VM writes out what it holds, page by page.
	save_ok "$T/eager.sock" "$T/eager.save"
	save_ok "$T/lazy.sock" "$T/lazy.save"
	same_ram "$T/orig.save" "$T/eager.save"
	same_ram "$T/orig.save" "$T/lazy.save"
	ctl "$T/lazy.sock" query-restore | json '.lazy.state == "complete"' >/dev/null
	ctl "$T/eager.sock" resume >/dev/null
	ctl "$T/lazy.sock" resume >/dev/null
	sleep 0.3
	guest_verifies eager 2
	guest_verifies lazy 2
}

test_kill_9_during_a_save_keeps_the_earlier_file() {
	start_src src --guest dirty --mem 256M --guest-arg wss=96M --guest-arg pattern=random
	sleep 1.5
	save_ok "$T/src.sock" "$T/vm.save" --resume
	local before
	before=$(sha256sum <"$T/vm.save")
	"$FERRY" save "$T/src.sock" "$T/vm.save" --max-bandwidth 20M >"$T/save.log" 2>&1 &
	local i
	for i in $(seq 1 100); do
		ctl "$T/src.sock" query-save | json '.written_bytes > 4000000' >/dev/null 2>&1 && break
		sleep 0.05
	done
	ctl "$T/src.sock" query-save | json '.state == "saving"' >/dev/null || fail "not saving"
	kill -9 "$(cat "$T/src.pid")"
	wait_exit src
	wait || true
	[ "$(sha256sum <"$T/vm.save")" = "$before" ] || fail "the earlier file changed"
	expect_status 0 ferry inspect "$T/vm.save"
	expect_output "^result: +OK"
	start_restore dst "$T/vm.save"
	guest_verifies dst 1
}

test_a_full_filesystem_during_a_save() {
	mkdir "$T/small"
	mount -t tmpfs -o size=24M tmpfs "$T/small"
	# The harness's own clean-up, then the mount (run.sh removes $T after).
	trap 'jobs -p | xargs -r kill -9 2>/dev/null || true; wait 2>/dev/null || true
	      umount -l "$T/small" || true' EXIT
	start_src small --guest idle --mem 64M --guest-arg wss=1M
	save_ok "$T/small.sock" "$T/small/vm.save"
	ctl "$T/small.sock" quit >/dev/null
	local before
	before=$(sha256sum <"$T/small/vm.save")
	start_src src --guest dirty --mem 128M --guest-arg wss=64M --guest-arg pattern=random
	sleep 0.5
	expect_status 1 ferry save "$T/src.sock" "$T/small/vm.save"
	expect_output "save failed: saving to $T/small/vm.save failed: writing .*: No space left on device"
	[ "$(sha256sum <"$T/small/vm.save")" = "$before" ] || fail "the earlier file changed"
	[ "$(ls -A "$T/small")" = "vm.save" ] || fail "left behind: $(ls -A "$T/small")"
	ctl "$T/src.sock" status | json '.state == "running"' >/dev/null \
		|| fail "a failed save must leave the VM running"
	guest_verifies src 1
}

test_damaged_files_are_refused_with_their_reason() {
	start_src src --guest dirty --mem 64M --guest-arg wss=16M
	sleep 0.3
	save_ok "$T/src.sock" "$T/good.save"
	ctl "$T/src.sock" quit >/dev/null
	expect_exit src 0
	expect_status 0 ferry inspect "$T/good.save"
	expect_output "VMDESC +0 +1 .* ok"
	expect_output "RAM_MAP"
	expect_output "HOT_PIECES +0 +1 .* ok"
	expect_output "^checked: +all [0-9]+ hot pieces match their checksums"
	expect_output "^checked: +all 32 RAM blocks match their checksums"
	local ram size state_off
	read -r ram size < <(ram_area "$T/good.save")
	state_off=$("$FERRY" inspect "$T/good.save" --json | jq -er '.sections[1].offset')

	cp "$T/good.save" "$T/cut.save"
	truncate -s $((ram + 4096)) "$T/cut.save"
	expect_status 1 ferry run --restore "$T/cut.save"
	expect_output "is truncated: it ends at byte $((ram + 4096)), inside the RAM area"
	expect_status 1 ferry inspect "$T/cut.save"
	expect_output "^result: +NOT OK"

	cp "$T/good.save" "$T/flip.save"
	printf '\x55' | dd of="$T/flip.save" bs=1 seek=$((state_off + 40)) conv=notrunc status=none
	expect_status 1 ferry run --restore "$T/flip.save" --lazy
	expect_output "is corrupt: the VM_STATE section at byte $state_off fails its checksum"

	cp "$T/good.save" "$T/future.save"
	printf '\x02' | dd of="$T/future.save" bs=1 seek=8 conv=notrunc status=none
	expect_status 1 ferry run --restore "$T/future.save"
	expect_output "is format version 2, written by a newer ferry; this ferry reads version 1"

	# A damaged page of the guest's code: the eager restore refuses before
	# the guest runs, and so does the lazy one (the code is among the hot
	# pieces it reads and checks while the VM is being created).
	cp "$T/good.save" "$T/ram.save"
	printf '\x99' | dd of="$T/ram.save" bs=1 seek=$((ram + 0x400000 + 100)) conv=notrunc status=none
	expect_status 1 ferry run --restore "$T/ram.save"
	expect_output "RAM block 2 \(guest-physical 0x400000 to 0x5fffff\) fails its checksum"
	expect_lines 0 "verified"
	expect_status 1 ferry run --restore "$T/ram.save" --lazy
	expect_output "^ferry run: .*RAM piece at guest-physical 0x400000 to 0x40ffff \(HOT_PIECES entry [0-9]+\) fails its checksum"
	expect_lines 0 "VM was started"
	expect_status 1 ferry inspect "$T/ram.save"
	expect_output "^checked: +1 of 32 RAM blocks fail their checksums: 2$"
	expect_output "^checked: +1 of [0-9]+ hot pieces fail their checksums"
	# A damaged page of the guest's data: the lazy restore runs the VM and
	# stops it when the block is first needed, before the guest sees it.
	cp "$T/good.save" "$T/data.save"
	printf '\x99' | dd of="$T/data.save" bs=1 seek=$((ram + 0x1000000 + 100)) conv=notrunc status=none
	expect_status 1 ferry run --restore "$T/data.save" --lazy
	expect_output "lazy restore failed after the VM started: .*RAM block 8 .*fails its checksum"
	expect_lines 0 "verified"
}

test_bad_arguments() {
	start_src src --guest idle --mem 64M
	expect_status 2 ferry save "$T/src.sock"
	expect_status 2 ferry save "$T/src.sock" "$T/x.save" --max-bandwidth fast
	expect_status 1 ferry save "$T/src.sock" "$T"
	expect_output "exists and is not a regular file"
	ctl "$T/src.sock" status | json '.state == "running"' >/dev/null
	save_ok "$T/src.sock" "$T/vm.save"
	ctl "$T/src.sock" quit >/dev/null
	expect_exit src 0
	expect_status 2 ferry run --lazy
	expect_output "--lazy and --paused go with --restore"
	expect_status 2 ferry run --restore "$T/vm.save" --guest dirty
	expect_status 1 ferry run --restore "$T/vm.save" --mem 128M
	expect_output "memory size mismatch: the source VM has 64.0 MiB"
	expect_status 1 ferry run --restore "$T/vm.save" --cpus 2
	expect_output "vCPU count mismatch"
	expect_status 1 ferry run --restore "$T/missing.save"
	expect_output "cannot open $T/missing.save: No such file or directory"
	expect_status 1 ferry inspect "$T/missing.save"
}

test_migrate_a_lazily_restored_vm() {
	start_src src --guest dirty --mem 256M --cpus 2 --guest-arg wss=128M --guest-arg pattern=stamp
	sleep 1
	save_ok "$T/src.sock" "$T/vm.save"
	ctl "$T/src.sock" quit >/dev/null
	expect_exit src 0
	start_restore lazy "$T/vm.save" --lazy
	start_dest dst
	# Right away: the migration waits for the lazy restore to bring in RAM.
	expect_status 0 ferry migrate "$T/lazy.sock" "tcp:127.0.0.1:$DEST_PORT" --verify
	expect_exit lazy 0
	guest_verifies dst 2
}

test_save_and_restore_the_device_programs() {
	# echo: the console channel, open across the save, answers on the copy.
	start_ferry src run --guest echo --control "$T/src.sock" --console "$T/c1"
	wait_socket "$T/src.sock"
	wait_file "$T/c1" "echo: ready" 10
	ctl "$T/src.sock" console-send data=$'before\n' >/dev/null
	wait_file "$T/c1" "^echo: before$" 10
	save_ok "$T/src.sock" "$T/echo.save"
	ctl "$T/src.sock" quit >/dev/null
	expect_exit src 0
	start_ferry dst run --restore "$T/echo.save" --lazy --control "$T/dst.sock" --console "$T/c2"
	wait_socket "$T/dst.sock"
	ctl "$T/dst.sock" console-send data=$'after\n' >/dev/null
	wait_file "$T/c2" "^echo: after$" 10
	ctl "$T/dst.sock" console-send data=$'quit\n' >/dev/null
	expect_exit dst 0
	grep -q "echo: done, 2 lines echoed" "$T/c2" || fail "echo lost a line: $(cat "$T/c2")"

	# disk: requests in flight at the save are issued again after the restore.
	truncate -s 32M "$T/disk.img"
	start_src src --guest disk --disk "$T/disk.img" --mem 128M --guest-arg size=8M
	local i
	for i in $(seq 1 100); do
		[ "$(disk_ops "$T/src.sock")" -gt 3000 ] && break
		sleep 0.05
	done
	save_ok "$T/src.sock" "$T/disk.save"
	ctl "$T/src.sock" quit >/dev/null
	expect_exit src 0
	expect_status 1 ferry run --restore "$T/disk.save"
	expect_output "holds a device 'vsp-storage0' that this VM lacks"
	start_restore dst "$T/disk.save" --disk "$T/disk.img"
	wait_disk_io "$T/dst.sock" 2000
	guest_verifies dst 1
	grep -Eq '^disk: verified 2048 blocks of 4096 bytes \([1-9][0-9]* passes' "$T/dst.log" ||
		fail "no full pass: $(cat "$T/dst.log")"
}

test_progress_line_on_a_terminal() {
	start_src src --guest dirty --mem 128M --guest-arg wss=64M --guest-arg pattern=random
	sleep 0.5
	# `script` gives ferry save a terminal; the limit makes it last ~2 s.
	script -qefc "$FERRY save $T/src.sock $T/vm.save --max-bandwidth 32M --resume" \
		"$T/typescript" >/dev/null
	tr '\r' '\n' <"$T/typescript" | sed 's/\x1b\[K//g' >"$T/lines"
	local n
	n=$(grep -Ec 'saving +[0-9]+%  .* of .* scanned  .* written  .*/s  VM paused [0-9.]+ s' \
		"$T/lines" || true)
	[ "$n" -ge 5 ] || fail "only $n progress lines: $(cat "$T/lines")"
	grep -q "^saved to $T/vm.save: .* the VM was paused [0-9.]* ms and is running again" "$T/lines" \
		|| fail "no summary: $(cat "$T/lines")"
	# Without a terminal: the summary only.
	expect_status 0 ferry save "$T/src.sock" "$T/vm2.save" --resume
	expect_lines 1 "."
	guest_verifies src 1
}
