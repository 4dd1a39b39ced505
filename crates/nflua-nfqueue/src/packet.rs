//! A queued packet as the kernel describes it in an `NFQNL_MSG_PACKET`, read in place.
//!
//! ```text
//! nfgenmsg (4) | NFQA_PACKET_HDR { be32 packet_id; be16 hw_protocol; u8 hook } (packed, 7)
//!              | NFQA_MARK be32 | NFQA_IFINDEX_INDEV be32 | NFQA_IFINDEX_OUTDEV be32
//!              | NFQA_HWADDR { be16 hw_addrlen; u16 pad; u8 hw_addr[8] }
//!              | NFQA_CT (nested: … CTA_ID be32 …) | NFQA_PAYLOAD (the IP packet) | others
//! ```
//!
//! Only `NFQA_PACKET_HDR` is mandatory; attributes this crate does not use are skipped.

use crate::attr::{AttrError, AttrIter};
use crate::consts::*;
use crate::msg::split_nfgenmsg;

/// One queued packet, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub id: u32,
    /// Ethertype of the L3 protocol (NFQA_PACKET_HDR hw_protocol).
    pub hw_protocol: u16,
    pub hook: u8,
    /// Current skb mark (0 when absent).
    pub mark: u32,
    /// The IP packet (up to copy_range bytes).
    pub payload: &'a [u8],
    /// Source hardware address when the kernel knows it.
    pub hw_addr: Option<&'a [u8]>,
    /// Conntrack id (CTA_ID) when conntrack info was requested and the packet is tracked.
    pub conntrack_id: Option<u32>,
    pub indev: Option<u32>,
    pub outdev: Option<u32>,
    /// The L4 checksum is not filled in yet (`NFQA_SKB_CSUMNOTREADY`: a packet from a local
    /// stack whose checksum is left to offload), so it cannot be checked.
    pub csum_not_ready: bool,
}

/// Why a packet message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketError {
    /// Shorter than the 4-byte nfgenmsg.
    NoNfgenmsg,
    /// No NFQA_PACKET_HDR, or one shorter than 7 bytes.
    NoPacketHeader,
    /// An attribute (possibly nested in NFQA_CT) has a bad length.
    Attr(AttrError),
}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PacketError::NoNfgenmsg => f.write_str("packet message shorter than its nfgenmsg"),
            PacketError::NoPacketHeader => f.write_str("packet message without a valid NFQA_PACKET_HDR"),
            PacketError::Attr(e) => write!(f, "packet message attribute: {e:?}"),
        }
    }
}

/// Reads `packet_id`, `hw_protocol` and `hook` from an NFQA_PACKET_HDR payload.
fn packet_header(payload: &[u8]) -> Option<(u32, u16, u8)> {
    let h = payload.get(..7)?;
    Some((u32::from_be_bytes([h[0], h[1], h[2], h[3]]), u16::from_be_bytes([h[4], h[5]]), h[6]))
}

/// Reads the address from an NFQA_HWADDR payload, at most the 8 bytes the struct holds.
fn hw_addr(payload: &[u8]) -> Option<&[u8]> {
    let len = usize::from(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
    let addr = payload.get(4..)?;
    Some(&addr[..len.min(8).min(addr.len())])
}

impl<'a> Packet<'a> {
    /// Reads a packet from the payload of an `NFQNL_MSG_PACKET` (what follows the nlmsghdr).
    /// Returns the queue number from the nfgenmsg too.
    pub(crate) fn decode(payload: &'a [u8]) -> Result<(u16, Packet<'a>), PacketError> {
        let (queue, attrs) = split_nfgenmsg(payload).ok_or(PacketError::NoNfgenmsg)?;
        let mut header = None;
        let mut packet = Packet {
            id: 0,
            hw_protocol: 0,
            hook: 0,
            mark: 0,
            payload: &[],
            hw_addr: None,
            conntrack_id: None,
            indev: None,
            outdev: None,
            csum_not_ready: false,
        };
        for attr in AttrIter::new(attrs) {
            let attr = attr.map_err(PacketError::Attr)?;
            match attr.kind {
                NFQA_PACKET_HDR => header = packet_header(attr.payload),
                NFQA_MARK => packet.mark = attr.be_u32().unwrap_or(0),
                NFQA_IFINDEX_INDEV => packet.indev = attr.be_u32(),
                NFQA_IFINDEX_OUTDEV => packet.outdev = attr.be_u32(),
                NFQA_HWADDR => packet.hw_addr = hw_addr(attr.payload),
                NFQA_PAYLOAD => packet.payload = attr.payload,
                NFQA_SKB_INFO => {
                    packet.csum_not_ready =
                        attr.be_u32().is_some_and(|info| info & NFQA_SKB_CSUMNOTREADY != 0)
                }
                NFQA_CT => {
                    for inner in attr.nested() {
                        let inner = inner.map_err(PacketError::Attr)?;
                        if inner.kind == CTA_ID {
                            packet.conntrack_id = inner.be_u32();
                        }
                    }
                }
                _ => {}
            }
        }
        let (id, hw_protocol, hook) = header.ok_or(PacketError::NoPacketHeader)?;
        packet.id = id;
        packet.hw_protocol = hw_protocol;
        packet.hook = hook;
        Ok((queue, packet))
    }
}

/// Finds the packet id in a packet message that cannot be decoded whole (cut short by a too
/// small receive buffer, or damaged after the header), so the packet can still be given a
/// verdict. The kernel puts NFQA_PACKET_HDR first, so it survives truncation.
pub(crate) fn salvage_id(payload: &[u8]) -> Option<(u16, u32)> {
    let (queue, attrs) = split_nfgenmsg(payload)?;
    AttrIter::new(attrs)
        .map_while(Result::ok)
        .find(|a| a.kind == NFQA_PACKET_HDR)
        .and_then(|a| packet_header(a.payload))
        .map(|(id, _, _)| (queue, id))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((payload.len() + 4) as u16).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(payload);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    /// The payload of a packet message as the 6.x kernel lays it out, queue 258, id 0x01020304.
    pub(crate) fn kernel_packet(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 0x01, 0x02]; // nfgenmsg: AF_UNSPEC, V0, res_id 258 (be)
        b.extend(attr(1, &[1, 2, 3, 4, 0x08, 0x00, 1])); // PACKET_HDR: id, ETH_P_IP, hook INPUT
        b.extend(attr(3, &0x2000_0000u32.to_be_bytes())); // MARK
        b.extend(attr(5, &7u32.to_be_bytes())); // IFINDEX_INDEV 7
        let mut hw = vec![0, 6, 0, 0]; // HWADDR: hw_addrlen 6 (be), pad
        hw.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0, 0]); // addr[8]
        b.extend(attr(9, &hw));
        let mut ct = attr(3, &0x188u32.to_be_bytes()); // CTA_STATUS
        ct.extend(attr(12, &0xCAFE_F00Du32.to_be_bytes())); // CTA_ID
        b.extend(attr(11 | NLA_F_NESTED, &ct)); // NFQA_CT, nested flag set as the kernel does
        b.extend(attr(12, &[2])); // CT_INFO (ignored)
        b.extend(attr(10, payload)); // PAYLOAD
        b
    }

    #[test]
    fn decodes_every_field_of_a_kernel_packet() {
        let bytes = kernel_packet(&[0x45, 0, 0, 20]);
        let (queue, p) = Packet::decode(&bytes).unwrap();
        assert_eq!(queue, 258);
        assert_eq!(p.id, 0x0102_0304);
        assert_eq!(p.hw_protocol, 0x0800);
        assert_eq!(p.hook, 1);
        assert_eq!(p.mark, 0x2000_0000);
        assert_eq!(p.indev, Some(7));
        assert_eq!(p.outdev, None);
        assert_eq!(p.hw_addr, Some(&[0x02, 0, 0, 0, 0, 0x01][..]));
        assert_eq!(p.conntrack_id, Some(0xCAFE_F00D));
        assert_eq!(p.payload, &[0x45, 0, 0, 20]);
    }

    #[test]
    fn minimal_packet_has_defaults() {
        let mut b = vec![0, 0, 0, 0];
        b.extend(attr(1, &[0, 0, 0, 9, 0x86, 0xDD, 3]));
        let (_, p) = Packet::decode(&b).unwrap();
        assert_eq!((p.id, p.hw_protocol, p.hook, p.mark), (9, 0x86DD, 3, 0));
        assert!(p.payload.is_empty() && p.hw_addr.is_none() && p.conntrack_id.is_none());
    }

    #[test]
    fn hw_addr_length_is_clamped_to_the_struct() {
        let mut hw = vec![0, 40, 0, 0];
        hw.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(hw_addr(&hw), Some(&[1, 2, 3, 4, 5, 6, 7, 8][..]));
        assert_eq!(hw_addr(&[0]), None);
    }

    #[test]
    fn missing_or_short_header_is_an_error() {
        let mut b = vec![0, 0, 0, 0];
        b.extend(attr(10, &[1, 2, 3]));
        assert_eq!(Packet::decode(&b), Err(PacketError::NoPacketHeader));
        let mut b = vec![0, 0, 0, 0];
        b.extend(attr(1, &[0, 0, 0, 9, 0x08]));
        assert_eq!(Packet::decode(&b), Err(PacketError::NoPacketHeader));
        assert_eq!(Packet::decode(&[0, 0]), Err(PacketError::NoNfgenmsg));
    }

    #[test]
    fn salvages_the_id_of_a_truncated_packet() {
        let bytes = kernel_packet(&[0x45; 100]);
        let cut = &bytes[..bytes.len() - 50];
        assert!(Packet::decode(cut).is_err());
        assert_eq!(salvage_id(cut), Some((258, 0x0102_0304)));
        assert_eq!(salvage_id(&bytes[..10]), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Packet::decode(&bytes);
            let _ = salvage_id(&bytes);
        }

        #[test]
        fn decode_of_mutated_kernel_packet_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = kernel_packet(&payload);
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            let cut = cut % (bytes.len() + 1);
            let _ = Packet::decode(&bytes[..cut]);
            let _ = salvage_id(&bytes[..cut]);
        }
    }
}
