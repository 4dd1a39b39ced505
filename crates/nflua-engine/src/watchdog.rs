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
//! engine holds the watchdog: the thread ends within a tick of the engine being dropped.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::limits::Budget;

/// How often the watchdog looks while some entry runs: the most a late entry overruns beyond
/// one instruction.
const TICK: Duration = Duration::from_millis(5);

/// The longest it sleeps while nothing ran at its last look (see [`idle_tick`]).
const MAX_IDLE_TICK: Duration = Duration::from_secs(1);

/// How often the watchdog looks while nothing ran at its last look: the shortest limit (100 ms
/// with the daemon's defaults). An entry that starts meanwhile is seen before its limit runs out
/// and from then on watched every [`TICK`]; an idle daemon wakes ten times a second for it.
pub(crate) fn idle_tick(shortest_limit: Duration) -> Duration {
    shortest_limit.clamp(TICK, MAX_IDLE_TICK)
}

#[derive(Default)]
pub(crate) struct Watchdog {
    budgets: Mutex<Vec<Weak<Budget>>>,
}

impl Watchdog {
    /// Watches the entries of a new state.
    pub(crate) fn watch(&self, budget: &Arc<Budget>) {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        budgets.retain(|b| b.strong_count() > 0);
        budgets.push(Arc::downgrade(budget));
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
        std::thread::Builder::new().name("nflua-watchdog".into()).spawn(move || {
            while let Some(watchdog) = weak.upgrade() {
                let running = watchdog.poke_late();
                drop(watchdog);
                std::thread::sleep(if running { TICK } else { idle });
            }
        })?;
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
