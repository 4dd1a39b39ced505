#!/usr/bin/env bash
# Runs the Lua module's test suite: builds the cdylib (release) and nfluad, exposes the library
# as nflua.so + data.so, and runs busted under lua5.4 against a real daemon on a private port.
#
#   tests/lua/run.sh [busted args...]
#
# Environment: NFLUAD (use this daemon binary, skip building it), NFLUA_TEST_PORT (port id to
# use instead of a random one). Ends with "lua: N passed, M failed"; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

cargo build --release --manifest-path crates/nflua-lua/Cargo.toml || exit 2
if [[ -z "${NFLUAD:-}" ]]; then
	cargo build -p nfluad || exit 2
	export NFLUAD="$root/target/debug/nfluad"
fi

# require "nflua" looks for nflua.so; data.so must be the same file (a link, not a copy), so
# both names share one copy of the buffer type.
libdir="$root/crates/nflua-lua/target/lua"
mkdir -p "$libdir"
ln -sf ../release/libnflua.so "$libdir/nflua.so"
ln -sf ../release/libnflua.so "$libdir/data.so"
export LUA_CPATH="$libdir/?.so;;"

# Lua cannot set environment variables, so the daemon's port is chosen here: the module finds
# its daemon through NFLUA_PORT, the helper starts nfluad on it.
export NFLUA_PORT="${NFLUA_TEST_PORT:-$(( 0x20000000 + (RANDOM << 12 | RANDOM % 4096) ))}"
export NFLUA_ROOT="$root"
# Replies are trusted from root or the daemon's uid: here, ours.
export NFLUA_DAEMON_UID="$(id -u)"
export NFLUA_TEST_DIR="$(mktemp -d)"
cleanup() {
	# A crashed busted may leave its daemon behind.
	for pidfile in "$NFLUA_TEST_DIR"/*.pid; do
		[[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null
	done
	rm -rf "$NFLUA_TEST_DIR"
}
trap cleanup EXIT

out="$NFLUA_TEST_DIR/busted.out"
busted --lua=lua5.4 --lpath="$root/tests/lua/?.lua" "$@" tests/lua 2>&1 | tee "$out"
status=${PIPESTATUS[0]}

# The default output ends "N successes / N failures / N errors / N pending : T seconds" (maybe
# coloured); -o gtest ends with "[  PASSED  ] N tests." and "[  FAILED  ] N tests, listed below:".
plain=$(sed 's/\x1b\[[0-9;]*m//g' "$out")
count() { grep -oE "$1" <<<"$plain" | tail -n 1 | grep -oE '[0-9]+' | head -n 1; }
if grep -qE '[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors?' <<<"$plain"; then
	passed=$(count '[0-9]+ successes?')
	failed=$(( $(count '[0-9]+ failures?') + $(count '[0-9]+ errors? /') ))
elif grep -qE '^\[  PASSED  \] [0-9]+ tests?' <<<"$plain"; then
	passed=$(count '^\[  PASSED  \] [0-9]+')
	failures=$(count '^\[  FAILED  \] [0-9]+')
	errors=$(count '^\[  ERROR   \] [0-9]+')
	failed=$(( ${failures:-0} + ${errors:-0} ))
else
	echo "run.sh: no busted summary found" >&2
	passed=0
	failed=1
fi
if (( status != 0 )); then
	for log in "$NFLUA_TEST_DIR"/nfluad-*.log; do
		[[ -s "$log" ]] && { echo "--- $log (last lines)"; tail -n 20 "$log"; }
	done
	(( failed == 0 )) && failed=1
fi
echo "lua: $passed passed, $failed failed"
(( status == 0 && failed == 0 ))
