//! Lua pattern matching that the instruction limit reaches: `string.find`, `string.match`,
//! `string.gmatch` and `string.gsub`, replacing the stock ones in every state.
//!
//! The stock matcher runs without a hook and backtracks freely, so one call
//! (`string.find(string.rep('a', 400), '.-.-.-.-b')`) can take hours whatever `maxruns` says.
//! These give the same results and errors as Lua 5.4.9's (property-tested against them in
//! `tests/patterns.rs`) and charge their work to the entry's budget while they do it.
//!
//! # Cost model: one instruction per matcher step and per byte produced
//!
//! - A matcher step (`matcher.rs`): each pattern item tried at a subject position (every
//!   backtrack and recursion included), each character a `*`/`+`/`-` item tests, each byte `%b`
//!   scans or a back-reference compares.
//! - `string.find` with a plain pattern (`plain` set, or no special characters): one per
//!   subject byte skipped looking for the pattern's first byte, and the pattern's length per
//!   place that byte is found (charged before comparing there).
//! - One per byte of every string capture returned (or passed to a replacement function or
//!   used as a table key), and per byte `gsub` writes to its result (copied text, replacement
//!   strings and values); a `gsub` that changes nothing pays one per byte it skipped.
//!
//! Steps are charged every [`matcher::BATCH`] (1024) steps and the remainder before the call
//! returns, raises, or runs Lua code, so a call stops less than one batch past the budget (or
//! one plain pattern's length, charged before it is compared) and never keeps unpaid work.
//!
//! Layout: `matcher` (the pure matcher and its step counting), `functions` (the four Lua
//! functions, raw C functions for speed and for stock-identical argument errors).

mod functions;
pub(crate) mod matcher;

use mlua::{ffi, Lua, Table};

/// Puts the four functions into the `string` table (which is also the strings' `__index`, so
/// method calls use them too).
#[allow(unsafe_code)] // registers the C functions of `functions`
pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    let string: Table = lua.globals().raw_get("string")?;
    let functions: [(&str, ffi::lua_CFunction); 4] = [
        ("find", functions::find),
        ("match", functions::match_),
        ("gmatch", functions::gmatch),
        ("gsub", functions::gsub),
    ];
    for (name, function) in functions {
        // SAFETY: see `functions`' module doc.
        string.raw_set(name, unsafe { lua.create_c_function(function)? })?;
    }
    Ok(())
}
