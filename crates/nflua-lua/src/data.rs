//! The `data` module: `nflua-data`'s LuaData buffer, the same type the engine hands to
//! callbacks, so buffers and offsets behave alike on both sides of the socket.

use mlua::{Lua, Result as LuaResult, Table, Value};

/// Builds the `data` table (entry point `luaopen_data`).
pub(crate) fn open(lua: &Lua) -> LuaResult<Table> {
    nflua_data::open(lua)
}

/// Registers our `data` table as `package.loaded.data` unless some `data` is loaded already,
/// so that `require "nflua"` followed by `require "data"` gives buffers `data:send` accepts
/// without a second library on the path.
pub(crate) fn ensure_loaded(lua: &Lua) -> LuaResult<()> {
    // `package.loaded` lives in the registry as `_LOADED` even if `package` was removed.
    let loaded = lua.named_registry_value::<Option<Table>>("_LOADED")?;
    let present = match &loaded {
        Some(table) => !matches!(table.raw_get::<Value>("data")?, Value::Nil),
        None => false,
    };
    if !present {
        lua.register_module("data", open(lua)?)?;
    }
    Ok(())
}
