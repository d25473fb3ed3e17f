# Guest programs run with 1, 2 and 4 vCPUs; failures are reported.

test_hello_on_1_2_4_vcpus() {
	for n in 1 2 4; do
		expect_status 0 ferry run --guest hello --cpus "$n"
		expect_lines "$n" "^hello from ferry guest: vCPU [0-9] of $n, 256 MiB"
	done
}

test_idle_on_1_2_4_vcpus() {
	for n in 1 2 4; do
		expect_status 0 ferry run --guest idle --cpus "$n" --guest-arg seconds=1
		expect_output "^idle: 4096 KiB verified"
	done
}

test_dirty_patterns_on_1_2_4_vcpus() {
	for pattern in increment random stamp; do
		for n in 1 2 4; do
			expect_status 0 ferry run --guest dirty --cpus "$n" --mem 128M \
				--guest-arg pattern=$pattern --guest-arg wss=32M --guest-arg passes=3
			expect_lines "$n" "^dirty: vCPU [0-9] verified [0-9]+ pages \($pattern, [3-9]"
		done
	done
}

test_dirty_rate_limit_is_honoured() {
	# 40 MB/s for 2 s is about 19,500 pages: far fewer than unlimited.
	expect_status 0 ferry run --guest dirty --guest-arg wss=64M \
		--guest-arg rate=40 --guest-arg seconds=2
	local writes
	writes=$(sed -nE 's/.* ([0-9]+) page writes.*/\1/p' "$T/out")
	[ "$writes" -gt 15000 ] && [ "$writes" -lt 25000 ] || fail "$writes page writes at 40 MB/s for 2 s"
}

test_console_file_takes_guest_output() {
	expect_status 0 ferry run --guest hello --cpus 2 --console "$T/console.txt"
	[ ! -s "$T/out" ] || fail "guest output reached stdout"
	[ "$(grep -c '^hello from ferry guest' "$T/console.txt")" = 2 ] || fail "console file incomplete"
}

test_exit_status_is_the_guests() {
	expect_status 7 ferry run --guest crash --guest-arg kind=exit --guest-arg status=7
	expect_output "the guest exited with status 7"
}

test_guest_exceptions_are_reported() {
	expect_status 139 ferry run --guest crash --guest-arg kind=pf
	expect_output "#PF page fault \(vector 14\), error code 0x6, RIP 0x[0-9a-f]+, .*CR2 0,"
	expect_status 139 ferry run --guest crash --guest-arg kind=gp --cpus 2
	expect_output "#GP general protection \(vector 13\), error code 0, RIP 0x"
	expect_status 139 ferry run --guest crash --guest-arg kind=ud
	expect_output "#UD invalid opcode \(vector 6\)"
	expect_status 139 ferry run --guest crash --guest-arg kind=de
	expect_output "#DE divide error \(vector 0\)"
	expect_status 134 ferry run --guest crash --guest-arg kind=assert
	expect_output "guest assertion failed on vCPU 0 at guest/progs/crash.c:[0-9]+: crash: asserting that 0 == 1"
	expect_status 139 ferry run --guest crash --guest-arg kind=badcall
	expect_output "broke the guest call protocol: call block outside guest RAM"
	# vCPU 0's ring-3 stack guard page is [0x202000, 0x203000).
	expect_status 139 ferry run --guest crash --guest-arg kind=stack
	expect_output "#PF page fault \(vector 14\), error code 0x6, .*CR2 0x202[0-9a-f]{3},"
}

test_sixteen_gib_and_eight_vcpus() {
	expect_status 0 ferry run --guest dirty --mem 16G --cpus 8 \
		--guest-arg wss=256M --guest-arg passes=2
	expect_lines 8 "^dirty: vCPU [0-9] verified 8192 pages"
}
