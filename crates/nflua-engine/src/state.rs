//! One Lua state: its interpreter, configuration, counters, and the single door every entry
//! (execute, receive callback, packet hook, timer) goes through.
//!
//! What a state holds is its Lua heap plus the bytes it holds outside it (see `memory.rs`): its
//! data buffers, lent buffers, pending timers and a running hook call's replacement packet;
//! [`Figures`] reports it (LIST's `curralloc`) without entering the state. Its lent buffers are
//! freed after a call that left it over its limit.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mlua::chunk::ChunkMode;
use mlua::{Function, IntoLua, IntoLuaMulti, Lua, RegistryKey, Value};
use nflua_data::{Data, LentBuffer, LentViews};

use crate::door::{self, Ended};
use crate::hook::{FlowInfo, HookCall, HookMode, HookOutcome, HookResult, PacketContext, StreamContext};
use crate::limits::Budget;
use crate::memory::{PendingBytes, StateMemory, TIMER_BYTES};
use crate::timers::TimerQueue;
use crate::traceback::{self, ErrorText};
use crate::watchdog::Watchdog;
use crate::{sandbox, Clock, EngineError, NetlinkSink, StateConfig, StateInfo, StateStats};

/// Hook function names whose Lua strings a state keeps (a daemon has a few hooks per state; a
/// name past this many is simply made again on each call).
const CACHED_FUNCTION_NAMES: usize = 16;

/// The global a DATA message is delivered to.
const RECEIVE_CALLBACK: &str = "__receive_callback";

/// The error of an entry in which a library function panicked.
const PANICKED: &str = "internal error: a library function panicked";

/// What the libraries inside a state need to know about it. Shared (`Arc`) between the [`State`]
/// and the Rust functions registered in its Lua.
///
/// Only the thread holding the state's lock (see `engine.rs`) runs the state's Lua, so the
/// libraries' uses of these fields never race each other; the atomics and mutexes are there
/// because the type must be `Sync` to live in `Send` closures, and because statistics are read
/// by other threads.
pub(crate) struct Context {
    pub(crate) name: Arc<str>,
    /// Unique for the engine's lifetime (a name can come back after a destroy).
    pub(crate) id: u64,
    pub(crate) sink: Arc<dyn NetlinkSink>,
    pub(crate) timers: Arc<TimerQueue>,
    /// The time the state's scripts see.
    pub(crate) clock: Clock,
    /// What the state holds outside its Lua heap (buffers, timers, a replacement packet).
    pub(crate) memory: Arc<StateMemory>,
    /// Sequence number of the next `nf.netlink` message (the original started at 0).
    pub(crate) netlink_seq: AtomicU32,
    pub(crate) counters: Counters,
    pub(crate) error_text: ErrorText,
    /// A warning arrives in pieces; this holds the pieces until the last one.
    pub(crate) warning: Mutex<String>,
    /// The packet of the running hook call; `None` outside hooks. Never held while Lua runs or
    /// allocates (an allocation can run a debug state's finalizer, which may call `nf` again).
    pub(crate) hook: Mutex<Option<HookCall>>,
}

/// Per-state statistics (atomics because [`Context`] is shared with `Send` closures and other
/// threads read them).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) peak_alloc_bytes: AtomicUsize,
    /// Memory in use at the end of the last entry: what LIST and STATS show, read without
    /// entering the state (which would wait for a running entry).
    pub(crate) cur_alloc_bytes: AtomicUsize,
}

impl Context {
    pub(crate) fn count_error(&self) {
        self.counters.errors.fetch_add(1, Relaxed);
    }

    /// The running hook call, locked; `None` outside hooks.
    pub(crate) fn hook(&self) -> MutexGuard<'_, Option<HookCall>> {
        self.hook.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a new state shares with the engine.
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) sink: Arc<dyn NetlinkSink>,
    pub(crate) timers: Arc<TimerQueue>,
    /// The engine's halt flag (see `Engine::halt_scripts`).
    pub(crate) halt: Arc<AtomicBool>,
    /// Where the state's budget is watched for late entries.
    pub(crate) watchdog: Arc<Watchdog>,
    /// Wall-clock limits of an entry and of a hook call.
    pub(crate) max_call: Option<Duration>,
    pub(crate) max_hook_call: Option<Duration>,
    pub(crate) clock: Clock,
}

pub(crate) struct State {
    config: StateConfig,
    lua: Lua,
    /// The base library's `xpcall` and our message handler: every entry runs as
    /// `xpcall(f, on_error, ...)` (hooks and receive callbacks as `pcall` with `on_error` as
    /// message handler, see `door.rs`), so errors never unwind into Rust without their
    /// traceback.
    xpcall: Function,
    on_error: Function,
    /// `on_error` in the registry, for the fast door.
    handler: door::Ref,
    /// The Lua strings of hook function names (and `__receive_callback`) in the registry, so a
    /// call does not intern the name again.
    function_names: Vec<(Box<str>, door::Ref)>,
    /// Hook calls so far; the current one's number tells its packet objects from older ones.
    hook_generation: u64,
    /// The reused buffers of hook calls (the frame) and of receive callbacks (the payload),
    /// handed to Lua as borrowed views (see `hook.rs`).
    hook_buffer: LentBuffer,
    receive_buffer: LentBuffer,
    /// `nflua_data::view_caller`'s function in the registry, which calls hooks and the receive
    /// callback with their views; made on first use.
    view_caller: Option<door::Ref>,
    /// The GC pause last set (see `sandbox::gc_pause`).
    gc_pause: Cell<i32>,
    /// Whether the state held more than its limit (lent buffers included) after the last entry.
    over_limit: Cell<bool>,
    budget: Arc<Budget>,
    /// Wall-clock limits of an entry and of a hook call (`EngineConfig::max_call`).
    max_call: Option<Duration>,
    max_hook_call: Option<Duration>,
    ctx: Arc<Context>,
}

impl State {
    pub(crate) fn new(config: StateConfig, shared: Shared) -> Result<State, EngineError> {
        let ctx = Arc::new(Context {
            name: Arc::from(config.name.as_str()),
            id: shared.id,
            sink: shared.sink,
            timers: shared.timers,
            clock: shared.clock,
            memory: Arc::new(StateMemory::new(config.max_alloc_bytes)),
            netlink_seq: AtomicU32::new(0),
            counters: Counters::default(),
            error_text: ErrorText::default(),
            warning: Mutex::new(String::new()),
            hook: Mutex::new(None),
        });
        let budget = Arc::new(Budget::new(config.max_runs, shared.halt, shared.watchdog.bell()));
        shared.watchdog.watch(&budget);
        let built = sandbox::build(&config, &ctx, &budget)
            .map_err(|e| EngineError::Create(traceback::error_message(&e)))?;
        nflua_data::set_meter(&built.lua, Arc::clone(&ctx.memory) as Arc<dyn nflua_data::Meter>);
        let handler = door::keep(&built.lua, &built.on_error)
            .map_err(|e| EngineError::Create(traceback::error_message(&e)))?;
        let hook_buffer = LentBuffer::new(&built.lua);
        let receive_buffer = LentBuffer::new(&built.lua);
        let state = State {
            config,
            lua: built.lua,
            xpcall: built.xpcall,
            handler,
            on_error: built.on_error,
            function_names: Vec::new(),
            hook_generation: 0,
            hook_buffer,
            receive_buffer,
            view_caller: None,
            gc_pause: Cell::new(sandbox::GC_PAUSE),
            over_limit: Cell::new(false),
            budget,
            max_call: shared.max_call,
            max_hook_call: shared.max_hook_call,
            ctx,
        };
        state.note_memory();
        Ok(state)
    }

    /// What LIST and STATS read of this state without entering it.
    pub(crate) fn figures(&self) -> Figures {
        Figures { config: self.config.clone(), ctx: Arc::clone(&self.ctx), budget: Arc::clone(&self.budget) }
    }

    /// Counts the lent buffers' capacity (a fill may have grown one).
    fn count_lent_buffers(&self) {
        // Lock-free (the buffers keep their capacity in an atomic): this runs on every hook call.
        self.ctx.memory.set_lent(self.hook_buffer.capacity() + self.receive_buffer.capacity());
    }

    /// After a call: frees the lent buffers when the state holds more than its limit, so one large
    /// packet or message does not keep it there (the next fill allocates again).
    fn fit_lent_buffers(&self) {
        if self.over_limit.get() {
            self.hook_buffer.free();
            self.receive_buffer.free();
            self.count_lent_buffers();
        }
    }

    pub(crate) fn count_call(&self) {
        self.ctx.counters.calls.fetch_add(1, Relaxed);
    }

    /// Loads `chunk` as text (never bytecode) named `chunk_name` and runs it.
    pub(crate) fn execute(&mut self, chunk: &[u8], chunk_name: &str) -> Result<(), EngineError> {
        self.count_call();
        let loaded = self.lua.load(chunk).set_name(chunk_name).set_mode(ChunkMode::Text).into_function();
        match loaded {
            Ok(function) => self.run_value("execute", Value::Function(function), ()).map(drop),
            Err(e) => Err(self.fail("execute", traceback::error_message(&e))),
        }
    }

    /// Calls `__receive_callback(pid, buffer)` with a buffer holding `payload`, invalidated when
    /// the call returns so a script that keeps it cannot read it later. The buffer is a borrowed
    /// view of the state's reused receive buffer, as a hook's (see `hook.rs`).
    pub(crate) fn deliver(&mut self, pid: u32, payload: &[u8]) -> Result<(), EngineError> {
        let data = self.receive_buffer.refill(payload);
        self.count_lent_buffers();
        let views = self.receive_buffer.views(&self.lua, &data, None);
        let result = match views {
            Ok(views) => {
                self.enter_door("receive", RECEIVE_CALLBACK, &[i64::from(pid)], views, HookMode::Match)
            }
            Err(e) => Err(self.fail("receive", traceback::error_message(&e))),
        };
        self.receive_buffer.invalidate();
        self.fit_lent_buffers();
        match result {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                self.ctx.count_error();
                tracing::debug!(state = %self.config.name, "DATA for a state without __receive_callback");
                Err(EngineError::NoReceiveCallback(self.config.name.clone()))
            }
            Err(e) => Err(e),
        }
    }

    /// The registry reference of the Lua string `name`, and whether it is a temporary one (to
    /// release after the call): made once per name for the first [`CACHED_FUNCTION_NAMES`].
    fn function_name(&mut self, name: &str) -> mlua::Result<(door::Ref, bool)> {
        if let Some((_, reference)) = self.function_names.iter().find(|(n, _)| **n == *name) {
            return Ok((*reference, false));
        }
        let reference = door::keep(&self.lua, self.lua.create_string(name)?)?;
        if self.function_names.len() < CACHED_FUNCTION_NAMES {
            self.function_names.push((name.into(), reference));
            return Ok((reference, false));
        }
        Ok((reference, true))
    }

    /// Calls `function(frame, packet)` in `state` and reads the result as `packet.mode` says.
    pub(crate) fn call_hook(
        &mut self,
        function: &str,
        packet: &PacketContext<'_>,
    ) -> Result<HookOutcome, EngineError> {
        let range = packet.lua_packet.clone();
        let len = packet.frame_len();
        if range.start > range.end || range.end > len {
            return Err(EngineError::InvalidPacket { start: range.start, end: range.end, len });
        }
        let parts = [&packet.link_header[..], packet.ip_packet];
        let frame = self.begin_hook(&parts, len, packet, None);
        // The range was checked, so this cannot fail.
        let returned = match frame.segment(range.start, Some(range.len())) {
            Ok(lua_packet) => self.run_hook(function, &frame, &lua_packet, packet.mode),
            Err(e) => Err(self.fail("hook", e.to_string())),
        };
        self.finish_hook(returned)
    }

    /// Calls a stream hook's `function(frame, stream)`: `frame` is the current packet's, `stream`
    /// the direction's bytes so far; `nf.flow()` tells the connection. `nf.reply` and
    /// `packet:send` work on the current packet as in any hook.
    pub(crate) fn call_stream(
        &mut self,
        function: &str,
        packet: &PacketContext<'_>,
        stream: &StreamContext<'_>,
    ) -> Result<HookOutcome, EngineError> {
        let len = packet.frame_len();
        // One copy into the hook buffer: the frame, then the stream bytes after it.
        let parts = [&packet.link_header[..], packet.ip_packet, stream.bytes];
        let whole = self.begin_hook(&parts, len, packet, Some(stream.flow.clone()));
        let views = whole
            .segment(0, Some(len))
            .and_then(|frame| Ok((frame, whole.segment(len, Some(stream.bytes.len()))?)));
        let returned = match views {
            Ok((frame, lua_stream)) => self.run_hook(function, &frame, &lua_stream, packet.mode),
            Err(e) => Err(self.fail("hook", e.to_string())),
        };
        self.finish_hook(returned)
    }

    fn finish_hook(&mut self, returned: Result<HookResult, EngineError>) -> Result<HookOutcome, EngineError> {
        // Whatever happened, nothing of this call may stay reachable: views fail from now on, and
        // `nf`'s packet functions raise again.
        let (hotdrop, replacement) = self.end_hook();
        let result = returned?;
        Ok(HookOutcome { result, hotdrop, replacement })
    }

    /// Copies `parts` joined into the hook buffer and makes its first `frame_len` bytes the
    /// running hook call's packet, where `nf` finds it. Returns the buffer's view of all of it.
    fn begin_hook(
        &mut self,
        parts: &[&[u8]],
        frame_len: usize,
        packet: &PacketContext<'_>,
        flow: Option<FlowInfo>,
    ) -> Data {
        self.hook_generation += 1;
        let whole = self.hook_buffer.refill_parts(parts);
        self.count_lent_buffers();
        // The frame alone for `nf.reply` and `packet:send` (a stream call's bytes follow it).
        let frame = if flow.is_some() {
            whole.segment(0, Some(frame_len)).unwrap_or_else(|_| whole.clone())
        } else {
            whole.clone()
        };
        *self.ctx.hook() = Some(HookCall {
            frame,
            mode: packet.mode,
            conntrack_id: packet.conntrack_id,
            generation: self.hook_generation,
            hotdrop: false,
            replacement: None,
            flow,
        });
        whole
    }

    /// Calls the global `function(frame, packet)` with borrowed views of `frame` and `packet`
    /// (views of the hook buffer) through the fast door, and reads its answer as `mode` says.
    /// A nil global is [`EngineError::NoFunction`], counted as an error of the state (as DATA
    /// for a state without `__receive_callback`); any other value is called and fails in Lua
    /// if it is not callable.
    fn run_hook(
        &mut self,
        function: &str,
        frame: &Data,
        packet: &Data,
        mode: HookMode,
    ) -> Result<HookResult, EngineError> {
        let views = match self.hook_buffer.views(&self.lua, frame, Some(packet)) {
            Ok(views) => views,
            Err(e) => return Err(self.fail("hook", traceback::error_message(&e))),
        };
        match self.enter_door("hook", function, &[], views, mode)? {
            Some(result) => Ok(result),
            None => {
                self.ctx.count_error();
                Err(EngineError::NoFunction {
                    state: self.config.name.clone(),
                    function: function.to_string(),
                })
            }
        }
    }

    /// The fast door (see `door.rs`): calls the global `function(extra..., views)` through the
    /// view caller with the same budget, limits and error handling as [`State::run_value`].
    /// `Ok(None)` when the global is nil (nothing ran, nothing counted).
    fn enter_door(
        &mut self,
        entry: &'static str,
        function: &str,
        extra: &[i64],
        views: LentViews,
        mode: HookMode,
    ) -> Result<Option<HookResult>, EngineError> {
        let prepared = self.view_caller().and_then(|caller| Ok((caller, self.function_name(function)?)));
        let (caller, (function_name, temporary)) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return Err(self.fail(entry, traceback::error_message(&e))),
        };
        let (n, first, second) = views;
        let call =
            door::Call { handler: self.handler, caller, function_name, extra, views: [n, first, second] };
        let time_limit = self.time_limit(entry);
        self.ctx.error_text.clear();
        self.ctx.memory.sync(&self.lua);
        let ended = door::run(
            &self.lua,
            &call,
            mode,
            || self.ctx.error_text.is_set(),
            || {
                self.count_call();
                self.budget.arm(&self.lua, time_limit);
            },
            || self.budget.disarm(),
        );
        if temporary {
            door::release(&self.lua, function_name);
        }
        let result = match ended {
            Ended::NoFunction => return Ok(None),
            Ended::NoStack => Err("stack overflow".to_string()),
            Ended::Returned(result) => self.unless_caught(result),
            Ended::Raised(err) => Err(self.raised(err.as_ref())),
            Ended::Panicked => Err(PANICKED.to_string()),
        };
        self.finish(entry, result).map(Some)
    }

    /// The registry reference of the view caller (see `nflua_data::view_caller`), made on first
    /// use.
    fn view_caller(&mut self) -> mlua::Result<door::Ref> {
        if let Some(caller) = self.view_caller {
            return Ok(caller);
        }
        let caller = door::keep(&self.lua, nflua_data::view_caller(&self.lua)?)?;
        self.view_caller = Some(caller);
        Ok(caller)
    }

    /// Ends the running hook call: every view of its buffer fails from now on, and `nf`'s packet
    /// functions raise again. Returns what the script recorded in the call: the hot drop and the
    /// replacement packet (taken out field by field: moving the whole call out of its lock was
    /// 4 % of a hook call's time in copies).
    fn end_hook(&mut self) -> (bool, Option<Vec<u8>>) {
        self.hook_buffer.invalidate();
        let (hotdrop, replacement) = {
            let mut hook = self.ctx.hook();
            let recorded =
                hook.as_mut().map_or((false, None), |call| (call.hotdrop, call.replacement.take()));
            *hook = None;
            recorded
        };
        if let Some(packet) = &replacement {
            // The packet leaves the state with the call's outcome.
            self.ctx.memory.release(packet.len());
        }
        self.fit_lent_buffers();
        (hotdrop, replacement)
    }

    /// Runs a timer's callback (taking it out of the registry: timers are one-shot).
    pub(crate) fn run_timer(&mut self, callback: RegistryKey) -> Result<(), EngineError> {
        self.count_call();
        self.ctx.memory.release(TIMER_BYTES);
        let function = self.lua.registry_value::<Value>(&callback);
        // Removing never fails for a key of this Lua; a key of another Lua is only dropped.
        let _ = self.lua.remove_registry_value(callback);
        match function {
            Ok(function) => self.run_value("timer", function, ()).map(drop),
            Err(e) => Err(self.fail("timer", traceback::error_message(&e))),
        }
    }

    /// The entry door: refills the instruction budget, calls `callable(args...)` under the message
    /// handler, and turns any failure (Lua error, limit, memory, even a Rust panic in a library
    /// function) into a counted, logged [`EngineError::Lua`]. Returns the first value the call
    /// returned (nil if none).
    pub(crate) fn run_value(
        &self,
        entry: &'static str,
        callable: impl IntoLua,
        args: impl IntoLuaMulti,
    ) -> Result<Value, EngineError> {
        self.ctx.error_text.clear();
        // Buffers freed by the collector since the last entry give their room back to Lua.
        self.ctx.memory.sync(&self.lua);
        self.budget.arm(&self.lua, self.time_limit(entry));
        // A tuple is pushed straight onto the Lua stack: no allocation on the way in or out.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            self.xpcall.call::<(bool, Value)>((callable, &self.on_error, args))
        }));
        self.budget.disarm();
        let result = match outcome {
            Ok(Ok((true, value))) => self.unless_caught(value),
            Ok(Ok((false, err))) => Err(self.raised(Some(&err))),
            Ok(Err(e)) => Err(traceback::error_message(&e)),
            Err(_) => Err(PANICKED.to_string()),
        };
        self.finish(entry, result)
    }

    /// The wall-clock limit of an entry.
    fn time_limit(&self, entry: &'static str) -> Option<Duration> {
        if entry == "hook" {
            self.max_hook_call
        } else {
            self.max_call
        }
    }

    /// The text of an entry's error: what the message handler recorded (message and traceback),
    /// else the error object's own text (`None`: the door did not read it, the handler had).
    fn raised(&self, err: Option<&Value>) -> String {
        self.ctx
            .error_text
            .take()
            .unwrap_or_else(|| err.map_or_else(|| "nil".to_string(), traceback::describe))
    }

    /// What an entry returned, unless the script caught the limit's error (`pcall`,
    /// `coroutine.resume`) and returned anyway.
    fn unless_caught<T>(&self, returned: T) -> Result<T, String> {
        if self.budget.spent() {
            Err(format!("{} (the script caught the error and went on)", self.budget.stop_message()))
        } else {
            Ok(returned)
        }
    }

    /// Ends an entry: notes the memory after a success, counts and logs a failure.
    fn finish<T>(&self, entry: &'static str, result: Result<T, String>) -> Result<T, EngineError> {
        match result {
            Ok(value) => {
                self.note_memory();
                Ok(value)
            }
            Err(text) => Err(self.fail(entry, text)),
        }
    }

    /// Counts and logs a failed entry.
    pub(crate) fn fail(&self, entry: &'static str, text: String) -> EngineError {
        self.ctx.count_error();
        self.note_memory();
        if text.starts_with("not enough memory") {
            // The failed allocation tells the state reached its limit; collect now so LIST shows
            // what the state really holds, not the garbage of the failed call.
            self.ctx.counters.peak_alloc_bytes.fetch_max(self.config.max_alloc_bytes, Relaxed);
            let _ = self.lua.gc_collect();
            self.ctx.counters.cur_alloc_bytes.store(self.lua.used_memory(), Relaxed);
        }
        tracing::warn!(state = %self.config.name, entry, "{text}");
        EngineError::Lua(text)
    }

    /// Records the memory in use after an entry and fits the GC pause to the room left.
    fn note_memory(&self) {
        self.ctx.memory.sync(&self.lua);
        let heap = self.lua.used_memory();
        // LIST and STATS read this (they never wait for a running state) and add what the state
        // holds outside its heap, which they read live.
        self.ctx.counters.cur_alloc_bytes.store(heap, Relaxed);
        let held = self.ctx.memory.held_with(heap);
        let peak = &self.ctx.counters.peak_alloc_bytes;
        // A read first: the peak rarely moves, and this runs after every hook call.
        if held > peak.load(Relaxed) {
            peak.fetch_max(held, Relaxed);
        }
        self.over_limit.set(held > self.config.max_alloc_bytes);
        // The collector paces the Lua heap against the room the allocator's limit leaves it.
        let room = self.config.max_alloc_bytes.saturating_sub(self.ctx.memory.external());
        let pause = sandbox::gc_pause(heap, room);
        if pause != self.gc_pause.get() {
            sandbox::set_gc_pause(&self.lua, pause);
            self.gc_pause.set(pause);
        }
    }
}

/// The figures LIST and STATS show of one state, readable from any thread while the state runs:
/// its configuration, and atomics the state refreshes at the end of every entry (memory) or as it
/// goes (calls, errors, instructions). Kept by the engine beside the state's lock.
#[derive(Clone)]
pub(crate) struct Figures {
    config: StateConfig,
    ctx: Arc<Context>,
    budget: Arc<Budget>,
}

impl Figures {
    /// Takes room for a message waiting for the state (see [`crate::Engine::hold_pending`]).
    pub(crate) fn hold_pending(&self, bytes: usize) -> Result<PendingBytes, EngineError> {
        let heap = self.ctx.counters.cur_alloc_bytes.load(Relaxed);
        if self.ctx.memory.try_reserve_pending(heap, bytes) {
            Ok(PendingBytes::new(Arc::clone(&self.ctx.memory), bytes))
        } else {
            Err(EngineError::NoRoom {
                state: self.config.name.clone(),
                bytes,
                max_alloc: self.config.max_alloc_bytes,
            })
        }
    }

    /// Bytes the state holds: its Lua heap as of the end of its last entry, plus what it holds
    /// outside the heap (data buffers, timers, lent buffers) as of now.
    fn held(&self) -> usize {
        self.ctx.memory.held_with(self.ctx.counters.cur_alloc_bytes.load(Relaxed))
    }

    /// The configuration the state was made with.
    pub(crate) fn config(&self) -> &StateConfig {
        &self.config
    }

    pub(crate) fn info(&self) -> StateInfo {
        StateInfo {
            name: self.config.name.clone(),
            max_alloc_bytes: self.config.max_alloc_bytes,
            cur_alloc_bytes: self.held(),
            max_runs: self.config.max_runs,
            debug: self.config.debug,
        }
    }

    pub(crate) fn stats(&self) -> StateStats {
        let counters = &self.ctx.counters;
        let current = self.held();
        StateStats {
            name: self.config.name.clone(),
            cur_alloc_bytes: current,
            peak_alloc_bytes: counters.peak_alloc_bytes.load(Relaxed).max(current),
            max_alloc_bytes: self.config.max_alloc_bytes,
            max_runs: self.config.max_runs,
            calls: counters.calls.load(Relaxed),
            errors: counters.errors.load(Relaxed),
            instructions: self.budget.charged(),
            timers: self.ctx.timers.pending_count(self.ctx.id),
            // Kept by the engine's slot, which fills it in.
            lock_waits: 0,
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Closing the state can run `__close` handlers; give them a fresh, finite budget.
        self.budget.arm_for_close(&self.lua, self.max_call);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    struct NullSink;

    impl NetlinkSink for NullSink {
        fn send_data(&self, _: &str, _: u32, _: u32, _: u32, payload: &[u8]) -> std::io::Result<usize> {
            Ok(payload.len())
        }
    }

    pub(crate) fn shared() -> Shared {
        Shared {
            id: 1,
            sink: Arc::new(NullSink),
            timers: Arc::default(),
            halt: Arc::default(),
            watchdog: Arc::default(),
            max_call: None,
            max_hook_call: None,
            clock: Clock::System,
        }
    }

    fn state() -> State {
        let config =
            StateConfig { name: "t".into(), max_alloc_bytes: 1 << 20, max_runs: 1_000_000, debug: false };
        match State::new(config, shared()) {
            Ok(state) => state,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `chunk` in a fresh state and returns what it returns, as a string.
    pub(crate) fn eval(chunk: &str) -> String {
        let state = state();
        state.budget.arm(&state.lua, None);
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
        assert_eq!(got, "string chunk:2: nf.netlink: payload must be a string or a data object, got table");
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
            let config = StateConfig { name: "t".into(), max_alloc_bytes: 1 << 20, max_runs, debug: false };
            let mut state = State::new(config, shared()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(state.execute(b"local a = 1", "=chunk").is_ok(), ok, "max_runs {max_runs}");
        }
    }

    #[test]
    fn tiny_budgets_still_create() {
        let config = StateConfig { name: "t".into(), max_alloc_bytes: 1 << 20, max_runs: 1, debug: false };
        let mut state = State::new(config, shared()).unwrap_or_else(|e| panic!("{e}"));
        let text = match state.execute(b"local a = 1 local b = 2", "=chunk") {
            Err(EngineError::Lua(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(text.contains(crate::LIMIT_MESSAGE), "{text}");
    }
}
