//! The timer thread: sleeps until the engine's earliest timer is due (or a
//! new earlier one is created), then hands each due timer to its state's lane
//! (see `lanes.rs`). It never runs Lua itself, so a slow callback in one state
//! delays only later work of that state, not the timers of others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nflua_engine::Engine;

use crate::jobs::Job;
use crate::lanes::Lanes;

/// Longest sleep; bounds how late a stop request is noticed if a wake-up is lost.
const MAX_SLEEP: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Wake {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    fn wake(&self) {
        *self.woken.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_one();
    }
}

pub struct TimerThread {
    wake: Arc<Wake>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TimerThread {
    pub fn spawn(engine: Arc<Engine>, lanes: Lanes<Job>) -> std::io::Result<TimerThread> {
        let wake = Arc::new(Wake::default());
        let stop = Arc::new(AtomicBool::new(false));
        let waker = Arc::clone(&wake);
        engine.set_timer_waker(Box::new(move || waker.wake()));
        let (w, s) = (Arc::clone(&wake), Arc::clone(&stop));
        let thread =
            std::thread::Builder::new().name("timers".into()).spawn(move || run(&engine, &lanes, &w, &s))?;
        Ok(TimerThread { wake, stop, thread: Some(thread) })
    }
}

fn run(engine: &Engine, lanes: &Lanes<Job>, wake: &Wake, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        for timer in engine.take_due_timers(Instant::now()) {
            let state = timer.state_name().to_owned();
            // Unbounded: a state's pending timers are already capped by the engine. Refused
            // only once the lanes stop, when the timer is dropped with the daemon.
            let _ = lanes.push(&state, Job::Timer(timer), 0, false);
        }
        let now = Instant::now();
        let sleep =
            engine.next_timer().map_or(MAX_SLEEP, |t| t.saturating_duration_since(now).min(MAX_SLEEP));
        let guard = wake.woken.lock().unwrap_or_else(|e| e.into_inner());
        let (mut woken, _) =
            wake.cv.wait_timeout_while(guard, sleep, |woken| !*woken).unwrap_or_else(|e| e.into_inner());
        *woken = false;
    }
}

impl Drop for TimerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
