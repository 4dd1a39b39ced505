//! The IPv4 header (RFC 791), options included.
//!
//! ```text
//!  0               1               2               3
//!  +-------+-------+---------------+-------------------------------+
//!  |Version|  IHL  |      TOS      |         Total Length          |  0
//!  +-------+-------+---------------+-----+-------------------------+
//!  |        Identification         |Flags|     Fragment Offset     |  4
//!  +---------------+---------------+-----+-------------------------+
//!  |      TTL      |   Protocol    |        Header Checksum        |  8
//!  +---------------+---------------+-------------------------------+
//!  |                        Source Address                         | 12
//!  +---------------------------------------------------------------+
//!  |                      Destination Address                      | 16
//!  +---------------------------------------------------------------+
//!  |                Options (when IHL > 5) ...                     | 20
//! ```

use std::net::Ipv4Addr;

use crate::bytes::{get_array, put_u16};
use crate::checksum::Checksum;
use crate::error::PacketError;
use crate::ip::{Addrs, Fragment, IpPacket};

pub(crate) const MIN_HEADER_LEN: usize = 20;

const VERSION_IHL: usize = 0;
const TOTAL_LEN: usize = 2;
const FLAGS_FRAGMENT_OFFSET: usize = 6;
const TTL: usize = 8;
const PROTOCOL: usize = 9;
const CHECKSUM: usize = 10;
const SRC: usize = 12;
const DST: usize = 16;

const DONT_FRAGMENT: u16 = 0x4000;
const MORE_FRAGMENTS: u16 = 0x2000;
const FRAGMENT_OFFSET: u16 = 0x1FFF;

/// TTL of the packets we build: Linux's default.
const DEFAULT_TTL: u8 = 64;

/// Reads the header; the packet ends where total length says.
pub(crate) fn parse(buf: &[u8]) -> Result<IpPacket, PacketError> {
    let fixed: [u8; MIN_HEADER_LEN] = get_array(buf, 0).ok_or(PacketError::Truncated)?;
    let header_len = usize::from(fixed[VERSION_IHL] & 0x0F) * 4;
    let total_len = usize::from(u16::from_be_bytes([fixed[TOTAL_LEN], fixed[TOTAL_LEN + 1]]));
    if header_len < MIN_HEADER_LEN || total_len < header_len {
        return Err(PacketError::Malformed("IPv4"));
    }
    if total_len > buf.len() {
        return Err(PacketError::Truncated);
    }
    let flags_offset = u16::from_be_bytes([fixed[FLAGS_FRAGMENT_OFFSET], fixed[FLAGS_FRAGMENT_OFFSET + 1]]);
    let fragment = if flags_offset & FRAGMENT_OFFSET != 0 {
        Fragment::Later
    } else if flags_offset & MORE_FRAGMENTS != 0 {
        Fragment::First
    } else {
        Fragment::Whole
    };
    let address = |at: usize| get_array::<4>(&fixed, at).map(Ipv4Addr::from);
    Ok(IpPacket {
        addrs: Addrs::V4 {
            src: address(SRC).ok_or(PacketError::Truncated)?,
            dst: address(DST).ok_or(PacketError::Truncated)?,
        },
        protocol: fixed[PROTOCOL],
        l4: header_len..total_len,
        fragment,
    })
}

/// An option-less header: version 4, IHL 5, TOS 0, id 0, DF, TTL 64.
/// Total length and checksum are zero until [`seal`].
pub(crate) fn header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> [u8; MIN_HEADER_LEN] {
    let mut header = [0u8; MIN_HEADER_LEN];
    header[VERSION_IHL] = 0x45;
    header[FLAGS_FRAGMENT_OFFSET..FLAGS_FRAGMENT_OFFSET + 2].copy_from_slice(&DONT_FRAGMENT.to_be_bytes());
    header[TTL] = DEFAULT_TTL;
    header[PROTOCOL] = protocol;
    header[SRC..SRC + 4].copy_from_slice(&src.octets());
    header[DST..DST + 4].copy_from_slice(&dst.octets());
    header
}

/// Sets total length to the packet's length and recomputes the checksum of
/// the `header_len`-byte header. The caller guarantees the length fits.
pub(crate) fn seal(packet: &mut [u8], header_len: usize) {
    put_u16(packet, TOTAL_LEN, packet.len() as u16);
    put_u16(packet, CHECKSUM, 0);
    let sum = Checksum::new().add(packet.get(..header_len).unwrap_or_default()).finish();
    put_u16(packet, CHECKSUM, sum);
}

/// Whether the header checksum is right (`packet` parsed already).
pub(crate) fn header_ok(packet: &[u8], header_len: usize) -> bool {
    packet.get(..header_len).is_some_and(|header| Checksum::new().add(header).verifies())
}
