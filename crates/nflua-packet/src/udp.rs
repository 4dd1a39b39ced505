//! The UDP header (RFC 768).
//!
//! ```text
//!  0               1               2               3
//!  +-------------------------------+-------------------------------+
//!  |          Source Port          |       Destination Port        |  0
//!  +-------------------------------+-------------------------------+
//!  |            Length             |           Checksum            |  4
//!  +-------------------------------+-------------------------------+
//! ```
//!
//! Length counts header and payload. A zero checksum means "none" over
//! IPv4 and is invalid over IPv6 (RFC 8200 §8.1); a computed zero is sent
//! as 0xFFFF.

use crate::bytes::{get_array, get_u16};
use crate::error::PacketError;

pub(crate) const HEADER_LEN: usize = 8;

const SRC_PORT: usize = 0;
const DST_PORT: usize = 2;
pub(crate) const LENGTH: usize = 4;
pub(crate) const CHECKSUM: usize = 6;

/// The fields of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpHeader {
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    /// The length field: header and payload.
    pub(crate) len: u16,
    pub(crate) checksum: u16,
}

/// Reads the header at the start of `datagram`, without judging its length
/// field (a first fragment holds only part of what it counts).
pub(crate) fn read(datagram: &[u8]) -> Result<UdpHeader, PacketError> {
    let fixed: [u8; HEADER_LEN] = get_array(datagram, 0).ok_or(PacketError::Truncated)?;
    let u16_at = |at: usize| get_u16(&fixed, at).ok_or(PacketError::Truncated);
    Ok(UdpHeader {
        src_port: u16_at(SRC_PORT)?,
        dst_port: u16_at(DST_PORT)?,
        len: u16_at(LENGTH)?,
        checksum: u16_at(CHECKSUM)?,
    })
}

/// Reads the header at the start of `datagram` (the bytes the IP header
/// assigns to UDP) and checks the length field against them. Bytes past
/// the UDP length are not part of the datagram, as for Linux.
pub(crate) fn parse(datagram: &[u8]) -> Result<UdpHeader, PacketError> {
    let header = read(datagram)?;
    if usize::from(header.len) < HEADER_LEN {
        return Err(PacketError::Malformed("UDP"));
    }
    if usize::from(header.len) > datagram.len() {
        return Err(PacketError::Truncated);
    }
    Ok(header)
}

impl UdpHeader {
    /// The header of a datagram answering this one: ports swapped; length
    /// and checksum zero until sealed.
    pub(crate) fn reply(&self) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[SRC_PORT..SRC_PORT + 2].copy_from_slice(&self.dst_port.to_be_bytes());
        header[DST_PORT..DST_PORT + 2].copy_from_slice(&self.src_port.to_be_bytes());
        header
    }
}
