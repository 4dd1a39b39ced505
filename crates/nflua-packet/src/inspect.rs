//! Reading packets: ethertype, TCP payload, checksums, a summary.

use std::net::IpAddr;
use std::ops::Range;

use crate::error::PacketError;
use crate::ip::{self, Addrs, Fragment};
use crate::l4::{self, L4Header, L4};
use crate::{ipv4, ipv6, tcp, udp};

/// Ethertype of IPv4, for a synthesized Ethernet header.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of IPv6, for a synthesized Ethernet header.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;

/// Ethertype for an IP packet by its version nibble: 0x0800 or 0x86DD;
/// `None` for another version, or fewer bytes than the fixed header (20,
/// resp. 40).
pub fn ethertype(ip_packet: &[u8]) -> Option<u16> {
    match ip_packet.first()? >> 4 {
        4 if ip_packet.len() >= ipv4::MIN_HEADER_LEN => Some(ETHERTYPE_IPV4),
        6 if ip_packet.len() >= ipv6::HEADER_LEN => Some(ETHERTYPE_IPV6),
        _ => None,
    }
}

/// Byte range of the TCP payload inside `ip_packet`, if it is a whole TCP
/// packet whose headers fit (an empty range for a segment without data);
/// `None` otherwise, fragments included.
pub fn tcp_payload(ip_packet: &[u8]) -> Option<Range<usize>> {
    l4::segment(ip_packet, &[L4::Tcp], "TCP").ok().map(|segment| segment.payload_range())
}

/// Whether the IPv4 header checksum (IPv4 only) and the TCP or UDP checksum
/// (TCP and UDP only) are right. False for anything that does not parse and
/// for fragments of TCP or UDP, whose checksum cannot be verified alone.
pub fn checksum_ok(ip_packet: &[u8]) -> bool {
    let Ok(ip) = ip::parse(ip_packet) else {
        return false;
    };
    if matches!(ip.addrs, Addrs::V4 { .. }) && !ipv4::header_ok(ip_packet, ip.l4.start) {
        return false;
    }
    if L4::from_protocol(ip.protocol).is_none() {
        return true;
    }
    match l4::segment(ip_packet, &[L4::Tcp, L4::Udp], "TCP or UDP") {
        Ok(segment) => l4::checksum_ok(&segment),
        Err(_) => false,
    }
}

/// The gist of an IP packet, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// 4 or 6.
    pub version: u8,
    /// Upper-layer protocol: IPv4's protocol field, or the next header that
    /// ends IPv6's extension headers (44 never: a fragment header is
    /// walked through).
    pub protocol: u8,
    /// Source address as in the IP header.
    pub src: IpAddr,
    /// Destination address as in the IP header.
    pub dst: IpAddr,
    /// TCP or UDP ports; `None` for other protocols and non-first fragments.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// For TCP and UDP, the payload after their header (UDP: up to its
    /// length field, or the fragment's end in a first fragment); otherwise
    /// everything after the IP headers.
    pub l4_payload: Range<usize>,
}

/// Reads the IP and L4 headers of `ip_packet`. Fragments are summarized
/// too: a first fragment with its ports, a later one without.
pub fn summarize(ip_packet: &[u8]) -> Result<Summary, PacketError> {
    headers(ip_packet).map(|h| h.summary)
}

/// The header fields of an IP packet and its TCP or UDP header, for filters (`dissect.ip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    pub summary: Summary,
    /// Bytes of the IP headers, IPv4 options and IPv6 extension headers included.
    pub ip_header_len: usize,
    /// The packet's length by its IP header (link-layer padding excluded).
    pub ip_len: usize,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 type of service or IPv6 traffic class.
    pub tos: u8,
    /// IPv4 identification (`None` for IPv6).
    pub id: Option<u16>,
    /// `Some("first")` or `Some("later")` for a fragment.
    pub fragment: Option<&'static str>,
    pub tcp: Option<TcpFields>,
    pub udp: Option<UdpFields>,
}

/// A TCP header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFields {
    pub seq: u32,
    pub ack: u32,
    /// FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ECE 0x40, CWR 0x80.
    pub flags: u8,
    pub window: u16,
    pub header_len: usize,
}

/// A UDP header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFields {
    /// The length field (header and payload).
    pub len: u16,
    pub checksum: u16,
}

/// Reads every header field of `ip_packet` a filter may want.
pub fn headers(ip_packet: &[u8]) -> Result<Headers, PacketError> {
    let ip = ip::parse(ip_packet)?;
    let version = ip.addrs.version();
    let (ttl, tos, id) = match version {
        4 => (
            ip_packet.get(8).copied().unwrap_or_default(),
            ip_packet.get(1).copied().unwrap_or_default(),
            crate::bytes::get_u16(ip_packet, 4),
        ),
        _ => {
            let class = crate::bytes::get_u16(ip_packet, 0).map_or(0, |w| ((w >> 4) & 0xff) as u8);
            (ip_packet.get(7).copied().unwrap_or_default(), class, None)
        }
    };
    let mut headers = Headers {
        summary: Summary {
            version,
            protocol: ip.protocol,
            src: ip.addrs.src(),
            dst: ip.addrs.dst(),
            src_port: None,
            dst_port: None,
            l4_payload: ip.l4.clone(),
        },
        ip_header_len: ip.l4.start,
        ip_len: ip.l4.end,
        ttl,
        tos,
        id,
        fragment: match ip.fragment {
            Fragment::Whole => None,
            Fragment::First => Some("first"),
            Fragment::Later => Some("later"),
        },
        tcp: None,
        udp: None,
    };
    let Some(kind) = L4::from_protocol(ip.protocol) else {
        return Ok(headers);
    };
    let (header, l4_payload) = match ip.fragment {
        Fragment::Later => return Ok(headers),
        Fragment::Whole => {
            let segment = l4::segment(ip_packet, &[kind], "TCP or UDP")?;
            (segment.header, segment.payload_range())
        }
        Fragment::First => {
            let bytes = ip_packet.get(ip.l4.clone()).ok_or(PacketError::Truncated)?;
            let header = match kind {
                L4::Tcp => L4Header::Tcp(tcp::parse(bytes)?),
                L4::Udp => L4Header::Udp(udp::read(bytes)?),
            };
            (header, ip.l4.start + header.header_len()..ip.l4.end)
        }
    };
    let (src_port, dst_port) = match header {
        L4Header::Tcp(t) => {
            headers.tcp = Some(TcpFields {
                seq: t.seq,
                ack: t.ack,
                flags: t.flags,
                window: t.window,
                header_len: t.header_len,
            });
            (t.src_port, t.dst_port)
        }
        L4Header::Udp(u) => {
            headers.udp = Some(UdpFields { len: u.len, checksum: u.checksum });
            (u.src_port, u.dst_port)
        }
    };
    headers.summary.src_port = Some(src_port);
    headers.summary.dst_port = Some(dst_port);
    headers.summary.l4_payload = l4_payload;
    Ok(headers)
}

/// A number for the connection `ip_packet` belongs to, from its protocol, addresses and ports,
/// equal for both directions (`nf.connid` where the kernel attaches no conntrack id).
pub fn connection_id(ip_packet: &[u8]) -> Option<u32> {
    use std::hash::{Hash, Hasher};
    let s = summarize(ip_packet).ok()?;
    let a = (s.src, s.src_port);
    let b = (s.dst, s.dst_port);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (s.protocol, lo, hi).hash(&mut h);
    let v = h.finish();
    Some((v ^ (v >> 32)) as u32)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::fixtures::*;
    use crate::{IPPROTO_TCP, IPPROTO_UDP};

    #[test]
    fn ethertype_by_version_and_length() {
        assert_eq!(ethertype(&V4_TCP_DATA), Some(ETHERTYPE_IPV4));
        assert_eq!(ethertype(&V6_UDP), Some(ETHERTYPE_IPV6));
        assert_eq!(ethertype(&V4_TCP_DATA[..20]), Some(ETHERTYPE_IPV4));
        assert_eq!(ethertype(&V4_TCP_DATA[..19]), None);
        assert_eq!(ethertype(&V6_UDP[..39]), None);
        assert_eq!(ethertype(&[]), None);
        assert_eq!(ethertype(&[0x50; 64]), None);
    }

    #[test]
    fn tcp_payload_ranges() {
        assert_eq!(tcp_payload(&V4_TCP_DATA), Some(40..47));
        assert_eq!(tcp_payload(&V4_TCP_SYN_OPTIONS), Some(48..48));
        assert_eq!(tcp_payload(&V6_TCP_EXT), Some(76..79));
        assert_eq!(&V6_TCP_EXT[76..79], b"bye");
        assert_eq!(tcp_payload(&V4_UDP_PADDED), None);
        assert_eq!(tcp_payload(&V6_LATER_FRAGMENT), None);
        assert_eq!(tcp_payload(&V4_TCP_DATA[..39]), None);
    }

    #[test]
    fn fixtures_pass_checksum_ok() {
        for packet in [&V4_TCP_DATA[..], &V4_TCP_SYN_OPTIONS, &V6_TCP_EXT, &V4_UDP_PADDED, &V6_UDP] {
            assert!(checksum_ok(packet), "{packet:02x?}");
        }
    }

    #[test]
    fn checksum_ok_catches_damage() {
        let mut payload = V4_TCP_DATA;
        payload[46] ^= 0x01;
        assert!(!checksum_ok(&payload), "TCP payload");
        let mut ttl = V4_TCP_DATA;
        ttl[8] -= 1;
        assert!(!checksum_ok(&ttl), "IPv4 header");
        let mut address = V6_UDP;
        address[39] = 0x03;
        assert!(!checksum_ok(&address), "pseudo-header");
        assert!(!checksum_ok(&V6_LATER_FRAGMENT), "unverifiable fragment");
        assert!(!checksum_ok(&V4_TCP_DATA[..46]));
        assert!(!checksum_ok(&[]));
    }

    #[test]
    fn zero_udp_checksum_is_none_over_ipv4_only() {
        let mut v4 = V4_UDP_PADDED;
        v4[26..28].copy_from_slice(&[0, 0]);
        assert!(checksum_ok(&v4));
        let mut v6 = V6_UDP;
        v6[46..48].copy_from_slice(&[0, 0]);
        assert!(!checksum_ok(&v6));
    }

    #[test]
    fn summaries() {
        assert_eq!(
            summarize(&V4_TCP_DATA),
            Ok(Summary {
                version: 4,
                protocol: IPPROTO_TCP,
                src: Ipv4Addr::new(192, 168, 1, 10).into(),
                dst: Ipv4Addr::new(93, 184, 216, 34).into(),
                src_port: Some(51000),
                dst_port: Some(80),
                l4_payload: 40..47,
            })
        );
        assert_eq!(
            summarize(&V6_TCP_EXT),
            Ok(Summary {
                version: 6,
                protocol: IPPROTO_TCP,
                src: "2001:db8::1".parse::<Ipv6Addr>().unwrap().into(),
                dst: "2001:db8::2".parse::<Ipv6Addr>().unwrap().into(),
                src_port: Some(443),
                dst_port: Some(50000),
                l4_payload: 76..79,
            })
        );
        let udp = summarize(&V4_UDP_PADDED).unwrap();
        assert_eq!((udp.protocol, udp.src_port, udp.dst_port), (IPPROTO_UDP, Some(5353), Some(53)));
        assert_eq!(udp.l4_payload, 28..32, "padding is not payload");
        let fragment = summarize(&V6_LATER_FRAGMENT).unwrap();
        assert_eq!((fragment.protocol, fragment.src_port), (IPPROTO_TCP, None));
        assert_eq!(fragment.l4_payload, 48..56);
        let icmp = summarize(&V4_ICMP).unwrap();
        assert_eq!((icmp.protocol, icmp.src_port, icmp.l4_payload), (1, None, 20..28));
        assert_eq!(summarize(&V4_TCP_DATA[..30]), Err(PacketError::Truncated));
        assert_eq!(summarize(&[0x45]), Err(PacketError::Truncated));
        assert_eq!(summarize(&[0x70; 40]), Err(PacketError::NotIp));
    }

    #[test]
    fn header_fields() {
        let h = headers(&V4_TCP_DATA).unwrap();
        assert_eq!((h.ip_header_len, h.ip_len, h.id.is_some(), h.fragment), (20, 47, true, None));
        assert_eq!(h.ttl, V4_TCP_DATA[8]);
        let tcp = h.tcp.unwrap();
        assert_eq!((tcp.header_len, tcp.flags & 0x10 != 0), (20, true));
        assert_eq!(h.udp, None);
        let v6 = headers(&V6_UDP).unwrap();
        assert_eq!((v6.summary.version, v6.id, v6.ttl), (6, None, V6_UDP[7]));
        assert!(v6.udp.is_some());
        assert_eq!(headers(&V6_LATER_FRAGMENT).unwrap().fragment, Some("later"));
    }

    #[test]
    fn first_fragment_summary_has_ports() {
        let mut first = V4_UDP_PADDED;
        first[6] = 0x20; // MF
        first[24..26].copy_from_slice(&[0x05, 0xdc]); // UDP length 1500: rest elsewhere
        let summary = summarize(&first).unwrap();
        assert_eq!((summary.src_port, summary.dst_port), (Some(5353), Some(53)));
        assert_eq!(summary.l4_payload, 28..32);
        assert!(!checksum_ok(&first));
        assert_eq!(tcp_payload(&first), None);
    }
}

#[cfg(test)]
mod connection_id_tests {
    use super::connection_id as flow_id;

    /// IPv4 UDP header pair (no payload) from `src:sport` to `dst:dport`.
    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p
    }

    #[test]
    fn flow_ids_match_both_directions_and_differ_across_flows() {
        let (a, b) = ([192, 0, 2, 1], [192, 0, 2, 2]);
        let there = flow_id(&udp(a, 4000, b, 53)).unwrap();
        assert_eq!(Some(there), flow_id(&udp(b, 53, a, 4000)));
        assert_ne!(Some(there), flow_id(&udp(a, 4001, b, 53)));
        assert_eq!(flow_id(&[0x45]), None);
    }
}
