//! The connections: found by their addresses and ports in either direction, with their two
//! halves and the caller's own value.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::half::{Half, Room};
use crate::{Limits, StreamError};

/// A connection's number in its table, never reused.
pub type FlowId = u64;

/// An address and port.
pub type Endpoint = (IpAddr, u16);

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the side that sent the connection's first packet seen (the client, normally).
    Original,
    /// Back to it.
    Reply,
}

impl Direction {
    /// `"original"` or `"reply"`, as conntrack names them.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Original => "original",
            Direction::Reply => "reply",
        }
    }
}

/// One connection.
#[derive(Debug)]
pub struct Flow<T> {
    pub id: FlowId,
    /// Source and destination of the original direction.
    pub client: Endpoint,
    pub server: Endpoint,
    original: Half,
    reply: Half,
    reset: bool,
    /// Its bytes were released: it counts as settled, not as being read.
    released: bool,
    last_ns: u64,
    /// The caller's own facts about the connection.
    pub user: T,
}

impl<T> Flow<T> {
    /// The bytes of one direction so far, in order, up to the depth.
    pub fn stream(&self, direction: Direction) -> &[u8] {
        self.half(direction).stream()
    }

    pub fn half(&self, direction: Direction) -> &Half {
        match direction {
            Direction::Original => &self.original,
            Direction::Reply => &self.reply,
        }
    }

    fn half_mut(&mut self, direction: Direction) -> &mut Half {
        match direction {
            Direction::Original => &mut self.original,
            Direction::Reply => &mut self.reply,
        }
    }

    /// A RST was seen, or both directions finished.
    pub fn closed(&self) -> bool {
        self.reset || (self.original.finished() && self.reply.finished())
    }

    fn stored(&self) -> usize {
        self.original.stored() + self.reply.stored()
    }
}

impl<T> Drop for Table<T> {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.change(-(self.stored as isize));
        }
    }
}

/// What one packet did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub flow: FlowId,
    pub direction: Direction,
    /// The connection was new with this packet.
    pub new_flow: bool,
    /// ... and that packet was not a SYN: the connection began before it was seen (or was
    /// forgotten), so its streams start somewhere in the middle.
    pub midstream: bool,
    /// Bytes added to the direction's stream in order (0: a retransmission, a bare ACK, or a
    /// segment held beyond a hole).
    pub grew: u64,
    /// Its direction has a gap (out-of-order bytes passed their bound) or lost bytes to the
    /// memory bound: its stream can no longer be read whole.
    pub broken: bool,
    /// The connection ended (RST, or both directions finished).
    pub closed: bool,
    /// The segment had SYN set, and how many payload bytes it carried (placed or not), so that
    /// the caller need not read its headers again.
    pub syn: bool,
    pub payload_len: usize,
}

/// Bytes several tables (a daemon's stream hooks) may keep together. Each table checks it before
/// storing and updates it after, so tables placing segments at the same moment may pass it by
/// at most one segment each.
#[derive(Debug)]
pub struct SharedBudget {
    limit: usize,
    used: AtomicUsize,
}

impl SharedBudget {
    pub fn new(limit: usize) -> Arc<SharedBudget> {
        Arc::new(SharedBudget { limit, used: AtomicUsize::new(0) })
    }

    /// Bytes the tables keep now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn free(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }

    fn change(&self, delta: isize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_add_signed(delta)));
    }
}

/// The connections of one hook.
#[derive(Debug)]
pub struct Table<T> {
    limits: Limits,
    /// By (lower endpoint, higher endpoint): the same key in both directions.
    flows: HashMap<(Endpoint, Endpoint), Flow<T>>,
    ids: HashMap<FlowId, (Endpoint, Endpoint)>,
    next_id: FlowId,
    stored: usize,
    /// Connections not released.
    active: usize,
    shared: Option<Arc<SharedBudget>>,
    /// Connections taken out by the table itself, for the caller (`take_handed_back`).
    handed_back: Vec<Flow<T>>,
}

impl<T: Default> Table<T> {
    pub fn new(limits: Limits) -> Table<T> {
        Table {
            limits,
            flows: HashMap::new(),
            ids: HashMap::new(),
            next_id: 1,
            stored: 0,
            active: 0,
            shared: None,
            handed_back: Vec::new(),
        }
    }

    /// A table whose bytes also count against `shared`.
    pub fn with_budget(limits: Limits, shared: Arc<SharedBudget>) -> Table<T> {
        let mut table = Table::new(limits);
        table.shared = Some(shared);
        table
    }

    /// Changes the bytes kept, in this table and in the shared budget.
    fn account(&mut self, delta: isize) {
        self.stored = self.stored.saturating_add_signed(delta);
        if let Some(shared) = &self.shared {
            shared.change(delta);
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Connections tracked.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Bytes kept and held over all connections.
    pub fn stored(&self) -> usize {
        self.stored
    }

    /// Places the TCP segment `ip_packet` (an IP packet as NFQUEUE delivers it) seen at `now_ns`.
    pub fn segment(&mut self, now_ns: u64, ip_packet: &[u8]) -> Result<Seen, StreamError> {
        let headers = nflua_packet::headers(ip_packet).map_err(StreamError::NotTcp)?;
        let (Some(tcp), Some(src_port), Some(dst_port)) =
            (headers.tcp, headers.summary.src_port, headers.summary.dst_port)
        else {
            return Err(StreamError::NoSegment);
        };
        if headers.fragment.is_some() {
            return Err(StreamError::NoSegment);
        }
        const FIN: u8 = 0x01;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        let src = (headers.summary.src, src_port);
        let dst = (headers.summary.dst, dst_port);
        let key = if src <= dst { (src, dst) } else { (dst, src) };
        // A SYN opening the original direction of a connection we track under another start:
        // a new connection on the same addresses and ports if the old one is over for us (its
        // client finished or reset it, or it was decided and keeps no bytes; packets before any
        // SYN count as over too). Otherwise it is a SYN inside a live connection, which no
        // receiver takes as a new one: the stream is marked in conflict.
        let opening = tcp.flags & (SYN | ACK) == SYN;
        let other_start = opening
            && self
                .flows
                .get(&key)
                .is_some_and(|f| f.client != src || f.original.syn_start() != Some(tcp.seq.wrapping_add(1)));
        let restarts = other_start
            && self.flows.get(&key).is_some_and(|f| {
                f.released || f.reset || f.original.finished() || f.original.syn_start().is_none()
            });
        if other_start && !restarts {
            if let Some(f) = self.flows.get_mut(&key) {
                f.original.conflict = true;
            }
        }
        if restarts {
            if let Some(id) = self.flows.get(&key).map(|f| f.id) {
                if let Some(old) = self.remove(id) {
                    self.handed_back.push(old);
                }
            }
        }
        let new_flow = !self.flows.contains_key(&key);
        if new_flow {
            if self.active >= self.limits.max_flows {
                self.forget_oldest_empty();
            }
            if self.active >= self.limits.max_flows {
                return Err(StreamError::Flows(self.limits.max_flows));
            }
            if self.flows.len() - self.active >= self.limits.max_settled {
                self.forget_oldest_settled();
            }
            self.active += 1;
            let id = self.next_id;
            self.next_id += 1;
            let flow = Flow {
                id,
                client: src,
                server: dst,
                original: Half::default(),
                reply: Half::default(),
                reset: false,
                released: false,
                last_ns: now_ns,
                user: T::default(),
            };
            self.flows.insert(key, flow);
            self.ids.insert(id, key);
        }
        let limits = self.limits;
        let free = limits.max_bytes.saturating_sub(self.stored);
        let free = self.shared.as_ref().map_or(free, |shared| free.min(shared.free()));
        let Some(flow) = self.flows.get_mut(&key) else {
            return Err(StreamError::NoSegment);
        };
        flow.last_ns = now_ns;
        let direction = if src == flow.client { Direction::Original } else { Direction::Reply };
        // A RST ends the connection only at the next sequence number expected (RFC 5961 §3.2):
        // the receiver ignores one elsewhere, so must we.
        if tcp.flags & RST != 0 {
            let expected = flow.half(direction).expected_seq();
            if expected.is_none_or(|e| e == tcp.seq) {
                flow.reset = true;
            }
        }
        let payload = ip_packet.get(headers.summary.l4_payload.clone()).unwrap_or_default();
        let mut room = Room { depth: limits.depth, max_ahead: limits.max_ahead, free };
        let half = flow.half_mut(direction);
        let placed = half.place(tcp.seq, tcp.flags & SYN != 0, tcp.flags & FIN != 0, payload, &mut room);
        let broken = half.gap || half.over_memory || half.conflict;
        let (id, closed) = (flow.id, flow.closed());
        self.account(placed.stored);
        let midstream = new_flow && !opening;
        Ok(Seen {
            flow: id,
            direction,
            new_flow,
            midstream,
            grew: placed.grew,
            broken,
            closed,
            syn: tcp.flags & SYN != 0,
            payload_len: payload.len(),
        })
    }

    /// The connections' ids, in no particular order.
    pub fn flow_ids(&self) -> impl Iterator<Item = FlowId> + '_ {
        self.ids.keys().copied()
    }

    pub fn flow(&self, id: FlowId) -> Option<&Flow<T>> {
        self.flows.get(self.ids.get(&id)?)
    }

    pub fn flow_mut(&mut self, id: FlowId) -> Option<&mut Flow<T>> {
        let key = self.ids.get(&id)?;
        self.flows.get_mut(key)
    }

    /// Forgets a connection, giving back its bytes.
    pub fn remove(&mut self, id: FlowId) -> Option<Flow<T>> {
        let key = self.ids.remove(&id)?;
        let flow = self.flows.remove(&key)?;
        self.account(-(flow.stored() as isize));
        if !flow.released {
            self.active -= 1;
        }
        Some(flow)
    }

    /// Connections being read (not released).
    pub fn active(&self) -> usize {
        self.active
    }

    /// Connections taken out by the table itself since the last call (a new SYN on the same
    /// addresses and ports replaced them, or they were forgotten to make room): the caller
    /// decides what their held packets get.
    pub fn take_handed_back(&mut self) -> Vec<Flow<T>> {
        std::mem::take(&mut self.handed_back)
    }

    /// Makes room for a new connection by forgetting the least recently seen one being read
    /// that keeps no bytes (a handshake, or bare ACKs): a flood of SYNs must not lock
    /// connections out for the idle time.
    fn forget_oldest_empty(&mut self) {
        let oldest = self
            .flows
            .values()
            .filter(|f| !f.released && f.stored() == 0)
            .min_by_key(|f| f.last_ns)
            .map(|f| f.id);
        if let Some(old) = oldest.and_then(|id| self.remove(id)) {
            self.handed_back.push(old);
        }
    }

    /// Forgets the released connection seen least recently (a scan: only when the settled ones
    /// fill their bound).
    fn forget_oldest_settled(&mut self) {
        let oldest = self.flows.values().filter(|f| f.released).min_by_key(|f| f.last_ns).map(|f| f.id);
        if let Some(id) = oldest {
            self.remove(id);
        }
    }

    /// Forgets the connections without a packet for the idle time before `now_ns`.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Flow<T>> {
        let idle = self.limits.idle_ns;
        let stale: Vec<FlowId> =
            self.flows.values().filter(|f| now_ns.saturating_sub(f.last_ns) >= idle).map(|f| f.id).collect();
        stale.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Frees a connection's kept bytes once nobody needs them (its verdict is decided) but keeps
    /// tracking it, so that its later packets are still found.
    pub fn release_bytes(&mut self, id: FlowId) {
        if let Some(flow) = self.flow_mut(id) {
            let freed = flow.stored();
            let was_active = !flow.released;
            flow.original.release();
            flow.reply.release();
            flow.released = true;
            if was_active {
                self.active -= 1;
            }
            self.account(-(freed as isize));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;

    /// IPv4 TCP from 10.0.0.`a`:`sport` to 10.0.0.`b`:`dport` (checksums left zero).
    fn tcp(a: u8, sport: u16, b: u8, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let total = (40 + payload.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, a, 10, 0, 0, b]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    fn limits() -> Limits {
        Limits { depth: 64, max_ahead: 64, max_flows: 2, max_settled: 2, max_bytes: 1000, idle_ns: 1_000 }
    }

    #[test]
    fn both_directions_of_a_connection() {
        let mut t: Table<u32> = Table::new(limits());
        let syn = t.segment(0, &tcp(1, 40000, 2, 80, 100, SYN, b"")).unwrap();
        assert!(syn.new_flow);
        assert_eq!(syn.direction, Direction::Original);
        let synack = t.segment(1, &tcp(2, 80, 1, 40000, 500, SYN | ACK, b"")).unwrap();
        assert_eq!((synack.flow, synack.direction, synack.new_flow), (syn.flow, Direction::Reply, false));
        let req = t.segment(2, &tcp(1, 40000, 2, 80, 101, ACK, b"GET /")).unwrap();
        assert_eq!(req.grew, 5);
        let resp = t.segment(3, &tcp(2, 80, 1, 40000, 501, ACK, b"HTTP/1.1 200")).unwrap();
        assert_eq!(resp.grew, 12);
        let flow = t.flow(syn.flow).unwrap();
        assert_eq!(
            (flow.stream(Direction::Original), flow.stream(Direction::Reply)),
            (&b"GET /"[..], &b"HTTP/1.1 200"[..])
        );
        assert_eq!(flow.client, ("10.0.0.1".parse().unwrap(), 40000));
        assert_eq!(t.stored(), 17);
        t.flow_mut(syn.flow).unwrap().user = 7;
        assert!(!t.segment(4, &tcp(1, 40000, 2, 80, 106, FIN | ACK, b"")).unwrap().closed);
        assert!(t.segment(5, &tcp(2, 80, 1, 40000, 513, FIN | ACK, b"")).unwrap().closed);
        let gone = t.remove(syn.flow).unwrap();
        assert_eq!((gone.user, t.stored(), t.len()), (7, 0, 0));
    }

    #[test]
    fn rst_closes_at_the_expected_sequence_only_and_limits_hold() {
        let mut t: Table<()> = Table::new(limits());
        let a = t.segment(0, &tcp(1, 1, 2, 2, 0, SYN, b"")).unwrap();
        t.segment(0, &tcp(1, 1, 2, 2, 1, ACK, b"x")).unwrap();
        t.segment(0, &tcp(1, 3, 2, 2, 0, SYN, b"")).unwrap();
        t.segment(0, &tcp(1, 3, 2, 2, 1, ACK, b"y")).unwrap();
        // Both connections keep bytes: nothing can be forgotten to make room.
        assert_eq!(t.segment(0, &tcp(1, 4, 2, 2, 0, SYN, b"")), Err(StreamError::Flows(2)));
        // Out of window: the receiver ignores it, so does the table.
        assert!(!t.segment(1, &tcp(1, 1, 2, 2, 3_000_000, RST, b"")).unwrap().closed);
        // At the next byte expected (seq 2 after "x").
        assert!(t.segment(1, &tcp(1, 1, 2, 2, 2, RST, b"")).unwrap().closed);
        assert_eq!(t.remove(a.flow).map(|f| f.id), Some(a.flow));
        assert!(t.segment(2, &tcp(1, 4, 2, 2, 0, SYN, b"")).is_ok(), "room again");
        assert_eq!(t.segment(0, b"\x45"), Err(StreamError::NotTcp(nflua_packet::PacketError::Truncated)));
    }

    #[test]
    fn a_syn_flood_does_not_lock_connections_out() {
        let mut t: Table<()> = Table::new(limits());
        let a = t.segment(0, &tcp(1, 1, 2, 2, 0, SYN, b"")).unwrap();
        let b = t.segment(1, &tcp(1, 3, 2, 2, 0, SYN, b"")).unwrap();
        let c = t.segment(2, &tcp(1, 5, 2, 2, 0, SYN, b"")).unwrap();
        let gone: Vec<FlowId> = t.take_handed_back().into_iter().map(|f| f.id).collect();
        assert_eq!(gone, [a.flow], "the oldest connection without bytes made room");
        assert!(t.flow(b.flow).is_some() && t.flow(c.flow).is_some());
    }

    #[test]
    fn a_new_syn_on_the_same_ports_starts_a_new_connection_once_the_old_is_over() {
        let mut t: Table<u8> = Table::new(limits());
        let a = t.segment(0, &tcp(1, 1, 2, 2, 100, SYN, b"")).unwrap();
        t.segment(1, &tcp(1, 1, 2, 2, 101, ACK, b"GET /")).unwrap();
        t.flow_mut(a.flow).unwrap().user = 9;
        // The same SYN again (a retransmission) is the same connection.
        assert_eq!(t.segment(2, &tcp(1, 1, 2, 2, 100, SYN, b"")).unwrap().flow, a.flow);
        // A SYN with another ISN inside the live connection: no receiver starts over on it.
        let inside = t.segment(3, &tcp(1, 1, 2, 2, 103, SYN, b"")).unwrap();
        assert!(inside.flow == a.flow && inside.broken, "the stream is in conflict");
        // Once the client finished, a new SYN is a new connection; the old one comes back.
        let mut u: Table<u8> = Table::new(limits());
        let c = u.segment(0, &tcp(1, 1, 2, 2, 100, SYN, b"")).unwrap();
        u.segment(1, &tcp(1, 1, 2, 2, 101, FIN | ACK, b"GET /")).unwrap();
        u.flow_mut(c.flow).unwrap().user = 7;
        let d = u.segment(3, &tcp(1, 1, 2, 2, 5000, SYN, b"")).unwrap();
        assert!(d.new_flow && !d.midstream && d.flow != c.flow);
        let old = u.take_handed_back();
        assert_eq!((old.len(), old[0].user, old[0].stream(Direction::Original)), (1, 7, &b"GET /"[..]));
        // Packets before any SYN: the SYN starts the connection over; the first is mid-stream.
        let e = u.segment(4, &tcp(1, 7, 2, 2, 9000, ACK, b"zz")).unwrap();
        assert!(e.midstream);
        let f = u.segment(5, &tcp(1, 7, 2, 2, 3999, SYN, b"")).unwrap();
        u.segment(6, &tcp(1, 7, 2, 2, 4000, ACK, b"GET /blocked")).unwrap();
        assert_ne!(e.flow, f.flow);
        assert_eq!(u.flow(f.flow).unwrap().stream(Direction::Original), b"GET /blocked");
    }

    #[test]
    fn syn_data_is_not_read_and_conflicting_copies_break_the_stream() {
        let mut t: Table<()> = Table::new(limits());
        let a = t.segment(0, &tcp(1, 1, 2, 2, 100, SYN, b"GET /good")).unwrap();
        assert_eq!((a.grew, t.flow(a.flow).unwrap().stream(Direction::Original)), (0, &b""[..]));
        // Held beyond a hole, then another copy of the same place with other bytes.
        assert!(!t.segment(1, &tcp(1, 1, 2, 2, 111, ACK, b"good.example")).unwrap().broken);
        assert!(
            !t.segment(2, &tcp(1, 1, 2, 2, 111, ACK, b"good.example")).unwrap().broken,
            "same bytes: fine"
        );
        assert!(t.segment(3, &tcp(1, 1, 2, 2, 111, ACK, b"blocked.exam")).unwrap().broken);
    }

    #[test]
    fn idle_connections_expire_and_memory_is_bounded() {
        let mut t: Table<()> = Table::new(Limits { max_bytes: 10, ..limits() });
        let a = t.segment(0, &tcp(1, 1, 2, 2, 0, SYN, b"")).unwrap();
        let big = t.segment(10, &tcp(1, 1, 2, 2, 1, ACK, &[1; 20])).unwrap();
        assert!(big.broken, "the memory bound cut the stream");
        assert_eq!((t.stored(), t.flow(a.flow).unwrap().stream(Direction::Original).len()), (10, 10));
        let b = t.segment(600, &tcp(1, 3, 2, 2, 0, SYN, b"")).unwrap();
        let expired: Vec<FlowId> = t.expire(1_010).into_iter().map(|f| f.id).collect();
        assert_eq!(expired, [a.flow]);
        assert_eq!((t.stored(), t.len(), t.flow(b.flow).is_some()), (0, 1, true));
    }

    #[test]
    fn released_flows_make_room_and_the_oldest_settled_goes_first() {
        let mut t: Table<()> = Table::new(limits());
        let a = t.segment(0, &tcp(1, 1, 2, 2, 0, SYN, b"")).unwrap();
        let b = t.segment(1, &tcp(1, 3, 2, 2, 0, SYN, b"")).unwrap();
        t.release_bytes(a.flow);
        t.release_bytes(b.flow);
        assert_eq!((t.active(), t.len()), (0, 2));
        let c = t.segment(2, &tcp(1, 5, 2, 2, 0, SYN, b"")).unwrap();
        let d = t.segment(3, &tcp(1, 7, 2, 2, 0, SYN, b"")).unwrap();
        t.segment(3, &tcp(1, 5, 2, 2, 1, ACK, b"c")).unwrap();
        t.segment(3, &tcp(1, 7, 2, 2, 1, ACK, b"d")).unwrap();
        assert_eq!(t.segment(4, &tcp(1, 9, 2, 2, 0, SYN, b"")), Err(StreamError::Flows(2)), "two being read");
        t.release_bytes(c.flow);
        // A third settled one: the least recently seen settled (a) is forgotten.
        t.segment(5, &tcp(1, 3, 2, 2, 1, ACK, b"")).unwrap();
        let e = t.segment(6, &tcp(1, 9, 2, 2, 0, SYN, b"")).unwrap();
        assert!(t.flow(a.flow).is_none() && t.flow(b.flow).is_some() && t.flow(e.flow).is_some());
        assert_eq!((t.active(), t.flow(d.flow).is_some()), (2, true));
    }

    #[test]
    fn released_flows_keep_being_found_but_keep_no_bytes() {
        let mut t: Table<()> = Table::new(limits());
        let a = t.segment(0, &tcp(1, 1, 2, 2, 0, SYN, b"")).unwrap();
        t.segment(1, &tcp(1, 1, 2, 2, 1, ACK, b"abc")).unwrap();
        t.release_bytes(a.flow);
        assert_eq!(t.stored(), 0);
        let later = t.segment(2, &tcp(1, 1, 2, 2, 4, ACK, b"def")).unwrap();
        assert_eq!((later.flow, later.new_flow, t.stored()), (a.flow, false, 0));
        assert_eq!(t.flow(a.flow).unwrap().stream(Direction::Original), b"");
    }

    #[test]
    fn tables_share_a_budget() {
        let shared = SharedBudget::new(12);
        let mut one: Table<()> = Table::with_budget(limits(), std::sync::Arc::clone(&shared));
        let mut two: Table<()> = Table::with_budget(limits(), std::sync::Arc::clone(&shared));
        let a = one.segment(0, &tcp(1, 1, 2, 2, 0, SYN, b"")).unwrap();
        one.segment(1, &tcp(1, 1, 2, 2, 1, ACK, &[1; 8])).unwrap();
        two.segment(0, &tcp(1, 1, 2, 2, 0, SYN, b"")).unwrap();
        let cut = two.segment(1, &tcp(1, 1, 2, 2, 1, ACK, &[1; 8])).unwrap();
        assert!(cut.broken, "only 4 bytes were left of the 12");
        assert_eq!((shared.used(), one.stored(), two.stored()), (12, 8, 4));
        one.remove(a.flow);
        assert_eq!(shared.used(), 4);
        drop(two);
        assert_eq!(shared.used(), 0, "a dropped table gives its bytes back");
    }

    proptest::proptest! {
        #[test]
        fn stored_bytes_are_counted_exactly(ops in proptest::collection::vec((0u8..3, 0u32..200, 0usize..40, proptest::num::u8::ANY), 0..80)) {
            let mut t: Table<()> = Table::new(Limits { max_bytes: 150, ..limits() });
            for (port, seq, n, flags) in ops {
                if let Ok(seen) = t.segment(0, &tcp(1, u16::from(port), 2, 9, seq, flags, &vec![1; n])) {
                    if seen.closed { t.remove(seen.flow); }
                }
                let sum: usize = t.flows.values().map(|f| f.stored()).sum();
                proptest::prop_assert_eq!(t.stored(), sum);
                proptest::prop_assert!(t.stored() <= 150);
            }
        }
    }
}
