//! What time it is for scripts: `nf.time()` and the deadlines `timer.create` sets.
//!
//! The daemon runs on the system's clocks. An offline run over a capture (`nfluactl test`)
//! runs on the capture's: a [`ReplayClock`] the runner moves forward to each packet's
//! timestamp (and to each timer's deadline before that), so a filter sees the time its packets
//! were recorded at and its timers fire as capture time passes them, however fast the replay
//! goes. Wall-clock limits of entries (`max_call`, the watchdog) stay on the real clock: they
//! protect the process, not the script's view of the world.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The clock of an engine's scripts.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock and monotonic clock.
    #[default]
    System,
    /// A capture's time, moved by its runner.
    Replay(Arc<ReplayClock>),
}

impl Clock {
    /// Now on the monotonic scale timer deadlines use.
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Replay(clock) => clock.now(),
        }
    }

    /// Now as time since the Unix epoch (`nf.time()`).
    pub fn wall(&self) -> Duration {
        match self {
            Clock::System => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            Clock::Replay(clock) => clock.wall(),
        }
    }
}

/// A clock that stands still until told to move, and never moves backwards.
///
/// Its monotonic scale starts at the `Instant` it was made at, paired with the first wall time
/// it is set to; later settings move both by the same amount. A timestamp earlier than the
/// clock's time (captures are not always sorted) leaves it where it is.
#[derive(Debug)]
pub struct ReplayClock {
    origin: Instant,
    now: Mutex<Replayed>,
}

#[derive(Debug, Clone, Copy)]
struct Replayed {
    /// Wall time at `origin`; `None` until the clock is first set.
    start: Option<Duration>,
    /// Time since `origin`.
    elapsed: Duration,
}

impl ReplayClock {
    pub fn new() -> Arc<ReplayClock> {
        Arc::new(ReplayClock {
            origin: Instant::now(),
            now: Mutex::new(Replayed { start: None, elapsed: Duration::ZERO }),
        })
    }

    fn read(&self) -> Replayed {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the clock to `wall` (time since the epoch) unless it is already past it; returns
    /// the clock's time on the monotonic scale.
    pub fn set_wall(&self, wall: Duration) -> Instant {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        let start = *now.start.get_or_insert(wall);
        now.elapsed = now.elapsed.max(wall.saturating_sub(start));
        self.origin + now.elapsed
    }

    /// Moves the clock to `instant` on its monotonic scale (a timer's deadline) unless it is
    /// already past it.
    pub fn set_instant(&self, instant: Instant) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        now.elapsed = now.elapsed.max(instant.saturating_duration_since(self.origin));
    }

    pub fn now(&self) -> Instant {
        self.origin + self.read().elapsed
    }

    /// Where capture time `wall` falls on the monotonic scale (never before the clock's time),
    /// without moving the clock.
    pub fn instant_at(&self, wall: Duration) -> Instant {
        let now = self.read();
        let elapsed = now.start.map_or(Duration::ZERO, |start| wall.saturating_sub(start));
        self.origin + now.elapsed.max(elapsed)
    }

    /// The capture time the clock stands at (the epoch plus time elapsed before it was set).
    pub fn wall(&self) -> Duration {
        let now = self.read();
        now.start.unwrap_or_default() + now.elapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_moves_forward_only_and_keeps_both_scales_together() {
        let clock = ReplayClock::new();
        let t0 = Duration::from_secs(1_700_000_000);
        let first = clock.set_wall(t0);
        assert_eq!(clock.wall(), t0);
        let later = clock.set_wall(t0 + Duration::from_millis(1500));
        assert_eq!(later - first, Duration::from_millis(1500));
        // An earlier timestamp does not move it back.
        assert_eq!(clock.set_wall(t0), later);
        assert_eq!(clock.wall(), t0 + Duration::from_millis(1500));
        clock.set_instant(later + Duration::from_secs(2));
        assert_eq!(clock.wall(), t0 + Duration::from_millis(3500));
        assert_eq!(Clock::Replay(Arc::clone(&clock)).now(), later + Duration::from_secs(2));
    }
}
