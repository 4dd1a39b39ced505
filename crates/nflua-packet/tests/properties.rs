//! Property tests over the public API: any bytes are survived, and for
//! generated valid packets (built here, with a checksum of our own) every
//! reply and replacement is a valid packet with the expected fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nflua_packet::{
    checksum_ok, ethertype, replace_payload, summarize, tcp_payload, tcp_reply, udp_reply, PacketError,
    Summary, IPPROTO_TCP, IPPROTO_UDP,
};
use proptest::prelude::*;

/// The Internet checksum the plain way, independent of the crate's.
fn reference_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 =
        data.chunks(2).map(|word| u64::from(word[0]) << 8 | u64::from(*word.get(1).unwrap_or(&0))).sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

#[derive(Debug, Clone)]
enum IpSpec {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        /// Whole 32-bit words, never parsed.
        options: Vec<u8>,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        /// (next-header value of the extension header, its bytes after the
        /// first two); a fragment header is atomic.
        ext: Vec<(u8, Vec<u8>)>,
    },
}

#[derive(Debug, Clone)]
enum L4Spec {
    Tcp {
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        /// Whole 32-bit words, never parsed.
        options: Vec<u8>,
    },
    Udp,
}

#[derive(Debug, Clone)]
struct Spec {
    ip: IpSpec,
    l4: L4Spec,
    src_port: u16,
    dst_port: u16,
    payload: Vec<u8>,
    /// Link-layer padding after the packet.
    padding: Vec<u8>,
}

impl Spec {
    fn protocol(&self) -> u8 {
        match self.l4 {
            L4Spec::Tcp { .. } => IPPROTO_TCP,
            L4Spec::Udp => IPPROTO_UDP,
        }
    }

    fn src(&self) -> IpAddr {
        match self.ip {
            IpSpec::V4 { src, .. } => Ipv4Addr::from(src).into(),
            IpSpec::V6 { src, .. } => Ipv6Addr::from(src).into(),
        }
    }

    fn dst(&self) -> IpAddr {
        match self.ip {
            IpSpec::V4 { dst, .. } => Ipv4Addr::from(dst).into(),
            IpSpec::V6 { dst, .. } => Ipv6Addr::from(dst).into(),
        }
    }

    /// IP headers, extension headers included.
    fn ip_headers_len(&self) -> usize {
        match &self.ip {
            IpSpec::V4 { options, .. } => 20 + options.len(),
            IpSpec::V6 { ext, .. } => 40 + ext.iter().map(|(_, body)| 2 + body.len()).sum::<usize>(),
        }
    }

    /// A reply's L4 header carries no options.
    fn reply_l4_header_len(&self) -> usize {
        match self.l4 {
            L4Spec::Tcp { .. } => 20,
            L4Spec::Udp => 8,
        }
    }

    fn l4_header_len(&self) -> usize {
        match &self.l4 {
            L4Spec::Tcp { options, .. } => 20 + options.len(),
            L4Spec::Udp => 8,
        }
    }

    /// The packet, then the padding; returns (bytes, packet length).
    fn build(&self) -> (Vec<u8>, usize) {
        let protocol = self.protocol();
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.src_port.to_be_bytes());
        l4.extend_from_slice(&self.dst_port.to_be_bytes());
        let checksum_at = match &self.l4 {
            L4Spec::Tcp { seq, ack, flags, window, options } => {
                l4.extend_from_slice(&seq.to_be_bytes());
                l4.extend_from_slice(&ack.to_be_bytes());
                l4.push((((20 + options.len()) / 4) as u8) << 4);
                l4.push(*flags);
                l4.extend_from_slice(&window.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]);
                l4.extend_from_slice(options);
                16
            }
            L4Spec::Udp => {
                l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
                6
            }
        };
        l4.extend_from_slice(&self.payload);

        let mut pseudo = Vec::new();
        let mut ip = Vec::new();
        match &self.ip {
            IpSpec::V4 { src, dst, options } => {
                pseudo.extend_from_slice(src);
                pseudo.extend_from_slice(dst);
                pseudo.extend_from_slice(&[0, protocol]);
                pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                let header_len = 20 + options.len();
                ip.push(0x40 | (header_len / 4) as u8);
                ip.push(0);
                ip.extend_from_slice(&((header_len + l4.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34, 0x00, 0x00, 0x80, protocol, 0, 0]);
                ip.extend_from_slice(src);
                ip.extend_from_slice(dst);
                ip.extend_from_slice(options);
                let sum = reference_checksum(&ip);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
            }
            IpSpec::V6 { src, dst, ext } => {
                pseudo.extend_from_slice(src);
                pseudo.extend_from_slice(dst);
                pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, protocol]);
                let ext_len: usize = ext.iter().map(|(_, body)| 2 + body.len()).sum();
                ip.extend_from_slice(&[0x6a, 0xbc, 0xde, 0xf0]);
                ip.extend_from_slice(&((ext_len + l4.len()) as u16).to_be_bytes());
                ip.push(ext.first().map_or(protocol, |(kind, _)| *kind));
                ip.push(7);
                ip.extend_from_slice(src);
                ip.extend_from_slice(dst);
                for (i, (kind, body)) in ext.iter().enumerate() {
                    ip.push(ext.get(i + 1).map_or(protocol, |(next, _)| *next));
                    ip.push(if *kind == 44 { 0 } else { ((2 + body.len()) / 8 - 1) as u8 });
                    ip.extend_from_slice(body);
                }
            }
        }
        let sum = match reference_checksum(&[pseudo, l4.clone()].concat()) {
            0 if protocol == IPPROTO_UDP => 0xFFFF,
            sum => sum,
        };
        l4[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
        let mut packet = [ip, l4].concat();
        let len = packet.len();
        packet.extend_from_slice(&self.padding);
        (packet, len)
    }
}

fn words(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<[u8; 4]>(), 0..=max).prop_map(|words| words.concat())
}

fn extension_header() -> impl Strategy<Value = (u8, Vec<u8>)> {
    prop_oneof![
        // hop-by-hop / destination options: 6, 14 or 22 bytes after the first two
        (prop::sample::select(vec![0u8, 60]), 0usize..3).prop_flat_map(|(kind, units)| {
            prop::collection::vec(any::<u8>(), 6 + 8 * units).prop_map(move |body| (kind, body))
        }),
        // routing header, no segments left
        prop::collection::vec(any::<u8>(), 14).prop_map(|mut body| {
            body[1] = 0;
            (43, body)
        }),
        // atomic fragment: offset 0, M clear
        any::<[u8; 4]>().prop_map(|id| (44, [&[0u8, 0][..], &id].concat())),
    ]
}

fn ip_spec() -> impl Strategy<Value = IpSpec> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>(), words(10)).prop_map(|(src, dst, options)| IpSpec::V4 {
            src,
            dst,
            options
        }),
        (any::<[u8; 16]>(), any::<[u8; 16]>(), prop::collection::vec(extension_header(), 0..4))
            .prop_map(|(src, dst, ext)| IpSpec::V6 { src, dst, ext }),
    ]
}

fn l4_spec() -> impl Strategy<Value = L4Spec> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u8>(), any::<u16>(), words(10))
            .prop_map(|(seq, ack, flags, window, options)| L4Spec::Tcp { seq, ack, flags, window, options }),
        Just(L4Spec::Udp),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        ip_spec(),
        l4_spec(),
        any::<u16>(),
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(ip, l4, src_port, dst_port, payload, padding)| Spec {
            ip,
            l4,
            src_port,
            dst_port,
            payload,
            padding,
        })
}

/// Every entry point on `bytes`; none may panic, and whatever is built
/// must be a valid packet.
fn exercise(bytes: &[u8]) {
    let _ = ethertype(bytes);
    let _ = checksum_ok(bytes);
    if let Some(range) = tcp_payload(bytes) {
        assert!(range.start <= range.end && range.end <= bytes.len());
    }
    if let Ok(summary) = summarize(bytes) {
        assert!(summary.l4_payload.start <= summary.l4_payload.end);
        assert!(summary.l4_payload.end <= bytes.len());
    }
    for built in [tcp_reply(bytes, b"reply"), udp_reply(bytes, b"reply"), replace_payload(bytes, b"new")]
        .into_iter()
        .flatten()
    {
        assert!(checksum_ok(&built), "{bytes:02x?} built {built:02x?}");
        assert!(summarize(&built).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_an_ip_version_never_panic(
        version in prop::sample::select(vec![0x45u8, 0x46, 0x4f, 0x60]),
        next in prop::sample::select(vec![0u8, 6, 17, 43, 44, 60]),
        mut bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Some(first) = bytes.first_mut() {
            *first = version;
        }
        if let Some(byte) = bytes.get_mut(if version == 0x60 { 6 } else { 9 }) {
            *byte = next;
        }
        exercise(&bytes);
    }

    #[test]
    fn damaged_valid_packets_never_panic(
        spec in spec(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let (mut bytes, _) = spec.build();
        for (at, value) in damage {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        exercise(&bytes);
    }

    #[test]
    fn valid_packets_read_back(spec in spec()) {
        let (bytes, len) = spec.build();
        prop_assert!(checksum_ok(&bytes));
        let payload_start = spec.ip_headers_len() + spec.l4_header_len();
        let summary = summarize(&bytes).unwrap();
        prop_assert_eq!(summary.protocol, spec.protocol());
        prop_assert_eq!((summary.src, summary.dst), (spec.src(), spec.dst()));
        prop_assert_eq!((summary.src_port, summary.dst_port), (Some(spec.src_port), Some(spec.dst_port)));
        prop_assert_eq!(summary.l4_payload.clone(), payload_start..len);
        let expected_tcp = matches!(spec.l4, L4Spec::Tcp { .. }).then_some(payload_start..len);
        prop_assert_eq!(tcp_payload(&bytes), expected_tcp);
        let expected_ethertype = if summary.version == 4 { 0x0800 } else { 0x86DD };
        prop_assert_eq!(ethertype(&bytes), Some(expected_ethertype));
    }

    #[test]
    fn replies_answer_the_sender(spec in spec(), answer in prop::collection::vec(any::<u8>(), 0..600)) {
        let (bytes, _) = spec.build();
        let (reply, wrong) = match spec.l4 {
            L4Spec::Tcp { .. } => (tcp_reply(&bytes, &answer), udp_reply(&bytes, &answer)),
            L4Spec::Udp => (udp_reply(&bytes, &answer), tcp_reply(&bytes, &answer)),
        };
        prop_assert!(matches!(wrong, Err(PacketError::WrongProtocol(_))));
        let reply = reply.unwrap();
        prop_assert!(checksum_ok(&reply));
        let summary = summarize(&reply).unwrap();
        prop_assert_eq!(summary.protocol, spec.protocol());
        prop_assert_eq!((summary.src, summary.dst), (spec.dst(), spec.src()));
        prop_assert_eq!((summary.src_port, summary.dst_port), (Some(spec.dst_port), Some(spec.src_port)));
        prop_assert_eq!(&reply[summary.l4_payload.clone()], &answer[..]);
        let l4 = if summary.version == 4 {
            prop_assert_eq!(&reply[..2], &[0x45, 0x00]);
            prop_assert_eq!(&reply[6..10], &[0x40, 0x00, 64, spec.protocol()]);
            20
        } else {
            prop_assert_eq!(&reply[..4], &[0x60, 0, 0, 0]);
            prop_assert_eq!(&reply[6..8], &[spec.protocol(), 64]);
            40
        };
        prop_assert_eq!(reply.len(), l4 + spec.reply_l4_header_len() + answer.len());
        if let L4Spec::Tcp { seq, ack, flags, window, .. } = spec.l4 {
            let field = |at: usize| u32::from_be_bytes(reply[l4 + at..l4 + at + 4].try_into().unwrap());
            let consumed = u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
            prop_assert_eq!(field(4), ack);
            prop_assert_eq!(field(8), seq.wrapping_add(spec.payload.len() as u32).wrapping_add(consumed));
            prop_assert_eq!(&reply[l4 + 12..l4 + 16], &[0x50, 0x18, (window >> 8) as u8, window as u8]);
        }
    }

    #[test]
    fn replacement_keeps_headers_and_round_trips(
        spec in spec(),
        new_payload in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let (bytes, len) = spec.build();
        let replaced = replace_payload(&bytes, &new_payload).unwrap();
        prop_assert!(checksum_ok(&replaced));
        let before = summarize(&bytes).unwrap();
        let after = summarize(&replaced).unwrap();
        prop_assert_eq!(after.l4_payload.start, before.l4_payload.start);
        prop_assert_eq!(&replaced[after.l4_payload.clone()], &new_payload[..]);
        prop_assert_eq!(
            Summary { l4_payload: 0..0, ..after },
            Summary { l4_payload: 0..0, ..before }
        );
        // Putting the old payload back gives the packet back, byte for byte.
        let restored = replace_payload(&replaced, &spec.payload).unwrap();
        prop_assert_eq!(&restored[..], &bytes[..len]);
    }
}
