//! TCP stream reassembly for stream hooks: each connection's payload, per direction, in order,
//! from the packets a queue delivers, within bounds on what is kept.
//!
//! The daemon feeds every TCP packet of a stream hook to a [`Table`]; the table finds the
//! connection (both directions share one [`Flow`]), places the segment's bytes in that
//! direction's [`Half`], and says what changed ([`Seen`]): the stream grew, or nothing new (a
//! retransmission, a bare ACK, a segment held out of order), plus whether the connection ended.
//! The daemon then calls the Lua function with [`Flow::stream`] and keeps its own per-flow
//! facts (the decision, the packets held) in the flow's `user` value.
//!
//! No I/O and no clock: times are nanoseconds the caller passes, so tests replay any schedule.
//! Only `nflua-packet` (header parsing) and `thiserror`. Rules:
//!
//! - **Start.** A direction's stream starts after its SYN's sequence number; a direction first
//!   seen without a SYN (a connection older than the hook) starts at the first segment seen.
//!   Bytes before the start are ignored.
//! - **Overlaps.** The first copy of a byte wins: a retransmission or an overlapping segment
//!   never changes bytes already placed, in order or held, so what Lua saw stays true. A copy
//!   with *other* bytes marks a conflict ([`Half::conflict`]): the receiver's stack may keep
//!   either copy (Linux replaces a queued out-of-order segment that a later one covers), so the
//!   stream can no longer be trusted to be what the server reads.
//! - **SYN, RST, reuse.** Data on a SYN is not placed (a receiver drops it without Fast Open).
//!   A RST ends a connection only at the next sequence number expected. A SYN opening the
//!   original direction under another start begins a new connection; the old one is handed
//!   back ([`Table::take_handed_back`]), as is the oldest connection without bytes forgotten to
//!   make room when the connection bound is reached.
//! - **Out of order.** Segments beyond a hole are held (at most `max_ahead` bytes per direction)
//!   and placed when the hole fills. Past that bound, the direction has a *gap*: it is marked and
//!   reported, and the daemon applies the hook's error verdict, since the stream can no longer
//!   be read in order.
//! - **Depth.** At most `depth` bytes per direction are kept; later bytes are counted, not kept
//!   ([`Half::past_depth`]).
//! - **Memory.** All bytes kept or held by the table are counted; a segment that would take the
//!   total past `max_bytes` (or past a [`SharedBudget`] several tables draw on) is not stored
//!   and the direction reports `over_memory`. At most
//!   `max_flows` connections are being read; a new one beyond that is refused. Connections
//!   released ([`Table::release_bytes`], once decided) keep no bytes and are remembered apart,
//!   up to `max_settled`, the least recently seen forgotten first.
//! - **End.** A direction ends when the bytes up to its FIN are in; a connection ends when both
//!   did or on a RST. Connections without packets for `idle` are taken out by [`Table::expire`].

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod half;
mod table;

pub use half::Half;
pub use table::{Direction, Endpoint, Flow, FlowId, Seen, SharedBudget, Table};

/// The bounds of a [`Table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes kept per direction.
    pub depth: usize,
    /// Out-of-order bytes held per direction.
    pub max_ahead: usize,
    /// Connections being read (not yet released) at once.
    pub max_flows: usize,
    /// Released connections (decided: no bytes kept) remembered besides, so that their later
    /// packets are still known; past this the least recently seen is forgotten.
    pub max_settled: usize,
    /// Bytes kept and held over all connections.
    pub max_bytes: usize,
    /// Nanoseconds without a packet after which a connection is forgotten.
    pub idle_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            depth: 16384,
            max_ahead: 65536,
            max_flows: 4096,
            max_settled: 65536,
            max_bytes: 32 << 20,
            idle_ns: 120_000_000_000,
        }
    }
}

/// Why a packet was not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("not a whole TCP segment: {0}")]
    NotTcp(nflua_packet::PacketError),
    #[error("not a whole TCP segment (a fragment or another protocol)")]
    NoSegment,
    #[error("too many connections tracked ({0})")]
    Flows(usize),
}
