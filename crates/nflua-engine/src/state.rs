//! One Lua state: its interpreter, configuration, counters, and the single door every entry
//! (execute, receive callback; later timers and packets) goes through.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use mlua::chunk::ChunkMode;
use mlua::{Function, IntoLuaMulti, Lua, Value};
use nflua_data::Data;

use crate::limits::Budget;
use crate::traceback::{self, ErrorText};
use crate::{sandbox, EngineError, NetlinkSink, StateConfig, StateInfo, StateStats};

/// What the libraries inside a state need to know about it. Shared (`Arc`) between the [`State`]
/// and the Rust functions registered in its Lua.
pub(crate) struct Context {
    pub(crate) name: String,
    pub(crate) sink: Arc<dyn NetlinkSink>,
    /// Sequence number of the next `nf.netlink` message (the original started at 0).
    pub(crate) netlink_seq: AtomicU32,
    pub(crate) counters: Counters,
    pub(crate) error_text: ErrorText,
    /// A warning arrives in pieces; this holds the pieces until the last one.
    pub(crate) warning: std::sync::Mutex<String>,
}

/// Per-state statistics (atomics because [`Context`] is shared with `Send` closures; one thread
/// uses a state at a time).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) peak_alloc_bytes: AtomicUsize,
}

impl Context {
    pub(crate) fn count_error(&self) {
        self.counters.errors.fetch_add(1, Relaxed);
    }
}

pub(crate) struct State {
    config: StateConfig,
    lua: Lua,
    /// The base library's `xpcall` and our message handler: every entry runs as
    /// `xpcall(f, on_error, ...)`, so errors never unwind into Rust without their traceback.
    xpcall: Function,
    on_error: Function,
    budget: Arc<Budget>,
    ctx: Arc<Context>,
}

impl State {
    pub(crate) fn new(
        config: StateConfig,
        sink: Arc<dyn NetlinkSink>,
    ) -> Result<State, EngineError> {
        let ctx = Arc::new(Context {
            name: config.name.clone(),
            sink,
            netlink_seq: AtomicU32::new(0),
            counters: Counters::default(),
            error_text: ErrorText::default(),
            warning: std::sync::Mutex::new(String::new()),
        });
        let budget = Arc::new(Budget::new(config.max_runs));
        let built = sandbox::build(&config, &ctx, &budget)
            .map_err(|e| EngineError::Create(traceback::error_message(&e)))?;
        let state = State {
            config,
            lua: built.lua,
            xpcall: built.xpcall,
            on_error: built.on_error,
            budget,
            ctx,
        };
        state.note_memory();
        Ok(state)
    }

    pub(crate) fn info(&self) -> StateInfo {
        StateInfo {
            name: self.config.name.clone(),
            max_alloc_bytes: self.config.max_alloc_bytes,
            cur_alloc_bytes: self.lua.used_memory(),
            max_runs: self.config.max_runs,
            debug: self.config.debug,
        }
    }

    pub(crate) fn stats(&self) -> StateStats {
        let counters = &self.ctx.counters;
        StateStats {
            name: self.config.name.clone(),
            cur_alloc_bytes: self.lua.used_memory(),
            peak_alloc_bytes: counters
                .peak_alloc_bytes
                .load(Relaxed)
                .max(self.lua.used_memory()),
            max_alloc_bytes: self.config.max_alloc_bytes,
            max_runs: self.config.max_runs,
            calls: counters.calls.load(Relaxed),
            errors: counters.errors.load(Relaxed),
            instructions: self.budget.charged(),
        }
    }

    /// Loads `chunk` as text (never bytecode) named `chunk_name` and runs it.
    pub(crate) fn execute(&mut self, chunk: &[u8], chunk_name: &str) -> Result<(), EngineError> {
        self.ctx.counters.calls.fetch_add(1, Relaxed);
        let loaded = self
            .lua
            .load(chunk)
            .set_name(chunk_name)
            .set_mode(ChunkMode::Text)
            .into_function();
        match loaded {
            Ok(function) => self.run("execute", function, ()),
            Err(e) => Err(self.fail("execute", traceback::error_message(&e))),
        }
    }

    /// Calls `__receive_callback(pid, buffer)` with a buffer holding `payload`, invalidated when
    /// the call returns so a script that keeps it cannot read it later.
    pub(crate) fn deliver(&mut self, pid: u32, payload: &[u8]) -> Result<(), EngineError> {
        let callback: Value = self
            .lua
            .globals()
            .raw_get("__receive_callback")
            .unwrap_or(Value::Nil);
        if callback.is_nil() {
            self.ctx.count_error();
            tracing::debug!(state = %self.config.name, "DATA for a state without __receive_callback");
            return Err(EngineError::NoReceiveCallback(self.config.name.clone()));
        }
        self.ctx.counters.calls.fetch_add(1, Relaxed);
        let data = Data::from_bytes(payload);
        let buffer = match self.lua.create_userdata(data.clone()) {
            Ok(buffer) => buffer,
            Err(e) => return Err(self.fail("receive", traceback::error_message(&e))),
        };
        let result = self.run_value("receive", callback, (i64::from(pid), buffer));
        data.invalidate();
        result
    }

    fn run(
        &mut self,
        entry: &'static str,
        function: Function,
        args: impl IntoLuaMulti,
    ) -> Result<(), EngineError> {
        self.run_value(entry, Value::Function(function), args)
    }

    /// The entry door: refills the instruction budget, calls `callable(args...)` under the message
    /// handler, and turns any failure (Lua error, limit, memory, even a Rust panic in a library
    /// function) into a counted, logged [`EngineError::Lua`].
    fn run_value(
        &mut self,
        entry: &'static str,
        callable: Value,
        args: impl IntoLuaMulti,
    ) -> Result<(), EngineError> {
        self.ctx.error_text.clear();
        self.budget.arm(&self.lua);
        // A tuple is pushed straight onto the Lua stack: no allocation on the way in or out.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            self.xpcall
                .call::<(bool, Value)>((callable, &self.on_error, args))
        }));
        let result = match outcome {
            Ok(Ok((true, _))) if self.budget.spent() => {
                // The script caught the limit error (pcall, coroutine.resume) and returned.
                Err(format!(
                    "{} (the script caught the error and went on)",
                    crate::LIMIT_MESSAGE
                ))
            }
            Ok(Ok((true, _))) => Ok(()),
            Ok(Ok((false, err))) => Err(self
                .ctx
                .error_text
                .take()
                .unwrap_or_else(|| traceback::describe(&err))),
            Ok(Err(e)) => Err(traceback::error_message(&e)),
            Err(_) => Err("internal error: a library function panicked".to_string()),
        };
        match result {
            Ok(()) => {
                self.note_memory();
                Ok(())
            }
            Err(text) => Err(self.fail(entry, text)),
        }
    }

    /// Counts and logs a failed entry.
    fn fail(&mut self, entry: &'static str, text: String) -> EngineError {
        self.ctx.count_error();
        self.note_memory();
        if text.starts_with("not enough memory") {
            // The failed allocation tells the state reached its limit; collect now so LIST shows
            // what the state really holds, not the garbage of the failed call.
            self.ctx
                .counters
                .peak_alloc_bytes
                .fetch_max(self.config.max_alloc_bytes, Relaxed);
            let _ = self.lua.gc_collect();
        }
        tracing::warn!(state = %self.config.name, entry, "{text}");
        EngineError::Lua(text)
    }

    fn note_memory(&self) {
        self.ctx
            .counters
            .peak_alloc_bytes
            .fetch_max(self.lua.used_memory(), Relaxed);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Closing the state can run `__close` handlers; give them a fresh, finite budget.
        self.budget.arm(&self.lua);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    struct NullSink;

    impl NetlinkSink for NullSink {
        fn send_data(
            &self,
            _: &str,
            _: u32,
            _: u32,
            _: u32,
            payload: &[u8],
        ) -> std::io::Result<usize> {
            Ok(payload.len())
        }
    }

    fn state() -> State {
        let config = StateConfig {
            name: "t".into(),
            max_alloc_bytes: 1 << 20,
            max_runs: 1_000_000,
            debug: false,
        };
        match State::new(config, Arc::new(NullSink)) {
            Ok(state) => state,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `chunk` in a fresh state and returns what it returns, as a string.
    pub(crate) fn eval(chunk: &str) -> String {
        let state = state();
        state.budget.arm(&state.lua);
        match state.lua.load(chunk).set_name("=chunk").eval::<String>() {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `chunk` through the entry door and returns its error text.
    pub(crate) fn eval_err(chunk: &str) -> String {
        match state().execute(chunk.as_bytes(), "=chunk") {
            Err(EngineError::Lua(text)) => text,
            other => panic!("expected a Lua error, got {other:?}"),
        }
    }

    #[test]
    fn library_errors_are_plain_strings_at_the_callers_position() {
        let got = eval(
            "local ok, err = pcall(function()\n require('nf').netlink(1, 0, {})\n end) \
             return type(err) .. ' ' .. err",
        );
        assert_eq!(
            got,
            "string chunk:2: nf.netlink: payload must be a string or a data object, got table"
        );
        let got = eval("local ok, err = pcall(require, 'nope') return err");
        assert_eq!(got, "module 'nope' not found");
        let got = eval("local ok, err = pcall(setmetatable, 1, {}) return err");
        assert!(got.starts_with("bad argument #1 to "), "{got}");
    }

    #[test]
    fn max_runs_is_exact() {
        // `local a = 1` runs LOADI and RETURN as counted instructions (Lua starts counting a
        // vararg function after its VARARGPREP).
        for (max_runs, ok) in [(2, true), (1, false)] {
            let config = StateConfig {
                name: "t".into(),
                max_alloc_bytes: 1 << 20,
                max_runs,
                debug: false,
            };
            let mut state =
                State::new(config, Arc::new(NullSink)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                state.execute(b"local a = 1", "=chunk").is_ok(),
                ok,
                "max_runs {max_runs}"
            );
        }
    }

    #[test]
    fn tiny_budgets_still_create() {
        let config = StateConfig {
            name: "t".into(),
            max_alloc_bytes: 1 << 20,
            max_runs: 1,
            debug: false,
        };
        let mut state = State::new(config, Arc::new(NullSink)).unwrap_or_else(|e| panic!("{e}"));
        let text = match state.execute(b"local a = 1 local b = 2", "=chunk") {
            Err(EngineError::Lua(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(text.contains(crate::LIMIT_MESSAGE), "{text}");
    }
}
