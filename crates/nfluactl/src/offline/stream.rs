//! A stream hook over a capture: the daemon's rules (nfluad `queue/stream.rs`) on the same
//! reassembly (`nflua-stream`), with results in place of queue verdicts.
//!
//! Each TCP packet is placed in its connection's stream; a decided connection gives its packets
//! its decision without Lua; otherwise, when the packet's direction grew, the function is called
//! with the packet and that direction's bytes so far. A verdict decides the connection: the
//! packets held for it and this one get it. No answer leaves it undecided, and a packet with
//! payload is held (its result is filled in when the connection is decided). Bounds end in
//! `error` (the hook's on-error verdict): a gap, a conflicting copy or the memory bound (a
//! broken stream), a connection first seen mid-stream, the depth reached undecided, more than
//! [`MAX_HELD_PER_FLOW`] packets held, a packet held past the hold timeout (capture time), a
//! connection replaced by a new SYN on its ports or closed while packets were held. What the
//! daemon adds for many clients at once (holding bounds per client and per worker) and the
//! kernel-side offload of decided connections have no counterpart offline. TCP checksums are not
//! checked: captures often hold packets whose checksum the NIC was still to fill in.

use std::time::Duration;

use nflua_engine::{FlowInfo, HookMode, HookResult, PacketContext, StreamContext, ETHERNET_HEADER_LEN};
use nflua_stream::{Direction, Flow, FlowId, Limits, StreamError, Table};

use super::report::Report;
use super::Call;

/// Packets held for one connection at most (as the daemon).
const MAX_HELD_PER_FLOW: usize = 64;

/// A connection's fate so far.
#[derive(Debug, Default)]
pub struct Fate {
    /// The verdict name, and the reason when it is a bound's.
    decided: Option<(&'static str, Option<String>)>,
    /// Results (indexes in the report) of packets held, and when the first was held.
    held: Vec<usize>,
    held_since: Option<Duration>,
}

pub struct Streams {
    table: Table<Fate>,
    hold_timeout: Duration,
    /// Capture time of the first packet: the table's clock starts there.
    start: Option<Duration>,
}

impl Streams {
    pub fn new(depth: u32, hold_timeout: Duration) -> Streams {
        let limits = Limits { depth: depth as usize, ..Limits::default() };
        Streams { table: Table::new(limits), hold_timeout, start: None }
    }

    /// One packet (its result already in the report at `index`).
    pub fn packet(
        &mut self,
        call: &Call<'_>,
        time: Duration,
        index: usize,
        ip_packet: &[u8],
        link_header: [u8; ETHERNET_HEADER_LEN],
        report: &mut Report,
    ) {
        let start = *self.start.get_or_insert(time);
        let now_ns = u64::try_from(time.saturating_sub(start).as_nanos()).unwrap_or(u64::MAX);
        self.expire(time, now_ns, report);
        let placed = self.table.segment(now_ns, ip_packet);
        let mut inherited = false;
        for old in self.table.take_handed_back() {
            inherited |= matches!(old.user.decided, Some(("drop", _)));
            give_up(old, "connection replaced by a new one on its ports", report);
        }
        let seen = match placed {
            Ok(seen) => seen,
            Err(StreamError::Flows(_)) => {
                return set(report, index, "error", Some("connection bound reached".into()))
            }
            Err(_) => {
                return set(report, index, "continue", Some("not given to Lua: not a TCP segment".into()))
            }
        };
        if seen.payload_len > 0 && seen.syn {
            set(report, index, "continue", Some("data on a SYN: sent on without it".into()));
            return self.finish(seen.flow, seen.closed, report);
        }
        if seen.new_flow && inherited {
            self.settle(seen.flow, "drop", Some("a dropped connection's ports".into()), report);
        }
        let decided = self.table.flow(seen.flow).and_then(|f| f.user.decided.clone());
        let fate = match decided {
            Some(fate) => Some(fate),
            None if seen.midstream => Some(("error", Some("connection first seen mid-stream".into()))),
            None if seen.broken => {
                Some(("error", Some("stream broken (gap, conflicting bytes or memory bound)".into())))
            }
            None if seen.grew > 0 => {
                self.ask(call, index, ip_packet, link_header, seen.flow, seen.direction, report)
            }
            None => None,
        };
        match fate {
            Some((verdict, detail)) => {
                self.settle(seen.flow, verdict, detail.clone(), report);
                // A rewritten packet keeps the verdict its own call gave it.
                if report.results.get(index).is_none_or(|r| r.rewritten.is_none()) {
                    set(report, index, verdict, detail);
                }
            }
            None if seen.payload_len > 0 => self.hold(seen.flow, index, time, report),
            None => set(report, index, "continue", None),
        }
        self.finish(seen.flow, seen.closed, report);
    }

    /// Calls the function with the direction's stream; `None`: no decision yet.
    #[allow(clippy::too_many_arguments)]
    fn ask(
        &self,
        call: &Call<'_>,
        index: usize,
        ip_packet: &[u8],
        link_header: [u8; ETHERNET_HEADER_LEN],
        id: FlowId,
        direction: Direction,
        report: &mut Report,
    ) -> Option<(&'static str, Option<String>)> {
        let flow = self.table.flow(id)?;
        let info =
            FlowInfo { id: flow.id, direction: direction.name(), client: flow.client, server: flow.server };
        let stream = StreamContext { bytes: flow.stream(direction), flow: info };
        let ctx = PacketContext {
            link_header,
            ip_packet,
            lua_packet: ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + ip_packet.len(),
            mode: HookMode::Target,
            conntrack_id: nflua_packet::connection_id(ip_packet),
        };
        let full = flow.half(direction).past_depth() > 0
            || flow.stream(direction).len() >= self.table.limits().depth;
        match call.state.call_stream(call.function, &ctx, &stream) {
            Ok(outcome) => {
                let verdict = match outcome.result {
                    HookResult::Target(Some(v)) => Some(v.name()),
                    _ => None,
                };
                if let Some(bytes) = outcome.replacement {
                    if let Some(result) = report.results.get_mut(index) {
                        result.verdict = verdict.unwrap_or("continue");
                        result.rewrite(bytes);
                    }
                    // The connection is decided only by a verdict about it.
                    return verdict.filter(|v| *v != "stolen").map(|v| (v, None));
                }
                match verdict {
                    Some(v) => Some((v, None)),
                    None if full => Some(("error", Some("depth reached without a decision".into()))),
                    None => None,
                }
            }
            Err(e) => Some(("error", Some(e.to_string()))),
        }
    }

    fn hold(&mut self, id: FlowId, index: usize, time: Duration, report: &mut Report) {
        let Some(flow) = self.table.flow_mut(id) else { return set(report, index, "continue", None) };
        if flow.user.held.len() >= MAX_HELD_PER_FLOW {
            let reason = Some(format!("more than {MAX_HELD_PER_FLOW} packets held"));
            self.settle(id, "error", reason.clone(), report);
            return set(report, index, "error", reason);
        }
        flow.user.held.push(index);
        flow.user.held_since.get_or_insert(time);
        set(report, index, "undecided", Some("held for the connection's decision".into()));
    }

    /// Decides connection `id` (unless it is already) and gives its held packets the decision.
    fn settle(&mut self, id: FlowId, verdict: &'static str, detail: Option<String>, report: &mut Report) {
        let Some(flow) = self.table.flow_mut(id) else { return };
        let first = flow.user.decided.is_none();
        let (verdict, detail) = flow.user.decided.get_or_insert((verdict, detail)).clone();
        flow.user.held_since = None;
        for held in std::mem::take(&mut flow.user.held) {
            set(report, held, verdict, detail.clone());
        }
        if first {
            self.table.release_bytes(id);
        }
    }

    /// A connection that ended is forgotten; undecided with packets held, they get `error`.
    fn finish(&mut self, id: FlowId, closed: bool, report: &mut Report) {
        if closed {
            let holds = self.table.flow(id).is_some_and(|f| !f.user.held.is_empty());
            if holds {
                self.settle(id, "error", Some("connection closed before a decision".into()), report);
            }
            self.table.remove(id);
        }
    }

    fn expire(&mut self, time: Duration, now_ns: u64, report: &mut Report) {
        let late: Vec<FlowId> = self
            .table
            .flow_ids()
            .filter(|id| {
                let since = self.table.flow(*id).and_then(|f| f.user.held_since);
                since.is_some_and(|since| time.saturating_sub(since) >= self.hold_timeout)
            })
            .collect();
        for id in late {
            self.settle(id, "error", Some("held past the hold timeout".into()), report);
        }
        for flow in self.table.expire(now_ns) {
            give_up(flow, "connection idle past the table's limit", report);
        }
    }
}

/// A connection the table no longer tracks: its held packets get `error`.
fn give_up(flow: Flow<Fate>, reason: &str, report: &mut Report) {
    for held in flow.user.held {
        set(report, held, "error", Some(reason.into()));
    }
}

fn set(report: &mut Report, index: usize, verdict: &'static str, detail: Option<String>) {
    if let Some(result) = report.results.get_mut(index) {
        result.verdict = verdict;
        result.detail = detail;
    }
}
