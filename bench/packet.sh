#!/usr/bin/env bash
# Packet-path benchmark: UDP over a veth pair between two network namespaces
# this script creates, through
#   (a) no queue, (b) the raw NFQUEUE accept loop (batched verdicts, GSO),
#   (b1) the same with one verdict per packet, (c) nfluad with a trivial Lua
#   match, (c') nfluad with a target hook reading 2 header bytes, (d) nfluad
#   with a header-reading filter, (e) (c) on two balanced queues,
# at 64- and 1400-byte payloads, unpaced and at paced rates. nfluad paths use
# the iptables rules `hook add` prints (fail-open, with the accounting rule),
# and every run reports what nfluad let pass unevaluated. Prints per payload
# size a table (medians of 5 unpaced runs, zero-loss limits), the ratios c/b,
# d/b, e/c, packets decided per CPU second of the whole consumer process
# (c/b, c'/b, d/b unpaced and at 150k pps, target 0.8), unevaluated counts at
# each paced rate (0 wherever b is lossless), and the consumers' CPU with no
# traffic and at 10k pps (nfluad <= b's + 10 %). Unpaced runs go in rounds,
# one run of every path per round (each followed by a 10k pps run on the same
# path), and ratios are medians of the per-round ratios. Paced rates up to 250k are measured for every path; above, a series
# stops at its first loss.
#
# Usage (as root):  bench/packet.sh [--quick] [options of nflua-bench-packet]
#   --quick                   ~1-minute smoke run (1 run of 1 s, 150k and 250k paced)
#   --configs a,b,b1,c,c2,d,e only these paths (c2 is c')
#   --sizes 64,1400           payload sizes in bytes
#   --rates R,R,...           paced rates (packets/s) for 64-byte payloads
#   --rates-large R,R,...     paced rates for larger payloads
#   --seconds S --repeats N   length and number of unpaced runs (default 2 s, 5)
#   --idle-seconds S          length of the no-traffic CPU measurement (default 3)
# The full run takes about 9 minutes. Namespaces are named
# nflua-bench-<pid>-a/-b (192.0.2.1 and .11-.17 in a, 192.0.2.2 in b) and are
# deleted at the end, also on failure or ctrl-c.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p nflua-bench -p nfluad -p nfluactl

# The kernel's --queue-balance hashes addresses, not ports: several sources
# give (e) a chance to use both queues. All paths get the same traffic.
SOURCES="192.0.2.1,192.0.2.11,192.0.2.12,192.0.2.13,192.0.2.14,192.0.2.15,192.0.2.16,192.0.2.17"

. bench/netns-pair.sh
netns_pair bench
for src in ${SOURCES//,/ }; do
    ip -n "$NS_A" addr add "$src/24" dev veth0
done
# Resolve the neighbours once so that the first run does not pay for ARP.
ip netns exec "$NS_A" ip neigh replace 192.0.2.2 lladdr "$(ip -n "$NS_B" -br link show veth0 | awk '{print $3}')" dev veth0
for src in ${SOURCES//,/ }; do
    ip netns exec "$NS_B" ip neigh replace "$src" lladdr "$(ip -n "$NS_A" -br link show veth0 | awk '{print $3}')" dev veth0
done

target/release/nflua-bench-packet --ns-a "$NS_A" --ns-b "$NS_B" --sources "$SOURCES" "$@"
