#!/usr/bin/env bash
# The one benchmark command: control, data-channel, in-process Lua and memory
# figures (medians of 3, ratios against baselines measured in the same run,
# targets marked met/MISSED), then — as root — the packet path (bench/packet.sh) and stream
# hooks (bench/stream.sh).
#
# Usage: sudo bench/run.sh [--quick] [packet.sh options]
#   Without root only the first table is printed. --quick shortens the packet
#   part to a ~1-minute smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p nfluad -p nflua-bench
target/release/nflua-bench
if [ "$(id -u)" -eq 0 ]; then
    bash bench/packet.sh "$@"
    if [ "${1:-}" = "--quick" ]; then
        bash bench/stream.sh --seconds 1 --rounds 1
    else
        bash bench/stream.sh
    fi
else
    echo
    echo "packet path skipped: it needs root for network namespaces (sudo bench/run.sh)"
fi
