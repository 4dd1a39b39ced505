//! Stream hooks: a queue worker's connections, reassembled (`nflua-stream`), and the packets it
//! holds while the function has not decided.
//!
//! For each TCP packet the worker places the segment in its connection's stream. A connection
//! already decided gets its decision at once, without Lua. Otherwise, when the packet's
//! direction grew, the function is called with the current packet and that direction's bytes so
//! far (`f(frame, stream)`, `nf.flow()` for the connection). `"accept"`, `"drop"` (or any
//! verdict) decides the connection: the held packets and this one get it, in the order they
//! came, and so does every later packet. No answer leaves it undecided: a packet that carries
//! payload is then held in the queue without a verdict (a retransmission or an out-of-order
//! segment too, so a sender cannot slip the bytes past while the first copy waits), and one
//! without payload (handshake, bare ACK) goes on with "continue".
//!
//! Bounds, each ending in the hook's on-error verdict for the connection (held packets
//! included): a gap (out-of-order bytes past their bound), a conflicting copy of bytes already
//! seen, or a stream cut by the memory bound, more than [`MAX_HELD_PER_FLOW`] packets held for
//! one connection, [`MAX_HELD_PER_CLIENT`] for one client address or [`MAX_HELD`] for the
//! worker, a held packet older than the hold timeout, a Lua failure, a connection refused by
//! the table's connection bound, a connection the table replaced (a new SYN on its ports) or
//! forgot to make room, a stream that reached the depth undecided (a sender could pad what the
//! filter looks for past it). A connection that ends (FIN both ways, RST at the expected
//! sequence number) undecided gets "continue". Connections
//! are forgotten when they end and after the table's idle time. A SYN carrying data goes on
//! without it (Fast Open clients send it again after the handshake, where it is read).
//!
//! Verdicts while packets are held go out one by one (`NFQNL_MSG_VERDICT`): a batch verdict
//! would decide every waiting packet up to its id, held ones included.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nflua_engine::{FlowInfo, HookResult, PacketContext, StreamContext, ETHERNET_HEADER_LEN};
use nflua_nfqueue::Packet;
use nflua_proto::Verdict;
use nflua_stream::{Direction, Flow, FlowId, Limits, SharedBudget, StreamError, Table};

use super::verdict::{decide, with_replacement, Decision, Evaluation};
use super::worker::{link_header, Hook, Pending};

/// Packets held for one connection at most.
pub const MAX_HELD_PER_FLOW: usize = 64;
/// Packets one worker holds at most (well below any queue length a hook uses).
pub const MAX_HELD: usize = 512;
/// Packets one worker holds at most for the connections of one client address, so that one
/// client cannot take all of [`MAX_HELD`] and make everyone else's connections fail.
pub const MAX_HELD_PER_CLIENT: usize = MAX_HELD / 4;

/// What a call of the function said.
enum Answer {
    /// A verdict for the connection (or a failure, or the depth reached undecided).
    Decided(Evaluation),
    /// Nothing yet: wait for more bytes.
    Undecided,
    /// The packet was re-emitted with `packet:send` (its verdict is pushed); with a verdict
    /// about the connection besides "stolen".
    Sent(Option<Evaluation>),
}

/// A packet waiting for its connection's decision.
#[derive(Debug, Clone, Copy)]
struct Held {
    id: u32,
    mark: u32,
}

/// What the worker knows of a connection besides its bytes.
#[derive(Debug, Default)]
pub struct FlowState {
    decided: Option<Evaluation>,
    held: Vec<Held>,
    /// When the oldest held packet came.
    held_since: Option<Instant>,
}

/// A worker's connections and held packets.
pub struct Streams {
    table: Table<FlowState>,
    held: usize,
    /// Packets held per client address (only addresses holding some).
    held_by_client: HashMap<IpAddr, usize>,
    hold_timeout: Duration,
    started: Instant,
}

impl Streams {
    /// A worker's connections: `depth` bytes per direction, `hold_timeout` for held packets,
    /// their bytes counted in `budget` too (all stream hooks of the daemon together).
    pub fn new(depth: u32, hold_timeout: Duration, budget: Arc<SharedBudget>) -> Streams {
        let limits = Limits { depth: depth as usize, ..Limits::default() };
        Streams {
            table: Table::with_budget(limits, budget),
            held: 0,
            held_by_client: HashMap::new(),
            hold_timeout,
            started: Instant::now(),
        }
    }

    /// Connections tracked and bytes kept, for the statistics.
    pub fn figures(&self) -> (usize, usize) {
        (self.table.len(), self.table.stored())
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// One packet of a stream hook; pushes the verdicts it settles (its own, unless held, and
    /// those of the held packets it releases).
    pub(super) fn packet(&mut self, hook: &Hook<'_>, packet: &Packet<'_>, out: &mut dyn FnMut(Pending)) {
        hook.stats.packets.fetch_add(1, Ordering::Relaxed);
        // A segment whose checksum is wrong is dropped by the receiver's stack: reading it would
        // let a sender show the filter bytes the server never gets. (A local sender's checksum
        // may not be filled in yet, when the kernel says so it cannot be checked.)
        if !packet.csum_not_ready && is_tcp(packet.payload) && !nflua_packet::checksum_ok(packet.payload) {
            hook.stats.not_given.fetch_add(1, Ordering::Relaxed);
            let decision = Decision { verdict: Verdict::Drop, mark: None };
            out(Pending { id: packet.id, decision, replacement: None, single: self.held > 0 });
            return;
        }
        let placed = self.table.segment(self.now_ns(), packet.payload);
        // Connections the table dropped on its own (a new SYN on the same ports, or room made
        // for this one): whatever they held gets the on-error verdict, never a free pass; a
        // drop stays a drop for the connection that takes their place.
        let mut inherited = None;
        for old in self.table.take_handed_back() {
            if let Some(Evaluation::Target(Some(Verdict::Drop))) = &old.user.decided {
                inherited = old.user.decided.clone();
            }
            self.give_up(hook, old, out);
        }
        let seen = match placed {
            Ok(seen) => seen,
            Err(StreamError::Flows(_)) => {
                hook.stats.stream.refused.fetch_add(1, Ordering::Relaxed);
                self.push(hook, out, packet.id, packet.mark, &Evaluation::Failed);
                return;
            }
            Err(_) => {
                // Not a TCP segment: nothing to reassemble.
                hook.stats.not_given.fetch_add(1, Ordering::Relaxed);
                self.push(hook, out, packet.id, packet.mark, &Evaluation::NotGiven);
                return;
            }
        };
        let carries_payload = seen.payload_len > 0;
        if carries_payload && seen.syn {
            // Data on a SYN: a server with TCP Fast Open would take it without the filter having
            // read it (the reassembly does not). It goes on without the data, which a Fast Open
            // client sends again after the handshake, where it is read like any other.
            if let Ok(bare) = nflua_packet::replace_payload(packet.payload, &[]) {
                let decision = decide(hook.spec, packet.mark, &Evaluation::Target(None));
                let decision = with_replacement(decision);
                out(Pending { id: packet.id, decision, replacement: Some(bare), single: true });
                self.finish(hook, seen.flow, seen.closed, out);
                return;
            }
        }
        if let (true, Some(dropped)) = (seen.new_flow, &inherited) {
            self.settle(hook, seen.flow, dropped, out);
        }
        let decided = self.table.flow(seen.flow).and_then(|f| f.user.decided.clone());
        let evaluation = match decided {
            Some(evaluation) => Some(evaluation),
            // Seen first in the middle (begun before the hook, or forgotten): its stream does not
            // start where the sender's does, so the filter cannot judge it.
            None if seen.midstream => {
                hook.stats.stream.broken.fetch_add(1, Ordering::Relaxed);
                Some(Evaluation::Failed)
            }
            None if seen.broken => {
                hook.stats.stream.broken.fetch_add(1, Ordering::Relaxed);
                Some(Evaluation::Failed)
            }
            None if seen.grew > 0 => match self.ask(hook, packet, seen.flow, seen.direction, out) {
                Answer::Decided(evaluation) => Some(evaluation),
                Answer::Undecided => None,
                Answer::Sent(decision) => {
                    // This packet went out rewritten (its verdict is pushed); the connection is
                    // decided only by a verdict that says something about it.
                    if let Some(evaluation) = decision {
                        self.settle(hook, seen.flow, &evaluation, out);
                    }
                    self.finish(hook, seen.flow, seen.closed, out);
                    return;
                }
            },
            None => None,
        };
        match evaluation {
            Some(evaluation) => {
                self.settle(hook, seen.flow, &evaluation, out);
                self.push(hook, out, packet.id, packet.mark, &evaluation);
            }
            None if carries_payload => self.hold(hook, seen.flow, packet, out),
            None => self.push(hook, out, packet.id, packet.mark, &Evaluation::Target(None)),
        }
        self.finish(hook, seen.flow, seen.closed, out);
    }

    /// After a packet: a connection that ended is forgotten. Undecided, its held packets get the
    /// on-error verdict (bytes the filter was still waiting on must not pass because the sender
    /// closed); with nothing held there is nothing to decide.
    fn finish(&mut self, hook: &Hook<'_>, id: FlowId, closed: bool, out: &mut dyn FnMut(Pending)) {
        if closed {
            let holds = self.table.flow(id).is_some_and(|f| !f.user.held.is_empty());
            let evaluation = if holds { Evaluation::Failed } else { Evaluation::Target(None) };
            self.settle(hook, id, &evaluation, out);
            self.table.remove(id);
        }
    }

    /// Calls the function on the direction's stream. A replacement packet (`packet:send`) is
    /// this packet's alone: its verdict is pushed here.
    fn ask(
        &mut self,
        hook: &Hook<'_>,
        packet: &Packet<'_>,
        id: FlowId,
        direction: Direction,
        out: &mut dyn FnMut(Pending),
    ) -> Answer {
        let Some(flow) = self.table.flow(id) else { return Answer::Undecided };
        let stream = StreamContext { bytes: flow.stream(direction), flow: flow_info(flow, direction) };
        let ctx = PacketContext {
            link_header: link_header(packet),
            ip_packet: packet.payload,
            lua_packet: ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + packet.payload.len(),
            mode: nflua_engine::HookMode::Target,
            // The queue is not asked for conntrack ids here: nf.connid derives one.
            conntrack_id: nflua_packet::connection_id(packet.payload),
        };
        let full = flow.half(direction).past_depth() > 0
            || flow.stream(direction).len() >= self.table.limits().depth;
        let started = Instant::now();
        let result = hook.state.call_stream(&hook.spec.function, &ctx, &stream);
        hook.stats.record_lua(started.elapsed().as_nanos() as u64);
        match result {
            Ok(outcome) => {
                if let Some(bytes) = outcome.replacement {
                    // The rewritten packet goes out now; the connection's fate is the verdict.
                    let verdict = match outcome.result {
                        HookResult::Target(v) => Evaluation::Target(v),
                        HookResult::Match(_) => Evaluation::Target(None),
                    };
                    let decision = with_replacement(decide(hook.spec, packet.mark, &verdict));
                    out(Pending { id: packet.id, decision, replacement: Some(bytes), single: true });
                    let about_connection = match verdict {
                        Evaluation::Target(Some(v)) if v != Verdict::Stolen => Some(verdict),
                        _ => None,
                    };
                    return Answer::Sent(about_connection);
                }
                match outcome.result {
                    HookResult::Target(Some(v)) => Answer::Decided(Evaluation::Target(Some(v))),
                    // Undecided with every byte it may see: a bound like the others (a sender
                    // could pad what the filter looks for past the depth).
                    _ if full => {
                        hook.stats.stream.broken.fetch_add(1, Ordering::Relaxed);
                        Answer::Decided(Evaluation::Failed)
                    }
                    _ => Answer::Undecided,
                }
            }
            Err(e) => {
                hook.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(state = %hook.spec.state, error = %e, "stream hook failed; on-error verdict");
                Answer::Decided(Evaluation::Failed)
            }
        }
    }

    /// Holds a packet for its connection's decision, unless a bound says otherwise.
    fn hold(&mut self, hook: &Hook<'_>, id: FlowId, packet: &Packet<'_>, out: &mut dyn FnMut(Pending)) {
        let client = self.table.flow(id).map(|f| f.client.0);
        let by_client = client.and_then(|c| self.held_by_client.get(&c)).copied().unwrap_or(0);
        let room = self.held < MAX_HELD && by_client < MAX_HELD_PER_CLIENT;
        let Some(flow) = self.table.flow_mut(id) else {
            // Not reachable (the packet was just placed in it), but a packet never goes without.
            self.push(hook, out, packet.id, packet.mark, &Evaluation::Target(None));
            return;
        };
        if !room || flow.user.held.len() >= MAX_HELD_PER_FLOW {
            hook.stats.stream.held_over.fetch_add(1, Ordering::Relaxed);
            self.settle(hook, id, &Evaluation::Failed, out);
            self.push(hook, out, packet.id, packet.mark, &Evaluation::Failed);
            return;
        }
        flow.user.held.push(Held { id: packet.id, mark: packet.mark });
        flow.user.held_since.get_or_insert_with(Instant::now);
        let client = flow.client.0;
        self.held += 1;
        *self.held_by_client.entry(client).or_insert(0) += 1;
    }

    /// Counts `n` packets of `client` as no longer held.
    fn released(&mut self, client: IpAddr, n: usize) {
        self.held -= n;
        if let Some(count) = self.held_by_client.get_mut(&client) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.held_by_client.remove(&client);
            }
        }
    }

    /// Decides connection `id` (if it is not already) and releases its held packets with it.
    fn settle(&mut self, hook: &Hook<'_>, id: FlowId, evaluation: &Evaluation, out: &mut dyn FnMut(Pending)) {
        let Some(flow) = self.table.flow_mut(id) else { return };
        let first = flow.user.decided.is_none();
        let evaluation = flow.user.decided.get_or_insert_with(|| evaluation.clone()).clone();
        let held = std::mem::take(&mut flow.user.held);
        flow.user.held_since = None;
        let client = flow.client.0;
        if first {
            hook.stats.stream.decided.fetch_add(1, Ordering::Relaxed);
            // Nothing reads its bytes any more.
            self.table.release_bytes(id);
        }
        self.released(client, held.len());
        for h in held {
            let decision = flow_decision(hook, h.mark, &evaluation);
            out(Pending { id: h.id, decision, replacement: None, single: true });
        }
    }

    /// A connection no longer tracked: its held packets get the on-error verdict.
    fn give_up(&mut self, hook: &Hook<'_>, flow: Flow<FlowState>, out: &mut dyn FnMut(Pending)) {
        self.released(flow.client.0, flow.user.held.len());
        for h in flow.user.held {
            let decision = decide(hook.spec, h.mark, &Evaluation::Failed);
            out(Pending { id: h.id, decision, replacement: None, single: true });
        }
    }

    /// This packet's verdict: one by one while anything is held.
    fn push(
        &self,
        hook: &Hook<'_>,
        out: &mut dyn FnMut(Pending),
        id: u32,
        mark: u32,
        evaluation: &Evaluation,
    ) {
        let decision = flow_decision(hook, mark, evaluation);
        out(Pending { id, decision, replacement: None, single: self.held > 0 });
    }

    /// Gives held packets past the hold timeout, and connections idle past the table's limit,
    /// the on-error verdict; call between batches.
    pub(super) fn expire(&mut self, hook: &Hook<'_>, out: &mut dyn FnMut(Pending)) {
        if self.held > 0 {
            let now = Instant::now();
            let late: Vec<FlowId> = self
                .table
                .flow_ids()
                .filter(|id| {
                    self.table
                        .flow(*id)
                        .and_then(|f| f.user.held_since)
                        .is_some_and(|since| now.duration_since(since) >= self.hold_timeout)
                })
                .collect();
            for id in late {
                hook.stats.stream.timed_out.fetch_add(1, Ordering::Relaxed);
                self.settle(hook, id, &Evaluation::Failed, out);
            }
        }
        for flow in self.table.expire(self.now_ns()) {
            self.give_up(hook, flow, out);
        }
        let (flows, bytes) = self.figures();
        hook.stats.stream.flows.store(flows as u64, Ordering::Relaxed);
        hook.stats.stream.reading.store(self.table.active() as u64, Ordering::Relaxed);
        hook.stats.stream.bytes.store(bytes as u64, Ordering::Relaxed);
        hook.stats.stream.held.store(self.held as u64, Ordering::Relaxed);
    }
}

/// The verdict for a packet of a connection: as any hook's, except that "accept" goes back
/// through the rule set marked EVAL|MATCH, where the rules `hook add` prints save that in the
/// connection's conntrack mark and accept it, and accept its later packets before they reach
/// the queue. Without those rules the mark only ends the hook (the guard skips the queue) and the
/// packet continues with the next rule. Drops stay drops: they are final at once, and a dropped
/// connection's few later packets (retransmissions) are dropped here without Lua.
fn flow_decision(hook: &Hook<'_>, mark: u32, evaluation: &Evaluation) -> Decision {
    let spec = hook.spec;
    match evaluation {
        Evaluation::Target(Some(Verdict::Accept)) => Decision {
            verdict: Verdict::Repeat,
            mark: Some((mark & !(spec.eval_mark | spec.match_mark)) | spec.eval_mark | spec.match_mark),
        },
        other => decide(spec, mark, other),
    }
}

/// Whether an IP packet is a whole TCP segment.
fn is_tcp(ip_packet: &[u8]) -> bool {
    nflua_packet::headers(ip_packet).ok().is_some_and(|h| h.tcp.is_some() && h.fragment.is_none())
}

fn flow_info(flow: &Flow<FlowState>, direction: Direction) -> FlowInfo {
    FlowInfo { id: flow.id, direction: direction.name(), client: flow.client, server: flow.server }
}
