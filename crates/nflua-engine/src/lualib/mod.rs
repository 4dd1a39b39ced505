//! The built-in modules `require` can load, one file per module. Each `open` builds the module
//! table; nothing is built before a script asks for it, which keeps an idle state small.

use std::sync::Arc;

use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua, MaybeSend, MultiValue, Table, Value};

use crate::state::Context;
use crate::traceback;

mod base64;
mod dissect;
mod json;
mod nf;
mod packet;
mod timer;

/// Names `require` resolves, in the order the SPEC lists them, then `dissect` (protocol
/// dissectors, added for stream filters).
pub const MODULES: [&str; 6] = ["nf", "timer", "data", "json", "base64", "dissect"];

/// What a module needs to build its functions: the Lua, the sandbox's `wrap`, and the state.
pub(crate) struct Lib<'a> {
    pub(crate) lua: &'a Lua,
    wrap: Function,
    pub(crate) ctx: &'a Arc<Context>,
}

impl<'a> Lib<'a> {
    pub(crate) fn new(lua: &'a Lua, wrap: Function, ctx: &'a Arc<Context>) -> Lib<'a> {
        Lib { lua, wrap, ctx }
    }

    /// A library function as scripts see it: an error `f` returns (including a bad argument)
    /// reaches Lua as a plain string at the caller's position, as from a C library function,
    /// instead of as mlua's error userdata.
    pub(crate) fn function<A, R, F>(&self, f: F) -> mlua::Result<Function>
    where
        A: FromLuaMulti,
        R: IntoLuaMulti,
        F: Fn(&Lua, A) -> mlua::Result<R> + MaybeSend + 'static,
    {
        let raw = self.lua.create_function(move |lua, args: MultiValue| {
            let outcome = A::from_lua_multi(args, lua).and_then(|args| f(lua, args));
            let mut answer = match outcome {
                Ok(results) => results.into_lua_multi(lua)?,
                Err(e) => {
                    let message = lua.create_string(traceback::error_message(&e))?;
                    return Ok(MultiValue::from_vec(vec![Value::Boolean(false), Value::String(message)]));
                }
            };
            answer.push_front(Value::Boolean(true));
            Ok(answer)
        })?;
        self.wrap.call(raw)
    }
}

/// Builds module `name`, or `None` when it is not a built-in.
pub(crate) fn open(lib: &Lib, name: &str) -> mlua::Result<Option<Table>> {
    let module = match name {
        "nf" => nf::open(lib)?,
        "timer" => timer::open(lib)?,
        // nflua-data's own functions, which raise plain strings themselves and count buffers and
        // work through the state's meter (see `memory.rs`).
        "data" => nflua_data::open(lib.lua)?,
        "json" => json::open(lib)?,
        "base64" => base64::open(lib)?,
        "dissect" => dissect::open(lib)?,
        _ => return Ok(None),
    };
    Ok(Some(module))
}

/// Shorthand for a library error with `message`.
pub(crate) fn error(message: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(message.into())
}

/// Lua's own wording for a bad argument: "bad argument #2 to 'create' (function expected, got
/// nil)".
pub(crate) fn bad_argument(position: usize, function: &str, expected: &str, got: &Value) -> mlua::Error {
    error(format!("bad argument #{position} to '{function}' ({expected} expected, got {})", type_name(got)))
}

/// The type name Lua's `type` reports (integers are "number", light userdata "userdata").
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "number",
        Value::LightUserData(_) => "userdata",
        other => other.type_name(),
    }
}

/// Argument `position` of `function` as `luaL_checkinteger` reads it: an integer, a float with
/// an exact integer value, or a string Lua converts to one; otherwise Lua's own message.
pub(crate) fn check_integer(lua: &Lua, value: &Value, position: usize, function: &str) -> mlua::Result<i64> {
    match value {
        Value::Integer(n) => Ok(*n),
        Value::Number(_) | Value::String(_) => match lua.coerce_integer(value.clone())? {
            Some(n) => Ok(n),
            None if lua.coerce_number(value.clone())?.is_some() => Err(error(format!(
                "bad argument #{position} to '{function}' (number has no integer representation)"
            ))),
            None => Err(bad_argument(position, function, "number", value)),
        },
        other => Err(bad_argument(position, function, "number", other)),
    }
}

/// `luaL_optinteger`: nil or absent gives `default`, anything else is [`check_integer`]'s.
pub(crate) fn opt_integer(
    lua: &Lua,
    value: &Value,
    position: usize,
    function: &str,
    default: i64,
) -> mlua::Result<i64> {
    match value {
        Value::Nil => Ok(default),
        other => check_integer(lua, other, position, function),
    }
}

/// [`bytes_of`], numbers included as `luaL_checklstring` takes them (their Lua string form):
/// what the original's `nf.reply` and `packet:send` accepted.
pub(crate) fn bytes_or_number(lua: &Lua, value: &Value) -> Option<mlua::Result<Vec<u8>>> {
    match value {
        Value::Integer(_) | Value::Number(_) => Some(
            lua.coerce_string(value.clone()).map(|s| s.map(|s| s.as_bytes().to_vec()).unwrap_or_default()),
        ),
        other => bytes_of(lua, other),
    }
}

/// The bytes of a string or `data` argument (copied: the caller may hold no buffer lock while it
/// goes on), or `None` for anything else. Copying a `data` buffer charges one instruction per
/// byte, as the `data` module's own copies do.
pub(crate) fn bytes_of(lua: &Lua, value: &Value) -> Option<mlua::Result<Vec<u8>>> {
    match value {
        Value::String(s) => Some(Ok(s.as_bytes().to_vec())),
        other => {
            let data = nflua_data::Data::from_lua_value(lua, other)?;
            let work = u64::try_from(data.len()).unwrap_or(u64::MAX);
            Some(
                crate::limits::charge(lua, work)
                    .and_then(|()| data.to_vec().map_err(|e| error(e.to_string()))),
            )
        }
    }
}
