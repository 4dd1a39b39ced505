//! The instruction limit (`maxruns`): a Lua count hook charging a per-entry budget.
//!
//! # Design
//!
//! One [`Budget`] per state holds how many VM instructions the current entry (one execute, one
//! callback, one timer, one packet) may still run. [`Budget::arm`] refills it at the start of
//! every entry and re-installs the count hook on the main thread, which also resets that thread's
//! instruction counter, so one entry never pays for the previous one.
//!
//! The hook is a raw C hook rather than an mlua hook for two reasons:
//! - mlua's per-thread hooks are looked up by thread, so a coroutine created by the script
//!   inherits the hook function but finds no callback and unhooks itself, running free; a raw hook
//!   finds the budget through `LUA_EXTRASPACE`, which `lua_newthread` copies from the main thread
//!   into every coroutine, so coroutines are charged like the main thread;
//! - it raises a plain Lua string ("chunk:3: instruction limit exceeded"), as the original module
//!   did, instead of an mlua error userdata, and costs a few loads and stores.
//!
//! Lua fires a count hook per thread every `basehookcount` instructions. The hook charges that
//! window to the budget and sets the thread's next window to `min(WINDOW, remaining)`, so a script
//! running on one thread is stopped exactly after `maxruns` instructions. Coroutines that finish
//! between two hooks go uncharged for at most one window each, which keeps the loss bounded
//! (creating a coroutine itself costs the creator instructions).
//!
//! Once the budget is spent it stays spent for the rest of the entry: the hook sets the window of
//! whichever thread it fires in (and of the main thread) to one instruction and raises again and
//! again, so `while true do pcall(function() while true do end end) end` cannot catch its way past
//! the limit: the first instruction run after the `pcall` returns raises outside of it. An entry
//! whose budget was spent fails even if the script caught every error (see `State::run_value`).
//!
//! Cost: while any count hook is set, Lua 5.4 checks every instruction, so tight loops run about
//! twice as slow (1e8 additions: 0.87 s against 0.40-0.48 s unhooked, release build); that is the
//! price of `maxruns`, and the original paid it too. The hook function itself runs once per
//! window.
//!
//! Finalizers (`__gc`) run with hooks disabled in Lua 5.4, so no hook can stop them; the sandbox
//! therefore refuses `__gc` metamethods on script tables (see `sandbox.rs`).
//!
//! # Safety
//!
//! This module holds the crate's `unsafe` code for hooks. The hook reads a `*const Budget` from the
//! thread's extra space. It is written once, by [`install`], on the main thread before any script
//! runs; the `Arc<Budget>` it points into is also stored in the Lua state's app data, which mlua
//! drops only after `lua_close`, so every hook call (including `__close` handlers run while the
//! state closes) sees a live budget. The hook calls `lua_error`, which longjmps over the hook's
//! own frame; that frame holds no value with a destructor at that point, which is the same
//! contract mlua's own callbacks follow when they raise.

use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use mlua::{ffi, Lua};

/// Instructions between two hook calls on one thread while the budget lasts. Small enough that a
/// coroutine finishing between hooks goes uncharged for little, large enough that the calls
/// themselves cost well under 1% of the run time.
pub(crate) const WINDOW: u32 = 1000;

/// Message of the error raised when an entry runs out of instructions.
pub const LIMIT_MESSAGE: &str = "instruction limit exceeded";

/// Instructions one entry may still run. Atomics only because the hook and the owner share it
/// through an `Arc` (app data must be `Send`); one thread uses a state at a time.
#[derive(Debug)]
pub(crate) struct Budget {
    max_runs: u32,
    /// Instructions still allowed, plus one: a count hook fires just *before* the instruction
    /// that completes its window, so windows adding up to `max_runs + 1` let exactly `max_runs`
    /// instructions run.
    remaining: AtomicU64,
    spent: AtomicBool,
    /// Instructions charged since the state was created (whole windows only).
    charged: AtomicU64,
    /// The state's main thread, stopped too when a coroutine spends the budget.
    main: AtomicPtr<ffi::lua_State>,
}

impl Budget {
    pub(crate) fn new(max_runs: u32) -> Budget {
        Budget {
            max_runs,
            remaining: AtomicU64::new(u64::from(max_runs) + 1),
            spent: AtomicBool::new(false),
            charged: AtomicU64::new(0),
            main: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Instructions charged so far, summed over all entries; a lower bound, since the last,
    /// partial window of each entry is not seen by any hook.
    pub(crate) fn charged(&self) -> u64 {
        self.charged.load(Relaxed)
    }

    /// Whether the current entry ran out of instructions (even if the script caught the error).
    pub(crate) fn spent(&self) -> bool {
        self.spent.load(Relaxed)
    }

    fn window(&self) -> c_int {
        // `remaining` is at least 1 while the budget lasts and WINDOW fits a c_int.
        self.remaining.load(Relaxed).clamp(1, u64::from(WINDOW)) as c_int
    }

    /// Charges `ran` instructions; false once the budget is spent.
    fn charge(&self, ran: c_int) -> bool {
        if self.spent.load(Relaxed) {
            return false;
        }
        let ran = u64::try_from(ran).unwrap_or(0);
        self.charged.fetch_add(ran, Relaxed);
        let left = self.remaining.load(Relaxed).saturating_sub(ran);
        self.remaining.store(left, Relaxed);
        if left == 0 {
            self.spent.store(true, Relaxed);
            return false;
        }
        true
    }

    /// Refills the budget for a new entry and restarts the main thread's instruction count.
    pub(crate) fn arm(&self, lua: &Lua) {
        self.remaining.store(u64::from(self.max_runs) + 1, Relaxed);
        self.spent.store(false, Relaxed);
        // SAFETY: outside of callbacks `Lua::state` is the main thread, which is not running; see
        // the module doc for the hook itself. Setting the hook again also undoes any change a
        // `debug` state made with `debug.sethook`.
        unsafe { ffi::lua_sethook(lua.state(), Some(count_hook), ffi::LUA_MASKCOUNT, self.window()) };
    }
}

/// Points the main thread's extra space at `budget` (every coroutine created later copies it) and
/// keeps the budget alive for as long as the Lua state. Call once, before any script runs.
pub(crate) fn install(lua: &Lua, budget: &Arc<Budget>) {
    lua.set_app_data(Arc::clone(budget));
    // SAFETY: see the module doc; nothing else in the process uses LUA_EXTRASPACE.
    unsafe {
        let state = lua.state();
        budget.main.store(state, Relaxed);
        *(ffi::lua_getextraspace(state) as *mut *const Budget) = Arc::as_ptr(budget);
        ffi::lua_sethook(state, Some(count_hook), ffi::LUA_MASKCOUNT, budget.window());
    }
}

unsafe extern "C-unwind" fn count_hook(state: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    let budget = *(ffi::lua_getextraspace(state) as *const *const Budget);
    if budget.is_null() {
        return;
    }
    let budget = &*budget;
    let ran = ffi::lua_gethookcount(state);
    if budget.charge(ran) {
        let next = budget.window();
        if next != ran {
            ffi::lua_sethook(state, Some(count_hook), ffi::LUA_MASKCOUNT, next);
        }
        return;
    }
    if ran != 1 {
        ffi::lua_sethook(state, Some(count_hook), ffi::LUA_MASKCOUNT, 1);
        // A coroutine's error may be caught by `coroutine.resume`; the main thread must not run
        // on for a whole window after it returns.
        let main = budget.main.load(Relaxed);
        if !main.is_null() && main != state && ffi::lua_gethookcount(main) != 1 {
            ffi::lua_sethook(main, Some(count_hook), ffi::LUA_MASKCOUNT, 1);
        }
    }
    // Not `luaL_error`: it names the caller's position (level 1), but a hook runs without a frame
    // of its own, so level 0 is the Lua function that was interrupted.
    ffi::luaL_where(state, 0);
    ffi::lua_pushstring(state, c"instruction limit exceeded".as_ptr());
    ffi::lua_concat(state, 2);
    ffi::lua_error(state);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_add_up_to_max_runs_plus_one() {
        let budget = Budget::new(2500);
        assert_eq!(budget.window(), 1000);
        assert!(budget.charge(1000));
        assert!(budget.charge(1000));
        assert_eq!(budget.window(), 501);
        assert!(!budget.charge(501));
        assert!(!budget.charge(1), "a spent budget stays spent");
        assert_eq!(budget.charged(), 2501);
    }

    #[test]
    fn small_budget_is_one_window() {
        let budget = Budget::new(10);
        assert_eq!(budget.window(), 11);
        assert!(!budget.charge(11));
    }

    #[test]
    fn limit_message_matches_the_hook() {
        assert_eq!(c"instruction limit exceeded".to_str().ok(), Some(LIMIT_MESSAGE));
    }
}
