//! The limits of one entry (one execute, one callback, one timer, one packet): `maxruns` VM
//! instructions plus the work library functions charge, a wall-clock backstop, and the daemon's
//! shutdown. A Lua count hook and [`charge`] enforce all three.
//!
//! # Design
//!
//! One [`Budget`] per state holds how many instructions the current entry may still run.
//! [`Budget::arm`] refills it at the start of every entry and re-installs the count hook on the
//! main thread, which also resets that thread's instruction counter, so one entry never pays for
//! the previous one.
//!
//! The hook is a raw C hook rather than an mlua hook for two reasons:
//! - mlua's per-thread hooks are looked up by thread, so a coroutine created by the script
//!   inherits the hook function but finds no callback and unhooks itself, running free; a raw hook
//!   finds the budget through `LUA_EXTRASPACE`, which `lua_newthread` copies from the main thread
//!   into every coroutine, so coroutines are charged like the main thread;
//! - it raises a plain Lua string ("chunk:3: instruction limit exceeded"), as the original module
//!   did, instead of an mlua error userdata, and costs a few loads and stores.
//!
//! ## Exact accounting
//!
//! Lua fires a count hook per thread every `basehookcount` instructions (a "window"). The hook
//! charges that window to the budget and sets the thread's next window to `min(WINDOW,
//! remaining)`. A window cut short is *settled* ([`settle`]): the instructions the thread ran
//! since its window began are read from the thread itself and charged, and a new window starts.
//! Windows are settled whenever control leaves a thread other than through its hook: around every
//! `coroutine.resume`, `coroutine.wrap` call and `coroutine.close` (see `coroutines.rs`), when a
//! library function charges work, and when the entry ends. So at any moment at most one thread
//! has unsettled instructions, its window never exceeds what the budget has left, and an entry
//! runs exactly `maxruns` instructions at most, however many coroutines it makes (before, every
//! coroutine that finished between two hooks ran up to 999 instructions free).
//!
//! Lua keeps a thread's instructions-left-in-window (`hookcount`) in `lua_State`, with no API to
//! read it; [`ThreadHead`] mirrors the start of Lua 5.4's `lua_State` to read it, and
//! [`install`] checks the mirror against the public getters before any script runs (a Lua whose
//! layout differs fails state creation instead of miscounting).
//!
//! ## Library work
//!
//! C functions run no VM instructions, so a library function whose work grows with its arguments
//! charges that work with [`charge`] (or [`charge_raw`] from raw C functions) before or while it
//! does it: one instruction per byte produced or scanned, per element moved, per matcher step (see
//! the crate doc for the table). A charge that does not fit spends the budget and raises the
//! usual limit error.
//!
//! ## Spent budgets
//!
//! Once the budget is spent it stays spent for the rest of the entry: the hook sets the window of
//! whichever thread it fires in (and of the main thread) to one instruction and raises again and
//! again, so `while true do pcall(function() while true do end end) end` cannot catch its way past
//! the limit: the first instruction run after the `pcall` returns raises outside of it. An entry
//! whose budget was spent fails even if the script caught every error (see `State::run_value`).
//!
//! ## Wall clock and shutdown
//!
//! Each entry may also get a deadline (`nfluad --max-call-ms`): the hook and every large charge
//! look at the clock (once per window: about 20 ns per thousand instructions) and stop the entry
//! past it. Since one VM instruction can be expensive (a concatenation or comparison of 16 MB
//! strings), a window could still run for seconds; so the engine's watchdog (`watchdog.rs`)
//! looks every 5 ms and makes a late entry's running thread call its hook at the very next
//! instruction ([`Budget::poke_if_late`]; the budget tracks which thread runs, coroutines
//! included). An engine-wide halt flag ([`crate::Engine::halt_scripts`]) stops every running and
//! future entry the same way, so a daemon asked to terminate never waits for a script.
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
//! contract mlua's own callbacks follow when they raise. [`ThreadHead`] is only read through
//! pointers to live threads, and only after [`install`] verified its layout.

#![allow(unsafe_code)] // talks to C: see the Safety notes

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mlua::{ffi, Lua};

use crate::watchdog::Bell;

/// Instructions between two hook calls on one thread while the budget lasts: large enough that
/// the calls themselves cost well under 1% of the run time, small enough that the clock and the
/// halt flag are looked at often (a thousand instructions take a few microseconds).
pub(crate) const WINDOW: u32 = 1000;

/// Message of the error raised when an entry runs out of instructions.
pub const LIMIT_MESSAGE: &str = "instruction limit exceeded";

/// Message of the error raised when an entry runs past its wall-clock limit (followed by the
/// limit, e.g. " (1000 ms)").
pub const TIME_LIMIT_MESSAGE: &str = "time limit exceeded";

/// Message of the error raised in every entry once the engine is halted.
pub const HALT_MESSAGE: &str = "interrupted: the daemon is shutting down";

/// Charges smaller than this do not look at the clock (the hook does, every window).
const CLOCK_CHECK_COST: u64 = 1000;

/// Why an entry was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Instructions = 1,
    Time = 2,
    Halt = 3,
}

impl Stop {
    fn from_u8(v: u8) -> Option<Stop> {
        match v {
            1 => Some(Stop::Instructions),
            2 => Some(Stop::Time),
            3 => Some(Stop::Halt),
            _ => None,
        }
    }
}

/// Instructions one entry may still run, and what else stops it. Atomics only because the hook
/// and the owner share it through an `Arc` (app data must be `Send`) and the halt flag is set
/// from another thread; one thread uses a state at a time.
#[derive(Debug)]
pub(crate) struct Budget {
    max_runs: u32,
    /// Instructions still allowed, plus one: a count hook fires just *before* the instruction
    /// that completes its window, so windows adding up to `max_runs + 1` let exactly `max_runs`
    /// instructions run.
    remaining: AtomicU64,
    /// Why the current entry was stopped (0: it was not).
    stopped: AtomicU8,
    /// Instructions and library work charged since the state was created.
    charged: AtomicU64,
    /// The state's main thread, stopped too when a coroutine spends the budget.
    main: AtomicPtr<ffi::lua_State>,
    /// End of the current entry's wall-clock allowance, in [`clock`] nanoseconds (0: none), and
    /// the allowance itself in milliseconds, for the message.
    deadline: AtomicU64,
    time_limit_ms: AtomicU64,
    /// The engine's halt flag.
    halt: Arc<AtomicBool>,
    /// The thread running the current entry's Lua right now (the main thread or a coroutine);
    /// null between entries. Read by the watchdog ([`Budget::poke_if_late`]).
    running: AtomicPtr<ffi::lua_State>,
    /// Set while the watchdog writes into `running`; whoever replaces `running` waits for it to
    /// clear before the old thread may be freed (see [`Budget::set_running`]).
    poking: AtomicBool,
    /// Rung at every entry's start, to wake a sleeping watchdog.
    bell: Arc<Bell>,
}

/// Nanoseconds since the first call, on the monotonic clock.
fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
}

impl Budget {
    pub(crate) fn new(max_runs: u32, halt: Arc<AtomicBool>, bell: Arc<Bell>) -> Budget {
        Budget {
            max_runs,
            remaining: AtomicU64::new(u64::from(max_runs) + 1),
            stopped: AtomicU8::new(0),
            charged: AtomicU64::new(0),
            main: AtomicPtr::new(std::ptr::null_mut()),
            deadline: AtomicU64::new(0),
            time_limit_ms: AtomicU64::new(0),
            halt,
            running: AtomicPtr::new(std::ptr::null_mut()),
            poking: AtomicBool::new(false),
            bell,
        }
    }

    /// Records the thread that runs from now on. Waits for a watchdog poke of the previous one
    /// to finish, so the previous thread may be freed once this returns.
    fn set_running(&self, thread: *mut ffi::lua_State) {
        self.running.store(thread, SeqCst);
        while self.poking.load(SeqCst) {
            std::hint::spin_loop();
        }
    }

    /// Whether an entry is running now (for the watchdog's pace). Sequentially consistent: the
    /// watchdog's look after it announced its sleep must see an entry that did not see the
    /// announcement (see `watchdog::Bell::ring`).
    pub(crate) fn is_running(&self) -> bool {
        !self.running.load(SeqCst).is_null()
    }

    /// For a watchdog thread: if the current entry is past its deadline (or the engine is
    /// halted), makes the thread running it call the count hook at its very next instruction,
    /// which then stops the entry. Without this, one expensive instruction (a concatenation or
    /// comparison of long strings, a call copying many varargs) repeated for a whole window of
    /// a thousand could run far past the deadline before the hook looks at the clock.
    ///
    /// Only the thread's instruction countdown is written, one `int` the VM reads and
    /// decrements; a write that races with the decrement is lost and made again on the next
    /// poke. The `running`/`poking` handshake (sequentially consistent on both sides) keeps the
    /// thread alive while it is written: the owner stores a new `running` and then waits while
    /// `poking` is set; the watchdog sets `poking` and then reads `running`, so either it sees
    /// the new thread or the owner sees it poking.
    pub(crate) fn poke_if_late(&self) -> bool {
        if self.running.load(Relaxed).is_null() {
            return false;
        }
        let deadline = self.deadline.load(Relaxed);
        let late = self.halt.load(Relaxed) || (deadline != 0 && clock() > deadline);
        if !late {
            return false;
        }
        self.poking.store(true, SeqCst);
        let thread = self.running.load(SeqCst);
        if !thread.is_null() {
            // SAFETY: `thread` is alive (see above) and its layout was verified by `install`.
            unsafe {
                let head = thread.cast::<ThreadHead>();
                std::ptr::addr_of_mut!((*head).hookcount).write_volatile(1);
            }
        }
        self.poking.store(false, SeqCst);
        true
    }

    /// Instructions and work charged so far, summed over all entries.
    pub(crate) fn charged(&self) -> u64 {
        self.charged.load(Relaxed)
    }

    /// Why the current entry was stopped (even if the script caught the error), if it was.
    pub(crate) fn stopped(&self) -> Option<Stop> {
        Stop::from_u8(self.stopped.load(Relaxed))
    }

    /// Whether the current entry was stopped (even if the script caught the error).
    pub(crate) fn spent(&self) -> bool {
        self.stopped().is_some()
    }

    /// The error text for a stopped entry (without position).
    pub(crate) fn stop_message(&self) -> String {
        match self.stopped() {
            Some(Stop::Time) => {
                format!("{TIME_LIMIT_MESSAGE} ({} ms)", self.time_limit_ms.load(Relaxed))
            }
            Some(Stop::Halt) => HALT_MESSAGE.to_string(),
            Some(Stop::Instructions) | None => LIMIT_MESSAGE.to_string(),
        }
    }

    fn window(&self) -> c_int {
        // `remaining` is at least 1 while the budget lasts and WINDOW fits a c_int.
        self.remaining.load(Relaxed).clamp(1, u64::from(WINDOW)) as c_int
    }

    fn stop(&self, why: Stop) {
        let _ = self.stopped.compare_exchange(0, why as u8, Relaxed, Relaxed);
    }

    /// Charges `cost`; false once the budget is spent (or the entry was stopped otherwise).
    fn take(&self, cost: u64) -> bool {
        if self.spent() {
            return false;
        }
        let before = self.remaining.load(Relaxed);
        // A charge that does not fit counts only what was left: the entry ran no further.
        self.charged.fetch_add(cost.min(before), Relaxed);
        let left = before.saturating_sub(cost);
        self.remaining.store(left, Relaxed);
        if left == 0 {
            self.stop(Stop::Instructions);
            return false;
        }
        true
    }

    /// Looks at the halt flag and the clock; false (and the entry stopped) past either.
    fn in_time(&self) -> bool {
        if self.halt.load(Relaxed) {
            self.stop(Stop::Halt);
            return false;
        }
        let deadline = self.deadline.load(Relaxed);
        if deadline != 0 && clock() > deadline {
            self.stop(Stop::Time);
            return false;
        }
        true
    }

    /// Refills the budget for a new entry limited to `time_limit` of wall time, and restarts the
    /// main thread's instruction count.
    pub(crate) fn arm(&self, lua: &Lua, time_limit: Option<Duration>) {
        self.remaining.store(u64::from(self.max_runs) + 1, Relaxed);
        self.stopped.store(0, Relaxed);
        match time_limit {
            Some(limit) => {
                let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
                self.deadline.store(clock().saturating_add(nanos), Relaxed);
                self.time_limit_ms.store(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX), Relaxed);
            }
            None => self.deadline.store(0, Relaxed),
        }
        // A halted engine runs nothing: the first instruction raises.
        let window = if self.halt.load(Relaxed) { 1 } else { self.window() };
        // The main thread as `install` recorded it (asking `lua` takes mlua's lock, twice per
        // entry otherwise).
        let main = match self.main.load(Relaxed) {
            main if main.is_null() => lua.state(),
            main => main,
        };
        // SAFETY: the main thread, which is not running; see the module doc for the hook itself.
        // Setting the hook again also undoes any change a `debug` state made with
        // `debug.sethook`.
        unsafe { ffi::lua_sethook(main, Some(count_hook), ffi::LUA_MASKCOUNT, window) };
        self.set_running(main);
        self.bell.ring();
    }

    /// [`Budget::arm`] for the `__close` handlers run while the state is closed: the watchdog
    /// must not see a thread that is about to be freed, so only the hook watches the clock.
    pub(crate) fn arm_for_close(&self, lua: &Lua, time_limit: Option<Duration>) {
        self.arm(lua, time_limit);
        self.set_running(std::ptr::null_mut());
    }

    /// Ends an entry: charges what the main thread ran since its window began (so the
    /// instruction count in the statistics is exact) and tells the watchdog nothing runs.
    pub(crate) fn disarm(&self) {
        let main = self.main.load(Relaxed);
        if !main.is_null() {
            // SAFETY: the main thread lives as long as the budget's Lua; it is not running. No new
            // window: the next entry's `arm` starts one.
            let ran = unsafe { ran_in_window(main) };
            if ran > 0 {
                let _ = self.take(ran);
            }
        }
        self.set_running(std::ptr::null_mut());
    }
}

/// The start of Lua 5.4's `struct lua_State` (lstate.h), down to the hook counters, which Lua
/// offers no function to read. Checked against `lua_gethookcount`/`lua_gethookmask` by
/// [`install`] before it is relied on.
#[repr(C)]
struct ThreadHead {
    next: *mut c_void,
    tt: u8,
    marked: u8,
    status: u8,
    allowhook: u8,
    nci: u16,
    top: *mut c_void,
    l_g: *mut c_void,
    ci: *mut c_void,
    stack_last: *mut c_void,
    stack: *mut c_void,
    openupval: *mut c_void,
    tbclist: *mut c_void,
    gclist: *mut c_void,
    twups: *mut c_void,
    error_jmp: *mut c_void,
    /// `CallInfo base_ci`: two stack references, two links, a 24-byte union, 8 bytes of counts.
    base_ci: [*mut c_void; 8],
    hook: *mut c_void,
    errfunc: isize,
    n_ccalls: u32,
    oldpc: c_int,
    basehookcount: c_int,
    hookcount: c_int,
    hookmask: c_int,
}

/// Instructions `thread` ran since its current window began.
///
/// # Safety
/// `thread` is a live Lua thread of a state whose layout [`install`] verified.
unsafe fn ran_in_window(thread: *mut ffi::lua_State) -> u64 {
    unsafe {
        let head = thread as *const ThreadHead;
        let base = (*head).basehookcount;
        let left = (*head).hookcount;
        u64::try_from(base.saturating_sub(left)).unwrap_or(0)
    }
}

/// Whether [`ThreadHead`] matches `thread`: set a distinctive window, read it back both ways.
unsafe fn layout_matches(thread: *mut ffi::lua_State) -> bool {
    unsafe {
        for count in [0x2345_6789, 7] {
            ffi::lua_sethook(thread, Some(count_hook), ffi::LUA_MASKCOUNT, count);
            let head = thread as *const ThreadHead;
            if (*head).basehookcount != count
                || (*head).hookcount != count
                || (*head).basehookcount != ffi::lua_gethookcount(thread)
                || (*head).hookmask != ffi::lua_gethookmask(thread)
            {
                return false;
            }
        }
        true
    }
}

/// The budget of the state `thread` belongs to (null before [`install`]).
unsafe fn budget_of<'a>(thread: *mut ffi::lua_State) -> Option<&'a Budget> {
    unsafe {
        let budget = *(ffi::lua_getextraspace(thread) as *const *const Budget);
        budget.as_ref()
    }
}

/// Charges what `thread` ran since its window began and starts a new window of at most what the
/// budget has left (one instruction once it is spent, so a stopped entry raises again at once).
///
/// # Safety
/// `thread` is a live thread of a state with a budget installed, not running Lua code right now
/// (it is the caller of the C function doing this, or suspended, or finished).
pub(crate) unsafe fn settle(thread: *mut ffi::lua_State) {
    unsafe {
        let Some(budget) = budget_of(thread) else { return };
        let ran = ran_in_window(thread);
        if ran > 0 {
            let _ = budget.take(ran);
        }
        rearm(budget, thread);
    }
}

/// Starts a new window on `thread` (its count so far is dropped: settle first).
unsafe fn rearm(budget: &Budget, thread: *mut ffi::lua_State) {
    unsafe {
        let window = if budget.spent() { 1 } else { budget.window() };
        ffi::lua_sethook(thread, Some(count_hook), ffi::LUA_MASKCOUNT, window);
    }
}

/// Starts a fresh window on a thread about to run (a coroutine about to be resumed, or its
/// resumer about to continue) and makes it the entry's running thread for the watchdog.
///
/// # Safety
/// As [`settle`]; the thread that ran before stays alive until this returns.
pub(crate) unsafe fn arm_thread(thread: *mut ffi::lua_State) {
    unsafe {
        if let Some(budget) = budget_of(thread) {
            rearm(budget, thread);
            budget.set_running(thread);
        }
    }
}

/// Charges `cost` instructions of work done by a library function on the running thread of
/// `lua` (an mlua callback's view of it). Fails with the limit's error (which the caller
/// returns; the sandbox adds the position) when the entry cannot afford it; the entry then stays
/// stopped. Free outside entries (no budget).
pub(crate) fn charge(lua: &Lua, cost: u64) -> mlua::Result<()> {
    let state = lua.state();
    // SAFETY: inside a callback `Lua::state` is the calling thread, which is not running Lua.
    unsafe {
        let was_spent = budget_of(state).is_some_and(Budget::spent);
        match try_charge(state, cost) {
            Ok(()) => Ok(()),
            Err(message) => {
                if !was_spent {
                    // The error goes back through the sandbox's Lua wrapper (`lualib::Lib`),
                    // which raises it at the script's position; a window of one would have the
                    // hook raise first, inside the wrapper. Once only: a script catching the
                    // error meets a window of one from its next library call on.
                    ffi::lua_sethook(state, Some(count_hook), ffi::LUA_MASKCOUNT, WRAPPER_GRACE);
                }
                Err(mlua::Error::RuntimeError(message))
            }
        }
    }
}

/// Instructions the sandbox's wrapper of a Rust library function runs from the function's
/// return to raising its error (`check` in the prelude: about seven), with room to spare.
const WRAPPER_GRACE: c_int = 16;

/// [`charge`] for raw C functions: raises the limit's error at the caller's position.
///
/// # Safety
/// `state` is the running thread inside a C function called from Lua; on failure this longjmps
/// over the caller's frame, which must hold nothing with a destructor.
pub(crate) unsafe fn charge_raw(state: *mut ffi::lua_State, cost: u64) {
    unsafe {
        charge_raw_at(state, cost, 1);
    }
}

/// [`charge_raw`] naming the position of stack level `level` (1: the caller) in its error.
///
/// # Safety
/// As [`charge_raw`].
pub(crate) unsafe fn charge_raw_at(state: *mut ffi::lua_State, cost: u64, level: c_int) {
    unsafe {
        if let Err(message) = try_charge(state, cost) {
            ffi::luaL_where(state, level);
            ffi::lua_pushlstring(state, message.as_ptr().cast(), message.len());
            drop(message);
            ffi::lua_concat(state, 2);
            ffi::lua_error(state);
        }
    }
}

unsafe fn try_charge(thread: *mut ffi::lua_State, cost: u64) -> Result<(), String> {
    unsafe {
        let Some(budget) = budget_of(thread) else { return Ok(()) };
        let ok = budget.take(cost) && (cost < CLOCK_CHECK_COST || budget.in_time());
        // The running thread's window was sized for the budget before this charge; shorten it if it
        // no longer fits, so the thread cannot run past the budget on the strength of an old window.
        let window = u64::try_from(ffi::lua_gethookcount(thread)).unwrap_or(0);
        if !ok || budget.remaining.load(Relaxed) < window {
            settle(thread);
            stop_main_too(budget, thread);
        }
        if ok {
            Ok(())
        } else {
            Err(budget.stop_message())
        }
    }
}

/// After a coroutine's entry was stopped, make sure the main thread does not run on for a
/// window after `coroutine.resume` returns.
unsafe fn stop_main_too(budget: &Budget, thread: *mut ffi::lua_State) {
    unsafe {
        let main = budget.main.load(Relaxed);
        if budget.spent() && !main.is_null() && main != thread && ffi::lua_gethookcount(main) != 1 {
            ffi::lua_sethook(main, Some(count_hook), ffi::LUA_MASKCOUNT, 1);
        }
    }
}

/// Error from [`install`]: the Lua the engine was built with is not the Lua 5.4 it reads.
#[derive(Debug)]
pub(crate) struct LayoutMismatch;

/// Points the main thread's extra space at `budget` (every coroutine created later copies it) and
/// keeps the budget alive for as long as the Lua state. Call once, before any script runs.
pub(crate) fn install(lua: &Lua, budget: &Arc<Budget>) -> Result<(), LayoutMismatch> {
    lua.set_app_data(Arc::clone(budget));
    // SAFETY: see the module doc; nothing else in the process uses LUA_EXTRASPACE.
    unsafe {
        let state = lua.state();
        budget.main.store(state, Relaxed);
        *(ffi::lua_getextraspace(state) as *mut *const Budget) = Arc::as_ptr(budget);
        if !layout_matches(state) {
            return Err(LayoutMismatch);
        }
        ffi::lua_sethook(state, Some(count_hook), ffi::LUA_MASKCOUNT, budget.window());
    }
    Ok(())
}

unsafe extern "C-unwind" fn count_hook(state: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    unsafe {
        let Some(budget) = budget_of(state) else { return };
        let ran = ffi::lua_gethookcount(state);
        if budget.take(u64::try_from(ran).unwrap_or(0)) && budget.in_time() {
            let next = budget.window();
            if next != ran {
                ffi::lua_sethook(state, Some(count_hook), ffi::LUA_MASKCOUNT, next);
            }
            return;
        }
        if ran != 1 {
            ffi::lua_sethook(state, Some(count_hook), ffi::LUA_MASKCOUNT, 1);
        }
        // A coroutine's error may be caught by `coroutine.resume`; the main thread must not run
        // on for a whole window after it returns.
        stop_main_too(budget, state);
        let message = budget.stop_message();
        // Not `luaL_error`: it names the caller's position (level 1), but a hook runs without a frame
        // of its own, so level 0 is the Lua function that was interrupted.
        ffi::luaL_where(state, 0);
        ffi::lua_pushlstring(state, message.as_ptr().cast(), message.len());
        drop(message);
        ffi::lua_concat(state, 2);
        ffi::lua_error(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_runs: u32) -> Budget {
        Budget::new(max_runs, Arc::default(), Arc::default())
    }

    #[test]
    fn windows_add_up_to_max_runs_plus_one() {
        let budget = budget(2500);
        assert_eq!(budget.window(), 1000);
        assert!(budget.take(1000));
        assert!(budget.take(1000));
        assert_eq!(budget.window(), 501);
        assert!(!budget.take(501));
        assert!(!budget.take(1), "a spent budget stays spent");
        assert_eq!(budget.charged(), 2501);
        assert_eq!(budget.stopped(), Some(Stop::Instructions));
    }

    #[test]
    fn small_budget_is_one_window() {
        let budget = budget(10);
        assert_eq!(budget.window(), 11);
        assert!(!budget.take(11));
    }

    #[test]
    fn halt_and_clock_stop_an_entry() {
        let halt = Arc::new(AtomicBool::new(false));
        let budget = Budget::new(10, Arc::clone(&halt), Arc::default());
        assert!(budget.in_time());
        budget.deadline.store(1, Relaxed);
        budget.time_limit_ms.store(5, Relaxed);
        assert!(!budget.in_time());
        assert_eq!(budget.stop_message(), "time limit exceeded (5 ms)");
        let budget = Budget::new(10, Arc::clone(&halt), Arc::default());
        halt.store(true, Relaxed);
        assert!(!budget.in_time());
        assert_eq!(budget.stop_message(), HALT_MESSAGE);
    }

    #[test]
    fn thread_layout_is_lua_54s() {
        let lua = Lua::new();
        let budget = Arc::new(budget(100));
        assert!(install(&lua, &budget).is_ok(), "ThreadHead does not match this Lua's lua_State");
    }
}
