//! `timer.create(msecs, callback)` / `timer.destroy(t)`.
//!
//! Not available yet: timers need the daemon's event loop to call back into the state. When they
//! come, the state's `Context` will carry a handle to the daemon's timer wheel; `create` will
//! keep the callback in the registry and `destroy` cancel it, and a timer firing will go through
//! `State`'s entry door like every other call, under the state's limits.

use mlua::{MultiValue, Table};

use super::{error, Lib};

pub(crate) fn open(lib: &Lib) -> mlua::Result<Table> {
    let timer = lib.lua.create_table_with_capacity(0, 2)?;
    for name in ["create", "destroy"] {
        let unavailable = lib.function(|_, _: MultiValue| -> mlua::Result<()> {
            Err(error("timer: not available yet"))
        })?;
        timer.raw_set(name, unavailable)?;
    }
    Ok(timer)
}
