#!/usr/bin/env bash
# Stream-hook benchmark: short HTTP connections per second through nfluad's stream hook (the
# shipped HTTP blocklist, offload rules included) and the throughput of one accepted, offloaded
# upload, each against the kernel path without a queue, in one run (target for the upload:
# at least 0.9 of the kernel path). Namespaces nflua-sbench-<pid>-a/-b (192.0.2.1 / .2) are
# created here and deleted at the end, also on failure or ctrl-c.
#
# Usage (as root): bench/stream.sh [--seconds S] [--rounds N] [--clients K]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p nflua-bench -p nfluad -p nfluactl

NS_A="nflua-sbench-$$-a"
NS_B="nflua-sbench-$$-b"
cleanup() {
    trap - EXIT INT TERM
    for ns in "$NS_A" "$NS_B"; do
        if ip netns list | grep -qw "$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
            ip netns del "$ns" || true
        fi
    done
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add veth0 netns "$NS_A" type veth peer name veth0 netns "$NS_B"
ip -n "$NS_A" addr add 192.0.2.1/24 dev veth0
ip -n "$NS_B" addr add 192.0.2.2/24 dev veth0
for ns in "$NS_A" "$NS_B"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set veth0 up
done

target/release/nflua-bench-stream --ns-a "$NS_A" --ns-b "$NS_B" "$@"
