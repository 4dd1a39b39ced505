//! One queue's worker: read a batch, ask Lua about each packet, send the
//! verdicts (batched), repeat until told to stop. Each packet gets exactly
//! one verdict; a Lua failure gives the hook's on-error verdict.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nflua_engine::{Given, HookResult, PacketContext, StateRef, ETHERNET_HEADER_LEN};
use nflua_nfqueue::{Packet, Queue, VerdictSink};
use nflua_proto::HookSpec;

use super::bypass::{BypassFigures, Wake};
use super::stream::Streams;
use super::verdict::{decide, to_queue, with_replacement, Decision, Evaluation};

/// How long a worker waits for packets before it looks at its stop flag.
const POLL: Duration = Duration::from_millis(200);

/// Counters of one hook, shared by its workers.
#[derive(Debug, Default)]
pub struct HookStats {
    pub packets: AtomicU64,
    pub errors: AtomicU64,
    pub not_given: AtomicU64,
    /// Indexed by netfilter verdict number.
    pub verdicts: [AtomicU64; 6],
    /// Lua time per packet: bucket `i` counts calls of [2^i, 2^(i+1)) ns (of packet hooks, one
    /// call in `LATENCY_SAMPLE`).
    pub lua_ns: [AtomicU64; LATENCY_BUCKETS],
    /// What passed the hook without Lua, and its queues' backlog (kept by the monitor).
    pub bypass: BypassFigures,
    /// Stream hooks: connections, held packets, decisions.
    pub stream: StreamFigures,
}

/// A stream hook's figures (zero for packet hooks).
#[derive(Debug, Default)]
pub struct StreamFigures {
    /// Connections tracked now (being read and decided ones remembered), of them being read
    /// (undecided), bytes of their streams kept, packets held now.
    pub flows: AtomicU64,
    pub reading: AtomicU64,
    pub bytes: AtomicU64,
    pub held: AtomicU64,
    /// Connections decided (by the function, a failure or a bound).
    pub decided: AtomicU64,
    /// Connections whose held packets waited past the hold timeout.
    pub timed_out: AtomicU64,
    /// Connections whose stream had a gap or was cut by the memory bound.
    pub broken: AtomicU64,
    /// Connections that would have held more packets than allowed.
    pub held_over: AtomicU64,
    /// Packets of new connections refused by the connection bound.
    pub refused: AtomicU64,
}

/// Buckets of the Lua time histogram (the last one holds everything from about 2 s up).
pub const LATENCY_BUCKETS: usize = 32;

/// One packet hook call in this many is timed for the histogram (quantiles of a sample).
const LATENCY_SAMPLE: u64 = 8;

impl HookStats {
    pub fn new(queues: std::ops::RangeInclusive<u16>) -> HookStats {
        HookStats { bypass: BypassFigures::new(queues), ..HookStats::default() }
    }

    pub(super) fn record_lua(&self, ns: u64) {
        let bucket = (63 - ns.max(1).leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.lua_ns[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile of Lua time per packet in seconds, as the upper
    /// bound of its bucket (within a factor of two); `None` before any call.
    pub fn lua_quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.lua_ns.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some((1u64 << (i + 1)) as f64 * 1e-9);
            }
        }
        None
    }
}

pub struct Worker {
    pub queue: Queue,
    pub spec: HookSpec,
    /// The hooked state, entered without a name lookup per packet.
    pub state: StateRef,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<HookStats>,
    /// Told when packets arrive, so the bypass monitor samples while they flow.
    pub wake: Option<Arc<Wake>>,
    /// A stream hook's connections (`None` for a packet hook).
    pub streams: Option<Streams>,
}

/// A verdict decided for a packet, handed to [`send`] (stream hooks decide several at once:
/// the held packets a decision releases).
pub(super) struct Pending {
    pub(super) id: u32,
    pub(super) decision: Decision,
    pub(super) replacement: Option<Vec<u8>>,
    /// Sent on its own (`NFQNL_MSG_VERDICT`) rather than batched: packets before it are held.
    pub(super) single: bool,
}

impl Worker {
    pub fn run(mut self) {
        let queue_num = self.queue.queue();
        tracing::info!(queue = queue_num, state = %self.spec.state, function = %self.spec.function, "queue worker started");
        let mut connids = ConnIds::Off;
        let mut handled = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            if connids == ConnIds::Off && self.state.wants_conntrack() {
                connids = self.enable_connids();
            }
            let hook = Hook { state: &self.state, spec: &self.spec, stats: &self.stats };
            let streams = &mut self.streams;
            // Verdicts go out as they are decided, through the queue's sending half lent for
            // the batch (batched ones are flushed when the batch is done).
            let received = self.queue.recv_batch_with(POLL, |packet, verdicts| {
                let mut out = |p: Pending| send(verdicts, hook.stats, queue_num, p);
                match streams {
                    Some(streams) => streams.packet(&hook, packet, &mut out),
                    None => out(evaluate(&hook, packet, connids)),
                }
            });
            if let Some(streams) = &mut self.streams {
                let queue = &mut self.queue;
                streams.expire(&hook, &mut |p: Pending| send(queue, hook.stats, queue_num, p));
                if let Err(e) = self.queue.flush() {
                    tracing::error!(queue = queue_num, error = %e, "sending verdicts failed");
                }
            }
            match received {
                Ok(n) => {
                    handled += n as u64;
                    if let (true, Some(wake)) = (n > 0, &self.wake) {
                        wake.traffic();
                    }
                }
                Err(e) => {
                    tracing::error!(queue = queue_num, error = %e, "receiving from the queue failed");
                    // What was decided before the failure still goes out.
                    if let Err(e) = self.queue.flush() {
                        tracing::error!(queue = queue_num, error = %e, "sending verdicts failed");
                    }
                }
            }
        }
        tracing::info!(
            queue = queue_num,
            handled,
            packets = self.stats.packets.load(Ordering::Relaxed),
            errors = self.stats.errors.load(Ordering::Relaxed),
            "queue worker stopped"
        );
        // Dropping the queue flushes what is left and unbinds it.
    }
}

/// Counts and sends one verdict: batched, on its own while packets are held (`single`), or with
/// the packet's new bytes.
fn send(out: &mut impl VerdictSink, stats: &HookStats, queue: u16, p: Pending) {
    stats.verdicts[p.decision.verdict as usize].fetch_add(1, Ordering::Relaxed);
    let (verdict, mark) = (to_queue(p.decision.verdict), p.decision.mark);
    let sent = match &p.replacement {
        Some(bytes) => out.verdict_with_payload(p.id, verdict, mark, bytes),
        None if p.single => out.verdict_one(p.id, verdict, mark),
        None => out.verdict(p.id, verdict, mark),
    };
    if let Err(e) = sent {
        tracing::error!(queue, error = %e, "sending a verdict failed");
    }
}

/// Where `nf.connid` values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnIds {
    /// No script of the state uses nf.connid: ask for nothing.
    Off,
    /// The kernel attaches conntrack ids (CTA_ID) to queued packets.
    Kernel,
    /// The kernel cannot (built without CONFIG_NETFILTER_NETLINK_GLUE_CT):
    /// identify flows by protocol, addresses and ports, both directions alike.
    Flow,
}

impl Worker {
    /// Asked for only once a script uses nf.connid: conntrack info costs on
    /// every packet.
    fn enable_connids(&mut self) -> ConnIds {
        match self.queue.set_conntrack(true) {
            Ok(()) => ConnIds::Kernel,
            Err(e) => {
                tracing::info!(
                    queue = self.queue.queue(),
                    error = %e,
                    "no conntrack info from the kernel; nf.connid identifies flows by addresses and ports"
                );
                ConnIds::Flow
            }
        }
    }
}

/// What `evaluate` needs of the worker, borrowed while the queue reads a batch.
pub(super) struct Hook<'a> {
    pub(super) state: &'a StateRef,
    pub(super) spec: &'a HookSpec,
    pub(super) stats: &'a HookStats,
}

fn evaluate(hook: &Hook<'_>, packet: &Packet<'_>, connids: ConnIds) -> Pending {
    let (spec, stats) = (hook.spec, hook.stats);
    let number = stats.packets.fetch_add(1, Ordering::Relaxed);
    let ip_packet = packet.payload;
    let given = if spec.tcp_payload { Given::TcpPayload } else { Given::IpPacket };
    let mode = spec.mode;
    let conntrack_id = match connids {
        ConnIds::Off => None,
        ConnIds::Kernel => packet.conntrack_id,
        ConnIds::Flow => nflua_packet::connection_id(ip_packet),
    };
    let mut replacement = None;
    let evaluation = match PacketContext::new(link_header(packet), ip_packet, given, mode, conntrack_id) {
        None => {
            stats.not_given.fetch_add(1, Ordering::Relaxed);
            Evaluation::NotGiven
        }
        Some(ctx) => {
            // Lua time is sampled (the first packet and every LATENCY_SAMPLE-th): two clock
            // reads per packet were 2 % of the consumer's CPU on a virtual machine.
            let started = (number % LATENCY_SAMPLE == 0).then(Instant::now);
            let result = hook.state.call_hook(&spec.function, &ctx);
            if let Some(started) = started {
                stats.record_lua(started.elapsed().as_nanos() as u64);
            }
            match result {
                Ok(outcome) => {
                    replacement = outcome.replacement;
                    match outcome.result {
                        HookResult::Match(matched) => {
                            Evaluation::Matched { matched, hotdrop: outcome.hotdrop }
                        }
                        HookResult::Target(v) => Evaluation::Target(v),
                    }
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(state = %spec.state, error = %e, "hook failed; on-error verdict");
                    Evaluation::Failed
                }
            }
        }
    };
    let mut decision = decide(spec, packet.mark, &evaluation);
    if replacement.is_some() {
        decision = with_replacement(decision);
    }
    Pending { id: packet.id, decision, replacement, single: false }
}

/// The Ethernet header Lua sees before the queued packet (see `nflua_engine::link_header`). The
/// engine copies it and the packet (still in the queue's receive buffer) into the state's
/// buffer, so the packet is copied once.
pub(super) fn link_header(packet: &Packet<'_>) -> [u8; ETHERNET_HEADER_LEN] {
    nflua_engine::link_header(packet.hw_addr, packet.payload, packet.hw_protocol)
}

#[cfg(test)]
mod latency_tests {
    use super::HookStats;

    #[test]
    fn quantiles_come_from_the_histogram() {
        let s = HookStats::default();
        assert_eq!(s.lua_quantile(0.5), None);
        for _ in 0..98 {
            s.record_lua(1500); // bucket [1024, 2048)
        }
        s.record_lua(1_000_000);
        s.record_lua(1_000_000);
        assert_eq!(s.lua_quantile(0.5), Some(2048e-9));
        assert_eq!(s.lua_quantile(0.99), Some((1u64 << 20) as f64 * 1e-9));
    }
}
