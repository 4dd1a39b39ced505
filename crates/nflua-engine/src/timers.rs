//! Pending `timer.create` timers of all states: a min-heap of deadlines with lazy deletion.
//!
//! # Design
//!
//! One [`TimerQueue`] per engine. A timer is an id in two places: the heap orders
//! `(deadline, id)` (ties fire in creation order), and `pending` maps the id to what firing needs
//! (the owning state and the callback, a registry reference inside that state's Lua, so the
//! callback's memory counts against the state). Cancelling removes the id from `pending` only;
//! its heap entry stays until it reaches the top (or a rebuild drops it), where an id missing
//! from `pending` means "cancelled". When dead entries outnumber live ones the heap is rebuilt,
//! so a script creating and cancelling far-off timers in a loop cannot grow it without bound.
//!
//! The queue's mutex is a leaf lock: nothing else is locked while it is held, and no Lua runs
//! under it. Callers may hold a state's mutex when they take it (`timer.create` runs inside a
//! Lua call), so the timer thread takes timers out of the queue first and only then locks the
//! states to run them. The waker is called after the queue's mutex is released.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use mlua::RegistryKey;

/// Pending timers one state may hold; `timer.create` beyond it raises "too many timers".
pub const MAX_TIMERS_PER_STATE: usize = 4096;

/// Heap entries below which the queue never bothers rebuilding.
const REBUILD_FLOOR: usize = 64;

pub(crate) type Waker = Arc<dyn Fn() + Send + Sync>;

/// A scheduled, not yet fired or cancelled timer.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) state_id: u64,
    /// To find the state in the engine's map when the timer fires (checked against `state_id`,
    /// since a state destroyed and created again keeps its name).
    pub(crate) state_name: Arc<str>,
    /// The callback, in the owning state's registry.
    pub(crate) callback: RegistryKey,
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Pending>,
    /// Pending timers per state id (only states with at least one).
    per_state: HashMap<u64, usize>,
    next_id: u64,
}

#[derive(Default)]
pub(crate) struct TimerQueue {
    queue: Mutex<Queue>,
    waker: RwLock<Option<Waker>>,
}

impl TimerQueue {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue holds no invariant a panic could leave half-updated that lookups rely on
        // (a heap entry without a pending timer is the normal "cancelled" case).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_waker(&self, waker: Waker) {
        *self.waker.write().unwrap_or_else(PoisonError::into_inner) = Some(waker);
    }

    /// Schedules `timer` at `deadline` and returns its id, or gives the timer back when its state
    /// already has [`MAX_TIMERS_PER_STATE`] pending. Wakes the timer thread when the new timer
    /// is now the earliest.
    pub(crate) fn schedule(&self, deadline: Instant, timer: Pending) -> Result<u64, Pending> {
        let (id, earliest) = {
            let mut queue = self.lock();
            let count = queue.per_state.entry(timer.state_id).or_insert(0);
            if *count >= MAX_TIMERS_PER_STATE {
                return Err(timer);
            }
            *count += 1;
            let id = queue.next_id;
            queue.next_id += 1;
            queue.pending.insert(id, timer);
            let earliest = queue.earliest().is_none_or(|current| deadline < current);
            queue.heap.push(Reverse((deadline, id)));
            (id, earliest)
        };
        if earliest {
            self.wake();
        }
        Ok(id)
    }

    fn wake(&self) {
        let waker = self.waker.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(waker) = waker {
            waker();
        }
    }

    /// Cancels timer `id` of state `state_id`; returns its callback key (for the caller to remove
    /// from the registry) or `None` when it already fired or was cancelled.
    pub(crate) fn cancel(&self, state_id: u64, id: u64) -> Option<RegistryKey> {
        let mut queue = self.lock();
        if queue.pending.get(&id)?.state_id != state_id {
            return None;
        }
        let timer = queue.pending.remove(&id)?;
        queue.uncount(state_id, 1);
        queue.maybe_rebuild();
        Some(timer.callback)
    }

    /// Drops every pending timer of a destroyed state. The callback keys are just dropped: the
    /// state's Lua goes away with them.
    pub(crate) fn forget_state(&self, state_id: u64) {
        let mut queue = self.lock();
        if queue.per_state.remove(&state_id).is_none() {
            return;
        }
        queue.pending.retain(|_, timer| timer.state_id != state_id);
        queue.maybe_rebuild();
    }

    /// Deadline of the earliest pending timer.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.lock().earliest()
    }

    /// Takes every timer due at `now` out of the queue, earliest first. Timers scheduled while
    /// the caller runs these are not included, even with a zero delay, so a callback that
    /// re-arms itself cannot keep one pass going forever.
    pub(crate) fn take_due(&self, now: Instant) -> Vec<Pending> {
        let mut queue = self.lock();
        let mut due = Vec::new();
        while let Some(&Reverse((deadline, id))) = queue.heap.peek() {
            if deadline > now {
                break;
            }
            queue.heap.pop();
            if let Some(timer) = queue.pending.remove(&id) {
                queue.uncount(timer.state_id, 1);
                due.push(timer);
            }
        }
        due
    }

    /// Pending timers of state `state_id`.
    pub(crate) fn pending_count(&self, state_id: u64) -> usize {
        self.lock().per_state.get(&state_id).copied().unwrap_or(0)
    }
}

impl Queue {
    /// Deadline of the earliest pending timer, dropping cancelled entries from the top.
    fn earliest(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, id))) = self.heap.peek() {
            if self.pending.contains_key(&id) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    fn uncount(&mut self, state_id: u64, n: usize) {
        if let Some(count) = self.per_state.get_mut(&state_id) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.per_state.remove(&state_id);
            }
        }
    }

    /// Rebuilds the heap without cancelled entries once they are the majority (amortized O(1)
    /// per cancellation).
    fn maybe_rebuild(&mut self) {
        if self.heap.len() > REBUILD_FLOOR && self.heap.len() > 2 * self.pending.len() {
            let pending = &self.pending;
            self.heap.retain(|Reverse((_, id))| pending.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use mlua::Lua;

    use super::*;

    fn timer(lua: &Lua, state_id: u64) -> Pending {
        Pending {
            state_id,
            state_name: Arc::from("s"),
            callback: lua.create_registry_value(state_id).unwrap(),
        }
    }

    #[test]
    fn fires_in_deadline_then_creation_order() {
        let lua = Lua::new();
        let queue = TimerQueue::default();
        let t0 = Instant::now();
        let late = queue.schedule(t0 + Duration::from_millis(20), timer(&lua, 1)).ok();
        let first = queue.schedule(t0 + Duration::from_millis(10), timer(&lua, 2)).ok();
        let second = queue.schedule(t0 + Duration::from_millis(10), timer(&lua, 3)).ok();
        assert!(late < first && first < second);
        assert_eq!(queue.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert!(queue.take_due(t0).is_empty());
        let due = queue.take_due(t0 + Duration::from_millis(15));
        assert_eq!(due.iter().map(|t| t.state_id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(queue.next_deadline(), Some(t0 + Duration::from_millis(20)));
    }

    #[test]
    fn cancelled_timers_are_skipped_and_purged() {
        let lua = Lua::new();
        let queue = TimerQueue::default();
        let t0 = Instant::now();
        let ids: Vec<u64> =
            (0..1000).map(|i| queue.schedule(t0 + Duration::from_secs(i), timer(&lua, 7)).unwrap()).collect();
        assert_eq!(queue.pending_count(7), 1000);
        assert!(queue.cancel(8, ids[0]).is_none(), "another state's timer");
        for &id in &ids[..999] {
            assert!(queue.cancel(7, id).is_some());
            assert!(queue.cancel(7, id).is_none());
        }
        assert!(queue.lock().heap.len() <= 2 * REBUILD_FLOOR, "rebuilt");
        assert_eq!(queue.next_deadline(), Some(t0 + Duration::from_secs(999)));
        queue.forget_state(7);
        assert_eq!(queue.pending_count(7), 0);
        assert_eq!(queue.next_deadline(), None);
    }

    #[test]
    fn per_state_cap_and_waker() {
        let lua = Lua::new();
        let queue = TimerQueue::default();
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&woken);
        queue.set_waker(Arc::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        }));
        let t0 = Instant::now();
        for _ in 0..MAX_TIMERS_PER_STATE {
            queue.schedule(t0 + Duration::from_secs(1), timer(&lua, 1)).unwrap();
        }
        assert_eq!(woken.load(Ordering::Relaxed), 1, "only the first was the earliest");
        assert!(queue.schedule(t0, timer(&lua, 1)).is_err());
        queue.schedule(t0, timer(&lua, 2)).unwrap();
        assert_eq!(woken.load(Ordering::Relaxed), 2);
    }
}
