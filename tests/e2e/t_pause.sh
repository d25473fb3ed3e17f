# Pausing and resuming does not disturb a running guest's memory.

test_pause_resume_under_dirty_keeps_invariant() {
	for pattern in increment random; do
		start_ferry vm run --guest dirty --cpus 2 --guest-arg wss=32M \
			--guest-arg pattern=$pattern --control "$T/s"
		wait_socket "$T/s"
		for i in $(seq 1 20); do
			ctl "$T/s" pause >/dev/null
			sleep 0.02
			ctl "$T/s" resume >/dev/null
			sleep 0.02
		done
		ctl "$T/s" shutdown >/dev/null
		expect_exit vm 0
		grep -Ec "^dirty: vCPU [01] verified 4096 pages \($pattern" "$T/vm.log" | grep -qx 2
	done
}

test_signals_end_ferry() {
	start_ferry vm run --guest idle --control "$T/s"
	wait_socket "$T/s"
	kill -TERM "$(cat "$T/vm.pid")"
	expect_exit vm 143
	grep -q "stopped by signal 15" "$T/vm.log"
}
