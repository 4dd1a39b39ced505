//! The IPv6 header (RFC 8200) and the extension headers that may sit
//! between it and the L4 header.
//!
//! ```text
//!  0               1               2               3
//!  +-------+---------------+---------------------------------------+
//!  |Version| Traffic Class |              Flow Label               |  0
//!  +-------+---------------+-------+---------------+---------------+
//!  |        Payload Length         |  Next Header  |   Hop Limit   |  4
//!  +-------------------------------+---------------+---------------+
//!  |                    Source Address (16 bytes)                  |  8
//!  +---------------------------------------------------------------+
//!  |                 Destination Address (16 bytes)                | 24
//!  +---------------------------------------------------------------+
//!  | extension headers ... | upper-layer header ...                | 40
//! ```
//!
//! Extension headers walked: hop-by-hop options (0), routing (43),
//! fragment (44), destination options (60). Each names the next header in
//! its first byte; all but the fragment header give their length in 8-byte
//! units, not counting the first 8, in their second byte. Any other next
//! header ends the walk and is the upper-layer protocol.

use std::net::Ipv6Addr;

use crate::bytes::{get_array, put_u16};
use crate::error::PacketError;
use crate::ip::{Addrs, Fragment, IpPacket};

pub(crate) const HEADER_LEN: usize = 40;

const PAYLOAD_LEN: usize = 4;
const NEXT_HEADER: usize = 6;
const HOP_LIMIT: usize = 7;
const SRC: usize = 8;
const DST: usize = 24;

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DESTINATION_OPTIONS: u8 = 60;

/// Fragment header: offset in 8-byte units (high 13 bits) and the M flag.
const FRAGMENT_HEADER_LEN: usize = 8;
const FRAGMENT_OFFSET: u16 = 0xFFF8;
const MORE_FRAGMENTS: u16 = 0x0001;

/// Hop limit of the packets we build: Linux's default.
const DEFAULT_HOP_LIMIT: u8 = 64;

/// Reads the fixed header and walks the extension headers; the packet ends
/// where payload length says.
pub(crate) fn parse(buf: &[u8]) -> Result<IpPacket, PacketError> {
    let fixed: [u8; HEADER_LEN] = get_array(buf, 0).ok_or(PacketError::Truncated)?;
    let payload_len = u16::from_be_bytes([fixed[PAYLOAD_LEN], fixed[PAYLOAD_LEN + 1]]);
    let end = HEADER_LEN + usize::from(payload_len);
    let packet = buf.get(..end).ok_or(PacketError::Truncated)?;
    let address = |at: usize| -> Ipv6Addr {
        let octets: [u8; 16] = get_array(&fixed, at).unwrap_or_default();
        octets.into()
    };
    let (src, dst) = (address(SRC), address(DST));

    let mut next = fixed[NEXT_HEADER];
    let mut at = HEADER_LEN;
    let mut final_dst = dst;
    let mut fragment = Fragment::Whole;
    loop {
        match next {
            HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS => {
                let [following, len_units] = get_array(packet, at).ok_or(PacketError::Truncated)?;
                let len = (usize::from(len_units) + 1) * 8;
                let header = packet.get(at..at + len).ok_or(PacketError::Truncated)?;
                if next == ROUTING {
                    if let Some(last) = final_destination(header) {
                        final_dst = last;
                    }
                }
                next = following;
                at += len;
            }
            FRAGMENT => {
                let header: [u8; FRAGMENT_HEADER_LEN] =
                    get_array(packet, at).ok_or(PacketError::Truncated)?;
                let offset_flags = u16::from_be_bytes([header[2], header[3]]);
                next = header[0];
                at += FRAGMENT_HEADER_LEN;
                if offset_flags & FRAGMENT_OFFSET != 0 {
                    // What follows is the middle of the datagram: no headers.
                    fragment = Fragment::Later;
                    break;
                }
                if offset_flags & MORE_FRAGMENTS != 0 {
                    fragment = Fragment::First;
                }
            }
            _ => break,
        }
    }
    Ok(IpPacket { addrs: Addrs::V6 { src, dst, final_dst }, protocol: next, l4: at..end, fragment })
}

/// The final destination a routing header names while it still has
/// segments left: the last address of type 0 and type 2 headers, segment
/// list entry 0 of a segment routing header (type 4, RFC 8754).
fn final_destination(header: &[u8]) -> Option<Ipv6Addr> {
    const ROUTING_TYPE: usize = 2;
    const SEGMENTS_LEFT: usize = 3;
    const ADDRESSES: usize = 8;
    if *header.get(SEGMENTS_LEFT)? == 0 {
        return None;
    }
    let at = match *header.get(ROUTING_TYPE)? {
        0 | 2 => {
            let count = header.len().checked_sub(ADDRESSES)? / 16;
            ADDRESSES + 16 * count.checked_sub(1)?
        }
        4 => ADDRESSES,
        _ => return None,
    };
    get_array::<16>(header, at).map(Ipv6Addr::from)
}

/// An extension-less header: version 6, traffic class and flow label 0,
/// hop limit 64. Payload length is zero until [`seal`].
pub(crate) fn header(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0] = 0x60;
    header[NEXT_HEADER] = next_header;
    header[HOP_LIMIT] = DEFAULT_HOP_LIMIT;
    header[SRC..SRC + 16].copy_from_slice(&src.octets());
    header[DST..DST + 16].copy_from_slice(&dst.octets());
    header
}

/// Sets payload length: everything after the fixed header, extension
/// headers included. The caller guarantees it fits.
pub(crate) fn seal(packet: &mut [u8]) {
    let payload_len = packet.len().saturating_sub(HEADER_LEN) as u16;
    put_u16(packet, PAYLOAD_LEN, payload_len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn walks_extension_headers() {
        let packet = parse(&V6_TCP_EXT).unwrap();
        assert_eq!(packet.protocol, 6);
        assert_eq!(packet.l4, 56..79);
        assert_eq!(packet.fragment, Fragment::Whole);

        let fragment = parse(&V6_LATER_FRAGMENT).unwrap();
        assert_eq!((fragment.protocol, fragment.l4.clone()), (6, 48..56));
        assert_eq!(fragment.fragment, Fragment::Later);
    }

    #[test]
    fn fragment_header_kinds() {
        let mut atomic = V6_LATER_FRAGMENT;
        atomic[42..44].copy_from_slice(&[0x00, 0x00]); // offset 0, M clear
        assert_eq!(parse(&atomic).unwrap().fragment, Fragment::Whole);
        let mut first = V6_LATER_FRAGMENT;
        first[42..44].copy_from_slice(&[0x00, 0x01]); // offset 0, M set
        assert_eq!(parse(&first).unwrap().fragment, Fragment::First);
    }

    #[test]
    fn extension_header_past_the_end_is_truncated() {
        let mut packet = V6_TCP_EXT;
        packet[49] = 0x02; // destination options claims 24 bytes
        packet[4..6].copy_from_slice(&[0x00, 0x12]); // payload length 18
        assert_eq!(parse(&packet[..58]), Err(PacketError::Truncated));
        // Payload length longer than the bytes present.
        assert_eq!(parse(&V6_TCP_EXT[..78]), Err(PacketError::Truncated));
    }

    #[test]
    fn type_0_routing_header_final_destination_is_the_last_address() {
        let mut header = vec![17, 4, 0, 2, 0, 0, 0, 0]; // 2 segments left
        for last_byte in [1, 2] {
            let mut address = [0u8; 16];
            address[15] = last_byte;
            header.extend_from_slice(&address);
        }
        let mut last = [0u8; 16];
        last[15] = 2;
        assert_eq!(final_destination(&header), Some(Ipv6Addr::from(last)));
        header[3] = 0; // no segments left: the header's destination is final
        assert_eq!(final_destination(&header), None);
        header[3] = 1;
        header[2] = 3; // RPL source route: not understood, header destination kept
        assert_eq!(final_destination(&header), None);
        assert_eq!(final_destination(&[17, 0, 0, 1, 0, 0, 0, 0]), None);
    }
}
