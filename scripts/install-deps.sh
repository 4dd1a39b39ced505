#!/usr/bin/env bash
# Installs the system packages nflua needs on Debian: the Lua 5.4 interpreter
# and busted (Lua tests), iptables and iproute2 (packet tests and demo),
# util-linux's setpriv (authorization tests). Rust comes from rustup (>= 1.88).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/sudo-cargo.sh
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq lua5.4 liblua5.4-dev lua-busted iptables iproute2 util-linux pkg-config curl python3 openssl tcpdump sudo >/dev/null
nflua_find_cargo || { echo "install Rust (>= 1.88) with rustup first" >&2; exit 1; }
cargo --version
