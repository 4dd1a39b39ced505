//! Reading and crafting raw IPv4/IPv6 TCP and UDP packets, as NFQUEUE
//! delivers them (no link-layer header): summaries, the TCP payload, a
//! reply to the sender, the same packet with its payload replaced.
//!
//! Depends on nothing but `thiserror` (the error type). Used by the engine
//! for `nf.reply` and `packet:send` and for the hook's Ethernet frame, and
//! by the daemon's tests to check the packets it emits ([`checksum_ok`],
//! [`summarize`]).
//!
//! Never does I/O, allocates anything but the packet it returns, or panics
//! on input: every offset is bounds-checked (see `bytes`), every length
//! field is checked against the bytes present, and property tests feed it
//! arbitrary bytes.

#![forbid(unsafe_code)]
// Offsets computed from packet bytes go through `bytes`; tests may index.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

// Inside out: `bytes` (checked reads), `checksum` (RFC 1071 sum), `ipv4`
// and `ipv6` (headers, options, extension headers), `ip` (what L4 code
// needs from either), `tcp` and `udp` (headers), `l4` (finding a segment,
// sealing and verifying its checksum); then the public API: `craft`
// (replies, payload replacement) and `inspect` (ethertype, TCP payload,
// checksums, summary).
mod bytes;
mod checksum;
mod craft;
mod error;
mod inspect;
mod ip;
mod ipv4;
mod ipv6;
mod l4;
mod tcp;
mod udp;

pub use craft::{replace_payload, tcp_reply, udp_reply, MAX_PACKET_LEN};
pub use error::PacketError;
pub use inspect::{
    checksum_ok, connection_id, ethertype, headers, summarize, tcp_payload, Headers, Summary, TcpFields,
    UdpFields, ETHERTYPE_IPV4, ETHERTYPE_IPV6,
};
pub use l4::{IPPROTO_TCP, IPPROTO_UDP};

#[cfg(test)]
mod fixtures;
