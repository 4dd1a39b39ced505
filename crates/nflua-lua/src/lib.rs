//! The `nflua` and `data` Lua modules for the stock `lua5.4` interpreter: control sockets
//! (create, destroy, list, execute), data sockets (send to and receive from states) and the
//! LuaData buffer, talking to `nfluad` over real `NETLINK_USERSOCK` sockets.
//!
//! One shared library exports both `luaopen_nflua` and `luaopen_data`; install it as `nflua.so`
//! with `data.so` a symlink to it, so both names share one copy of the buffer type. `lib.rs`
//! only registers; `nflua` holds the sockets, `data` the buffer module, `error` the single
//! translation of failures to `nil, message, errno`, `args` the argument checks. There are no
//! Rust unit tests: a `module` build leaves the Lua C API to the interpreter, so test binaries
//! cannot link; `tests/lua` drives the real library against a real daemon instead.
//!
//! Never: blocks unless the socket is blocking, raises for a failure the caller could expect
//! (those return `nil, message, errno`), or trusts a reply that is not from the daemon.
//!
//! Dependencies: `mlua` with `lua54` + `module` (links against the interpreter's Lua, which is
//! why this crate has its own workspace: the daemon's `vendored` cannot share a build),
//! `nflua-client` (sockets, protocol, errno mapping) and `nflua-data` (the buffer type).

mod args;
mod data;
mod error;
mod nflua;

use mlua::{Lua, Result as LuaResult, Table};

#[mlua::lua_module(name = "nflua")]
fn open_nflua(lua: &Lua) -> LuaResult<Table> {
    nflua::open(lua)
}

#[mlua::lua_module(name = "data")]
fn open_data(lua: &Lua) -> LuaResult<Table> {
    data::open(lua)
}
