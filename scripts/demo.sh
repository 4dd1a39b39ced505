#!/usr/bin/env bash
# The main job, end to end (needs root): two network namespaces joined by a
# veth pair, nfluad in the receiving one, the HTTP blocklist example loaded
# and hooked to NFQUEUE, real curl requests, and what Lua decided. Everything
# it creates is deleted by name at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (network namespaces, iptables)" >&2; exit 1; }
. scripts/lib/sudo-cargo.sh
nflua_find_cargo || { echo "demo.sh: no cargo; install Rust (>= 1.88) with rustup first" >&2; exit 1; }
cargo build --release -q -p nfluad -p nfluactl
nflua_give_back .
bin=$PWD/target/release
a=nflua-demo-a b=nflua-demo-b
www=$(mktemp -d /tmp/nflua-demo.XXXXXX)
log=$www/nfluad.log
cleanup() {
	[ -n "${server:-}" ] && kill "$server" 2>/dev/null
	[ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null
	rm -rf "$www"
}
trap cleanup EXIT
inb() { ip netns exec "$b" "$@"; }
ctl() { inb "$bin/nfluactl" "$@"; }

echo "== two namespaces: $a (192.0.2.1) -> $b (192.0.2.2)"
ip netns add "$a"; ip netns add "$b"
ip link add nflua-demo0 netns "$a" type veth peer name nflua-demo1 netns "$b"
ip -n "$a" addr add 192.0.2.1/24 dev nflua-demo0; ip -n "$a" link set nflua-demo0 up
ip -n "$b" addr add 192.0.2.2/24 dev nflua-demo1; ip -n "$b" link set nflua-demo1 up
echo "hello from the real server" > "$www/index.html"
ip netns exec "$b" python3 -m http.server 8080 --bind 192.0.2.2 --directory "$www" >/dev/null 2>&1 &
server=$!

echo "== nfluad in $b, the HTTP blocklist example loaded"
ip netns exec "$b" "$bin/nfluad" 2>"$log" &
daemon=$!
for _ in $(seq 100); do ctl list >/dev/null 2>&1 && break; sleep 0.05; done
ctl create blocklist --instructions 100000 --memory 262144
ctl execute blocklist examples/http-blocklist/filter.lua
ctl send blocklist "add blocked.example" --wait 200
rules=$(ctl hook add --queue 0 --state blocklist --function filter --mode target --tcp-payload \
	--rule "-p tcp --dport 8080")
echo "$rules"
echo "== adding the printed iptables rules in $b (accounting, then the queue rule)"
while read -r rule; do
	inb iptables $rule
done < <(grep '^iptables ' <<<"$rules" | cut -d' ' -f2-)
for _ in $(seq 50); do ip netns exec "$a" curl -s -m 1 -o /dev/null http://192.0.2.2:8080/ && break; sleep 0.1; done

echo "== curl -H 'Host: allowed.example' http://192.0.2.2:8080/"
ip netns exec "$a" curl -s -m 5 -H "Host: allowed.example" http://192.0.2.2:8080/
echo "== curl -H 'Host: blocked.example' http://192.0.2.2:8080/"
ip netns exec "$a" curl -s -m 5 -H "Host: blocked.example" http://192.0.2.2:8080/
echo "== hooks and states"
ctl hook list
ctl list
ctl hook del 0
kill -TERM "$daemon"; wait "$daemon" || true; daemon=
echo "== daemon log"
sed -e 's/^/   /' -e 's/\x1b\[[0-9;]*m//g' "$log"
