//! Building packets: replies to a packet's sender, and a packet with its
//! payload replaced. Each allocates exactly the returned packet.

use crate::error::PacketError;
use crate::ip::Addrs;
use crate::l4::{self, L4Header, L4};

/// The largest packet we build: IPv4's total length is 16 bits. Applied to
/// IPv6 as well, although its 16-bit payload length would allow 40 bytes
/// more. (A packet handed back in an NFQUEUE verdict is limited further, to
/// 65531 bytes, by Netlink's 16-bit attribute length; the caller checks.)
pub const MAX_PACKET_LEN: usize = 65535;

/// A TCP segment answering `ip_packet`'s sender with `payload`.
///
/// The reply goes from the packet's destination to its source, ports
/// swapped, in an option-less IPv4 header (TOS 0, id 0, DF, TTL 64) or an
/// extension-less IPv6 header (hop limit 64). TCP: seq = the packet's ack
/// number; ack = its seq + its payload length, + 1 for a SYN and + 1 for a
/// FIN (each occupies a sequence number, so the peer sees all it sent
/// acknowledged); flags PSH|ACK; no options; the window the packet carried
/// is echoed. Every length and checksum is set.
///
/// Errors: not TCP, or a non-first fragment → `WrongProtocol("TCP")`; a
/// first fragment or short packet → `Truncated`; a reply over
/// [`MAX_PACKET_LEN`] → `TooLarge`.
pub fn tcp_reply(ip_packet: &[u8], payload: &[u8]) -> Result<Vec<u8>, PacketError> {
    let segment = l4::segment(ip_packet, &[L4::Tcp], "TCP")?;
    let L4Header::Tcp(tcp) = segment.header else {
        return Err(PacketError::WrongProtocol("TCP"));
    };
    let header = tcp.reply(segment.payload_len());
    build(&segment.ip.addrs.reversed(), L4::Tcp, &header, payload)
}

/// A UDP datagram answering `ip_packet`'s sender with `payload`.
///
/// Addresses and IP headers as for [`tcp_reply`]; ports swapped; length
/// and checksum set (also over IPv4, where it is optional; a computed zero
/// is sent as 0xFFFF).
///
/// Errors: not UDP, or a non-first fragment → `WrongProtocol("UDP")`;
/// otherwise as for [`tcp_reply`].
pub fn udp_reply(ip_packet: &[u8], payload: &[u8]) -> Result<Vec<u8>, PacketError> {
    let segment = l4::segment(ip_packet, &[L4::Udp], "UDP")?;
    let L4Header::Udp(udp) = segment.header else {
        return Err(PacketError::WrongProtocol("UDP"));
    };
    build(&segment.ip.addrs.reversed(), L4::Udp, &udp.reply(), payload)
}

/// `ip_packet` with its TCP or UDP payload replaced by `payload`.
///
/// Every header is kept as it is, IPv4 options, IPv6 extension headers and
/// TCP options included; IPv4 total length and header checksum, IPv6
/// payload length, UDP length and the TCP/UDP checksum are set to fit the
/// new payload. Bytes past the packet's IP (or UDP) length are dropped.
///
/// Errors: neither TCP nor UDP, or a non-first fragment →
/// `WrongProtocol("TCP or UDP")`; a first fragment or short packet →
/// `Truncated`; a result over [`MAX_PACKET_LEN`] → `TooLarge`.
pub fn replace_payload(ip_packet: &[u8], payload: &[u8]) -> Result<Vec<u8>, PacketError> {
    let segment = l4::segment(ip_packet, &[L4::Tcp, L4::Udp], "TCP or UDP")?;
    let headers_len = segment.payload_range().start;
    let headers = ip_packet.get(..headers_len).ok_or(PacketError::Truncated)?;
    let total_len = check_len(headers.len() + payload.len())?;
    let mut packet = Vec::with_capacity(total_len);
    packet.extend_from_slice(headers);
    packet.extend_from_slice(payload);
    l4::seal(&mut packet, &segment.ip.addrs, segment.ip.l4.start, segment.kind());
    Ok(packet)
}

/// A new packet from `addrs`: IP header, `l4_header`, `payload`, sealed.
fn build(addrs: &Addrs, kind: L4, l4_header: &[u8], payload: &[u8]) -> Result<Vec<u8>, PacketError> {
    let l4_start = addrs.header_len();
    let total_len = check_len(l4_start + l4_header.len() + payload.len())?;
    let mut packet = Vec::with_capacity(total_len);
    addrs.write_header(kind.protocol(), &mut packet);
    packet.extend_from_slice(l4_header);
    packet.extend_from_slice(payload);
    l4::seal(&mut packet, addrs, l4_start, kind);
    Ok(packet)
}

fn check_len(total_len: usize) -> Result<usize, PacketError> {
    if total_len > MAX_PACKET_LEN {
        return Err(PacketError::TooLarge(total_len));
    }
    Ok(total_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum_ok;
    use crate::fixtures::*;

    #[test]
    fn tcp_reply_ipv4_with_data() {
        let reply = tcp_reply(&V4_TCP_DATA, b"HTTP/1.1 403\r\n").unwrap();
        #[rustfmt::skip]
        let expected: [u8; 54] = [
            // IPv4
            0x45, 0x00, // version 4, IHL 5; TOS 0
            0x00, 0x36, // total length 54
            0x00, 0x00, // identification 0
            0x40, 0x00, // DF
            0x40, 0x06, // TTL 64, protocol TCP
            0x43, 0x35, // header checksum
            93, 184, 216, 34, // source: the packet's destination
            192, 168, 1, 10, // destination: the packet's source
            // TCP
            0x00, 0x50, // source port 80
            0xc7, 0x38, // destination port 51000
            0x0a, 0x0b, 0x0c, 0x0d, // seq: the packet's ack
            0x01, 0x02, 0x03, 0x0b, // ack: its seq + 7 payload bytes
            0x50, 0x18, // data offset 5; PSH|ACK
            0x01, 0xf6, // window 502, echoed
            0x7d, 0x15, // checksum
            0x00, 0x00, // urgent pointer
            b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'1', b' ', b'4', b'0', b'3', b'\r', b'\n',
        ];
        assert_eq!(reply, expected);
        assert!(checksum_ok(&reply));
    }

    #[test]
    fn tcp_reply_to_syn_acks_the_syn_and_drops_options() {
        let reply = tcp_reply(&V4_TCP_SYN_OPTIONS, b"no").unwrap();
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            // IPv4, no options
            0x45, 0x00, 0x00, 0x2a, // version 4, IHL 5; TOS 0; total length 42
            0x00, 0x00, 0x40, 0x00, // identification 0; DF
            0x40, 0x06, 0x26, 0xcc, // TTL 64, TCP; header checksum
            10, 0, 0, 2, // source
            10, 0, 0, 1, // destination
            // TCP, no options
            0x01, 0xbb, 0x9c, 0x40, // ports 443 → 40000
            0x00, 0x00, 0x00, 0x00, // seq: the SYN's (empty) ack field
            0x00, 0x00, 0x00, 0x00, // ack: 0xffffffff + 0 bytes + 1 for SYN, wrapped
            0x50, 0x18, 0xfa, 0xf0, // data offset 5; PSH|ACK; window 64240
            0x94, 0x6c, 0x00, 0x00, // checksum; urgent pointer
            b'n', b'o',
        ];
        assert_eq!(reply, expected);
    }

    #[test]
    fn tcp_reply_ipv6_skips_extension_headers_and_acks_fin() {
        let reply = tcp_reply(&V6_TCP_EXT, b"ok").unwrap();
        #[rustfmt::skip]
        let expected: [u8; 62] = [
            // IPv6, no extension headers
            0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
            0x00, 0x16, // payload length 22
            0x06, 0x40, // next header TCP; hop limit 64
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // source
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // destination
            // TCP
            0xc3, 0x50, 0x01, 0xbb, // ports 50000 → 443
            0x55, 0x66, 0x77, 0x88, // seq: the packet's ack
            0x11, 0x22, 0x33, 0x48, // ack: seq + 3 bytes + 1 for FIN
            0x50, 0x18, 0x02, 0x00, // data offset 5; PSH|ACK; window 512
            0x0c, 0x86, 0x00, 0x00, // checksum; urgent pointer
            b'o', b'k',
        ];
        assert_eq!(reply, expected);
        assert!(checksum_ok(&reply));
    }

    #[test]
    fn udp_reply_ipv4() {
        let reply = udp_reply(&V4_UDP_PADDED, b"pong!").unwrap();
        #[rustfmt::skip]
        let expected: [u8; 33] = [
            0x45, 0x00, 0x00, 0x21, // version 4, IHL 5; TOS 0; total length 33
            0x00, 0x00, 0x40, 0x00, // identification 0; DF
            0x40, 0x11, 0x24, 0xc8, // TTL 64, UDP; header checksum
            10, 1, 1, 2, // source
            10, 1, 1, 1, // destination
            0x00, 0x35, 0x14, 0xe9, // ports 53 → 5353
            0x00, 0x0d, 0xd4, 0xda, // length 13; checksum
            b'p', b'o', b'n', b'g', b'!',
        ];
        assert_eq!(reply, expected);
    }

    #[test]
    fn udp_reply_ipv6_empty() {
        let reply = udp_reply(&V6_UDP, b"").unwrap();
        #[rustfmt::skip]
        let expected: [u8; 48] = [
            0x60, 0x00, 0x00, 0x00, // version 6
            0x00, 0x08, 0x11, 0x40, // payload length 8; UDP; hop limit 64
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // source
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // destination
            0x16, 0x2e, 0x04, 0xd2, // ports 5678 → 1234
            0x00, 0x08, 0xe7, 0xd9, // length 8; checksum
        ];
        assert_eq!(reply, expected);
    }

    #[test]
    fn replace_payload_ipv4_tcp() {
        let packet = replace_payload(&V4_TCP_DATA, b"GET /admin\r\n").unwrap();
        let mut expected = V4_TCP_DATA[..40].to_vec();
        expected[2..4].copy_from_slice(&[0x00, 0x34]); // total length 52
        expected[10..12].copy_from_slice(&[0x26, 0xf1]); // header checksum
        expected[36..38].copy_from_slice(&[0x2e, 0xea]); // TCP checksum
        expected.extend_from_slice(b"GET /admin\r\n");
        assert_eq!(packet, expected);
    }

    #[test]
    fn replace_payload_keeps_ipv6_extension_headers() {
        let packet = replace_payload(&V6_TCP_EXT, b"").unwrap();
        let mut expected = V6_TCP_EXT[..76].to_vec();
        expected[4..6].copy_from_slice(&[0x00, 0x24]); // payload length 36
        expected[72..74].copy_from_slice(&[0x7b, 0xfe]); // TCP checksum
        assert_eq!(packet, expected);
    }

    #[test]
    fn replace_payload_keeps_ipv4_and_tcp_options() {
        let packet = replace_payload(&V4_TCP_SYN_OPTIONS, b"data").unwrap();
        assert_eq!(packet.len(), 52);
        assert_eq!(packet[0], 0x46, "IHL still 6");
        assert_eq!(packet[20..24], [0x94, 0x04, 0x00, 0x00], "router alert kept");
        assert_eq!(packet[44..48], [0x02, 0x04, 0x05, 0xb4], "MSS kept");
        assert_eq!(&packet[48..], b"data");
        assert!(checksum_ok(&packet));
    }

    #[test]
    fn replace_payload_udp_fixes_length_and_drops_padding() {
        let packet = replace_payload(&V4_UDP_PADDED, b"pingpong").unwrap();
        assert_eq!(packet.len(), 36);
        assert_eq!(packet[2..4], [0x00, 0x24], "total length 36");
        assert_eq!(packet[24..26], [0x00, 0x10], "UDP length 16");
        assert_eq!(&packet[28..], b"pingpong");
        assert!(checksum_ok(&packet));
    }

    #[test]
    fn reply_from_the_final_destination_of_a_routing_header() {
        // IPv6 UDP through a segment routing header with one segment left:
        // the packet is addressed to a waypoint, the sender talks to `final`.
        let waypoint = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99];
        let last = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02];
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
        let mut packet = vec![0x60, 0, 0, 0, 0x00, 0x30, 43, 64]; // payload length 48
        packet.extend_from_slice(&src);
        packet.extend_from_slice(&waypoint);
        // routing header: next UDP, length 40 bytes, type 4, 1 segment left,
        // last entry 1, flags 0, tag 0; segment list [final, waypoint]
        packet.extend_from_slice(&[17, 4, 4, 1, 1, 0, 0, 0]);
        packet.extend_from_slice(&last);
        packet.extend_from_slice(&waypoint);
        let udp = [0x04, 0xd2, 0x16, 0x2e, 0x00, 0x08, 0x00, 0x00];
        let sum = reference_checksum(&[&src, &last, &[0, 0, 0, 8, 0, 0, 0, 17], &udp]);
        packet.extend_from_slice(&udp[..6]);
        packet.extend_from_slice(&sum.to_be_bytes());
        assert!(checksum_ok(&packet), "checksum covers the final destination");

        let reply = udp_reply(&packet, b"").unwrap();
        assert_eq!(reply[8..24], last, "reply comes from the final destination");
        assert_eq!(reply[24..40], src);
        assert!(checksum_ok(&reply));

        let replaced = replace_payload(&packet, b"x").unwrap();
        assert_eq!(replaced[4..6], [0x00, 0x31], "payload length 49");
        assert_eq!(replaced[6..84], packet[6..84], "routing header, ports kept");
        assert!(checksum_ok(&replaced));
    }

    #[test]
    fn refuses_what_it_cannot_answer() {
        assert_eq!(tcp_reply(&V4_UDP_PADDED, b""), Err(PacketError::WrongProtocol("TCP")));
        assert_eq!(udp_reply(&V4_TCP_DATA, b""), Err(PacketError::WrongProtocol("UDP")));
        assert_eq!(replace_payload(&V4_ICMP, b""), Err(PacketError::WrongProtocol("TCP or UDP")));
        assert_eq!(tcp_reply(&V6_LATER_FRAGMENT, b""), Err(PacketError::WrongProtocol("TCP")));
        let mut first_fragment = V4_TCP_DATA;
        first_fragment[6] = 0x20; // MF, offset 0
        assert_eq!(tcp_reply(&first_fragment, b""), Err(PacketError::Truncated));
        let mut later_fragment = V4_TCP_DATA;
        later_fragment[7] = 0x01; // offset 8 bytes
        assert_eq!(replace_payload(&later_fragment, b""), Err(PacketError::WrongProtocol("TCP or UDP")));
        assert_eq!(tcp_reply(&[], b""), Err(PacketError::NotIp));
        assert_eq!(tcp_reply(&[0x50; 60], b""), Err(PacketError::NotIp));
        assert_eq!(tcp_reply(&V4_TCP_DATA[..46], b""), Err(PacketError::Truncated));
        assert_eq!(tcp_reply(&V6_TCP_EXT[..50], b""), Err(PacketError::Truncated));
        let mut short_ihl = V4_TCP_DATA;
        short_ihl[0] = 0x44;
        assert_eq!(tcp_reply(&short_ihl, b""), Err(PacketError::Malformed("IPv4")));
        let mut short_doff = V4_TCP_DATA;
        short_doff[32] = 0x40;
        assert_eq!(tcp_reply(&short_doff, b""), Err(PacketError::Malformed("TCP")));
        let mut long_udp = V4_UDP_PADDED;
        long_udp[25] = 0x0d; // UDP length 13 > 12 bytes present
        assert_eq!(udp_reply(&long_udp, b""), Err(PacketError::Truncated));
        long_udp[25] = 0x07; // UDP length 7 < header
        assert_eq!(udp_reply(&long_udp, b""), Err(PacketError::Malformed("UDP")));
    }

    #[test]
    fn too_large() {
        // 20 + 20 + 65495 is the most IPv4 can carry.
        let fits = vec![0xab; 65495];
        let reply = tcp_reply(&V4_TCP_DATA, &fits).unwrap();
        assert_eq!(reply.len(), MAX_PACKET_LEN);
        assert!(checksum_ok(&reply));
        let over = vec![0xab; 65496];
        assert_eq!(tcp_reply(&V4_TCP_DATA, &over), Err(PacketError::TooLarge(65536)));
        assert_eq!(udp_reply(&V6_UDP, &over), Err(PacketError::TooLarge(65544)));
        assert_eq!(replace_payload(&V6_TCP_EXT, &over), Err(PacketError::TooLarge(65572)));
    }
}
