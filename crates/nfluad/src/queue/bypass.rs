//! Packets that pass a hook without a verdict from Lua, counted: the kernel accepts them on its
//! own when a fail-open queue is full (or the daemon's socket cannot take them), and when a
//! `--queue-bypass` rule finds no queue bound (nfluad down, hook removed). Nothing tells
//! nfluad about these, and nothing in `/proc` counts them either: a full fail-open queue
//! accepts the packet before giving it an id, and neither drop counter moves.
//!
//! How they are counted. `hook add` prints an accounting rule placed just *before* the NFQUEUE
//! rule, with the same match and the same EVAL-mark guard, counting into a kernel counter
//! (nfacct object, [`HookSpec::accounting_name`]) that nfluad makes when the hook is added:
//!
//! ```text
//! iptables -A INPUT -p udp --dport 9000 -m mark ! --mark 0x10000000/0x10000000 -m nfacct --nfacct-name nflua-q0
//! iptables -A INPUT -p udp --dport 9000 -m mark ! --mark 0x10000000/0x10000000 -j NFQUEUE --queue-num 0 --queue-bypass
//! ```
//!
//! Every packet that reaches the NFQUEUE rule was counted a moment before. Such a packet then
//! either waits in the kernel queue (`queue_total` in `/proc/net/netfilter/nfnetlink_queue`,
//! which includes those the worker holds), or has had its verdict (workers count a verdict
//! before sending it), or was dropped by a fail-closed queue (`queue_dropped`,
//! `queue_user_dropped`), or passed unevaluated. So
//!
//! ```text
//! unevaluated = counted − backlog − verdicts − kernel drops
//! ```
//!
//! read in that order (counter, then `/proc`, then the verdict counts), so a packet moving on
//! between two reads is counted twice, never missed: a reading errs low, never high, except for
//! a packet caught between the two rules at the instant of the `/proc` read (a fraction of a
//! microsecond in the softirq). The published figure is the smaller of the last two readings
//! and never decreases, so it is exact once the queue is quiet.
//!
//! Why this mechanism. An accounting rule *after* NFQUEUE never sees these packets: a fail-open
//! or bypass accept ends the table's traversal (the packet goes on to the next table). The
//! kernel's id sequence minus the packets received misses the main case (a full queue gives no
//! id) and restarts with every bind. Rule counters of iptables itself would need the daemon to
//! find the operator's rule among others and to parse `iptables-save`; a named counter is
//! found by name, read and zeroed atomically over Netlink, works for iptables-legacy and
//! iptables-nft alike, and outlives nfluad.
//!
//! While nfluad is down the counter keeps counting; when the hook is added again (by hand or
//! from the journal) the count found is what passed with nobody bound (`unevaluated_while_down`,
//! part of `unevaluated`). Not covered exactly: after a crash (SIGKILL) or a `hook del`, the
//! packets the old workers decided after the monitor's last reading (at most one tick, up to 200 ms
//! of traffic) and those still queued at the crash (which the kernel then drops) are counted
//! as passed-while-down; a clean shutdown zeroes the counter after its queues are released, so
//! it is exact. Without the accounting rule, or on a kernel without nfnetlink_acct, the
//! figures are absent (`null`), never zero. nft has no nfacct match; nft rule sets need an
//! iptables-nft rule for the count.
//!
//! The monitor also samples each queue's backlog for its high-water mark and an estimate of the
//! time spent full (ticks where the backlog was at the queue's maximum length). It ticks every
//! 25 ms while a queue holds a sixteenth of its length or more and for the first second after
//! traffic starts or a queue filled (a flood may be over in a tenth of a second), every 200 ms
//! while packets go on flowing and the queues keep up, and once a second when nothing moves (a
//! worker that receives packets wakes it). A tick costs about 110 us of CPU on our 2-core VM, nearly all of it the wake-up,
//! so 25 ms ticks at any rate were 0.45 % of a core, as much as a tenth of the whole daemon's
//! CPU at 10k packets/s; fast ticks are kept for when the backlog (and so the time full) is
//! worth sampling finely.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use nflua_nfqueue::{Accounting, QueueInstance};
use nflua_proto::HookSpec;

use super::hooks::HookRegistry;
use super::worker::HookStats;

/// Tick while a queue is filling: the granularity of the backlog samples and of the time full.
const PRESSED_TICK: Duration = Duration::from_millis(25);
/// Tick while packets flow and the queues hold less than [`PRESSED_SHARE`] of their length.
const FLOWING_TICK: Duration = Duration::from_millis(200);
/// A queue holding at least `1 / PRESSED_SHARE` of its length makes the ticks fast.
const PRESSED_SHARE: u64 = 16;
/// Fast ticks with packets flowing and the queues keeping up before the ticks slow down (a
/// second's worth).
const CALM_TICKS_BEFORE_SLOWING: u32 = 40;
/// Tick when nothing moved during the last one (workers wake the monitor on traffic).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// The kernel's queue length when none is set.
const KERNEL_DEFAULT_MAX_LEN: u32 = 1024;

/// One queue's figures from the kernel, sampled.
#[derive(Debug)]
pub struct QueueFigures {
    pub queue: u16,
    pub backlog: AtomicU64,
    pub backlog_high_water: AtomicU64,
    /// Nanoseconds of ticks whose sample found the queue at its maximum length.
    pub full_ns: AtomicU64,
    /// `queue_dropped`: dropped because the queue was full (fail-closed only).
    pub dropped_full: AtomicU64,
    /// `queue_user_dropped`: dropped because our socket could not take them (fail-closed only).
    pub dropped_socket: AtomicU64,
}

/// What passed a hook without Lua, and its queues' backlog.
#[derive(Debug, Default)]
pub struct BypassFigures {
    /// The hook's kernel counter exists and was read: the counts below mean something.
    pub measured: AtomicBool,
    /// Packets that reached the hook's NFQUEUE rule since the hook was added (including those
    /// counted while no queue was bound).
    pub reached: AtomicU64,
    /// Packets counted before the hook's queues were bound: passed by `--queue-bypass` while
    /// nobody listened.
    pub while_down: AtomicU64,
    /// Packets passed without a verdict from Lua (published: monotonic).
    pub unevaluated: AtomicU64,
    /// The latest reading, to publish the smaller of two in a row.
    last_reading: AtomicU64,
    /// Verdicts seen at the last tick (to tell traffic from silence).
    last_verdicts: AtomicU64,
    pub queues: Vec<QueueFigures>,
}

impl BypassFigures {
    pub fn new(queues: RangeInclusive<u16>) -> BypassFigures {
        let queues = queues
            .map(|queue| QueueFigures {
                queue,
                backlog: AtomicU64::new(0),
                backlog_high_water: AtomicU64::new(0),
                full_ns: AtomicU64::new(0),
                dropped_full: AtomicU64::new(0),
                dropped_socket: AtomicU64::new(0),
            })
            .collect();
        BypassFigures { queues, ..BypassFigures::default() }
    }

    /// The counts, when measured.
    pub fn unevaluated(&self) -> Option<(u64, u64)> {
        self.measured
            .load(Ordering::Acquire)
            .then(|| (self.unevaluated.load(Ordering::Relaxed), self.while_down.load(Ordering::Relaxed)))
    }
}

/// Makes the hook's counter (if needed) and takes what it counted while no queue was bound.
/// Called before the hook's queues are bound; a failure leaves the hook unmeasured, not refused.
pub fn begin(accounting: &mut Option<Accounting>, spec: &HookSpec, figures: &BypassFigures) {
    let name = spec.accounting_name();
    let taken = open(accounting).and_then(|a| {
        a.ensure(&name)?;
        a.take(&name)
    });
    match taken {
        Ok(before) => {
            figures.reached.store(before, Ordering::Relaxed);
            figures.while_down.store(before, Ordering::Relaxed);
            figures.unevaluated.store(before, Ordering::Relaxed);
            figures.last_reading.store(before, Ordering::Relaxed);
            figures.measured.store(true, Ordering::Release);
            if before > 0 {
                tracing::warn!(queue = spec.queue_first, counter = %name, packets = before, "packets passed this hook's rule unevaluated while no queue was bound");
            }
        }
        Err(e) => {
            *accounting = None;
            tracing::warn!(queue = spec.queue_first, counter = %name, error = %e, "no accounting object: packets passed unevaluated are not counted for this hook");
        }
    }
}

/// Zeroes a hook's counter after its queues were released at shutdown, so that the next start
/// finds only what passed while nfluad was down.
pub fn finish(accounting: &mut Option<Accounting>, spec: &HookSpec) {
    if let Ok(a) = open(accounting) {
        if let Err(e) = a.take(&spec.accounting_name()) {
            tracing::debug!(queue = spec.queue_first, error = %e, "could not zero the hook's accounting object");
        }
    }
}

fn open(accounting: &mut Option<Accounting>) -> Result<&mut Accounting, nflua_nfqueue::QueueError> {
    let a = match accounting.take() {
        Some(a) => a,
        None => Accounting::open()?,
    };
    Ok(accounting.insert(a))
}

/// Lets workers wake an idle monitor when packets arrive.
#[derive(Debug, Default)]
pub struct Wake {
    idle: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Wake {
    /// Called by a worker after a batch that held packets: one relaxed load unless the monitor
    /// sleeps its long tick.
    pub fn traffic(&self) {
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::Relaxed) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }
}

/// The sampling thread; stopped and joined on drop.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts the thread; `max_len` is the queues' length (0: the kernel's default).
    pub fn start(registry: HookRegistry, max_len: u32) -> std::io::Result<Monitor> {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Wake::default());
        let max_len = if max_len == 0 { KERNEL_DEFAULT_MAX_LEN } else { max_len };
        let (stop_c, wake_c) = (Arc::clone(&stop), Arc::clone(&wake));
        let thread = std::thread::Builder::new()
            .name("nfq-monitor".into())
            .spawn(move || run(&registry, &stop_c, &wake_c, u64::from(max_len)))?;
        let _ = wake.thread.set(thread.thread().clone());
        Ok(Monitor { stop, wake, thread: Some(thread) })
    }

    pub fn wake(&self) -> Arc<Wake> {
        Arc::clone(&self.wake)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn run(registry: &HookRegistry, stop: &AtomicBool, wake: &Wake, max_len: u64) {
    let mut accounting: Option<Accounting> = None;
    let mut last = Instant::now();
    let mut calm = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let hooks: Vec<(String, Arc<HookStats>)> = registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(spec, stats)| (spec.accounting_name(), Arc::clone(stats)))
            .collect();
        let now = Instant::now();
        let elapsed = now.duration_since(last).as_nanos() as u64;
        last = now;
        let activity =
            if hooks.is_empty() { Activity::Idle } else { tick(&mut accounting, &hooks, elapsed, max_len) };
        // Fast ticks go on for a second of calm after traffic starts or a queue filled: a flood
        // can be over in a tenth of a second, and its backlog must be seen.
        calm = if activity == Activity::Flowing { calm.saturating_add(1) } else { 0 };
        match activity {
            Activity::Flowing if calm > CALM_TICKS_BEFORE_SLOWING => std::thread::park_timeout(FLOWING_TICK),
            Activity::Pressed | Activity::Flowing => std::thread::park_timeout(PRESSED_TICK),
            Activity::Idle => {
                wake.idle.store(true, Ordering::Relaxed);
                std::thread::park_timeout(IDLE_TICK);
                wake.idle.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// What the last tick saw, which sets the time to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activity {
    /// Nothing counted, queued or decided since the tick before.
    Idle,
    /// Packets moved; every queue held less than a sixteenth of its length.
    Flowing,
    /// A queue held a sixteenth of its length or more.
    Pressed,
}

/// One reading of every hook.
fn tick(
    accounting: &mut Option<Accounting>,
    hooks: &[(String, Arc<HookStats>)],
    elapsed_ns: u64,
    max_len: u64,
) -> Activity {
    let mut active = false;
    let mut pressed = false;
    // 1. The counters: everything counted before the reads below.
    for (name, stats) in hooks {
        let f = &stats.bypass;
        if !f.measured.load(Ordering::Acquire) {
            continue;
        }
        match open(accounting).and_then(|a| a.take(name)) {
            Ok(n) => {
                f.reached.fetch_add(n, Ordering::Relaxed);
                active |= n > 0;
            }
            Err(e) => {
                *accounting = None;
                tracing::debug!(counter = %name, error = %e, "reading the hook's accounting object failed");
            }
        }
    }
    // 2. The kernel's queues.
    let instances = nflua_nfqueue::instances().unwrap_or_else(|e| {
        tracing::debug!(error = %e, "reading {} failed", nflua_nfqueue::PROC_PATH);
        Vec::new()
    });
    for (_, stats) in hooks {
        let f = &stats.bypass;
        let (backlog, dropped) = sample_queues(f, &instances, elapsed_ns, max_len);
        pressed |= f.queues.iter().any(|q| q.backlog.load(Ordering::Relaxed) * PRESSED_SHARE >= max_len);
        // 3. The verdicts, read last.
        let verdicts: u64 = stats.verdicts.iter().map(|v| v.load(Ordering::Relaxed)).sum();
        active |= backlog > 0 || f.last_verdicts.swap(verdicts, Ordering::Relaxed) != verdicts;
        if f.measured.load(Ordering::Acquire) {
            let reached = f.reached.load(Ordering::Relaxed);
            let reading = reached.saturating_sub(backlog + verdicts + dropped);
            let settled = reading.min(f.last_reading.swap(reading, Ordering::Relaxed));
            f.unevaluated.fetch_max(settled, Ordering::Relaxed);
        }
    }
    match (pressed, active) {
        (true, _) => Activity::Pressed,
        (false, true) => Activity::Flowing,
        (false, false) => Activity::Idle,
    }
}

/// Updates each queue's figures from the kernel's; returns the hook's total backlog and drops.
fn sample_queues(
    f: &BypassFigures,
    instances: &[QueueInstance],
    elapsed_ns: u64,
    max_len: u64,
) -> (u64, u64) {
    let (mut backlog, mut dropped) = (0, 0);
    for q in &f.queues {
        let Some(i) = instances.iter().find(|i| i.queue == q.queue) else {
            q.backlog.store(0, Ordering::Relaxed);
            continue;
        };
        let b = u64::from(i.backlog);
        q.backlog.store(b, Ordering::Relaxed);
        q.backlog_high_water.fetch_max(b, Ordering::Relaxed);
        if b >= max_len {
            q.full_ns.fetch_add(elapsed_ns, Ordering::Relaxed);
        }
        q.dropped_full.store(u64::from(i.dropped_full), Ordering::Relaxed);
        q.dropped_socket.store(u64::from(i.dropped_socket), Ordering::Relaxed);
        backlog += b;
        dropped += u64::from(i.dropped_full) + u64::from(i.dropped_socket);
    }
    (backlog, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(queue: u16, backlog: u32, dropped_full: u32) -> QueueInstance {
        QueueInstance { queue, peer_port: 1, backlog, dropped_full, dropped_socket: 0, id_sequence: 0 }
    }

    #[test]
    fn samples_keep_high_water_and_full_time() {
        let f = BypassFigures::new(3..=4);
        assert_eq!(sample_queues(&f, &[instance(3, 100, 0), instance(4, 8, 2)], 10, 100), (108, 2));
        assert_eq!(sample_queues(&f, &[instance(3, 5, 0)], 10, 100), (5, 0));
        let q3 = &f.queues[0];
        assert_eq!(q3.backlog.load(Ordering::Relaxed), 5);
        assert_eq!(q3.backlog_high_water.load(Ordering::Relaxed), 100);
        assert_eq!(q3.full_ns.load(Ordering::Relaxed), 10);
        assert_eq!(f.queues[1].backlog.load(Ordering::Relaxed), 0, "an unbound queue holds nothing");
        assert_eq!(f.queues[1].dropped_full.load(Ordering::Relaxed), 2);
    }
}
