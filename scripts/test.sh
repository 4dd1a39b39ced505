#!/usr/bin/env bash
# Runs every test of the project: lints, Rust unit/property/integration tests
# (real nfluad processes on private Netlink ports), and the Lua suite.
# Tests that need root skip loudly without it, unless NFLUA_REQUIRE_PRIV=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/sudo-cargo.sh
nflua_find_cargo || { echo "test.sh: no cargo; install Rust (>= 1.88) with rustup first" >&2; exit 1; }
log=$(mktemp)
# Under sudo, what the run built as root in the checkout goes back to the user.
trap 'rm -f "$log"; nflua_give_back .' EXIT
cargo fmt --all --check
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --release --manifest-path crates/nflua-lua/Cargo.toml -- -D warnings
# The Lua suite builds the Lua modules the Rust packet tests use too (examples/dns-logger).
bash tests/lua/run.sh 2>&1 | tee "$log"
cargo test --workspace 2>&1 | tee -a "$log"
# The README's first command as a new user runs it (sudo, Rust from rustup in their home).
bash scripts/check-sudo-path.sh 2>&1 | tee -a "$log"
# One closing line over both runners (cargo's last line is often a doc-test run of 0 tests).
awk '/^test result:/ { p += $4; f += $6 } /^(lua|sudo-path): [0-9]+ passed/ { p += $2; f += $4 }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
