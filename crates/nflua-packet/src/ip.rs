//! What the L4 code needs from either IP version: addresses, the upper-layer
//! protocol, where the L4 bytes lie, and whether this is a fragment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use crate::checksum::Checksum;
use crate::error::PacketError;
use crate::{ipv4, ipv6};

/// Where a packet stands in its datagram's fragmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Not fragmented (an IPv6 atomic fragment counts as whole).
    Whole,
    /// Offset 0 with more to come: the L4 header is here, not all its data.
    First,
    /// Offset above 0: no L4 header at all.
    Later,
}

/// The two ends of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addrs {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        /// The destination the L4 checksum covers: `dst`, or with a routing
        /// header that still has segments left, the last one (RFC 8200 §8.1).
        final_dst: Ipv6Addr,
    },
}

/// An IP packet parsed down to its L4 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpPacket {
    pub(crate) addrs: Addrs,
    /// The upper-layer protocol: IPv4's protocol field, or the next header
    /// that ends IPv6's extension header chain.
    pub(crate) protocol: u8,
    /// From the end of the IP headers (options and extension headers
    /// included) to the end the IP length field gives; bytes past that end
    /// (link-layer padding) are not part of the packet.
    pub(crate) l4: Range<usize>,
    pub(crate) fragment: Fragment,
}

/// Parses the IP layer by the version nibble.
pub(crate) fn parse(buf: &[u8]) -> Result<IpPacket, PacketError> {
    match buf.first().map(|byte| byte >> 4) {
        Some(4) => ipv4::parse(buf),
        Some(6) => ipv6::parse(buf),
        _ => Err(PacketError::NotIp),
    }
}

impl Addrs {
    pub(crate) fn version(&self) -> u8 {
        match self {
            Addrs::V4 { .. } => 4,
            Addrs::V6 { .. } => 6,
        }
    }

    pub(crate) fn src(&self) -> IpAddr {
        match *self {
            Addrs::V4 { src, .. } => src.into(),
            Addrs::V6 { src, .. } => src.into(),
        }
    }

    pub(crate) fn dst(&self) -> IpAddr {
        match *self {
            Addrs::V4 { dst, .. } => dst.into(),
            Addrs::V6 { dst, .. } => dst.into(),
        }
    }

    /// The ends of a packet going back: from the (final) destination to the
    /// source.
    pub(crate) fn reversed(&self) -> Addrs {
        match *self {
            Addrs::V4 { src, dst } => Addrs::V4 { src: dst, dst: src },
            Addrs::V6 { src, final_dst, .. } => Addrs::V6 { src: final_dst, dst: src, final_dst: src },
        }
    }

    /// Length of the option-less header [`Addrs::write_header`] writes.
    pub(crate) fn header_len(&self) -> usize {
        match self {
            Addrs::V4 { .. } => ipv4::MIN_HEADER_LEN,
            Addrs::V6 { .. } => ipv6::HEADER_LEN,
        }
    }

    /// Appends an option-less IP header for these ends and `protocol`;
    /// lengths and checksum are left for [`seal`] to fill.
    pub(crate) fn write_header(&self, protocol: u8, out: &mut Vec<u8>) {
        match *self {
            Addrs::V4 { src, dst } => out.extend_from_slice(&ipv4::header(src, dst, protocol)),
            Addrs::V6 { src, dst, .. } => out.extend_from_slice(&ipv6::header(src, dst, protocol)),
        }
    }

    /// The checksum of the pseudo-header the TCP and UDP checksums start
    /// from (RFC 9293 §3.1, RFC 8200 §8.1).
    pub(crate) fn pseudo_header(&self, protocol: u8, l4_len: usize) -> Checksum {
        let mut sum = Checksum::new();
        match *self {
            Addrs::V4 { src, dst } => {
                // L4 lengths of IPv4 packets fit 16 bits: total length does.
                sum.add(&src.octets()).add(&dst.octets()).add(&[0, protocol]).add_u16(l4_len as u16);
            }
            Addrs::V6 { src, final_dst, .. } => {
                sum.add(&src.octets())
                    .add(&final_dst.octets())
                    .add_u32(l4_len as u32)
                    .add(&[0, 0, 0, protocol]);
            }
        }
        sum
    }
}

/// Fills in the IP length fields of `packet` (and the IPv4 header
/// checksum), whose IP headers end at `l4_start`.
pub(crate) fn seal(packet: &mut [u8], addrs: &Addrs, l4_start: usize) {
    match addrs {
        Addrs::V4 { .. } => ipv4::seal(packet, l4_start),
        Addrs::V6 { .. } => ipv6::seal(packet),
    }
}
