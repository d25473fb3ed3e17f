# The control API from a second process, and clients that misbehave.

test_status_pause_resume_query() {
	start_ferry vm run --guest dirty --cpus 2 --guest-arg wss=16M \
		--guest-arg report_ms=100 --control "$T/s"
	wait_socket "$T/s"
	ctl "$T/s" status >"$T/st"
	[ "$(json .state <"$T/st")" = running ] || fail "not running: $(cat "$T/st")"
	[ "$(json .vcpus <"$T/st")" = 2 ] && [ "$(json .memory <"$T/st")" = 268435456 ]
	[ "$(json .guest <"$T/st")" = dirty ]
	ctl "$T/s" pause | json '.latency_us >= 0' >/dev/null
	[ "$(ctl "$T/s" status | json .state)" = paused ]
	ctl "$T/s" query-cpus >"$T/cpus"
	[ "$(json 'length' <"$T/cpus")" = 2 ]
	json '.[0].rip > 4194304 and .[1].rip > 4194304' <"$T/cpus" >/dev/null \
		|| fail "no RIP for paused vCPUs: $(cat "$T/cpus")"
	json '.[0].thread_id != .[1].thread_id' <"$T/cpus" >/dev/null
	ctl "$T/s" resume >/dev/null
	[ "$(ctl "$T/s" status | json .state)" = running ]
	ctl "$T/s" query-cpus | json '.[0].rip == null' >/dev/null
	sleep 0.5
	ctl "$T/s" query-guest | json '.vcpus[1].rate_pps > 0' >/dev/null \
		|| fail "no guest rate reported"
	ctl "$T/s" shutdown >/dev/null
	expect_exit vm 0
	grep -c "verified" "$T/vm.log" | grep -qx 2
	[ ! -e "$T/s" ] || fail "the socket was left behind"
}

test_quit_ends_ferry() {
	start_ferry vm run --guest idle --control "$T/s"
	wait_socket "$T/s"
	ctl "$T/s" quit >/dev/null
	expect_exit vm 0
}

test_errors_are_replies_not_crashes() {
	start_ferry vm run --guest idle --control "$T/s"
	wait_socket "$T/s"
	expect_status 0 "$FERRY" ctl "$T/s" --raw '{"execute": "status"'
	expect_output '"class":"ParseError"'
	expect_status 0 "$FERRY" ctl "$T/s" --raw 'hello there'
	expect_output '"class":"ParseError"'
	expect_status 0 "$FERRY" ctl "$T/s" --raw '{"execute":"pause","arguments":"x","id":9}'
	expect_output '"class":"InvalidRequest"'
	expect_output '"id":9'
	expect_status 1 "$FERRY" ctl "$T/s" frobnicate
	expect_output "^ferry ctl: CommandNotFound: unknown command 'frobnicate'"
	expect_status 1 "$FERRY" ctl "$T/s" status verbose=true
	expect_output "InvalidParameter: unknown argument 'verbose'"
	[ "$(ctl "$T/s" status | json .state)" = running ]
	ctl "$T/s" quit >/dev/null
	expect_exit vm 0
}

test_broken_clients_do_not_harm_the_vm() {
	start_ferry vm run --guest dirty --guest-arg wss=16M --control "$T/s"
	wait_socket "$T/s"
	"$TOOLS/ctl_abuse" "$T/s" partial
	"$TOOLS/ctl_abuse" "$T/s" binary
	"$TOOLS/ctl_abuse" "$T/s" oversize >/dev/null || fail "no sane reply after an over-long line"
	"$TOOLS/ctl_abuse" "$T/s" noread 100000
	"$TOOLS/ctl_abuse" "$T/s" flood 40 &
	local flood=$!
	sleep 0.3
	"$TOOLS/ctl_abuse" "$T/s" partial || true
	wait "$flood"
	for i in 1 2 3; do
		[ "$(ctl "$T/s" status | json .state)" = running ]
	done
	ctl "$T/s" shutdown >/dev/null
	expect_exit vm 0
}
