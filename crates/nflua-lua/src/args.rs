//! Argument checks with the messages Lua's auxiliary library gives (`bad argument #2 to
//! 'create' (string expected, got nil)`), so the module reads like a C module to its users.

use mlua::{AnyUserData, MultiValue, UserDataRefMut, Value};

use crate::error::Fail;

/// The arguments of one call.
pub(crate) struct Args {
    func: &'static str,
    /// Methods number their arguments after `self`, as `luaL_argerror` does.
    method: bool,
    values: MultiValue,
}

impl Args {
    pub(crate) fn new(func: &'static str, method: bool, values: MultiValue) -> Args {
        Args { func, method, values }
    }

    /// Argument `pos` (1-based, `self` included); nil when absent.
    pub(crate) fn get(&self, pos: usize) -> &Value {
        self.values.get(pos - 1).unwrap_or(&Value::Nil)
    }

    /// A contract violation about argument `pos`.
    pub(crate) fn bad(&self, pos: usize, message: impl std::fmt::Display) -> Fail {
        let func = self.func;
        Fail::Contract(match (self.method, pos) {
            (true, 1) => format!("calling '{func}' on bad self ({message})"),
            (true, n) => format!("bad argument #{} to '{func}' ({message})", n - 1),
            (false, n) => format!("bad argument #{n} to '{func}' ({message})"),
        })
    }

    pub(crate) fn expected(&self, pos: usize, what: &str) -> Fail {
        self.bad(pos, format!("{what} expected, got {}", type_name(self.get(pos))))
    }

    pub(crate) fn string(&self, pos: usize) -> Result<mlua::LuaString, Fail> {
        match self.get(pos) {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.expected(pos, "string")),
        }
    }

    pub(crate) fn opt_string(&self, pos: usize) -> Result<Option<mlua::LuaString>, Fail> {
        match self.get(pos) {
            Value::Nil => Ok(None),
            _ => self.string(pos).map(Some),
        }
    }

    pub(crate) fn integer(&self, pos: usize) -> Result<i64, Fail> {
        match self.get(pos) {
            Value::Integer(i) => Ok(*i),
            Value::Number(n) => {
                float_to_integer(*n).ok_or_else(|| self.bad(pos, "number has no integer representation"))
            }
            _ => Err(self.expected(pos, "number")),
        }
    }

    pub(crate) fn opt_integer(&self, pos: usize) -> Result<Option<i64>, Fail> {
        match self.get(pos) {
            Value::Nil => Ok(None),
            _ => self.integer(pos).map(Some),
        }
    }

    /// An integer that fits a `u32` wire field.
    pub(crate) fn u32(&self, pos: usize, what: &str) -> Result<u32, Fail> {
        let n = self.integer(pos)?;
        u32::try_from(n).map_err(|_| self.bad(pos, format!("{what} must be in range [0, 2^32), got {n}")))
    }

    pub(crate) fn boolean(&self, pos: usize) -> Result<bool, Fail> {
        match self.get(pos) {
            Value::Boolean(b) => Ok(*b),
            _ => Err(self.expected(pos, "boolean")),
        }
    }

    /// `self` (argument 1) as the userdata type `T`, named `type_name` in messages.
    pub(crate) fn this<T: 'static>(&self, type_name: &str) -> Result<UserDataRefMut<T>, Fail> {
        let wrong = || self.expected(1, type_name);
        match self.get(1) {
            Value::UserData(ud) => borrow_mut::<T>(ud).ok_or_else(wrong),
            _ => Err(wrong()),
        }
    }
}

fn borrow_mut<T: 'static>(ud: &AnyUserData) -> Option<UserDataRefMut<T>> {
    ud.borrow_mut::<T>().ok()
}

/// The exact integer value of a float, as `math.tointeger` gives it.
pub(crate) fn float_to_integer(n: f64) -> Option<i64> {
    // -2^63 <= n < 2^63; both bounds are exact in an f64.
    let limit = -(i64::MIN as f64);
    (n.fract() == 0.0 && n >= -limit && n < limit).then_some(n as i64)
}

/// The name Lua's `type` gives (integers are "number").
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) | Value::Number(_) => "number",
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        Value::LightUserData(_) | Value::UserData(_) => "userdata",
        other => other.type_name(),
    }
}
