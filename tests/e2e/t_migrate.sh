# Live migration between two ferry processes on loopback.  Every migration
# runs with --verify (a digest of every page compared before the switch)
# and ends with the guest's own memory check on the destination.

# migrate_ok SRC-ARGS... -- MIGRATE-ARGS...: one full migration, checked.
migrate_ok() {
	local src_args=() mig_args=()
	while [ "$1" != "--" ]; do src_args+=("$1"); shift; done
	shift
	mig_args=("$@")
	start_dest dst
	start_src src "${src_args[@]}"
	sleep 0.3
	expect_status 0 ferry migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT" --verify "${mig_args[@]}"
	expect_output "^migration completed: total [0-9.]+ ms, downtime [0-9.]+ ms"
	expect_exit src 0
	grep -q "the VM migrated to tcp:127.0.0.1:$DEST_PORT" "$T/src.log" || true
	grep -q "incoming migration from .* complete" "$T/dst.log" || fail "destination did not report completion"
	ctl "$T/dst.sock" status | json '.state == "running"' >/dev/null || fail "destination not running"
}

test_idle_and_dirty_patterns_on_1_and_4_vcpus() {
	for n in 1 4; do
		migrate_ok --guest idle --mem 256M --cpus "$n" --guest-arg wss=64M --
		guest_verifies dst 1
		for pattern in increment random stamp; do
			migrate_ok --guest dirty --mem 256M --cpus "$n" --guest-arg wss=96M \
				--guest-arg pattern=$pattern --
			guest_verifies dst "$n"
		done
	done
}

test_channels_and_compression() {
	for ch in 1 4; do
		for z in zstd none; do
			migrate_ok --guest dirty --mem 256M --cpus 2 --guest-arg pattern=random \
				--guest-arg wss=96M -- --channels "$ch" --compress "$z"
			guest_verifies dst 2
		done
	done
}

test_summary_and_query_figures() {
	start_dest dst
	start_src src --guest dirty --mem 256M --guest-arg wss=64M
	# The wire figure below counts the whole working set: let the guest
	# write all of it first (first touches are slow on kvm_pvm).
	wait_guest_progress "$T/src.sock" pass 1
	expect_status 0 ferry migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT" --json --compress none
	json '.state == "completed" and .downtime_ms > 0 and .transferred_bytes > 60000000
	      and .iteration >= 2 and .throughput_bps > 0 and .switchover.running_ms > 0' \
		<"$T/out" >/dev/null || fail "bad summary: $(cat "$T/out")"
	ctl "$T/dst.sock" query-migrate >"$T/q"
	json '.role == "destination" and .state == "running" and .downtime_ms > 0
	      and .pages > 10000' <"$T/q" >/dev/null || fail "bad destination figures: $(cat "$T/q")"
	guest_verifies dst 1
}

test_header_mismatch_rejected_before_ram_moves() {
	start_dest dst --mem 512M
	start_src src --guest dirty --mem 256M --guest-arg wss=64M
	expect_status 1 ferry migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT"
	expect_output "refused the VM: memory size mismatch: the source VM has 256.0 MiB, this destination was started with --mem 512.0 MiB"
	expect_exit dst 1
	grep -q "rejected the incoming VM: memory size mismatch" "$T/dst.log"
	ctl "$T/src.sock" query-migrate | json '.state == "failed" and .pages_sent == 0' >/dev/null \
		|| fail "RAM moved before the header was checked"
	guest_verifies src 1
}

test_bad_migrate_arguments() {
	start_src src --guest idle
	expect_status 2 ferry migrate "$T/src.sock" udp:1.2.3.4:5
	expect_output "unknown transport 'udp'"
	expect_status 2 ferry migrate "$T/src.sock" tcp:127.0.0.1
	expect_output "has no port"
	expect_status 2 ferry migrate "$T/src.sock" tcp:127.0.0.1:1 --channels 0
	expect_status 2 ferry migrate "$T/src.sock" tcp:127.0.0.1:1 --compress lz4
	expect_status 2 ferry migrate "$T/src.sock" tcp:127.0.0.1:1 --max-bandwidth fast
	expect_status 1 ferry migrate "$T/src.sock" tcp:127.0.0.1:1
	expect_output "migration failed: cannot connect to tcp:127.0.0.1:1"
	ctl "$T/src.sock" status | json '.state == "running"' >/dev/null
	ctl "$T/src.sock" quit >/dev/null
	expect_exit src 0
}

test_paused_vm_stays_paused() {
	start_dest dst
	start_src src --guest dirty --mem 128M --guest-arg wss=32M
	ctl "$T/src.sock" pause >/dev/null
	expect_status 0 ferry migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT" --verify
	expect_exit src 0
	ctl "$T/dst.sock" status | json '.state == "paused"' >/dev/null \
		|| fail "the destination runs a VM its source had paused"
	ctl "$T/dst.sock" resume >/dev/null
	sleep 0.3
	guest_verifies dst 1
}

test_parameters_change_mid_migration() {
	start_dest dst
	start_src src --guest dirty --mem 256M --guest-arg wss=96M --guest-arg report_ms=100
	wait_guest_progress "$T/src.sock" pass 1
	# At 2 MB/s this would take most of a minute.
	"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT" --verify --max-bandwidth 2M \
		>"$T/mig.log" 2>&1 &
	local mig=$!
	wait_mig_state "$T/src.sock" active
	sleep 1
	ctl "$T/src.sock" query-migrate | json '.transferred_bytes < 8000000' >/dev/null \
		|| fail "the bandwidth limit was not applied"
	ctl "$T/src.sock" migrate-set-parameters max_bandwidth=0 downtime_ms=20 >/dev/null
	local rc=0
	wait "$mig" || rc=$?
	[ "$rc" = 0 ] || fail "migration failed after lifting the limit: $(cat "$T/mig.log")"
	expect_exit src 0
	guest_verifies dst 1
}

test_auto_converge_throttles_within_its_bound() {
	start_dest dst
	start_src src --guest dirty --mem 256M --cpus 2 --guest-arg pattern=random \
		--guest-arg wss=128M
	"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$DEST_PORT" --verify --max-bandwidth 24M \
		>"$T/mig.log" 2>&1 &
	local mig=$! i pct=0
	# The guest dirties far faster than 24 MB/s: throttling must start.
	for i in $(seq 1 400); do
		pct=$(ctl "$T/src.sock" query-migrate | jq .throttle_pct)
		[ "$pct" -gt 0 ] && break
		sleep 0.1
	done
	[ "$pct" -gt 0 ] || fail "auto-converge never throttled"
	ctl "$T/src.sock" query-cpus | json 'map(.throttle_pct) | max > 0 and max <= 90' >/dev/null
	ctl "$T/src.sock" migrate-set-parameters max_bandwidth=0 >/dev/null
	local rc=0
	wait "$mig" || rc=$?
	[ "$rc" = 0 ] || fail "migration failed: $(cat "$T/mig.log")"
	grep -q "throttling its busiest vCPUs to [2-9]0%" "$T/src.log"
	expect_exit src 0
	ctl "$T/dst.sock" query-cpus | json 'map(.throttle_pct) | max == 0' >/dev/null \
		|| fail "the destination inherited a throttle"
	guest_verifies dst 2
}

test_progress_line_only_on_a_terminal() {
	start_dest dst
	# 20 MB/s of dirtying converges under the 48 MB/s limit, which makes
	# the migration last about 2 s.
	start_src src --guest dirty --mem 256M --guest-arg wss=96M --guest-arg rate=20 \
		--guest-arg report_ms=100
	wait_guest_progress "$T/src.sock" pass 1
	# `script` gives ferry migrate a terminal.
	script -qefc "$FERRY migrate $T/src.sock tcp:127.0.0.1:$DEST_PORT --max-bandwidth 48M --compress none" \
		"$T/typescript" >/dev/null
	tr '\r' '\n' <"$T/typescript" >"$T/lines"
	grep -aEq "^(.\[K)?active +iter 1 +sent [0-9.]+ [KMG]iB +left [0-9.]+ [KMG]?i?B +dirty +[0-9.]+k pg/s +bw .* est\. downtime +[0-9.]+ ms +ETA +[0-9.]+ s" \
		"$T/lines" || fail "no progress line: $(head -c 600 "$T/lines")"
	[ "$(grep -ac "sent" "$T/lines")" -ge 3 ] || fail "the progress line was not redrawn"
	grep -aq "migration completed: " "$T/lines" || fail "no summary"
	# The amount sent never goes down from one redraw to the next.
	grep -aoE "sent [0-9.]+ [KMG]iB" "$T/lines" | awk '
		{ v = $2; u = $3; m = (u == "KiB") ? 1 : (u == "MiB") ? 1024 : 1048576; n = v * m;
		  if (n < last) { print "went back: " $0; bad = 1 } last = n }
		END { exit bad }' || fail "progress ran backwards"
	expect_exit src 0
	guest_verifies dst 1
	# Without a terminal there is one line: the summary.
	start_dest dst2
	start_src src2 --guest idle --mem 128M
	expect_status 0 ferry migrate "$T/src2.sock" "tcp:127.0.0.1:$DEST_PORT"
	[ "$(wc -l <"$T/out")" = 1 ] || fail "output besides the summary: $(cat "$T/out")"
	expect_exit src2 0
	guest_verifies dst2 1
}
