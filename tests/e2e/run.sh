#!/usr/bin/env bash
# Runs every end-to-end test (tests/e2e/t_*.sh, functions test_*), each in
# its own subshell and scratch directory.  Prints one line per test and a
# summary; exits non-zero if any failed.  ONLY=pattern runs a subset;
# E2E_TRACE=1 traces each command of a test into its log.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.sh

[ -x "$FERRY" ] || { echo "e2e: $FERRY not built" >&2; exit 1; }
pass=0
failed=()
start=$(date +%s)
for file in tests/e2e/t_*.sh; do
	for fn in $(bash -c ". tests/e2e/lib.sh; . $file; declare -F" | awk '{print $3}' | grep '^test_'); do
		name="$(basename "$file" .sh)/$fn"
		[[ "$name" =~ ${ONLY:-.} ]] || continue
		T=$(mktemp -d /tmp/ferry-e2e.XXXXXX)
		t0=$(date +%s%N)
		export T
		# One test may take E2E_TEST_TIMEOUT seconds (default 300) at most.
		timeout -k 5 "${E2E_TEST_TIMEOUT:-300}" bash -c '
			set -eu
			if [ -n "${E2E_TRACE:-}" ]; then
				exec 9>>"$T/trace.log"
				BASH_XTRACEFD=9
				set -x
			fi
			# Leftovers of a failed test may be stopped: SIGKILL works anyway.
			trap "jobs -p | xargs -r kill -9 2>/dev/null || true; wait 2>/dev/null || true" EXIT
			. tests/e2e/lib.sh
			. "$1"
			"$2"' _ "$file" "$fn" >"$T/test.log" 2>&1
		rc=$?
		# Whatever the test started and left behind names its directory.
		pkill -9 -f "$T/" 2>/dev/null || true
		ms=$(( ($(date +%s%N) - t0) / 1000000 ))
		secs=$(printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)))
		if [ $rc -eq 0 ]; then
			pass=$((pass + 1))
			printf '  ok    %-50s %5ss\n' "$name" "$secs"
			rm -rf "$T"
		else
			failed+=("$name")
			printf '  FAIL  %-50s %5ss (status %d%s)\n' "$name" "$secs" "$rc" \
				"$([ "$rc" = 124 ] || [ "$rc" = 137 ] && echo ": timed out")"
			sed 's/^/        /' "$T/test.log"
			for log in "$T"/*.log; do
				[ "$log" = "$T/test.log" ] && continue
				[ -f "$log" ] || continue
				echo "        --- $(basename "$log")"
				tail -n 20 "$log" | sed 's/^/        /'
			done
			rm -rf "$T"
		fi
	done
done
echo "e2e: ${pass} passed, ${#failed[@]} failed in $(( $(date +%s) - start ))s"
[ ${#failed[@]} -eq 0 ]
