//! The fast door into a state, for the calls made per packet or per message: a hook call and
//! a receive callback, `f(extra..., views)` run through `nflua_data`'s view caller under the
//! state's message handler, in raw Lua C API calls.
//!
//! # Why not through mlua
//!
//! Every other entry goes `xpcall.call((f, on_error, args))` through mlua, which is general:
//! it checks the stack, makes a reference for every value it pushes and returns, pops the
//! results into reference-counted handles and drops them again. For a hook reading two header
//! bytes that plumbing, with the global function's lookup through an mlua table handle, was
//! about 2,600 of 9,200 instructions per call (callgrind), and in the daemon, where the kernel's
//! work between two packets leaves the caches cold, it weighs more. Here the handler, the view
//! caller and the function's name are registry references made once, the function is looked
//! up with `lua_rawget`, the arguments are integers and the result is read where it lies.
//!
//! The call is `lua_pcall(view_caller, f, extra..., view numbers)` with the handler as message
//! handler: the same frames as the mlua door minus the `xpcall` between the handler and the
//! view caller, so the view caller is the traceback's bottom frame ("[C]: in ?", where the other
//! entries show `xpcall`) and tracebacks read exactly as through the other door.
//!
//! # Safety
//!
//! Everything runs inside `Lua::exec_raw_lua`, which holds mlua's (reentrant) lock of the state
//! for the whole call, so no other Rust code touches the Lua stack meanwhile; library functions
//! called from the script take the same lock on the same thread. Before the protected call only
//! functions that cannot raise are used: `lua_checkstack` (answers 0 instead of raising),
//! `lua_rawgeti`/`lua_rawget` on tables with keys present or absent (no metamethods, no
//! allocation), `lua_pushinteger`, `lua_settop`. So no Lua error can longjmp over a Rust frame.
//! After the call the result is read with `lua_toboolean`/`lua_type`/`lua_tolstring` on a
//! value known to be a string (no conversion, no allocation). An error value is turned into an
//! mlua value only when the handler left no text, and under `catch_unwind`, since mlua resumes a
//! Rust panic a library function raised when it reads the panic's error object; the stack is
//! restored to where it was in every case.

#![allow(unsafe_code)] // talks to C: see the Safety notes

use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::{ffi, FromLua, IntoLua, Lua, Value};

use crate::hook::{HookMode, HookResult, Verdict};

/// A value kept in the state's registry for the door (`luaL_ref`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ref(c_int);

/// Keeps `value` in `lua`'s registry; the reference lives as long as the state.
pub(crate) fn keep(lua: &Lua, value: impl IntoLua) -> mlua::Result<Ref> {
    // SAFETY: see the module doc; `luaL_ref` pops the value and may allocate (the registry
    // grows), which `exec_raw` runs under a protected call.
    let reference = unsafe {
        lua.exec_raw::<i64>(value, |state| {
            let reference = ffi::luaL_ref(state, ffi::LUA_REGISTRYINDEX);
            ffi::lua_pushinteger(state, ffi::lua_Integer::from(reference));
        })?
    };
    c_int::try_from(reference).map(Ref).map_err(|_| mlua::Error::runtime("registry reference out of range"))
}

/// Drops a reference [`keep`] made.
pub(crate) fn release(lua: &Lua, reference: Ref) {
    lua.exec_raw_lua(|raw| {
        // SAFETY: `luaL_unref` only stores into the registry's array part: no allocation, no
        // error.
        unsafe { ffi::luaL_unref(raw.state(), ffi::LUA_REGISTRYINDEX, reference.0) }
    });
}

/// What a call through the door needs: the message handler, the view caller, the global
/// holding the function, integers passed before the views, and the view caller's numbers
/// (`LentBuffer::views`).
pub(crate) struct Call<'a> {
    pub(crate) handler: Ref,
    pub(crate) caller: Ref,
    pub(crate) function_name: Ref,
    pub(crate) extra: &'a [i64],
    pub(crate) views: [i64; 3],
}

/// How a call through the door ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The global was nil: nothing ran.
    NoFunction,
    /// No room on the Lua stack for the call's values: nothing ran.
    NoStack,
    /// The function returned; its first result, read as the hook mode says (a receive callback
    /// reads it as a match).
    Returned(HookResult),
    /// The call raised. The value is the error object when the handler recorded no text.
    Raised(Option<Value>),
    /// A Rust panic came back with the error object.
    Panicked,
}

/// Calls `call`'s function in `lua`, running `enter` just before the protected call (it arms
/// the budget) and `leave` just after, whatever happened.
pub(crate) fn run(
    lua: &Lua,
    call: &Call<'_>,
    mode: HookMode,
    handler_recorded: impl Fn() -> bool,
    enter: impl FnOnce(),
    leave: impl FnOnce(),
) -> Ended {
    lua.exec_raw_lua(|raw| {
        let state = raw.state();
        // SAFETY: see the module doc.
        unsafe {
            let base = ffi::lua_gettop(state);
            let slots = 3 + call.extra.len() + call.views.len();
            if ffi::lua_checkstack(state, c_int::try_from(slots).unwrap_or(c_int::MAX)) == 0 {
                return Ended::NoStack;
            }
            ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::lua_Integer::from(call.handler.0));
            ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::lua_Integer::from(call.caller.0));
            ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
            ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::lua_Integer::from(call.function_name.0));
            ffi::lua_rawget(state, -2);
            ffi::lua_rotate(state, -2, 1);
            ffi::lua_settop(state, -2);
            if ffi::lua_type(state, -1) == ffi::LUA_TNIL {
                ffi::lua_settop(state, base);
                return Ended::NoFunction;
            }
            for &n in call.extra.iter().chain(&call.views) {
                ffi::lua_pushinteger(state, n);
            }
            let nargs = c_int::try_from(1 + call.extra.len() + call.views.len()).unwrap_or(c_int::MAX);
            enter();
            let status = ffi::lua_pcall(state, nargs, 1, base + 1);
            leave();
            let ended = if status == ffi::LUA_OK {
                Ended::Returned(read_result(state, mode))
            } else if handler_recorded() {
                Ended::Raised(None)
            } else {
                match catch_unwind(AssertUnwindSafe(|| Value::from_stack(-1, raw))) {
                    Ok(Ok(value)) => Ended::Raised(Some(value)),
                    Ok(Err(e)) => Ended::Raised(Some(Value::Error(Box::new(e)))),
                    Err(_) => Ended::Panicked,
                }
            };
            ffi::lua_settop(state, base);
            ended
        }
    })
}

/// The value on top of the stack as a hook's answer.
///
/// # Safety
/// `state` has a value on top.
unsafe fn read_result(state: *mut ffi::lua_State, mode: HookMode) -> HookResult {
    unsafe {
        match mode {
            HookMode::Match => HookResult::Match(ffi::lua_toboolean(state, -1) != 0),
            HookMode::Target => HookResult::Target(if ffi::lua_type(state, -1) == ffi::LUA_TSTRING {
                let mut len = 0usize;
                let bytes = ffi::lua_tolstring(state, -1, &mut len);
                if bytes.is_null() {
                    None
                } else {
                    // A Lua string's bytes, alive while it is on the stack.
                    Verdict::from_name(std::slice::from_raw_parts(bytes.cast::<u8>(), len))
                }
            } else {
                None
            }),
        }
    }
}
