//! `coroutine.resume`, `coroutine.wrap` and `coroutine.close` as the sandbox gives them: Lua 5.4's
//! behaviour, plus the instruction accounting that makes `maxruns` exact across coroutines.
//!
//! Switching threads is where an instruction count can leak: each thread has its own count-hook
//! window, and a coroutine that yields or finishes before its window ends used to take its
//! uncounted instructions with it (a script resuming fresh coroutines in a loop ran about 110
//! times its `maxruns`). These three functions are the only ways a sandboxed script runs Lua on
//! another thread, so each settles the windows around the switch (see `limits.rs`): the caller's
//! instructions so far are charged before the switch, the coroutine starts a window no larger
//! than what the budget has left, and whatever it ran is charged when control comes back, error
//! or not. `coroutine.create`, `yield`, `status`, `running` and `isyieldable` are the stock ones.
//!
//! Behaviour, messages and results are those of Lua 5.4's coroutine library (checked by the
//! engine tests against the stock functions): `resume` answers `true, ...` or `false, error`;
//! a wrapped function re-raises the coroutine's error, adding the caller's position to string
//! errors, and closes the dead coroutine's pending to-be-closed variables first; `close` closes a
//! suspended or dead coroutine and refuses a running or normal one.
//!
//! # Safety
//!
//! Raw `lua_CFunction`s: every thread pointer comes from the Lua stack (`lua_tothread`) and stays
//! referenced there (argument 1 or upvalue 1) while used. Errors are raised only with
//! `luaL_error`/`lua_error` from frames that hold nothing with a destructor.

#![allow(unsafe_code)] // talks to C: see the Safety notes

use std::os::raw::c_int;

use mlua::{ffi, Lua, Table};

use crate::limits;

extern "C-unwind" {
    // Part of Lua 5.4's auxiliary library (lauxlib.h), which mlua-sys does not declare: the stock
    // "bad argument #1 to 'resume' (thread expected, got nil)".
    fn luaL_typeerror(l: *mut ffi::lua_State, arg: c_int, tname: *const std::os::raw::c_char) -> c_int;
}

/// Replaces `resume`, `wrap` and `close` in the `coroutine` table.
pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    let coroutine: Table = lua.globals().raw_get("coroutine")?;
    // SAFETY: plain C functions following the Lua C API protocol.
    unsafe {
        coroutine.raw_set("resume", lua.create_c_function(resume)?)?;
        coroutine.raw_set("wrap", lua.create_c_function(wrap)?)?;
        coroutine.raw_set("close", lua.create_c_function(close)?)?;
    }
    Ok(())
}

/// What `coroutine.status` would say of `co` seen from `L`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    Dead,
    Suspended,
    Normal,
}

impl Status {
    fn name(self) -> &'static std::ffi::CStr {
        match self {
            Status::Running => c"running",
            Status::Dead => c"dead",
            Status::Suspended => c"suspended",
            Status::Normal => c"normal",
        }
    }
}

unsafe fn status(l: *mut ffi::lua_State, co: *mut ffi::lua_State) -> Status {
    unsafe {
        if l == co {
            return Status::Running;
        }
        match ffi::lua_status(co) {
            ffi::LUA_YIELD => Status::Suspended,
            ffi::LUA_OK => {
                let mut ar: ffi::lua_Debug = std::mem::zeroed();
                if ffi::lua_getstack(co, 0, &mut ar) != 0 {
                    Status::Normal // it resumed another coroutine
                } else if ffi::lua_gettop(co) == 0 {
                    Status::Dead
                } else {
                    Status::Suspended // not started yet
                }
            }
            _ => Status::Dead, // it raised
        }
    }
}

/// The coroutine in argument 1, or the stock "coroutine expected" argument error.
unsafe fn coroutine_arg(l: *mut ffi::lua_State) -> *mut ffi::lua_State {
    unsafe {
        let co = ffi::lua_tothread(l, 1);
        if co.is_null() {
            luaL_typeerror(l, 1, c"thread".as_ptr());
        }
        co
    }
}

/// Moves `narg` values from `l` onto `co` and resumes it with the windows settled. Returns the
/// number of values it yielded or returned, now on `l`; or -1 with its error on `l`.
unsafe fn settled_resume(l: *mut ffi::lua_State, co: *mut ffi::lua_State, narg: c_int) -> c_int {
    unsafe {
        if ffi::lua_checkstack(co, narg) == 0 {
            ffi::lua_pushstring(l, c"too many arguments to resume".as_ptr());
            return -1;
        }
        ffi::lua_xmove(l, co, narg);
        limits::settle(l);
        limits::arm_thread(co);
        let mut nres: c_int = 0;
        let status = ffi::lua_resume(co, l, narg, &mut nres);
        limits::settle(co);
        limits::arm_thread(l);
        if status == ffi::LUA_OK || status == ffi::LUA_YIELD {
            if ffi::lua_checkstack(l, nres + 1) == 0 {
                ffi::lua_pop(co, nres);
                ffi::lua_pushstring(l, c"too many results to resume".as_ptr());
                return -1;
            }
            ffi::lua_xmove(co, l, nres);
            nres
        } else {
            ffi::lua_xmove(co, l, 1);
            -1
        }
    }
}

/// `coroutine.resume(co, ...)`.
unsafe extern "C-unwind" fn resume(l: *mut ffi::lua_State) -> c_int {
    unsafe {
        let co = coroutine_arg(l);
        let r = settled_resume(l, co, ffi::lua_gettop(l) - 1);
        if r < 0 {
            ffi::lua_pushboolean(l, 0);
            ffi::lua_insert(l, -2);
            2
        } else {
            ffi::lua_pushboolean(l, 1);
            ffi::lua_insert(l, -(r + 1));
            r + 1
        }
    }
}

/// `coroutine.wrap(f)`: a new coroutine running `f`, behind [`wrapped`].
unsafe extern "C-unwind" fn wrap(l: *mut ffi::lua_State) -> c_int {
    unsafe {
        ffi::luaL_checktype(l, 1, ffi::LUA_TFUNCTION);
        let co = ffi::lua_newthread(l);
        ffi::lua_pushvalue(l, 1);
        ffi::lua_xmove(l, co, 1);
        ffi::lua_pushcclosure(l, wrapped, 1);
        1
    }
}

/// The function `coroutine.wrap` returns: resumes its coroutine (upvalue 1) with its arguments.
unsafe extern "C-unwind" fn wrapped(l: *mut ffi::lua_State) -> c_int {
    unsafe {
        let co = ffi::lua_tothread(l, ffi::lua_upvalueindex(1));
        let r = settled_resume(l, co, ffi::lua_gettop(l));
        if r >= 0 {
            return r;
        }
        let mut status = ffi::lua_status(co);
        if status != ffi::LUA_OK && status != ffi::LUA_YIELD {
            // The coroutine died: run its pending `__close` handlers, charged like the rest of it.
            limits::arm_thread(co);
            status = ffi::lua_closethread(co, l);
            limits::settle(co);
            limits::arm_thread(l);
            ffi::lua_xmove(co, l, 1);
        }
        if status != ffi::LUA_ERRMEM && ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
            ffi::luaL_where(l, 1);
            ffi::lua_insert(l, -2);
            ffi::lua_concat(l, 2);
        }
        ffi::lua_error(l)
    }
}

/// `coroutine.close(co)`.
unsafe extern "C-unwind" fn close(l: *mut ffi::lua_State) -> c_int {
    unsafe {
        let co = coroutine_arg(l);
        match status(l, co) {
            Status::Dead | Status::Suspended => {
                limits::settle(l);
                limits::arm_thread(co);
                let closed = ffi::lua_closethread(co, l);
                limits::settle(co);
                limits::arm_thread(l);
                if closed == ffi::LUA_OK {
                    ffi::lua_pushboolean(l, 1);
                    1
                } else {
                    ffi::lua_pushboolean(l, 0);
                    ffi::lua_xmove(co, l, 1);
                    2
                }
            }
            other => ffi::luaL_error(l, c"cannot close a %s coroutine".as_ptr(), other.name().as_ptr()),
        }
    }
}
