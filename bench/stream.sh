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

. bench/netns-pair.sh
netns_pair sbench
ip -n "$NS_A" addr add 192.0.2.1/24 dev veth0

target/release/nflua-bench-stream --ns-a "$NS_A" --ns-b "$NS_B" "$@"
