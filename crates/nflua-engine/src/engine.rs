//! The map of named states, the checks made before one is created, and the locks that let
//! several threads use it.
//!
//! # Locking
//!
//! ```text
//!   Engine.states: RwLock<BTreeMap<name, Arc<Slot>>>     create/destroy write; everything else reads
//!        Slot.state: Mutex<Option<State>>                 held for a whole call into the state's Lua
//!        Slot.id, Slot.pins, Slot.wants_conntrack: atomics
//!        Slot.figures: RwLock<config + atomics>           what LIST/STATS read, never the slot's lock
//!   Engine.timers: TimerQueue (its own mutex, a leaf)     see `timers.rs`
//! ```
//!
//! A call takes the map's read lock just long enough to clone the slot's `Arc`, then locks the
//! slot: calls into one state serialize, calls into different states run in parallel, and no
//! call holds the map lock while Lua runs (so CREATE/DESTROY never wait for a script, only for
//! the state they destroy). Order: map, then a slot, then the timer queue; the map lock is never
//! taken while a slot is held, and the timer queue's lock is never held while taking another.
//!
//! Destroying removes the slot from the map first (new calls get `NotFound`), then takes the
//! state out of the slot, which waits for a call already inside it; a call that found the slot
//! before the removal and locks it afterwards finds `None` and reports `NotFound` too. The
//! state's Lua is closed by the destroying thread.
//!
//! LIST and STATS never lock a slot: a state's figures (configuration, counters, the memory in
//! use at the end of its last entry) live in atomics beside the lock (`state::Figures`), so a
//! long entry in one state does not hold up a listing of all of them.
//!
//! Timers are taken out of the queue ([`Engine::take_due_timers`]) apart from running them
//! ([`Engine::run_timer`]), so the daemon can run each on its state's own worker instead of one
//! timer thread that any slow callback would hold up.
//!
//! Reloading ([`Engine::reload`]) builds a new state beside the old one, without any lock, runs
//! the new chunks in it, and only if all succeed swaps it into the slot under the slot's lock:
//! a call already inside the old state finishes first, every later call (a queue worker holds
//! the slot, not the state) enters the new one, so each packet is decided wholly by one or the
//! other. The slot's id becomes the new state's, which retires the old state's timers (a timer
//! runs only in a slot whose id is its state's); its figures follow. The old Lua is closed after
//! the lock is released. The daemon runs a reload on its state's lane, where timers run too, so
//! a timer the new code sets while loading cannot fire before the swap.
//!
//! Pins (`pin`/`unpin`) count the packet hooks bound to a state. `pin` runs under the map's
//! read lock and `destroy` checks the count under its write lock, so a pin can never slip in
//! between the check and the removal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError,
};
use std::time::Instant;

use crate::hook::{HookOutcome, PacketContext, StreamContext};
use crate::state::{Figures, Shared, State};
use crate::timers::{Pending, TimerQueue};
use crate::watchdog::Watchdog;
use crate::{
    EngineConfig, EngineError, NetlinkSink, PendingBytes, SinkStats, StateConfig, StateInfo, StateStats,
};

/// Longest state name in bytes (SPEC §2: 64 including the terminating NUL).
pub const STATE_NAME_MAX_BYTES: usize = 63;

/// All states of one daemon (one network namespace), by name.
///
/// `Engine` is `Send + Sync` and every method takes `&self`: the daemon shares it (`Arc`)
/// between its control thread, its NFQUEUE workers and its timer thread (see the module doc of
/// `engine.rs` for the locks). Lua code runs on the calling thread, which needs a few MiB of
/// stack (Lua stops C recursion at 200 levels; see the crate's stack test).
pub struct Engine {
    config: EngineConfig,
    sink: Arc<dyn NetlinkSink>,
    /// Ordered by name, so `list` needs no sorting and LIST replies are stable.
    states: RwLock<BTreeMap<String, Arc<Slot>>>,
    timers: Arc<TimerQueue>,
    /// Id of the next state created (ids are never reused; timers name their state by id).
    next_state_id: AtomicU64,
    /// Set by [`Engine::halt_scripts`]; every state's budget watches it.
    halt: Arc<AtomicBool>,
    /// Stops entries past their wall-clock limit at their next instruction (see `watchdog.rs`).
    watchdog: Arc<Watchdog>,
}

/// One state and what the engine keeps beside it.
struct Slot {
    /// The id of the state inside (a reload puts in a state with a new id).
    id: AtomicU64,
    /// `None` once destroyed (a caller that found the slot just before may still lock it).
    state: Mutex<Option<State>>,
    /// Packet hooks referencing the state.
    pins: AtomicUsize,
    /// Some chunk executed in the state mentioned `connid`.
    wants_conntrack: AtomicBool,
    /// Times a caller found the state busy and had to wait: the contention of
    /// queue workers (and the control loop, timers) sharing one Lua state.
    lock_waits: AtomicU64,
    /// What LIST and STATS show, read without the state's lock.
    figures: RwLock<Figures>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<State>> {
        // A panic while a state was locked happened outside Lua (every call into Lua catches
        // unwinding); the state itself is still a consistent Lua state.
        match self.state.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.lock_waits.fetch_add(1, Relaxed);
                self.state.lock().unwrap_or_else(PoisonError::into_inner)
            }
        }
    }

    /// Reads the state's figures under their lock (a reload swaps them), without copying them:
    /// DATA messages look at them on their way in.
    fn figures(&self) -> RwLockReadGuard<'_, Figures> {
        self.figures.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> StateStats {
        let mut stats = self.figures().stats();
        stats.lock_waits = self.lock_waits.load(Relaxed);
        stats
    }
}

impl Engine {
    pub fn new(config: EngineConfig, sink: Arc<dyn NetlinkSink>) -> Engine {
        let watchdog = Arc::new(Watchdog::default());
        if let Some(shortest) = config.max_call.into_iter().chain(config.max_hook_call).min() {
            if let Err(e) = Watchdog::spawn(&watchdog, crate::watchdog::idle_tick(shortest)) {
                // The count hook still looks at the clock every thousand instructions.
                tracing::warn!(error = %e, "could not start the watchdog thread");
            }
        }
        Engine {
            config,
            sink,
            states: RwLock::new(BTreeMap::new()),
            timers: Arc::default(),
            next_state_id: AtomicU64::new(1),
            halt: Arc::default(),
            watchdog,
        }
    }

    /// Stops every running entry at its next thousand instructions (or its next charged library
    /// call) with "interrupted: the daemon is shutting down", and makes every later entry fail
    /// the same way at its first instruction. For shutdown: no script can delay it. Cannot be
    /// undone.
    pub fn halt_scripts(&self) {
        self.halt.store(true, Relaxed);
        self.watchdog.poke_late();
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<Slot>>> {
        // The map is only changed by single inserts and removes: a panic cannot leave it torn.
        self.states.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.states.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a state. Fails with `InvalidName` (empty, longer than 63 bytes, or holding a NUL),
    /// `InvalidMaxRuns` (0), `MemoryTooSmall`, `Exists`, `TooManyStates`, or `Create` when the
    /// state's libraries do not fit in its memory limit.
    pub fn create(&self, mut config: StateConfig) -> Result<(), EngineError> {
        check_name(&config.name)?;
        config.max_runs = config.max_runs.min(self.config.max_runs_cap);
        config.max_alloc_bytes = config.max_alloc_bytes.min(self.config.max_alloc_cap);
        if config.max_runs == 0 {
            return Err(EngineError::InvalidMaxRuns);
        }
        if config.max_alloc_bytes < self.config.min_alloc_bytes {
            return Err(EngineError::MemoryTooSmall {
                got: config.max_alloc_bytes,
                min: self.config.min_alloc_bytes,
            });
        }
        self.check_room(&self.read(), &config.name)?;
        // Built without the map lock: opening a Lua takes tens of microseconds, during which hook
        // calls into other states go on.
        let id = self.next_state_id.fetch_add(1, Relaxed);
        let name = config.name.clone();
        let state = State::new(config, self.shared(id))?;
        let mut states = self.write();
        // Checked again: another thread may have created a state meanwhile.
        self.check_room(&states, &name)?;
        let slot = Slot {
            id: AtomicU64::new(id),
            figures: RwLock::new(state.figures()),
            state: Mutex::new(Some(state)),
            pins: AtomicUsize::new(0),
            wants_conntrack: AtomicBool::new(false),
            lock_waits: AtomicU64::new(0),
        };
        states.insert(name.clone(), Arc::new(slot));
        drop(states);
        tracing::info!(state = %name, "state created");
        Ok(())
    }

    /// What a new state with id `id` shares with the engine.
    fn shared(&self, id: u64) -> Shared {
        Shared {
            id,
            sink: Arc::clone(&self.sink),
            timers: Arc::clone(&self.timers),
            halt: Arc::clone(&self.halt),
            watchdog: Arc::clone(&self.watchdog),
            max_call: self.config.max_call,
            max_hook_call: self.config.max_hook_call,
            clock: self.config.clock.clone(),
        }
    }

    /// Replaces state `name`'s code: builds a new state with its name, limits and flags, runs
    /// `chunks` (name, Lua source) in it in order, and, only if every one succeeds, puts it in
    /// the old state's place in one step (see the module doc): hooks, pins and the name carry
    /// over; the old state's globals, timers and statistics do not. A failing chunk's error is
    /// returned (`EngineError::Lua` with its text and traceback) and nothing changes; a state
    /// destroyed meanwhile gives `NotFound`.
    pub fn reload(&self, name: &str, chunks: &[(&str, &[u8])]) -> Result<(), EngineError> {
        let slot = self.slot(name)?;
        let config = slot.figures().config().clone();
        let id = self.next_state_id.fetch_add(1, Relaxed);
        let mut fresh = State::new(config, self.shared(id))?;
        let discard = |e: EngineError| {
            self.timers.forget_state(id);
            e
        };
        for (chunk_name, body) in chunks {
            fresh.execute(body, chunk_name).map_err(discard)?;
        }
        let figures = fresh.figures();
        let (old, old_id) = {
            let mut state = slot.lock();
            let current = self.read().get(name).is_some_and(|s| Arc::ptr_eq(s, &slot));
            if state.is_none() || !current {
                return Err(discard(EngineError::NotFound(name.to_string())));
            }
            let old = state.replace(fresh);
            let old_id = slot.id.swap(id, Relaxed);
            *slot.figures.write().unwrap_or_else(PoisonError::into_inner) = figures;
            if chunks.iter().any(|(_, body)| mentions_connid(body)) {
                slot.wants_conntrack.store(true, Relaxed);
            }
            (old, old_id)
        };
        self.timers.forget_state(old_id);
        drop(old);
        tracing::info!(state = %name, chunks = chunks.len(), "state reloaded");
        Ok(())
    }

    fn check_room(&self, states: &BTreeMap<String, Arc<Slot>>, name: &str) -> Result<(), EngineError> {
        if states.contains_key(name) {
            return Err(EngineError::Exists(name.to_string()));
        }
        if states.len() >= self.config.max_states {
            return Err(EngineError::TooManyStates(self.config.max_states));
        }
        Ok(())
    }

    /// Destroys a state: cancels its timers and closes its Lua (pending finalizers run then),
    /// after waiting for a call already running in it. Fails with `NotFound`, or `Busy` while a
    /// packet hook has it pinned.
    pub fn destroy(&self, name: &str) -> Result<(), EngineError> {
        let slot = {
            let mut states = self.write();
            let slot = states.get(name).ok_or_else(|| EngineError::NotFound(name.to_string()))?;
            if slot.pins.load(Relaxed) > 0 {
                return Err(EngineError::Busy(name.to_string()));
            }
            states.remove(name)
        };
        if let Some(slot) = slot {
            self.timers.forget_state(slot.id.load(Relaxed));
            let state = slot.lock().take();
            drop(state);
            tracing::info!(state = %name, "state destroyed");
        }
        Ok(())
    }

    /// Marks state `name` as referenced by one more packet hook: `destroy` fails with `Busy`
    /// until as many `unpin` calls have been made.
    pub fn pin(&self, name: &str) -> Result<(), EngineError> {
        match self.read().get(name) {
            Some(slot) => {
                slot.pins.fetch_add(1, Relaxed);
                Ok(())
            }
            None => Err(EngineError::NotFound(name.to_string())),
        }
    }

    /// Undoes one `pin`. Unknown names and states without pins are ignored.
    pub fn unpin(&self, name: &str) {
        if let Some(slot) = self.read().get(name) {
            let _ = slot.pins.fetch_update(Relaxed, Relaxed, |pins| pins.checked_sub(1));
        }
    }

    /// The slots, in name order, without holding the map lock afterwards.
    fn slots(&self) -> Vec<Arc<Slot>> {
        self.read().values().cloned().collect()
    }

    /// All states, sorted by name. Never waits for a call running in a state: the memory figure
    /// is the one at the end of the state's last entry.
    pub fn list(&self) -> Vec<StateInfo> {
        self.slots().iter().map(|slot| slot.figures().info()).collect()
    }

    pub fn state_count(&self) -> usize {
        self.read().len()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// Statistics of one state (SPEC §8), or `None` if there is no such state.
    pub fn stats(&self, name: &str) -> Option<StateStats> {
        Some(self.slot(name).ok()?.stats())
    }

    /// Statistics of all states, sorted by name.
    pub fn all_stats(&self) -> Vec<StateStats> {
        self.slots().iter().map(|slot| slot.stats()).collect()
    }

    /// The counters of the sink states send through (see [`NetlinkSink::stats`]).
    pub fn sink_stats(&self) -> SinkStats {
        self.sink.stats()
    }

    /// Runs `chunk` (Lua source; bytecode is refused) in state `name`. `chunk_name` is Lua's chunk
    /// name as sent by the client ("=chunk" by default; a leading `=` means "use as is").
    pub fn execute(&self, name: &str, chunk: &[u8], chunk_name: &str) -> Result<(), EngineError> {
        self.with_state(name, |slot, state| {
            if mentions_connid(chunk) {
                slot.wants_conntrack.store(true, Relaxed);
            }
            state.execute(chunk, chunk_name)
        })
    }

    /// Room in state `name`'s memory for a message of `bytes` that waits for the state (a DATA
    /// message queued behind a running entry): it counts in the state's `curralloc` and against
    /// its `maxalloc` until the returned guard is dropped (just before delivery). Fails with
    /// `NotFound`, or `NoRoom` when the state cannot hold it besides what it holds already (its
    /// Lua heap as of its last entry). Never waits for the state.
    pub fn hold_pending(&self, name: &str, bytes: usize) -> Result<PendingBytes, EngineError> {
        self.slot(name)?.figures().hold_pending(bytes)
    }

    /// Hands a DATA message from port `pid` to the state's `__receive_callback(pid, buffer)`.
    pub fn deliver(&self, name: &str, pid: u32, payload: &[u8]) -> Result<(), EngineError> {
        self.with_state(name, |_, state| state.deliver(pid, payload))
    }

    /// Calls hook function `function` of state `state` as `function(frame, packet)` (SPEC §7)
    /// under the state's limits. Fails with `NotFound`, `NoFunction` (the global is nil),
    /// `InvalidPacket` (the range is outside the frame), or `Lua` (error, instruction or memory
    /// limit), each but `NotFound` counted in the state's statistics.
    pub fn call_hook(
        &self,
        state: &str,
        function: &str,
        packet: &PacketContext<'_>,
    ) -> Result<HookOutcome, EngineError> {
        self.with_state(state, |_, state| state.call_hook(function, packet))
    }

    /// Whether some chunk executed in state `name` mentions `connid`: a cheap, static hint that
    /// its hooks may call `nf.connid`, so the daemon asks the kernel for conntrack data only
    /// then. False for unknown states.
    pub fn wants_conntrack(&self, name: &str) -> bool {
        self.read().get(name).is_some_and(|slot| slot.wants_conntrack.load(Relaxed))
    }

    /// Deadline of the earliest pending timer of any state.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Runs every timer due at `now`, earliest first, each under its state's limits (a failing
    /// callback is logged and counted like any entry). Returns how many callbacks ran, failed
    /// ones included. Timers the callbacks create are left for a later pass.
    pub fn run_due_timers(&self, now: Instant) -> usize {
        self.take_due_timers(now).into_iter().map(|timer| self.run_timer(timer)).filter(|ran| *ran).count()
    }

    /// Takes every timer due at `now` out of the queue, earliest first, without running them:
    /// the caller runs each with [`Engine::run_timer`], on whatever thread serves its state. A
    /// taken timer no longer counts as pending; one dropped unrun is simply lost.
    pub fn take_due_timers(&self, now: Instant) -> Vec<DueTimer> {
        self.timers.take_due(now).into_iter().map(DueTimer).collect()
    }

    /// Runs a timer taken by [`Engine::take_due_timers`] under its state's limits (a failing
    /// callback is logged and counted like any entry). False when its state is gone (destroyed,
    /// or destroyed and created again under the same name).
    pub fn run_timer(&self, timer: DueTimer) -> bool {
        let timer = timer.0;
        let Ok(slot) = self.slot(&timer.state_name) else {
            return false;
        };
        if slot.id.load(Relaxed) != timer.state_id {
            return false;
        }
        let mut state = slot.lock();
        match state.as_mut() {
            Some(state) => {
                // The error is already logged and counted by the state.
                let _ = state.run_timer(timer.callback);
                true
            }
            None => false,
        }
    }

    /// Sets the function called whenever a newly created timer becomes the earliest one, so the
    /// daemon's timer thread recomputes its sleep. It runs on the thread that created the timer,
    /// inside a Lua call holding that state's lock: it must only signal (a condvar, an eventfd),
    /// never call into the engine.
    pub fn set_timer_waker(&self, waker: Box<dyn Fn() + Send + Sync>) {
        self.timers.set_waker(Arc::from(waker));
    }

    /// A handle on state `name` for a caller that enters it for every packet (a queue worker):
    /// see [`StateRef`].
    pub fn state_ref(&self, name: &str) -> Result<StateRef, EngineError> {
        Ok(StateRef { name: name.to_owned(), slot: self.slot(name)? })
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, EngineError> {
        self.read().get(name).cloned().ok_or_else(|| EngineError::NotFound(name.to_string()))
    }

    /// Runs `f` on state `name` with the state locked (and the map not).
    fn with_state<R>(
        &self,
        name: &str,
        f: impl FnOnce(&Slot, &mut State) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        let slot = self.slot(name)?;
        enter(&slot, name, f)
    }
}

/// Runs `f` on the state of `slot` with it locked; a destroyed state is not found.
fn enter<R>(
    slot: &Slot,
    name: &str,
    f: impl FnOnce(&Slot, &mut State) -> Result<R, EngineError>,
) -> Result<R, EngineError> {
    let mut state = slot.lock();
    match state.as_mut() {
        Some(state) => f(slot, state),
        None => Err(EngineError::NotFound(name.to_string())),
    }
}

/// A due timer taken out of the engine's queue, to be run with [`Engine::run_timer`].
#[derive(Debug)]
pub struct DueTimer(Pending);

impl DueTimer {
    /// The name of the state the timer belongs to.
    pub fn state_name(&self) -> &str {
        &self.0.state_name
    }
}

/// A state held by a caller that enters it very often: calls through it skip the name lookup
/// in the state map (a read lock and string comparisons per packet). It keeps the state's slot
/// alive, not the state: once the state is destroyed, calls fail with `NotFound` as by name. A
/// state re-created under the same name is a new slot, not reached through an old handle —
/// hooks pin their state, so for them this never happens.
#[derive(Clone)]
pub struct StateRef {
    name: String,
    slot: Arc<Slot>,
}

impl StateRef {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// [`Engine::call_hook`] through the handle: no lookup in the state map.
    pub fn call_hook(&self, function: &str, packet: &PacketContext<'_>) -> Result<HookOutcome, EngineError> {
        enter(&self.slot, &self.name, |_, s| s.call_hook(function, packet))
    }

    /// [`StateRef::call_hook`] for a stream hook: `function(frame, stream)` with the current
    /// packet and the direction's reassembled bytes (see [`StreamContext`]).
    pub fn call_stream(
        &self,
        function: &str,
        packet: &PacketContext<'_>,
        stream: &StreamContext<'_>,
    ) -> Result<HookOutcome, EngineError> {
        enter(&self.slot, &self.name, |_, s| s.call_stream(function, packet, stream))
    }

    /// See [`Engine::wants_conntrack`].
    pub fn wants_conntrack(&self) -> bool {
        self.slot.wants_conntrack.load(Relaxed)
    }
}

impl std::fmt::Debug for StateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateRef").field("name", &self.name).field("id", &self.slot.id.load(Relaxed)).finish()
    }
}

/// Whether `chunk` contains the bytes `connid` anywhere (code, comment or string: a hint, not a
/// parse).
fn mentions_connid(chunk: &[u8]) -> bool {
    chunk.windows(6).any(|w| w == b"connid")
}

/// Whether `name` may name a state: 1 to 63 bytes, no NUL (the protocol's rule; pinned to it by
/// a test in the daemon).
pub fn check_state_name(name: &str) -> Result<(), EngineError> {
    check_name(name)
}

fn check_name(name: &str) -> Result<(), EngineError> {
    let problem = if name.is_empty() {
        "empty"
    } else if name.len() > STATE_NAME_MAX_BYTES {
        "longer than 63 bytes"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(EngineError::InvalidName(format!("{problem}: {:?}", truncate(name))))
}

fn truncate(name: &str) -> &str {
    let mut end = name.len().min(STATE_NAME_MAX_BYTES + 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("a").is_ok());
        assert!(check_name(&"x".repeat(63)).is_ok());
        for bad in [String::new(), "x".repeat(64), "a\0b".to_string()] {
            let err = check_name(&bad).unwrap_err();
            assert_eq!(err.errno(), 22, "{err}");
        }
        // Multi-byte characters are counted in bytes and cut on a character boundary.
        let long = "é".repeat(40);
        assert!(check_name(&long).is_err());
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Engine>();
    }

    #[test]
    fn connid_detection() {
        assert!(mentions_connid(b"local id = nf.connid()"));
        assert!(mentions_connid(b"connid"));
        assert!(!mentions_connid(b"conn id"));
        assert!(!mentions_connid(b""));
    }
}
