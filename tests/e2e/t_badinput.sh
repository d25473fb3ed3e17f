# Every kind of bad input gets one clear line and the right exit status.

one_line_error() {
	[ "$(wc -l <"$T/out")" = 1 ] || { cat "$T/out" >&2; fail "expected a one-line error"; }
	expect_output "$1"
}

test_bad_memory_sizes() {
	for bad in abc 1.5G 12Q -1 ""; do
		expect_status 2 ferry run --mem "$bad"
		one_line_error "^ferry run: invalid --mem '.*': expected a size such as 512M or 4G$"
	done
	expect_status 2 ferry run --mem 16M
	one_line_error "out of range: 32M to 64G"
	expect_status 2 ferry run --mem 128G
	one_line_error "out of range"
	expect_status 2 ferry run --mem 33M
	one_line_error "not a multiple of 2M"
}

test_bad_vcpu_counts() {
	expect_status 2 ferry run --cpus 0
	one_line_error "^ferry run: --cpus 0 is out of range: 1 to 64$"
	expect_status 2 ferry run --cpus 65
	one_line_error "out of range"
	expect_status 2 ferry run --cpus two
	one_line_error "invalid --cpus 'two'"
}

test_unknown_guest_program() {
	expect_status 2 ferry run --guest nosuch
	one_line_error "^ferry run: unknown guest program 'nosuch' \(available: .*hello.*\)$"
	expect_status 2 ferry run --guest 'bad name'
	one_line_error "not a guest program name"
}

test_bad_guest_arguments() {
	expect_status 2 ferry run --guest dirty --guest-arg colour=blue
	one_line_error "guest program 'dirty' takes no argument 'colour' \(it takes: wss,rate"
	expect_status 2 ferry run --guest dirty --guest-arg wss
	one_line_error "is not KEY=VALUE"
	expect_status 2 ferry run --guest dirty --guest-arg wss=1M --guest-arg wss=2M
	one_line_error "given twice"
	# Values are checked by the program itself, which exits 2.
	expect_status 2 ferry run --guest dirty --guest-arg rate=fast
	expect_output "^dirty: rate: 'fast' is neither MB/s nor 'unlimited'"
	expect_status 2 ferry run --guest dirty --guest-arg wss=1T
	expect_output "^dirty: wss: .* does not fit"
}

test_bad_options_and_commands() {
	expect_status 2 ferry run --bogus
	one_line_error "option '--bogus' is unknown"
	expect_status 2 ferry run extra
	one_line_error "unexpected argument 'extra'"
	expect_status 2 ferry frobnicate
	expect_output "unknown command 'frobnicate'"
	expect_status 2 ferry
	expect_status 2 ferry ctl
	expect_status 2 ferry ctl /tmp/x status notkv
}

test_missing_kvm_device() {
	# A private mount namespace whose /dev lacks kvm.
	expect_status 1 unshare --mount sh -c "mount -t tmpfs none /dev && exec $FERRY run --guest hello"
	one_line_error "^ferry run: cannot open /dev/kvm \(is KVM available to this user\?\): No such file or directory$"
}

test_control_socket_problems() {
	: >"$T/plainfile"
	expect_status 1 ferry run --guest hello --control "$T/plainfile"
	one_line_error "exists and is not a socket"
	expect_status 1 ferry run --guest hello --control "$T/no/such/dir/sock"
	one_line_error "cannot listen on control socket"
	expect_status 1 ferry ctl "$T/absent.sock" status
	one_line_error "^ferry ctl: cannot connect to control socket .*: No such file or directory$"
	# A socket in use by a live ferry is refused; a stale one is replaced.
	start_ferry a run --guest idle --control "$T/s"
	wait_socket "$T/s"
	expect_status 1 ferry run --guest hello --control "$T/s"
	one_line_error "is in use by another process"
	kill -9 "$(cat "$T/a.pid")"
	wait_exit a
	expect_status 0 ferry run --guest hello --control "$T/s"
}
