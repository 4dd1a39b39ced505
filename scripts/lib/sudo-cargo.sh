# Sourced by the scripts the README runs with sudo: finds cargo when it is only in the invoking
# user's rustup (sudo's secure_path leaves ~/.cargo/bin out of PATH), and gives that user back
# what cargo creates as root (the build in target/, crates it fetched into their ~/.cargo), so
# their own cargo keeps working afterwards.
#
#   nflua_find_cargo    cargo on PATH already, or the sudo user's; fails (status 1) without one
#   nflua_give_back     chown to the sudo user what root created in target/ and their rustup dirs

nflua_give_back_to=
nflua_give_back_dirs=()

nflua_find_cargo() {
	command -v cargo >/dev/null 2>&1 && return 0
	[ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] || return 1
	local home
	home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
	[ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ] || return 1
	export PATH="$home/.cargo/bin:$PATH"
	export CARGO_HOME="${CARGO_HOME:-$home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
	nflua_give_back_to="$SUDO_UID:$SUDO_GID"
	nflua_give_back_dirs=("$CARGO_HOME" "$RUSTUP_HOME")
	echo "using $SUDO_USER's Rust toolchain ($home/.cargo/bin/cargo)" >&2
}

nflua_give_back() {
	[ -n "$nflua_give_back_to" ] || return 0
	# Only what root owns: the user's own files stay as they are.
	chown -R --from=0:0 "$nflua_give_back_to" "$@" "${nflua_give_back_dirs[@]}" 2>/dev/null || true
}
