//! How a Lua-facing function fails, rendered once for every function of the module.
//!
//! * An operation that fails (the daemon said no, the socket is busy, nfluad is not running)
//!   returns `nil, message, errno`: positive errno, the daemon's text when it sent one, as
//!   Lua's `io` library does.
//! * A broken contract (wrong argument type, closed socket, port out of range, a buffer too
//!   small) raises a Lua error whose value is a plain string, located at the caller's line.
//!
//! mlua raises callback errors as userdata carrying a Rust traceback; `pcall` users and test
//! frameworks compare error values with strings, and the C module this replaces raised strings.
//! So every function is a Rust callback answering `true, results...` or `false, message`, behind
//! a three-line Lua wrapper ([`Binder`]) that turns the second form into `error(message, 2)`.

use mlua::{Function, IntoLuaMulti, Lua, MultiValue, Result as LuaResult, Value};
use nflua_client::ClientError;

use crate::args::Args;

/// Why a call produced no results.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The caller broke the contract; raised as a Lua error with this text.
    Contract(String),
    /// mlua itself failed (memory, a Lua value it could not build); propagated unchanged.
    Lua(mlua::Error),
}

impl From<mlua::Error> for Fail {
    fn from(err: mlua::Error) -> Fail {
        Fail::Lua(err)
    }
}

/// What a Lua-facing function returns to [`Binder`].
pub(crate) type Outcome = Result<MultiValue, Fail>;

/// A Lua-facing function: its arguments in, its results (or why none) out.
pub(crate) type Callback = fn(&Lua, &Args) -> Outcome;

/// Results as they go back to Lua.
pub(crate) fn values(lua: &Lua, results: impl IntoLuaMulti) -> Outcome {
    Ok(results.into_lua_multi(lua)?)
}

/// `nil, message, errno`: the one place a [`ClientError`] becomes Lua values.
pub(crate) fn failure(lua: &Lua, err: &ClientError) -> Outcome {
    values(lua, (Value::Nil, err.to_string(), err.errno()))
}

/// `true`, or `nil, message, errno`.
pub(crate) fn status(lua: &Lua, result: Result<(), ClientError>) -> Outcome {
    match result {
        Ok(()) => values(lua, true),
        Err(err) => failure(lua, &err),
    }
}

/// `nil, "pending"`: nothing complete to return yet (a reply in parts, or a non-blocking socket
/// with nothing queued). Not an error, so no errno, as the original module.
pub(crate) fn pending(lua: &Lua) -> Outcome {
    values(lua, (Value::Nil, "pending"))
}

/// Wraps a raw callback so that `false, message` is raised. `check` is reached by a tail call,
/// so level 2 is the line that called the public function.
const WRAPPER: &str = r#"
local error = error
local function check(ok, ...)
  if ok then return ... end
  error((...), 2)
end
return function(raw)
  return function(...) return check(raw(...)) end
end
"#;

/// Makes Lua functions out of [`Callback`]s.
pub(crate) struct Binder {
    wrap: Function,
}

impl Binder {
    pub(crate) fn new(lua: &Lua) -> LuaResult<Binder> {
        let wrap = lua.load(WRAPPER).set_name("=nflua").eval::<Function>()?;
        Ok(Binder { wrap })
    }

    /// A module function `name` (arguments numbered from 1 in messages).
    pub(crate) fn function(&self, lua: &Lua, name: &'static str, f: Callback) -> LuaResult<Function> {
        self.bind(lua, name, false, f)
    }

    /// A method `name` (argument 1 is `self`; the rest are numbered from 1, as Lua does).
    pub(crate) fn method(&self, lua: &Lua, name: &'static str, f: Callback) -> LuaResult<Function> {
        self.bind(lua, name, true, f)
    }

    fn bind(&self, lua: &Lua, name: &'static str, method: bool, f: Callback) -> LuaResult<Function> {
        let raw = lua.create_function(move |lua, values: MultiValue| {
            let args = Args::new(name, method, values);
            match f(lua, &args) {
                Ok(mut results) => {
                    results.push_front(Value::Boolean(true));
                    Ok(results)
                }
                Err(Fail::Contract(message)) => (false, message).into_lua_multi(lua),
                Err(Fail::Lua(err)) => Err(err),
            }
        })?;
        self.wrap.call(raw)
    }
}
