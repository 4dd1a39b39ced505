//! Lua functions whose errors are plain strings at the caller's position ("chunk:3: data buffer
//! is no longer valid"), as a C library function's (`luaL_error`), instead of mlua's error
//! userdata, on which `e:find(...)` and `..` fail.
//!
//! [`function`] makes an mlua function that never raises: it returns its result (one value or
//! none), or `nil, message` when it fails. A C closure holding it as upvalue ([`raise_failures`])
//! calls it, passes its result on, and raises the message itself, prefixed with the position of
//! the nearest calling frame that has one: a script calling a method directly, or indexing a
//! view through the views' fast C `__index`, which sits between the script and the general
//! function. Lua's own memory error text ([`NO_MEMORY`]) is raised as Lua raises it, without a
//! position.
//!
//! # Safety
//!
//! The closure runs as any C function called from Lua: `lua_call` (whose errors, e.g. a memory
//! error of mlua's, propagate unchanged) and `lua_error` longjmp over its frame, which holds only
//! integers and a `lua_Debug` (plain data). It uses at most 2 stack slots beyond its arguments;
//! Lua guarantees a C function `LUA_MINSTACK` (20).

#![allow(unsafe_code)] // talks to C: see the Safety notes

use std::os::raw::c_int;

use mlua::{
    ffi, Error as LuaError, FromLuaMulti, Function, IntoLuaMulti, Lua, MaybeSend, Result as LuaResult,
};

use crate::meter::NO_MEMORY;

/// A Lua function running `f`, whose errors reach scripts as plain strings (see the module doc).
/// `f`'s result must be one value or `()`: two results would read as a failure.
pub(crate) fn function<A, R, F>(lua: &Lua, f: F) -> LuaResult<Function>
where
    A: FromLuaMulti,
    Result<R, String>: IntoLuaMulti,
    F: Fn(&Lua, A) -> LuaResult<R> + MaybeSend + 'static,
{
    let inner = lua.create_function(move |lua, args: A| Ok(f(lua, args).map_err(|e| message(&e))))?;
    // SAFETY: see the module doc; the inner function becomes the closure's upvalue (pushing a C
    // closure allocates, under pcall).
    unsafe {
        lua.exec_raw::<Function>(inner, |state| {
            ffi::lua_pushcclosure(state, raise_failures, 1);
        })
    }
}

/// The text of an error as a script should read it: the message alone, without mlua's
/// decorations (callback tracebacks, "runtime error: ").
pub(crate) fn message(err: &LuaError) -> String {
    match err {
        LuaError::RuntimeError(text) => text.clone(),
        LuaError::MemoryError(_) => NO_MEMORY.to_owned(),
        LuaError::CallbackError { cause, .. } => message(cause),
        LuaError::WithContext { cause, .. } => message(cause),
        LuaError::ExternalError(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// Frames looked at, from the caller up, for one with a line (the views' C `__index` and
/// `__len` add one C frame between a script and the general function).
const POSITION_DEPTH: c_int = 3;

unsafe extern "C-unwind" fn raise_failures(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let args = ffi::lua_gettop(state);
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        ffi::lua_insert(state, 1);
        ffi::lua_call(state, args, ffi::LUA_MULTRET);
        let results = ffi::lua_gettop(state);
        if results == 2
            && ffi::lua_type(state, 1) == ffi::LUA_TNIL
            && ffi::lua_type(state, 2) == ffi::LUA_TSTRING
        {
            if !is_no_memory(state, 2) {
                push_position(state);
                ffi::lua_insert(state, 2);
                ffi::lua_concat(state, 2);
            }
            ffi::lua_error(state);
        }
        results
    }
}

/// Whether the string at `idx` is Lua's memory error text.
unsafe fn is_no_memory(state: *mut ffi::lua_State, idx: c_int) -> bool {
    unsafe {
        let mut len = 0;
        let text = ffi::lua_tolstring(state, idx, &mut len);
        !text.is_null() && std::slice::from_raw_parts(text.cast::<u8>(), len) == NO_MEMORY.as_bytes()
    }
}

/// Pushes "source:line: " of the nearest calling frame with a current line, or "" (as
/// `luaL_where` does for a frame without one).
unsafe fn push_position(state: *mut ffi::lua_State) {
    unsafe {
        let mut ar: ffi::lua_Debug = std::mem::zeroed();
        for level in 1..=POSITION_DEPTH {
            if ffi::lua_getstack(state, level, &mut ar) == 0
                || ffi::lua_getinfo(state, c"Sl".as_ptr(), &mut ar) == 0
            {
                break;
            }
            if ar.currentline > 0 {
                ffi::lua_pushfstring(state, c"%s:%d: ".as_ptr(), ar.short_src.as_ptr(), ar.currentline);
                return;
            }
            // A Lua frame without line information is the position, as for `luaL_where`.
            if !ar.what.is_null() && *ar.what != b'C' as std::os::raw::c_char {
                break;
            }
        }
        ffi::lua_pushstring(state, c"".as_ptr());
    }
}
