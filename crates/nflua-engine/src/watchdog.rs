//! The watchdog: a thread per engine (when entries have a wall-clock limit) that looks at every
//! state's running entry every [`TICK`] (less often while none runs, see [`idle_tick`]) and makes a
//! late one stop at its next VM instruction (`Budget::poke_if_late`). The count hook looks at the
//! clock only once per thousand instructions, which one expensive instruction repeated (a 16 MB
//! concatenation or string comparison) would stretch to seconds; with the watchdog an entry
//! overruns its limit by at most a tick plus one instruction.
//! [`Engine::halt_scripts`](crate::Engine::halt_scripts) pokes every running entry at once through
//! the same list.
//!
//! The watchdog holds its states' budgets weakly (a destroyed state simply drops out) and the
//! engine holds the watchdog: dropping it wakes the thread, which then ends.
//!
//! An idle daemon should not wake for nothing (a wake-up costs about 50 µs of CPU on a small
//! virtual machine, so ten a second were a third of an idle daemon's CPU). So the watchdog sleeps
//! until an entry starts once a whole idle tick went by without one: every entry start marks
//! activity and, if the watchdog is in that sleep, wakes it ([`Bell::ring`]: one flag store and
//! one load per entry, a wake-up only for the first entry after a quiet spell).
//! While entries keep starting it looks every idle tick as before, so a steady trickle of
//! packets costs no wake-up per packet.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::thread::Thread;
use std::time::Duration;

use crate::limits::Budget;

/// How often the watchdog looks while some entry runs: the most a late entry overruns beyond
/// one instruction.
const TICK: Duration = Duration::from_millis(5);

/// The longest it sleeps while nothing ran at its last look (see [`idle_tick`]).
const MAX_IDLE_TICK: Duration = Duration::from_secs(1);

/// How often the watchdog looks while nothing ran at its last look: the shortest limit (100 ms
/// with the daemon's defaults). An entry that starts meanwhile is seen before its limit runs out
/// and from then on watched every [`TICK`]. After a whole idle tick without any entry the
/// watchdog sleeps until one starts (see the module doc).
pub(crate) fn idle_tick(shortest_limit: Duration) -> Duration {
    shortest_limit.clamp(TICK, MAX_IDLE_TICK)
}

#[derive(Default)]
pub(crate) struct Watchdog {
    budgets: Mutex<Vec<Weak<Budget>>>,
    bell: Arc<Bell>,
}

/// How entries tell the watchdog they start (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Bell {
    /// An entry started since the watchdog last looked.
    activity: AtomicBool,
    /// The watchdog sleeps until an entry starts.
    asleep: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Bell {
    /// Called by every entry after it set its running thread.
    pub(crate) fn ring(&self) {
        self.activity.store(true, Relaxed);
        // Sequentially consistent against the watchdog's store of `asleep` and its look at the
        // running threads: either it sees this entry running, or this sees it asleep.
        if self.asleep.load(SeqCst) && self.asleep.swap(false, SeqCst) {
            self.wake();
        }
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // The thread holds only a weak reference: woken, it finds the watchdog gone and ends.
        self.bell.wake();
    }
}

impl Watchdog {
    /// Watches the entries of a new state.
    pub(crate) fn watch(&self, budget: &Arc<Budget>) {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        budgets.retain(|b| b.strong_count() > 0);
        budgets.push(Arc::downgrade(budget));
    }

    /// What entries ring when they start.
    pub(crate) fn bell(&self) -> Arc<Bell> {
        Arc::clone(&self.bell)
    }

    /// Pokes every late (or halted) running entry; forgets destroyed states. Returns whether
    /// any entry was running.
    pub(crate) fn poke_late(&self) -> bool {
        let budgets: Vec<Arc<Budget>> = {
            let mut list = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|b| b.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        let mut running = false;
        for budget in budgets {
            running |= budget.is_running();
            budget.poke_if_late();
        }
        running
    }

    /// Starts the watchdog thread, which ends once `watchdog` is dropped; `idle` is its pace
    /// while no entry runs ([`idle_tick`]).
    pub(crate) fn spawn(watchdog: &Arc<Watchdog>, idle: Duration) -> std::io::Result<()> {
        let weak = Arc::downgrade(watchdog);
        let bell = watchdog.bell();
        let thread = std::thread::Builder::new().name("nflua-watchdog".into()).spawn(move || {
            while let Some(watchdog) = weak.upgrade() {
                let running = watchdog.poke_late();
                if running {
                    drop(watchdog);
                    std::thread::sleep(TICK);
                } else if bell.activity.swap(false, Relaxed) {
                    drop(watchdog);
                    std::thread::sleep(idle);
                } else {
                    // Quiet for a whole idle tick: sleep until an entry starts. An entry that
                    // started before `asleep` was set is seen running by the second look.
                    bell.asleep.store(true, SeqCst);
                    let started = watchdog.poke_late();
                    drop(watchdog);
                    if !started {
                        std::thread::park_timeout(MAX_IDLE_TICK);
                    }
                    bell.asleep.store(false, SeqCst);
                }
            }
        })?;
        let _ = watchdog.bell.thread.set(thread.thread().clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_pace_is_half_the_shortest_limit_within_bounds() {
        assert_eq!(idle_tick(Duration::from_millis(100)), Duration::from_millis(100));
        assert_eq!(idle_tick(Duration::from_millis(4)), TICK);
        assert_eq!(idle_tick(Duration::from_secs(10)), MAX_IDLE_TICK);
    }
}
