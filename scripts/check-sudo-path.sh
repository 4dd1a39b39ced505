#!/usr/bin/env bash
# Checks the README's first command the way a new user runs it: a non-root user with Rust from
# rustup in their home runs `sudo scripts/install-deps.sh && sudo scripts/demo.sh` in their own
# checkout, through sudo with Debian's default secure_path (which leaves ~/.cargo/bin out).
# Needs root (it makes that user, with a copy of this machine's toolchain, and a sudoers entry,
# all deleted at the end); without root it skips, loudly, unless NFLUA_REQUIRE_PRIV=1.
# Prints "sudo-path: 1 passed, 0 failed" when both commands worked and left nothing owned by
# root in the user's home.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
	[ "${NFLUA_REQUIRE_PRIV:-}" = 1 ] && { echo "sudo-path: NFLUA_REQUIRE_PRIV=1 but not root" >&2; exit 1; }
	echo "sudo-path: SKIPPED (needs root: run the tests with sudo)" >&2
	exit 0
fi
command -v sudo >/dev/null || { echo "sudo-path: sudo is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }
grep -qs '^Defaults.*secure_path' /etc/sudoers || { echo "sudo-path: /etc/sudoers sets no secure_path" >&2; exit 1; }
user=nflua-sudo-$$
home=/home/$user
cleanup() {
	rm -f "/etc/sudoers.d/$user"
	pkill -u "$user" 2>/dev/null || true
	userdel -r "$user" 2>/dev/null || rm -rf "$home"
}
trap cleanup EXIT
useradd -m -s /bin/bash "$user"

# Rust as rustup installs it for a user: the proxies in ~/.cargo/bin and the active toolchain
# under ~/.rustup, copied from this machine's (no download; its documentation left out).
toolchain=$(rustup show active-toolchain | cut -d' ' -f1)
src=$(rustup run "$toolchain" rustc --print sysroot)
mkdir -p "$home/.rustup/toolchains/$toolchain" "$home/.cargo/bin"
for part in bin etc lib libexec; do
	[ -e "$src/$part" ] && cp -a "$src/$part" "$home/.rustup/toolchains/$toolchain/"
done
printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
	"$toolchain" > "$home/.rustup/settings.toml"
cp "$(command -v rustup)" "$home/.cargo/bin/rustup"
for proxy in cargo rustc rustdoc; do ln -s rustup "$home/.cargo/bin/$proxy"; done
echo 'export PATH="$HOME/.cargo/bin:$PATH"' >> "$home/.profile"
git clone -q "$repo" "$home/nflua"
chown -R "$user:" "$home"
echo "$user ALL=(ALL) NOPASSWD: ALL" > "/etc/sudoers.d/$user"
chmod 440 "/etc/sudoers.d/$user"

as_user() { runuser -l "$user" -c "cd ~/nflua && $1"; }
as_user 'command -v cargo >/dev/null && ! sudo sh -c "command -v cargo" >/dev/null' ||
	{ echo "sudo-path: the setup is wrong: cargo must be on the user's PATH and not on sudo's" >&2; exit 1; }
out=$(mktemp)
if ! as_user 'sudo scripts/install-deps.sh && sudo scripts/demo.sh' >"$out" 2>&1; then
	cat "$out" >&2; rm -f "$out"
	echo "sudo-path: 0 passed, 1 failed (the README's first command failed as a sudo user)"
	exit 1
fi
ok=1
grep -q 'hello from the real server' "$out" || { echo "sudo-path: the demo did not show the allowed page" >&2; ok=0; }
grep -q 'blocked by nflua: blocked.example' "$out" || { echo "sudo-path: the demo did not show the block page" >&2; ok=0; }
left=$(find "$home" -user 0 -print -quit)
[ -z "$left" ] || { echo "sudo-path: root-owned files left in the user's home, e.g. $left" >&2; ok=0; }
[ "$ok" = 1 ] || { cat "$out" >&2; rm -f "$out"; echo "sudo-path: 0 passed, 1 failed"; exit 1; }
rm -f "$out"
echo "sudo-path: 1 passed, 0 failed"
