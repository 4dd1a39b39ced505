//! The hook table: which queues feed which state's function, and the worker
//! threads that serve them. Lives on the control thread; workers share only
//! the engine, their stop flag and the bypass monitor's wake-up (`bypass`).
//!
//! Removing a hook does not wait for its workers: they notice their stop flag
//! within their poll interval, and the control thread must not wait that long
//! (nor for a hook call running in a busy state). Their threads are joined
//! later — when a new hook wants one of their queues (which must be unbound
//! first), or on the next change, or at shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use nflua_engine::{Engine, EngineError};
use nflua_nfqueue::{Accounting, Queue, QueueConfig, QueueError};
use nflua_proto::errno;
use nflua_proto::hook::MAX_HOOKS;
use nflua_proto::{HookSpec, Overflow};

use super::bypass::{self, Monitor};
use nflua_stream::SharedBudget;

use super::stream::Streams;
use super::worker::{HookStats, Worker};

/// Why a hook could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("invalid hook: {0}")]
    Invalid(#[from] nflua_proto::HookSpecError),
    #[error("too many hooks (max {MAX_HOOKS})")]
    TooMany,
    #[error("queue {queue} is already used by the hook of state '{state}'")]
    QueueTaken { queue: u16, state: String },
    #[error("no hook on queue {0}")]
    NoHook(u16),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("queue {queue}: {source}")]
    Queue { queue: u16, source: QueueError },
    #[error("could not start a worker: {0}")]
    Spawn(std::io::Error),
    #[error("packet hooks are disabled in this daemon")]
    Disabled,
}

impl HookError {
    pub fn errno(&self) -> i32 {
        match self {
            HookError::Invalid(_) => errno::EINVAL,
            HookError::TooMany => errno::ENOSPC,
            HookError::QueueTaken { .. } => errno::EBUSY,
            HookError::NoHook(_) => errno::ENOENT,
            HookError::Engine(e) => e.errno(),
            HookError::Queue { source: QueueError::Busy { .. }, .. } => errno::EBUSY,
            HookError::Queue { source: QueueError::Io { source, .. }, .. } => {
                source.raw_os_error().unwrap_or(errno::EIO)
            }
            HookError::Queue { .. } | HookError::Spawn(_) => errno::EIO,
            HookError::Disabled => errno::EOPNOTSUPP,
        }
    }
}

/// Settings every queue of every hook gets.
#[derive(Debug, Clone)]
pub struct QueueDefaults {
    pub max_len: u32,
    pub recv_buffer: usize,
    /// How long a stream hook holds packets of an undecided connection.
    pub stream_timeout: std::time::Duration,
    /// Bytes of streams all stream hooks keep together.
    pub stream_memory: usize,
    /// When false, HOOK_ADD is refused (EOPNOTSUPP) and no queue is ever
    /// bound: for the request-handling fuzzer, which must not touch the
    /// machine's packet path.
    pub enabled: bool,
}

struct RunningQueue {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Entry {
    spec: HookSpec,
    queues: Vec<RunningQueue>,
    stats: Arc<HookStats>,
}

pub struct Hooks {
    engine: Arc<Engine>,
    defaults: QueueDefaults,
    entries: Vec<Entry>,
    registry: HookRegistry,
    /// Workers of removed hooks, told to stop and not yet joined, with their queue numbers.
    stopping: Vec<(u16, RunningQueue)>,
    /// Counts what passes the hooks unevaluated (`bypass`); none while hooks are disabled.
    monitor: Option<Monitor>,
    /// The control thread's socket for the hooks' kernel counters, opened on first use.
    accounting: Option<Accounting>,
    /// What all stream hooks' workers keep of streams together (`--stream-memory`).
    stream_budget: Arc<SharedBudget>,
}

/// What statistics readers (STATS, the metrics endpoint) see of the hooks:
/// each spec with its counters, kept in step with the table.
pub type HookRegistry = Arc<std::sync::RwLock<Vec<(HookSpec, Arc<HookStats>)>>>;

impl Hooks {
    pub fn new(engine: Arc<Engine>, defaults: QueueDefaults) -> Hooks {
        let registry = HookRegistry::default();
        let monitor =
            defaults.enabled.then(|| Monitor::start(Arc::clone(&registry), defaults.max_len)).and_then(|m| {
                m.map_err(|e| tracing::error!(error = %e, "could not start the bypass monitor")).ok()
            });
        let stream_budget = SharedBudget::new(defaults.stream_memory);
        Hooks {
            stream_budget,
            engine,
            defaults,
            entries: Vec::new(),
            registry,
            stopping: Vec::new(),
            monitor,
            accounting: None,
        }
    }

    /// A handle on the hooks' statistics for other threads.
    pub fn registry(&self) -> HookRegistry {
        Arc::clone(&self.registry)
    }

    fn publish(&self) {
        let view = self.entries.iter().map(|e| (e.spec.clone(), Arc::clone(&e.stats))).collect();
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = view;
    }

    pub fn list(&self) -> Vec<HookSpec> {
        self.entries.iter().map(|e| e.spec.clone()).collect()
    }

    /// Binds the spec's queues and starts their workers; all or nothing.
    pub fn add(&mut self, spec: HookSpec) -> Result<(), HookError> {
        spec.validate().map_err(HookError::Invalid)?;
        if !self.defaults.enabled {
            return Err(HookError::Disabled);
        }
        if self.entries.len() >= MAX_HOOKS {
            return Err(HookError::TooMany);
        }
        for e in &self.entries {
            if let Some(q) = spec.queues().find(|q| e.spec.queues().contains(q)) {
                return Err(HookError::QueueTaken { queue: q, state: e.spec.state.clone() });
            }
        }
        self.engine.pin(&spec.state)?;
        // A queue of a hook just removed is bound until its worker ends: wait for that.
        self.reap(|q| spec.queues().contains(&q));
        let stats = Arc::new(HookStats::new(spec.queues()));
        bypass::begin(&mut self.accounting, &spec, &stats.bypass);
        let mut queues = Vec::new();
        for queue in spec.queues() {
            match self.start(&spec, queue, &stats) {
                Ok(q) => queues.push(q),
                Err(e) => {
                    stop_all(queues);
                    self.engine.unpin(&spec.state);
                    return Err(e);
                }
            }
        }
        tracing::info!(state = %spec.state, function = %spec.function, first = spec.queue_first, last = spec.queue_last, overflow = spec.overflow.name(), "hook added");
        self.entries.push(Entry { spec, queues, stats });
        self.publish();
        Ok(())
    }

    /// Opens the queue inside its worker thread (so nothing about the
    /// socket needs to cross threads) and waits for the outcome.
    fn start(&self, spec: &HookSpec, queue: u16, stats: &Arc<HookStats>) -> Result<RunningQueue, HookError> {
        let config = QueueConfig {
            queue,
            copy_range: 0xFFFF,
            max_len: self.defaults.max_len,
            fail_open: spec.overflow == Overflow::Accept,
            gso: true,
            conntrack: self.engine.wants_conntrack(&spec.state),
            recv_buffer: self.defaults.recv_buffer,
        };
        let state = self.engine.state_ref(&spec.state)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (spec_c, stats_c, stop_c) = (spec.clone(), Arc::clone(stats), Arc::clone(&stop));
        let wake = self.monitor.as_ref().map(Monitor::wake);
        let stream_timeout = self.defaults.stream_timeout;
        let budget = Arc::clone(&self.stream_budget);
        let thread = std::thread::Builder::new()
            .name(format!("nfq-{queue}"))
            .spawn(move || {
                // A kernel without conntrack glue refuses the flag; the worker
                // then derives nf.connid from the flow itself.
                let opened = Queue::open(&config).or_else(|e| {
                    if config.conntrack {
                        Queue::open(&QueueConfig { conntrack: false, ..config.clone() })
                    } else {
                        Err(e)
                    }
                });
                let queue = match opened {
                    Ok(q) => {
                        let _ = ready_tx.send(Ok(()));
                        q
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let streams = spec_c.stream_depth.map(|depth| Streams::new(depth, stream_timeout, budget));
                Worker { queue, spec: spec_c, state, stop: stop_c, stats: stats_c, wake, streams }.run();
            })
            .map_err(HookError::Spawn)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(RunningQueue { stop, thread }),
            Ok(Err(source)) => {
                let _ = thread.join();
                Err(HookError::Queue { queue, source })
            }
            Err(_) => {
                let _ = thread.join();
                Err(HookError::Spawn(std::io::Error::other("worker ended before opening its queue")))
            }
        }
    }

    /// Stops the hook holding `queue` and releases its state.
    pub fn del(&mut self, queue: u16) -> Result<(), HookError> {
        let at = self
            .entries
            .iter()
            .position(|e| e.spec.queues().contains(&queue))
            .ok_or(HookError::NoHook(queue))?;
        let entry = self.entries.remove(at);
        self.publish();
        self.reap(|_| false);
        for q in &entry.queues {
            q.stop.store(true, Ordering::Relaxed);
        }
        self.stopping.extend(entry.spec.queues().zip(entry.queues));
        // Released now: the workers only finish their current batch (a state destroyed
        // meanwhile gives their last packets the on-error verdict).
        self.engine.unpin(&entry.spec.state);
        tracing::info!(
            state = %entry.spec.state,
            packets = entry.stats.packets.load(Ordering::Relaxed),
            errors = entry.stats.errors.load(Ordering::Relaxed),
            "hook removed"
        );
        Ok(())
    }

    /// Stops every worker (their queues flush pending verdicts and unbind).
    pub fn clear(&mut self) {
        let mut released = Vec::new();
        for e in self.entries.drain(..) {
            stop_all(e.queues);
            self.engine.unpin(&e.spec.state);
            released.push(e.spec);
        }
        self.publish();
        self.reap(|_| true);
        // Queues released: what the counters hold from now on passed with nobody bound.
        for spec in &released {
            bypass::finish(&mut self.accounting, spec);
        }
    }

    /// Joins the stopping workers that have ended, and those on queues `wait_for` selects
    /// (waiting for them to end).
    fn reap(&mut self, wait_for: impl Fn(u16) -> bool) {
        let (done, keep): (Vec<_>, Vec<_>) =
            self.stopping.drain(..).partition(|(queue, q)| q.thread.is_finished() || wait_for(*queue));
        self.stopping = keep;
        for (_, q) in done {
            let _ = q.thread.join();
        }
    }
}

fn stop_all(queues: Vec<RunningQueue>) {
    for q in &queues {
        q.stop.store(true, Ordering::Relaxed);
    }
    for q in queues {
        let _ = q.thread.join();
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.clear();
    }
}
