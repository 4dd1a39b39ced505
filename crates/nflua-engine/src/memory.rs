//! What a state holds, against its `maxalloc`: the Lua heap plus the bytes it holds outside it.
//!
//! # Design
//!
//! The Lua heap is limited exactly by mlua's allocator (`Lua::set_memory_limit`). Outside it a
//! state holds ("external" bytes):
//!
//! - `data.new` buffers, reserved through `nflua-data`'s [`Meter`] before they are allocated and
//!   released when their memory is freed (which happens in the collector, in a finalizer);
//! - pending timers, [`TIMER_BYTES`] each;
//! - the replacement packet of a running hook call (`packet:send`), until the call returns;
//! - messages waiting for the state: DATA the daemon queued behind a running entry
//!   ([`crate::Engine::hold_pending`]), until they are delivered: admitted only while they fit
//!   (a message past `maxalloc` is refused), shown, but not held against the Lua heap, so the
//!   messages already queued never make their own delivery fail;
//! - the reused buffers of hook calls and receive callbacks (`LentBuffer`s), by capacity.
//!
//! The lent buffers are shown but not enforced: they hold what the engine hands the state (a
//! packet, a DATA payload), sized by the traffic, not by the script, and NFQUEUE hands GSO
//! packets of up to 64 KiB whole, so enforcing them would fail every hook call of a default
//! 64 KiB state on bulk traffic. A call that leaves the state over its limit with them frees
//! them (`State::fit_lent_buffers`), so one large packet does not stay in `curralloc`.
//!
//! [`StateMemory`] keeps the external bytes in an atomic. A reservation is refused (Lua's memory
//! error text, "not enough memory") when Lua heap + external + new would pass `maxalloc`. So
//! that Lua's own allocations see the external bytes too, the allocator's limit is kept at
//! `maxalloc - external` ([`StateMemory::sync`]): lowered on every reservation, raised again at
//! the start of every entry, after every entry and on the next reservation. A release only
//! touches the atomic (it may run inside the collector), so between a release and the next
//! sync the limit is lower than it needs to be: the state is stricter for a while, never looser.
//!
//! `held = Lua heap + external + lent + pending` is what LIST's `curralloc`, `stats` and
//! Prometheus show.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use mlua::Lua;
use nflua_data::Meter;

use crate::limits;
use crate::timers::Pending;

/// What one pending timer holds outside the Lua heap: its `Pending` record in the queue's map
/// (with the map's key), its heap entry (deadline and id) and the per-state count share. The
/// callback itself is in the state's registry and so in the Lua heap already, as is the timer
/// object a script holds.
pub const TIMER_BYTES: usize = std::mem::size_of::<Pending>()
    + std::mem::size_of::<u64>()
    + std::mem::size_of::<(std::time::Instant, u64)>();

/// One state's memory beyond its Lua heap (see the module doc).
#[derive(Debug)]
pub(crate) struct StateMemory {
    max_alloc: usize,
    external: AtomicUsize,
    /// The external bytes the allocator's limit was last set for.
    synced: AtomicUsize,
    /// Capacity of the state's lent buffers (shown, not enforced).
    lent: AtomicUsize,
    /// Messages waiting for the state (admitted against `maxalloc`, shown, not enforced).
    pending: AtomicUsize,
}

impl StateMemory {
    pub(crate) fn new(max_alloc: usize) -> StateMemory {
        StateMemory {
            max_alloc,
            external: AtomicUsize::new(0),
            synced: AtomicUsize::new(0),
            lent: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
        }
    }

    /// Bytes held outside the Lua heap.
    pub(crate) fn external(&self) -> usize {
        self.external.load(Relaxed)
    }

    /// What the state holds, given its Lua heap: heap + external bytes + lent buffers.
    pub(crate) fn held_with(&self, heap: usize) -> usize {
        heap.saturating_add(self.external())
            .saturating_add(self.lent.load(Relaxed))
            .saturating_add(self.pending.load(Relaxed))
    }

    /// Lua heap + external bytes: what `maxalloc` limits.
    fn enforced(&self, lua: &Lua) -> usize {
        lua.used_memory().saturating_add(self.external())
    }

    /// Sets the allocator's limit to what the Lua heap may still use: `maxalloc - external` (at
    /// least 1 byte: 0 would mean "no limit" to mlua).
    pub(crate) fn sync(&self, lua: &Lua) {
        let external = self.external();
        if self.synced.load(Relaxed) != external {
            self.synced.store(external, Relaxed);
            let _ = lua.set_memory_limit(self.max_alloc.saturating_sub(external).max(1));
        }
    }

    /// Takes `bytes` more when heap + external + `bytes` fits `maxalloc`.
    pub(crate) fn try_reserve(&self, lua: &Lua, bytes: usize) -> bool {
        let total = self.enforced(lua).checked_add(bytes);
        if total.is_none_or(|total| total > self.max_alloc) {
            // Releases since the last sync may have made room for the Lua heap, at least.
            self.sync(lua);
            return false;
        }
        self.external.fetch_add(bytes, Relaxed);
        self.sync(lua);
        true
    }

    /// Admits a message of `bytes` waiting for the state (queued behind a running entry) when
    /// heap + external + pending + `bytes` fits `maxalloc`, without entering the state: `heap`
    /// is the Lua heap as of the state's last entry.
    pub(crate) fn try_reserve_pending(&self, heap: usize, bytes: usize) -> bool {
        let others = heap.saturating_add(self.external());
        self.pending
            .fetch_update(Relaxed, Relaxed, |pending| {
                let total = others.checked_add(pending)?.checked_add(bytes)?;
                (total <= self.max_alloc).then_some(pending + bytes)
            })
            .is_ok()
    }

    /// Gives back a waiting message's bytes (it is about to be delivered, or was dropped).
    pub(crate) fn release_pending(&self, bytes: usize) {
        let _ = self.pending.fetch_update(Relaxed, Relaxed, |held| Some(held.saturating_sub(bytes)));
    }

    /// Gives back `bytes` taken earlier. Only atomics: may run inside the Lua collector.
    pub(crate) fn release(&self, bytes: usize) {
        let _ = self.external.fetch_update(Relaxed, Relaxed, |held| Some(held.saturating_sub(bytes)));
    }

    /// Records the lent buffers' capacity now.
    pub(crate) fn set_lent(&self, capacity: usize) {
        self.lent.store(capacity, Relaxed);
    }
}

impl Meter for StateMemory {
    fn reserve(&self, lua: &Lua, bytes: usize) -> bool {
        self.try_reserve(lua, bytes)
    }

    fn release(&self, bytes: usize) {
        StateMemory::release(self, bytes);
    }

    fn charge(&self, lua: &Lua, work: u64) -> mlua::Result<()> {
        limits::charge(lua, work)
    }
}

/// Bytes of a message waiting for a state, counted in its memory until this is dropped (see
/// [`crate::Engine::hold_pending`]).
#[derive(Debug)]
pub struct PendingBytes {
    memory: std::sync::Arc<StateMemory>,
    bytes: usize,
}

impl PendingBytes {
    pub(crate) fn new(memory: std::sync::Arc<StateMemory>, bytes: usize) -> PendingBytes {
        PendingBytes { memory, bytes }
    }
}

impl Drop for PendingBytes {
    fn drop(&mut self) {
        self.memory.release_pending(self.bytes);
    }
}
