//! Finding the TCP or UDP segment of a packet, and sealing or verifying its
//! checksum.

use crate::bytes::put_u16;
use crate::error::PacketError;
use crate::ip::{self, Addrs, Fragment, IpPacket};
use crate::tcp::{self, TcpHeader};
use crate::udp::{self, UdpHeader};

/// IANA protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// The upper-layer protocols this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    pub(crate) fn from_protocol(protocol: u8) -> Option<L4> {
        match protocol {
            IPPROTO_TCP => Some(L4::Tcp),
            IPPROTO_UDP => Some(L4::Udp),
            _ => None,
        }
    }

    pub(crate) fn protocol(self) -> u8 {
        match self {
            L4::Tcp => IPPROTO_TCP,
            L4::Udp => IPPROTO_UDP,
        }
    }

    fn checksum_offset(self) -> usize {
        match self {
            L4::Tcp => tcp::CHECKSUM,
            L4::Udp => udp::CHECKSUM,
        }
    }
}

/// A parsed L4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4Header {
    Tcp(TcpHeader),
    Udp(UdpHeader),
}

impl L4Header {
    pub(crate) fn header_len(&self) -> usize {
        match self {
            L4Header::Tcp(tcp) => tcp.header_len,
            L4Header::Udp(_) => udp::HEADER_LEN,
        }
    }
}

/// A whole (unfragmented) TCP or UDP packet, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Segment<'a> {
    pub(crate) ip: IpPacket,
    pub(crate) header: L4Header,
    /// L4 header and payload; for UDP, as long as its length field says.
    pub(crate) bytes: &'a [u8],
}

impl Segment<'_> {
    pub(crate) fn kind(&self) -> L4 {
        match self.header {
            L4Header::Tcp(_) => L4::Tcp,
            L4Header::Udp(_) => L4::Udp,
        }
    }

    /// Range of the L4 payload within the IP packet.
    pub(crate) fn payload_range(&self) -> std::ops::Range<usize> {
        let start = self.ip.l4.start;
        start + self.header.header_len()..start + self.bytes.len()
    }

    pub(crate) fn payload_len(&self) -> usize {
        self.bytes.len().saturating_sub(self.header.header_len())
    }
}

/// Parses `buf` down to its L4 header, which must be one of `accept`;
/// `wanted` names them in a [`PacketError::WrongProtocol`]. A non-first
/// fragment carries no L4 header (wrong protocol); a first fragment only
/// part of the segment (truncated).
pub(crate) fn segment<'a>(
    buf: &'a [u8],
    accept: &[L4],
    wanted: &'static str,
) -> Result<Segment<'a>, PacketError> {
    let ip = ip::parse(buf)?;
    let kind = L4::from_protocol(ip.protocol)
        .filter(|kind| accept.contains(kind))
        .ok_or(PacketError::WrongProtocol(wanted))?;
    match ip.fragment {
        Fragment::Whole => {}
        Fragment::First => return Err(PacketError::Truncated),
        Fragment::Later => return Err(PacketError::WrongProtocol(wanted)),
    }
    let bytes = buf.get(ip.l4.clone()).ok_or(PacketError::Truncated)?;
    let (header, bytes) = match kind {
        L4::Tcp => (L4Header::Tcp(tcp::parse(bytes)?), bytes),
        L4::Udp => {
            let udp = udp::parse(bytes)?;
            let bytes = bytes.get(..usize::from(udp.len)).ok_or(PacketError::Truncated)?;
            (L4Header::Udp(udp), bytes)
        }
    };
    Ok(Segment { ip, header, bytes })
}

/// Fills in every length and checksum of `packet`: IP lengths (and IPv4
/// header checksum) for headers ending at `l4_start`, then the UDP length
/// and the L4 checksum. `packet` must be at most 65535 bytes.
pub(crate) fn seal(packet: &mut [u8], addrs: &Addrs, l4_start: usize, kind: L4) {
    ip::seal(packet, addrs, l4_start);
    let l4_len = packet.len().saturating_sub(l4_start);
    if kind == L4::Udp {
        put_u16(packet, l4_start + udp::LENGTH, l4_len as u16);
    }
    let checksum_at = l4_start + kind.checksum_offset();
    put_u16(packet, checksum_at, 0);
    let mut sum = addrs.pseudo_header(kind.protocol(), l4_len);
    sum.add(packet.get(l4_start..).unwrap_or_default());
    let checksum = match sum.finish() {
        0 if kind == L4::Udp => 0xFFFF,
        checksum => checksum,
    };
    put_u16(packet, checksum_at, checksum);
}

/// Whether the L4 checksum of `segment` is right (a UDP checksum of zero
/// means "none" over IPv4 and passes; over IPv6 it fails).
pub(crate) fn checksum_ok(segment: &Segment<'_>) -> bool {
    if let L4Header::Udp(udp) = segment.header {
        if udp.checksum == 0 {
            return matches!(segment.ip.addrs, Addrs::V4 { .. });
        }
    }
    let protocol = segment.kind().protocol();
    segment.ip.addrs.pseudo_header(protocol, segment.bytes.len()).add(segment.bytes).verifies()
}
