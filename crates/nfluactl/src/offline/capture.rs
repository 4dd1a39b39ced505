//! Packets out of a capture file: pcap (microsecond or nanosecond timestamps) or pcapng (any
//! `if_tsresol`), read with `pcap-file`, each turned into what NFQUEUE would have handed the
//! daemon: the IP packet (link header and link padding gone) and the sender's hardware address.
//!
//! Link types: Ethernet (VLAN tags skipped), raw IP (`LINKTYPE_RAW`, `IPV4`, `IPV6`) and Linux
//! cooked captures (`LINUX_SLL`, `LINUX_SLL2`, what `tcpdump -i any` writes). Anything else in
//! a packet's place (ARP, another link type, a packet cut short by the capture's snap length) is
//! reported as skipped with the reason, since a hook never sees such a packet.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

/// One packet of the capture, as recorded.
#[derive(Debug, Clone)]
pub struct Record {
    /// Time since the Unix epoch.
    pub time: Duration,
    pub link: DataLink,
    pub data: Vec<u8>,
}

/// What a hook would get from a recorded frame, or why it gets nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Ip { ip_packet: &'a [u8], source_mac: Option<[u8; 6]> },
    Skipped(Cow<'static, str>),
}

/// The records of a capture file, in file order.
pub enum Capture {
    Pcap(PcapReader<BufReader<File>>),
    PcapNg {
        reader: PcapNgReader<BufReader<File>>,
        /// Per interface: link type and seconds per timestamp unit, as 10^-n or 2^-n.
        interfaces: Vec<(DataLink, Resolution)>,
        /// Time of the last packet, for simple packet blocks (which carry none).
        last: Duration,
    },
}

/// A pcapng interface's timestamp unit (`if_tsresol`).
#[derive(Debug, Clone, Copy)]
pub enum Resolution {
    Decimal(u8),
    Binary(u8),
}

impl Resolution {
    fn from_option(value: u8) -> Resolution {
        if value & 0x80 == 0 {
            Resolution::Decimal(value)
        } else {
            Resolution::Binary(value & 0x7F)
        }
    }

    /// `units` of this resolution as a duration (saturating at the far future).
    fn duration(self, units: u64) -> Duration {
        match self {
            Resolution::Decimal(n) => {
                let per_second = 10u64.checked_pow(u32::from(n)).unwrap_or(u64::MAX);
                split(units, per_second)
            }
            Resolution::Binary(n) => split(units, 1u64.checked_shl(u32::from(n)).unwrap_or(u64::MAX)),
        }
    }
}

fn split(units: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    let nanos = u128::from(units % per_second) * 1_000_000_000 / u128::from(per_second);
    Duration::new(units / per_second, u32::try_from(nanos).unwrap_or(0))
}

impl Capture {
    pub fn open(path: &Path) -> anyhow::Result<Capture> {
        let mut magic = [0u8; 4];
        File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .with_context(|| format!("reading {}", path.display()))?;
        let file = BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
        // pcapng starts with a section header block, type 0x0A0D0D0A in either byte order.
        if magic == [0x0A, 0x0D, 0x0D, 0x0A] {
            let reader =
                PcapNgReader::new(file).with_context(|| format!("{}: not a pcapng file", path.display()))?;
            return Ok(Capture::PcapNg { reader, interfaces: Vec::new(), last: Duration::ZERO });
        }
        let reader = PcapReader::new(file)
            .with_context(|| format!("{}: not a pcap or pcapng capture", path.display()))?;
        Ok(Capture::Pcap(reader))
    }

    /// The next packet, `None` at the end of the file.
    pub fn next_record(&mut self) -> anyhow::Result<Option<Record>> {
        match self {
            Capture::Pcap(reader) => {
                let link = reader.header().datalink;
                match reader.next_packet() {
                    None => Ok(None),
                    Some(packet) => {
                        let packet = packet.context("reading the capture")?;
                        Ok(Some(Record { time: packet.timestamp, link, data: packet.data.into_owned() }))
                    }
                }
            }
            Capture::PcapNg { reader, interfaces, last } => loop {
                let Some(block) = reader.next_block() else { return Ok(None) };
                match block.context("reading the capture")? {
                    Block::SectionHeader(_) => interfaces.clear(),
                    Block::InterfaceDescription(idb) => {
                        let resolution = idb
                            .options
                            .iter()
                            .find_map(|o| match o {
                                InterfaceDescriptionOption::IfTsResol(v) => Some(Resolution::from_option(*v)),
                                _ => None,
                            })
                            .unwrap_or(Resolution::Decimal(6));
                        interfaces.push((idb.linktype, resolution));
                    }
                    Block::EnhancedPacket(epb) => {
                        let Some(&(link, resolution)) =
                            usize::try_from(epb.interface_id).ok().and_then(|i| interfaces.get(i))
                        else {
                            bail!(
                                "capture: a packet names interface {} which is not described",
                                epb.interface_id
                            );
                        };
                        // pcap-file hands the raw 64-bit timestamp over as nanoseconds; it is
                        // in units of the interface's resolution.
                        let units = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                        *last = resolution.duration(units);
                        return Ok(Some(Record { time: *last, link, data: epb.data.into_owned() }));
                    }
                    Block::SimplePacket(spb) => {
                        let Some(&(link, _)) = interfaces.first() else {
                            bail!("capture: a simple packet block before any interface description");
                        };
                        return Ok(Some(Record { time: *last, link, data: spb.data.into_owned() }));
                    }
                    _ => {}
                }
            },
        }
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;

impl Record {
    /// The IP packet a hook would see, and the sender's hardware address where the link has
    /// one.
    pub fn frame(&self) -> Frame<'_> {
        let data = &self.data[..];
        let be16 = |at: usize| data.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let (ethertype, ip_start, mac) = match self.link {
            DataLink::ETHERNET => {
                let mut at = 12;
                let mut ethertype = be16(at);
                // Up to two VLAN tags (802.1Q, 802.1ad).
                for _ in 0..2 {
                    if matches!(ethertype, Some(ETHERTYPE_VLAN | ETHERTYPE_QINQ)) {
                        at += 4;
                        ethertype = be16(at);
                    }
                }
                (ethertype, at + 2, data.get(6..12))
            }
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
                let version = data.first().map(|b| b >> 4);
                let ethertype = match version {
                    Some(4) => Some(ETHERTYPE_IPV4),
                    Some(6) => Some(ETHERTYPE_IPV6),
                    _ => None,
                };
                (ethertype, 0, None)
            }
            // 16 bytes: packet type, link type, address length, 8 address bytes, protocol.
            DataLink::LINUX_SLL => {
                let len = be16(4).map_or(0, usize::from);
                (be16(14), 16, if len == 6 { data.get(6..12) } else { None })
            }
            // 20 bytes: protocol, reserved, interface, link type, packet type, address length,
            // 8 address bytes.
            DataLink::LINUX_SLL2 => {
                let len = data.get(11).copied().map_or(0, usize::from);
                (be16(0), 20, if len == 6 { data.get(12..18) } else { None })
            }
            other => return Frame::Skipped(format!("link type {other:?} is not read").into()),
        };
        match ethertype {
            Some(ETHERTYPE_IPV4 | ETHERTYPE_IPV6) => {}
            Some(other) => return Frame::Skipped(format!("not IP (ethertype 0x{other:04x})").into()),
            None => return Frame::Skipped("shorter than its link header".into()),
        }
        let Some(ip) = data.get(ip_start..) else {
            return Frame::Skipped("shorter than its link header".into());
        };
        let Some(len) = ip_length(ip) else { return Frame::Skipped("not a whole IP header".into()) };
        let Some(ip_packet) = ip.get(..len) else {
            return Frame::Skipped("cut short by the capture's snap length".into());
        };
        let source_mac = mac.and_then(|m| <[u8; 6]>::try_from(m).ok());
        Frame::Ip { ip_packet, source_mac }
    }
}

/// The length an IP packet's header gives it (link padding after it is not the packet's).
fn ip_length(ip: &[u8]) -> Option<usize> {
    match ip.first()? >> 4 {
        4 => {
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            (total >= 20).then_some(total)
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            // A jumbogram (length 0) runs to the end of what was captured.
            Some(if payload == 0 { ip.len().max(40) } else { 40 + payload })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4() -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2];
        p.extend_from_slice(&[0x0f, 0xa0, 0, 53, 0, 10, 0, 0, b'h', b'i']);
        p
    }

    fn record(link: DataLink, data: Vec<u8>) -> Record {
        Record { time: Duration::ZERO, link, data }
    }

    #[test]
    fn ethernet_frames_lose_header_vlan_tags_and_padding() {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
        frame.extend_from_slice(&udp4());
        frame.extend_from_slice(&[0; 12]); // padding to the minimum frame size
        let r = record(DataLink::ETHERNET, frame);
        assert_eq!(r.frame(), Frame::Ip { ip_packet: &udp4()[..], source_mac: Some([2, 0, 0, 0, 0, 1]) });
    }

    #[test]
    fn raw_and_cooked_links_give_the_ip_packet() {
        let r = record(DataLink::RAW, udp4());
        assert_eq!(r.frame(), Frame::Ip { ip_packet: &udp4()[..], source_mac: None });
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 9, 0, 0];
        sll2.extend_from_slice(&udp4());
        let r = record(DataLink::LINUX_SLL2, sll2);
        assert_eq!(r.frame(), Frame::Ip { ip_packet: &udp4()[..], source_mac: Some([2, 0, 0, 0, 0, 9]) });
    }

    #[test]
    fn other_frames_are_skipped_with_the_reason() {
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(
            record(DataLink::ETHERNET, arp).frame(),
            Frame::Skipped("not IP (ethertype 0x0806)".into())
        );
        let cut = udp4()[..24].to_vec();
        assert_eq!(
            record(DataLink::RAW, cut).frame(),
            Frame::Skipped("cut short by the capture's snap length".into())
        );
    }

    #[test]
    fn pcapng_resolutions() {
        assert_eq!(Resolution::Decimal(6).duration(1_500_000), Duration::from_millis(1500));
        assert_eq!(Resolution::Decimal(9).duration(2_000_000_001), Duration::new(2, 1));
        assert_eq!(Resolution::Binary(10).duration(1536), Duration::from_millis(1500));
    }
}
