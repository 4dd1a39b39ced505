//! Per-state work queues ("lanes") served by a pool of worker threads, so that a long Lua entry
//! in one state holds up nothing but later work for that same state.
//!
//! # Design
//!
//! Every job names the lane it belongs to (the state's name). A lane is a FIFO; its jobs run one
//! at a time, in order, so a client's requests to one state are answered in the order sent and
//! journal records of one state keep their order. Jobs of different lanes run in parallel.
//!
//! ```text
//!   push(lane, job) ──► lanes[lane].jobs ──► ready (lanes with jobs and no running job)
//!                                               │ a free worker takes the lane's first job,
//!                                               ▼ runs it, then puts the lane back in `ready`
//!                                             workers (spawned on demand, a few kept idle)
//! ```
//!
//! A lane is in `ready` exactly when it has queued jobs and none of its jobs is running; after a
//! job the worker puts the lane at the back of `ready`, so busy states take turns. A lane with
//! nothing queued and nothing running is removed. When more lanes are ready than workers wait, a
//! worker is spawned (up to [`LaneLimits::max_workers`]); workers idle longer than
//! [`LaneLimits::idle_linger`] exit while more than [`LaneLimits::keep_idle`] exist.
//!
//! `push` never blocks: it takes one mutex (a leaf, never held while a job runs) and refuses
//! with [`Refused`] when the lane already holds [`LaneLimits::max_jobs`] jobs or
//! [`LaneLimits::max_bytes`] bytes, or all lanes together hold
//! [`LaneLimits::max_total_bytes`]; the caller answers ENOBUFS. Unbounded pushes (timers,
//! already bounded per state by the engine) skip the count limits but are counted.
//!
//! Workers get [`WORKER_STACK`] bytes of stack: Lua recurses in C (up to 200 levels).

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Stack of a worker thread, as the main thread's.
pub const WORKER_STACK: usize = 8 << 20;

/// Bounds of the lanes and the pool.
#[derive(Debug, Clone)]
pub struct LaneLimits {
    /// Jobs one lane may hold (running one excluded).
    pub max_jobs: usize,
    /// Bytes (scripts, DATA payloads) one lane may hold.
    pub max_bytes: usize,
    /// Bytes all lanes together may hold.
    pub max_total_bytes: usize,
    /// Worker threads at most: past this, ready lanes wait for a free worker.
    pub max_workers: usize,
    /// Idle workers kept however long they idle.
    pub keep_idle: usize,
    /// How long a worker beyond `keep_idle` waits for work before it exits.
    pub idle_linger: Duration,
}

impl Default for LaneLimits {
    fn default() -> LaneLimits {
        LaneLimits {
            max_jobs: 1024,
            max_bytes: 4 << 20,
            max_total_bytes: 64 << 20,
            max_workers: 128,
            keep_idle: 4,
            idle_linger: Duration::from_secs(10),
        }
    }
}

/// Why a job was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("state '{lane}' is busy: {jobs} requests ({bytes} bytes) queued")]
    LaneFull { lane: String, jobs: usize, bytes: usize },
    #[error("nfluad is busy: {bytes} bytes of requests queued for all states")]
    AllFull { bytes: usize },
    #[error("nfluad is shutting down")]
    Stopped,
}

/// What a lane holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneLoad {
    /// Jobs queued, not counting one running.
    pub jobs: usize,
    /// Bytes of the queued jobs.
    pub bytes: usize,
    pub running: bool,
}

struct Queued<J> {
    job: J,
    bytes: usize,
}

struct Lane<J> {
    jobs: VecDeque<Queued<J>>,
    bytes: usize,
    running: bool,
}

struct Board<J> {
    lanes: HashMap<String, Lane<J>>,
    ready: VecDeque<String>,
    total_bytes: usize,
    workers: usize,
    /// Workers waiting for a ready lane.
    idle: usize,
    stopping: bool,
    next_worker: u64,
}

struct Shared<J> {
    board: Mutex<Board<J>>,
    /// Signalled when a lane becomes ready (and on stop).
    work: Condvar,
    /// Signalled when a worker exits.
    exited: Condvar,
    limits: LaneLimits,
    run: Box<dyn Fn(J) + Send + Sync>,
}

impl<J> Shared<J> {
    fn board(&self) -> MutexGuard<'_, Board<J>> {
        // The board is only changed in short sections that cannot panic halfway.
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The lanes and their workers. Dropping it does not stop the workers: call [`Lanes::stop`].
pub struct Lanes<J: Send + 'static> {
    shared: Arc<Shared<J>>,
}

impl<J: Send + 'static> Clone for Lanes<J> {
    /// Another handle on the same lanes.
    fn clone(&self) -> Lanes<J> {
        Lanes { shared: Arc::clone(&self.shared) }
    }
}

impl<J: Send + 'static> Lanes<J> {
    /// Lanes whose jobs are run by `run`, on worker threads.
    pub fn new(limits: LaneLimits, run: impl Fn(J) + Send + Sync + 'static) -> Lanes<J> {
        let board = Board {
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            total_bytes: 0,
            workers: 0,
            idle: 0,
            stopping: false,
            next_worker: 0,
        };
        Lanes {
            shared: Arc::new(Shared {
                board: Mutex::new(board),
                work: Condvar::new(),
                exited: Condvar::new(),
                limits,
                run: Box::new(run),
            }),
        }
    }

    /// Queues `job` (of `bytes` bytes) at the end of lane `lane`. `bounded: false` skips the
    /// count and byte limits (the job is still counted).
    pub fn push(&self, lane: &str, job: J, bytes: usize, bounded: bool) -> Result<(), Refused> {
        let limits = &self.shared.limits;
        let mut board = self.shared.board();
        if board.stopping {
            return Err(Refused::Stopped);
        }
        if bounded && board.total_bytes.saturating_add(bytes) > limits.max_total_bytes {
            return Err(Refused::AllFull { bytes: board.total_bytes });
        }
        let entry = board.lanes.entry(lane.to_owned()).or_insert_with(|| Lane {
            jobs: VecDeque::new(),
            bytes: 0,
            running: false,
        });
        if bounded
            && (entry.jobs.len() >= limits.max_jobs || entry.bytes.saturating_add(bytes) > limits.max_bytes)
        {
            let refused =
                Refused::LaneFull { lane: lane.to_owned(), jobs: entry.jobs.len(), bytes: entry.bytes };
            if entry.jobs.is_empty() && !entry.running {
                board.lanes.remove(lane);
            }
            return Err(refused);
        }
        let became_ready = entry.jobs.is_empty() && !entry.running;
        entry.jobs.push_back(Queued { job, bytes });
        entry.bytes += bytes;
        board.total_bytes += bytes;
        if became_ready {
            board.ready.push_back(lane.to_owned());
            if board.ready.len() > board.idle && board.workers < limits.max_workers {
                self.spawn(&mut board);
            } else {
                self.shared.work.notify_one();
            }
        }
        Ok(())
    }

    /// What lane `lane` holds now (all zero for a lane with nothing queued or running).
    pub fn load(&self, lane: &str) -> LaneLoad {
        let board = self.shared.board();
        board.lanes.get(lane).map_or_else(LaneLoad::default, |l| LaneLoad {
            jobs: l.jobs.len(),
            bytes: l.bytes,
            running: l.running,
        })
    }

    /// Worker threads alive now.
    pub fn workers(&self) -> usize {
        self.shared.board().workers
    }

    /// Drops every queued job, refuses new ones, and waits until `deadline` for the workers to
    /// finish their running jobs and exit. Returns the workers still running at the deadline
    /// (whose jobs did not end in time).
    pub fn stop(&self, deadline: Instant) -> usize {
        let dropped: Vec<Lane<J>> = {
            let mut board = self.shared.board();
            board.stopping = true;
            board.ready.clear();
            board.total_bytes = 0;
            board.lanes.drain().map(|(_, lane)| lane).collect()
        };
        // Jobs may hold things with destructors (timer callbacks): dropped without the lock.
        drop(dropped);
        self.shared.work.notify_all();
        let mut board = self.shared.board();
        while board.workers > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            board = self
                .shared
                .exited
                .wait_timeout(board, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        board.workers
    }

    fn spawn(&self, board: &mut Board<J>) {
        let shared = Arc::clone(&self.shared);
        let id = board.next_worker;
        let spawned = std::thread::Builder::new()
            .name(format!("lua-{id}"))
            .stack_size(WORKER_STACK)
            .spawn(move || work(&shared));
        match spawned {
            Ok(_) => {
                board.workers += 1;
                board.next_worker += 1;
            }
            Err(e) => {
                // The lane stays ready: a running worker takes it when it is free.
                tracing::error!(error = %e, workers = board.workers, "could not start a worker thread");
                self.shared.work.notify_one();
            }
        }
    }
}

/// A worker: takes the first job of a ready lane, runs it, repeats; exits when stopping, or
/// after idling past the linger while more than `keep_idle` workers exist.
fn work<J>(shared: &Shared<J>) {
    let mut board = shared.board();
    loop {
        if board.stopping {
            break;
        }
        let Some(name) = board.ready.pop_front() else {
            board.idle += 1;
            let (next, timeout) = shared
                .work
                .wait_timeout(board, shared.limits.idle_linger)
                .unwrap_or_else(PoisonError::into_inner);
            board = next;
            board.idle -= 1;
            if timeout.timed_out() && board.ready.is_empty() && board.workers > shared.limits.keep_idle {
                break;
            }
            continue;
        };
        let Some(lane) = board.lanes.get_mut(&name) else { continue };
        let Some(queued) = lane.jobs.pop_front() else { continue };
        lane.running = true;
        lane.bytes -= queued.bytes;
        board.total_bytes -= queued.bytes;
        drop(board);
        if catch_unwind(AssertUnwindSafe(|| (shared.run)(queued.job))).is_err() {
            tracing::error!(lane = %name, "a job panicked; the lane goes on with its next job");
        }
        board = shared.board();
        if let Some(lane) = board.lanes.get_mut(&name) {
            lane.running = false;
            if lane.jobs.is_empty() {
                board.lanes.remove(&name);
            } else {
                board.ready.push_back(name);
            }
        }
    }
    board.workers -= 1;
    drop(board);
    shared.exited.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn limits() -> LaneLimits {
        LaneLimits {
            max_jobs: 3,
            max_bytes: 100,
            idle_linger: Duration::from_millis(50),
            keep_idle: 1,
            ..LaneLimits::default()
        }
    }

    /// A job: the lane's name and a number; "block" jobs wait for a message first.
    type Job = (&'static str, u32, Option<mpsc::Receiver<()>>);

    fn lanes() -> (Lanes<Job>, mpsc::Receiver<(&'static str, u32)>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let lanes = Lanes::new(limits(), move |(lane, n, gate): Job| {
            if let Some(gate) = gate {
                let _ = gate.recv_timeout(Duration::from_secs(10));
            }
            let _ = tx.lock().unwrap().send((lane, n));
        });
        (lanes, rx)
    }

    #[test]
    fn a_blocked_lane_holds_up_only_itself_and_keeps_its_order() {
        let (lanes, done) = lanes();
        let (open, gate) = mpsc::channel();
        lanes.push("a", ("a", 1, Some(gate)), 0, true).unwrap();
        lanes.push("a", ("a", 2, None), 0, true).unwrap();
        lanes.push("a", ("a", 3, None), 0, true).unwrap();
        for n in 1..=3 {
            lanes.push("b", ("b", n, None), 0, true).unwrap();
        }
        let first: Vec<_> = (0..3).map(|_| done.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        assert_eq!(first, (1..=3).map(|n| ("b", n)).collect::<Vec<_>>());
        assert_eq!(lanes.load("a"), LaneLoad { jobs: 2, bytes: 0, running: true });
        open.send(()).unwrap();
        let rest: Vec<_> = (0..3).map(|_| done.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        assert_eq!(rest, [("a", 1), ("a", 2), ("a", 3)]);
        assert_eq!(lanes.stop(Instant::now() + Duration::from_secs(5)), 0);
    }

    #[test]
    fn full_lanes_refuse_and_unbounded_pushes_pass() {
        let (lanes, done) = lanes();
        let (open, gate) = mpsc::channel();
        lanes.push("a", ("a", 0, Some(gate)), 10, true).unwrap();
        // Wait until the first job runs, so the three below are all queued.
        crate::lanes::tests::wait(|| lanes.load("a").running);
        for n in 1..=3 {
            lanes.push("a", ("a", n, None), 10, true).unwrap();
        }
        let refused = lanes.push("a", ("a", 4, None), 10, true).unwrap_err();
        assert_eq!(refused.to_string(), "state 'a' is busy: 3 requests (30 bytes) queued");
        lanes.push("a", ("a", 5, None), 10, false).unwrap();
        assert_eq!(lanes.load("a"), LaneLoad { jobs: 4, bytes: 40, running: true });
        let refused = lanes.push("b", ("b", 1, None), 101, true).unwrap_err();
        assert!(matches!(refused, Refused::LaneFull { .. }), "{refused}");
        assert_eq!(lanes.load("b"), LaneLoad::default());
        open.send(()).unwrap();
        let got: Vec<u32> = (0..5).map(|_| done.recv_timeout(Duration::from_secs(5)).unwrap().1).collect();
        assert_eq!(got, [0, 1, 2, 3, 5]);
        wait(|| lanes.load("a") == LaneLoad::default());
        // Idle workers beyond `keep_idle` leave.
        wait(|| lanes.workers() <= 1);
        lanes.stop(Instant::now() + Duration::from_secs(5));
        assert_eq!(lanes.push("a", ("a", 6, None), 0, false), Err(Refused::Stopped));
    }

    pub(super) fn wait(mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
