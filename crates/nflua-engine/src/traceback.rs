//! The message handler every entry runs under: turns the error object into text and appends a
//! traceback of the stack as it was when the error was raised.
//!
//! It is a Rust function, not `debug.traceback`, so it works in states without the `debug`
//! library and runs no VM instructions (a spent instruction budget cannot fail it). It builds the
//! text on the Rust heap and hands it over through [`ErrorText`] instead of returning it to Lua,
//! so a state at its memory limit still gets its traceback.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Mutex;

use mlua::{Error, Lua, Value};

/// Frames shown from the top and from the bottom of a deep stack, as `luaL_traceback` does.
const FIRST_FRAMES: usize = 10;
const LAST_FRAMES: usize = 11;

/// `short_src` of the sandbox's prelude chunk (its chunk name is "=[nflua]").
pub(crate) const PRELUDE_NAME: &str = "[nflua]";

/// Text of the last error caught by the handler in the current entry.
#[derive(Debug, Default)]
pub(crate) struct ErrorText(Mutex<Option<String>>);

impl ErrorText {
    pub(crate) fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    pub(crate) fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn set(&self, text: String) {
        // The handler can run more than once per entry (an error in a `__close` handler replaces
        // the error being propagated); the last one is the error the entry fails with.
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }
}

/// Body of the message handler: records "message\nstack traceback:..." and returns nothing, so
/// the handler allocates nothing inside Lua.
pub(crate) fn on_error(lua: &Lua, err: Value, sink: &ErrorText) {
    let mut text = describe(&err);
    text.push('\n');
    // Level 0 is the handler itself.
    text.push_str(&traceback(lua, 1));
    sink.set(text);
}

/// Error text of an error object, without running Lua code (no `__tostring`): the handler may
/// run with the instruction budget spent.
pub(crate) fn describe(err: &Value) -> String {
    match err {
        Value::String(s) => s.to_string_lossy(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Nil => "nil".to_string(),
        Value::Error(e) => error_message(e),
        other => format!("(error object is a {} value)", crate::lualib::type_name(other)),
    }
}

/// Message of an mlua error as a script author wrote it: the root cause of a callback error,
/// without mlua's "runtime error: " prefix.
pub(crate) fn error_message(err: &Error) -> String {
    match err {
        Error::CallbackError { cause, .. } => error_message(cause),
        Error::WithContext { context, cause } => format!("{context}: {}", error_message(cause)),
        Error::RuntimeError(msg) | Error::MemoryError(msg) => msg.clone(),
        Error::SyntaxError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Traceback of the running thread from `level` up, formatted as `luaL_traceback` does. (The
/// bottom frame is the C function the entry called, `xpcall` or the view caller: "[C]: in ?".)
pub(crate) fn traceback(lua: &Lua, level: usize) -> String {
    let mut out = String::from("stack traceback:");
    let last = last_level(lua, level);
    let mut skip_from = usize::MAX;
    if last >= level + FIRST_FRAMES + LAST_FRAMES {
        skip_from = level + FIRST_FRAMES;
    }
    let mut current = level;
    // The sandbox's own Lua (the wrapper raising a library error, `require`) and the `error` it
    // calls are plumbing, not the script's stack: a C frame on top is held back until we know
    // whether a prelude frame follows it.
    let mut top_c_frame = None;
    while current <= last {
        if current == skip_from {
            let skipped = last + 1 - LAST_FRAMES - current;
            let _ = write!(out, "\n\t...\t(skipping {skipped} levels)");
            current = last + 1 - LAST_FRAMES;
            continue;
        }
        let Some((frame, origin)) = lua.inspect_stack(current, describe_frame) else {
            break;
        };
        match origin {
            Origin::Prelude => top_c_frame = None,
            Origin::C if current == level => top_c_frame = Some(frame),
            _ => {
                for line in top_c_frame.take().into_iter().chain(Some(frame)) {
                    out.push_str("\n\t");
                    out.push_str(&line);
                }
            }
        }
        current += 1;
    }
    if let Some(frame) = top_c_frame {
        out.push_str("\n\t");
        out.push_str(&frame);
    }
    out
}

enum Origin {
    Prelude,
    C,
    Lua,
}

fn describe_frame(frame: &mlua::debug::Debug) -> (String, Origin) {
    let source = frame.source();
    let origin = match (source.what, source.short_src.as_deref()) {
        (_, Some(PRELUDE_NAME)) => Origin::Prelude,
        ("C", _) => Origin::C,
        _ => Origin::Lua,
    };
    let names = frame.names();
    let mut out = String::new();
    out.push_str(source.short_src.as_deref().unwrap_or("?"));
    out.push(':');
    if let Some(line) = frame.current_line() {
        let _ = write!(out, "{line}:");
    }
    out.push_str(" in ");
    match (names.name_what, names.name.as_deref()) {
        (Some("global"), Some(name)) => {
            let _ = write!(out, "function '{name}'");
        }
        (Some(what), Some(name)) => {
            let _ = write!(out, "{what} '{name}'");
        }
        _ if source.what == "main" => out.push_str("main chunk"),
        _ if source.what == "C" => out.push('?'),
        _ => {
            let src: Cow<str> = source.short_src.clone().unwrap_or(Cow::Borrowed("?"));
            let _ = write!(out, "function <{src}:{}>", source.line_defined.unwrap_or(0));
        }
    }
    if frame.is_tail_call() {
        out.push_str("\n\t(...tail calls...)");
    }
    (out, origin)
}

/// Deepest valid stack level, found with a doubling then a binary search (each probe walks the
/// stack, so probing every level of a deep recursion would be quadratic).
fn last_level(lua: &Lua, from: usize) -> usize {
    let exists = |level: usize| lua.inspect_stack(level, |_| ()).is_some();
    if !exists(from) {
        return from.saturating_sub(1);
    }
    let (mut low, mut high) = (from, from + 1);
    while exists(high) {
        low = high;
        high = high.saturating_mul(2);
    }
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if exists(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_errors_without_running_lua() {
        let lua = Lua::new();
        let s = Value::String(lua.create_string("chunk:1: boom").unwrap());
        assert_eq!(describe(&s), "chunk:1: boom");
        assert_eq!(describe(&Value::Integer(42)), "42");
        let t = Value::Table(lua.create_table().unwrap());
        assert_eq!(describe(&t), "(error object is a table value)");
        let e = Error::CallbackError {
            traceback: String::new(),
            cause: std::sync::Arc::new(Error::RuntimeError("nf.netlink: too big".into())),
        };
        assert_eq!(describe(&Value::Error(Box::new(e))), "nf.netlink: too big");
    }

    #[test]
    fn traceback_names_frames_and_skips_deep_stacks() {
        let lua = Lua::new();
        let tb = lua.create_function(|lua, ()| Ok(traceback(lua, 1))).unwrap();
        lua.globals().set("tb", tb).unwrap();
        let shallow: String = lua
            .load("local function f() local r = tb() return r end local r = f() return r")
            .set_name("=t")
            .eval()
            .unwrap();
        assert_eq!(shallow, "stack traceback:\n\tt:1: in local 'f'\n\tt:1: in main chunk");

        let deep: String = lua
            .load(
                "local function f(n) if n == 0 then return (tb()) end return (f(n - 1)) end return (f(100))",
            )
            .set_name("=t")
            .eval()
            .unwrap();
        assert!(deep.contains("(skipping"), "{deep}");
        assert!(deep.lines().count() < 30, "{deep}");
    }
}
