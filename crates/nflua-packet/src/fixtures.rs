//! Hand-made packets for the unit tests, annotated per field. Every
//! checksum here was computed independently of this crate (a few lines of
//! Python over the same bytes: RFC 1071 sum over pseudo-header and segment)
//! and is written out as a literal.

/// IPv4 TCP PSH|ACK carrying "GET /\r\n": 192.168.1.10:51000 → 93.184.216.34:80.
pub(crate) const V4_TCP_DATA: [u8; 47] = [
    // IPv4
    0x45, 0x00, // version 4, IHL 5; TOS 0
    0x00, 0x2f, // total length 47
    0x1c, 0x46, // identification
    0x40, 0x00, // DF, fragment offset 0
    0x40, 0x06, // TTL 64, protocol TCP
    0x26, 0xf6, // header checksum
    192, 168, 1, 10, // source
    93, 184, 216, 34, // destination
    // TCP
    0xc7, 0x38, // source port 51000
    0x00, 0x50, // destination port 80
    0x01, 0x02, 0x03, 0x04, // seq
    0x0a, 0x0b, 0x0c, 0x0d, // ack
    0x50, 0x18, // data offset 5; PSH|ACK
    0x01, 0xf6, // window 502
    0x00, 0x29, // checksum
    0x00, 0x00, // urgent pointer
    // payload (7 bytes: an odd length)
    b'G', b'E', b'T', b' ', b'/', b'\r', b'\n',
];

/// IPv4 TCP SYN with an IP option and a TCP option, seq about to wrap:
/// 10.0.0.1:40000 → 10.0.0.2:443.
pub(crate) const V4_TCP_SYN_OPTIONS: [u8; 48] = [
    // IPv4
    0x46, 0x00, // version 4, IHL 6 (one option word); TOS 0
    0x00, 0x30, // total length 48
    0xbe, 0xef, // identification
    0x40, 0x00, // DF, fragment offset 0
    0x40, 0x06, // TTL 64, protocol TCP
    0xd2, 0xd1, // header checksum
    10, 0, 0, 1, // source
    10, 0, 0, 2, // destination
    0x94, 0x04, 0x00, 0x00, // option: router alert (RFC 2113)
    // TCP
    0x9c, 0x40, // source port 40000
    0x01, 0xbb, // destination port 443
    0xff, 0xff, 0xff, 0xff, // seq
    0x00, 0x00, 0x00, 0x00, // ack (none: ACK flag clear)
    0x60, 0x02, // data offset 6; SYN
    0xfa, 0xf0, // window 64240
    0xeb, 0x37, // checksum
    0x00, 0x00, // urgent pointer
    0x02, 0x04, 0x05, 0xb4, // option: MSS 1460
];

/// IPv6 TCP FIN|ACK carrying "bye" behind hop-by-hop and destination
/// options headers: [2001:db8::1]:443 → [2001:db8::2]:50000.
pub(crate) const V6_TCP_EXT: [u8; 79] = [
    // IPv6
    0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
    0x00, 0x27, // payload length 39 (8 + 8 + 20 + 3)
    0x00, 0x40, // next header: hop-by-hop; hop limit 64
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // source
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // destination
    // hop-by-hop options
    0x3c, 0x00, // next header: destination options; length 8
    0x01, 0x04, 0x00, 0x00, 0x00, 0x00, // PadN, 4 bytes
    // destination options
    0x06, 0x00, // next header: TCP; length 8
    0x01, 0x04, 0x00, 0x00, 0x00, 0x00, // PadN, 4 bytes
    // TCP
    0x01, 0xbb, // source port 443
    0xc3, 0x50, // destination port 50000
    0x11, 0x22, 0x33, 0x44, // seq
    0x55, 0x66, 0x77, 0x88, // ack
    0x50, 0x11, // data offset 5; FIN|ACK
    0x02, 0x00, // window 512
    0xb4, 0x81, // checksum
    0x00, 0x00, // urgent pointer
    b'b', b'y', b'e', // payload
];

/// IPv4 UDP "ping", followed by two bytes of link-layer padding past the
/// total length: 10.1.1.1:5353 → 10.1.1.2:53.
pub(crate) const V4_UDP_PADDED: [u8; 34] = [
    // IPv4
    0x45, 0x00, // version 4, IHL 5; TOS 0
    0x00, 0x20, // total length 32
    0x00, 0x01, // identification
    0x00, 0x00, // no flags, fragment offset 0
    0x40, 0x11, // TTL 64, protocol UDP
    0x64, 0xc8, // header checksum
    10, 1, 1, 1, // source
    10, 1, 1, 2, // destination
    // UDP
    0x14, 0xe9, // source port 5353
    0x00, 0x35, // destination port 53
    0x00, 0x0c, // length 12
    0xf5, 0xe2, // checksum
    b'p', b'i', b'n', b'g', // payload
    0xaa, 0xbb, // padding, not part of the packet
];

/// IPv6 UDP "hello": [fe80::1]:1234 → [fe80::2]:5678.
pub(crate) const V6_UDP: [u8; 53] = [
    // IPv6
    0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
    0x00, 0x0d, // payload length 13
    0x11, 0x40, // next header: UDP; hop limit 64
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // source
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // destination
    // UDP
    0x04, 0xd2, // source port 1234
    0x16, 0x2e, // destination port 5678
    0x00, 0x0d, // length 13
    0xa3, 0xfd, // checksum
    b'h', b'e', b'l', b'l', b'o', // payload
];

/// IPv6 non-first fragment of a TCP packet: no TCP header in it.
pub(crate) const V6_LATER_FRAGMENT: [u8; 56] = [
    // IPv6
    0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
    0x00, 0x10, // payload length 16
    0x2c, 0x40, // next header: fragment; hop limit 64
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // source
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // destination
    // fragment header
    0x06, 0x00, // next header: TCP; reserved
    0x05, 0xc8, // offset 185 (1480 bytes), M clear
    0x12, 0x34, 0x56, 0x78, // identification
    // 8 bytes from the middle of the datagram
    1, 2, 3, 4, 5, 6, 7, 8,
];

/// IPv4 ICMP echo request: 10.0.0.1 → 10.0.0.2 (header checksum not
/// needed by the tests that use it, left zero).
pub(crate) const V4_ICMP: [u8; 28] = [
    0x45, 0x00, 0x00, 0x1c, // version 4, IHL 5; TOS 0; total length 28
    0x00, 0x00, 0x00, 0x00, // identification 0; no flags
    0x40, 0x01, 0x00, 0x00, // TTL 64, protocol ICMP; header checksum 0
    10, 0, 0, 1, // source
    10, 0, 0, 2, // destination
    0x08, 0x00, 0xf7, 0xff, // echo request, code 0, checksum
    0x00, 0x00, 0x00, 0x00, // id, sequence
];

/// The Internet checksum the plain way, for checking built packets: the
/// pieces concatenated, padded to even length, summed as 16-bit words in a
/// wide integer, folded, complemented.
pub(crate) fn reference_checksum(pieces: &[&[u8]]) -> u16 {
    let mut data: Vec<u8> = pieces.concat();
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let mut sum: u64 = data.chunks(2).map(|word| u64::from(word[0]) << 8 | u64::from(word[1])).sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}
