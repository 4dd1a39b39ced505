//! Packet hooks: what the daemon hands in ([`PacketContext`]), what comes back
//! ([`HookOutcome`]), and what `nf` finds during a call ([`HookCall`]). The call itself,
//! `f(frame, packet)`, is `State::call_hook` (`state.rs`), in one place from the buffer's refill
//! to its invalidation.
//!
//! During the call the state's `Context` holds a [`HookCall`]: the packet functions of `nf`
//! (`reply`, `getpacket`, `connid`, `hotdrop`) find the packet there and record their effects
//! (hot drop, replacement packet) in it; outside a call it is `None` and they raise.
//!
//! The packet bytes are copied into the state's hook buffer for the call (the link header and
//! the IP packet straight from where the daemon has them); `frame` is a view of
//! all of it and `packet` a segment of it (same memory, so writes through one show in the
//! other). When the call returns the buffer is invalidated, so a script that stashed either view
//! (or a segment of one) gets "data buffer is no longer valid" on later access, in a later hook,
//! a receive callback or a timer, rather than a stale or foreign packet. Writes a script makes to
//! the buffer do not reach the queued packet, but `nf.reply` and `packet:send()` read the buffer,
//! so they see them.
//!
//! Per call this allocates nothing, in Rust or on the Lua heap (`tests/alloc.rs` counts). The
//! hook buffer is an `nflua_data::LentBuffer`: one allocation per state, refilled for each call
//! (it grows to the largest frame seen and stays there). Invalidation does not free it: it bumps
//! the memory's generation, and every view remembers the generation it was made for. `frame`
//! and `packet` are tokens, light userdata naming the buffer, the view and the fill (the range
//! is in a record beside the buffer); the views' metamethods reach the bytes through the state's
//! registered buffers and behave exactly as `data` objects. History, as instructions per call
//! of a hook reading two bytes (callgrind, `examples/hookprof.rs`): 10,200 with a fresh buffer
//! and two finalized mlua userdata per call; 6,900 with finalizer-free 80-byte userdata views
//! (a third of them the views' allocation and the collections it drove, which walk the whole
//! state); 4,600 with tokens, which leave the collector nothing to do.
//!
//! The views are handed over inside the call: `State::run_hook` calls `nflua_data::view_caller`'s
//! C function through the fast door (`door.rs`: `lua_pcall` with the state's message handler),
//! which turns the call's numbers into the two tokens and calls `f(frame, packet)`. The caller
//! is the bottom C frame of the traceback, where the other entries have `xpcall`. Everything
//! else (the function name's Lua string and the handler, as registry references; the hook
//! context) is reused.

use std::net::IpAddr;
use std::ops::Range;

use nflua_data::Data;

/// How a hook's return value is read (SPEC §7): nflua-proto's, as the hook record carries it
/// (`Match`: truthy = the packet matches; `Target`: a verdict name, or anything else to continue
/// with the next rule).
pub use nflua_proto::HookMode;
/// A target hook's verdict, by the name the script returns: nflua-proto's, the packet path's one
/// verdict type.
pub use nflua_proto::Verdict;

/// One packet as the daemon hands it to a hook. Lua sees a frame: the link header, then the IP
/// packet. They come apart so that the daemon can pass the packet where the queue delivered it;
/// the engine joins them as it copies them into the state's hook buffer, the one copy per packet.
#[derive(Debug, Clone)]
pub struct PacketContext<'a> {
    /// The Ethernet header put before the IP packet (offsets written for the original module,
    /// which saw the packet from the MAC header, keep working).
    pub link_header: [u8; ETHERNET_HEADER_LEN],
    pub ip_packet: &'a [u8],
    /// The part of the frame given to Lua as `packet`, as offsets in the frame: the IP packet
    /// (`14..frame_len`), or only the TCP payload with `--tcp-payload`.
    pub lua_packet: Range<usize>,
    pub mode: HookMode,
    /// The packet's conntrack id, for `nf.connid`; `None` when untracked.
    pub conntrack_id: Option<u32>,
}

/// What of a queued packet a hook's function gets as `packet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// The whole IP packet.
    IpPacket,
    /// Only the TCP payload (`hook add --tcp-payload`).
    TcpPayload,
}

impl<'a> PacketContext<'a> {
    /// The packet `ip_packet` with `link_header` before it, `given` to Lua as `packet`; `None`
    /// when that is the TCP payload and there is none (not a whole TCP segment, or no data):
    /// the hook does not see such a packet.
    pub fn new(
        link_header: [u8; ETHERNET_HEADER_LEN],
        ip_packet: &'a [u8],
        given: Given,
        mode: HookMode,
        conntrack_id: Option<u32>,
    ) -> Option<PacketContext<'a>> {
        let lua_packet = match given {
            Given::IpPacket => ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + ip_packet.len(),
            Given::TcpPayload => {
                let payload = nflua_packet::tcp_payload(ip_packet).filter(|r| !r.is_empty())?;
                payload.start + ETHERNET_HEADER_LEN..payload.end + ETHERNET_HEADER_LEN
            }
        };
        Some(PacketContext { link_header, ip_packet, lua_packet, mode, conntrack_id })
    }

    /// A packet from a whole frame (link header, then IP packet), all of its IP packet given
    /// to Lua; `None` if `frame` is shorter than the link header.
    pub fn from_frame(frame: &'a [u8], mode: HookMode) -> Option<PacketContext<'a>> {
        let (header, ip_packet) = frame.split_first_chunk::<ETHERNET_HEADER_LEN>()?;
        Some(PacketContext {
            link_header: *header,
            ip_packet,
            lua_packet: ETHERNET_HEADER_LEN..frame.len(),
            mode,
            conntrack_id: None,
        })
    }

    /// Bytes of the frame Lua sees.
    pub fn frame_len(&self) -> usize {
        ETHERNET_HEADER_LEN + self.ip_packet.len()
    }
}

/// What the hook function returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookResult {
    Match(bool),
    /// `None`: continue with the next rule (any return value other than a verdict name).
    Target(Option<Verdict>),
}

/// The result of one hook call and what the script asked for on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutcome {
    pub result: HookResult,
    /// `nf.hotdrop(true)` was the last hot-drop call (match mode only).
    pub hotdrop: bool,
    /// `packet:send([payload])` was called: the IP packet to emit (payload replaced, lengths and
    /// checksums fixed), normally followed by the verdict `"stolen"`.
    pub replacement: Option<Vec<u8>>,
}

/// The connection a stream hook's call is about, for `nf.flow()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    /// The connection's number in its hook's table (never reused while the daemon runs).
    pub id: u64,
    /// `"original"` (from the client: the side that sent the first packet seen) or `"reply"`.
    pub direction: &'static str,
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
}

/// What a stream hook's call sees besides the current packet: the direction's reassembled bytes
/// so far (given to Lua as `packet`) and the connection.
#[derive(Debug, Clone)]
pub struct StreamContext<'a> {
    pub bytes: &'a [u8],
    pub flow: FlowInfo,
}

/// The packet of the running hook call, where `nf`'s packet functions find it.
#[derive(Debug)]
pub(crate) struct HookCall {
    /// The call's buffer (all of the frame): `nf.reply` and `packet:send` read the IP packet
    /// from offset 14.
    pub(crate) frame: Data,
    pub(crate) mode: HookMode,
    pub(crate) conntrack_id: Option<u32>,
    /// Numbers the state's hook calls, so a packet object from an earlier call is refused.
    pub(crate) generation: u64,
    pub(crate) hotdrop: bool,
    pub(crate) replacement: Option<Vec<u8>>,
    /// The connection of a stream hook's call.
    pub(crate) flow: Option<FlowInfo>,
}

/// Offset of the IP packet in a frame.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// The Ethernet header Lua sees before an IP packet: destination zeros, source the sender's
/// hardware address when known (its first 6 bytes), ethertype of the IP version (or
/// `fallback_ethertype` when the packet does not say). The daemon builds it from what the queue
/// tells of a packet, `nfluactl test` from the captured frame; a filter sees the same bytes.
pub fn link_header(
    source_mac: Option<&[u8]>,
    ip_packet: &[u8],
    fallback_ethertype: u16,
) -> [u8; ETHERNET_HEADER_LEN] {
    let mut header = [0u8; ETHERNET_HEADER_LEN];
    if let Some(mac) = source_mac.and_then(|mac| mac.get(..6)) {
        header[6..12].copy_from_slice(mac);
    }
    let ethertype = nflua_packet::ethertype(ip_packet).unwrap_or(fallback_ethertype);
    header[12..].copy_from_slice(&ethertype.to_be_bytes());
    header
}
