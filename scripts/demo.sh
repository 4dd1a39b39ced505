#!/usr/bin/env bash
# The main job, end to end: build, start nfluad on a private port, create a
# state, load a real Lua program into it, talk to it over the data channel,
# list the states, and stop the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p nfluad -p nfluactl
bin=target/release
export NFLUA_PORT=$((0x30000000 + $$))
log=$(mktemp /tmp/nfluad-demo.XXXXXX.log)
"$bin/nfluad" --port "$NFLUA_PORT" 2>"$log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do "$bin/nfluactl" list >/dev/null 2>&1 && break; sleep 0.05; done

echo "== create state 'counter' and load examples/demo/counter.lua"
"$bin/nfluactl" create counter --instructions 100000 --memory 131072
"$bin/nfluactl" execute counter examples/demo/counter.lua
echo "== send words to it over the data channel; it answers with running counts"
for word in apple pear apple fig apple; do "$bin/nfluactl" send counter "$word"; done
echo "== a message that makes the Lua code fail is reported, not lost"
"$bin/nfluactl" send counter "" || true
echo "== states"
"$bin/nfluactl" list
"$bin/nfluactl" destroy counter
kill -TERM $daemon; wait $daemon || true
echo "== daemon log"
sed -e 's/^/   /' "$log"
