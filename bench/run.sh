#!/usr/bin/env bash
# Builds release binaries and prints the benchmark table (medians of 3 runs
# and ratios against baselines measured in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p nfluad -p nflua-bench
exec target/release/nflua-bench "$@"
