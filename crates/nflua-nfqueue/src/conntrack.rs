//! [`Conntrack`]: a packet's conntrack entry read, or deleted, over ctnetlink — for kernels whose
//! NFQUEUE cannot attach conntrack attributes to queued packets (built without
//! CONFIG_NETFILTER_NETLINK_GLUE_CT, as ours), and for what those attributes never carry
//! (counters, timeout, TCP state).
//!
//! The entry is found by the packet's addresses, protocol and ports, in either direction (the
//! kernel hashes both tuples). A connection's first packet is not found while it is queued: its
//! entry is confirmed only when the packet leaves the hook. TCP and UDP only.

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use crate::attr::{self, Attr, AttrIter};
use crate::consts::*;
use crate::exchange;
use crate::msg;
use crate::sys::{self, RecvSlots};
use crate::QueueError;

/// An entry's message is a few hundred bytes.
const ANSWER_BYTES: usize = 8192;

/// One conntrack entry, as ctnetlink reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConntrackEntry {
    pub id: u32,
    /// `IPS_*` status bits (1 expected, 2 seen reply, 4 assured, 8 confirmed, ...).
    pub status: u32,
    pub mark: u32,
    /// Seconds left before the entry expires.
    pub timeout: u32,
    /// TCP state number (1 SYN_SENT, 2 SYN_RECV, 3 ESTABLISHED, 4 FIN_WAIT, 5 CLOSE_WAIT,
    /// 6 LAST_ACK, 7 TIME_WAIT, 8 CLOSE); `None` for UDP.
    pub tcp_state: Option<u8>,
    /// Packets and bytes each way; `None` unless accounting is on
    /// (`net.netfilter.nf_conntrack_acct = 1`).
    pub original: Option<(u64, u64)>,
    pub reply: Option<(u64, u64)>,
}

/// What finds an entry: a packet's addresses (both of one family), protocol (TCP or UDP) and
/// ports, in either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

fn check(tuple: &Tuple) -> Result<(), QueueError> {
    if !matches!(tuple.protocol, 6 | 17) {
        return Err(QueueError::Malformed("conntrack: only TCP and UDP connections are looked up".into()));
    }
    if tuple.src.is_ipv4() != tuple.dst.is_ipv4() {
        return Err(QueueError::Malformed("conntrack: addresses of two families".into()));
    }
    Ok(())
}

pub struct Conntrack {
    fd: OwnedFd,
    seq: u32,
    tx: Vec<u8>,
    rx: RecvSlots,
}

impl Conntrack {
    pub fn open() -> Result<Conntrack, QueueError> {
        let fd = sys::netfilter_socket().map_err(|e| QueueError::io("create NETLINK_NETFILTER socket", e))?;
        Ok(Conntrack { fd, seq: 0, tx: Vec::with_capacity(128), rx: RecvSlots::new(1, ANSWER_BYTES) })
    }

    /// The entry of `tuple`'s connection; `None` when there is none (untracked, or not yet
    /// confirmed).
    pub fn lookup(&mut self, tuple: &Tuple) -> Result<Option<ConntrackEntry>, QueueError> {
        check(tuple)?;
        match self.request(IPCTNL_MSG_CT_GET, 0, tuple, "read a conntrack entry") {
            Ok(entry) => Ok(entry),
            Err(QueueError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the entry of `tuple`'s connection; false when there was none.
    pub fn delete(&mut self, tuple: &Tuple) -> Result<bool, QueueError> {
        check(tuple)?;
        match self.request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, tuple, "delete a conntrack entry") {
            Ok(_) => Ok(true),
            Err(QueueError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        tuple: &Tuple,
        context: &'static str,
    ) -> Result<Option<ConntrackEntry>, QueueError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.tx.clear();
        encode(&mut self.tx, kind, NLM_F_REQUEST | flags, seq, tuple);
        exchange::request(self.fd.as_fd(), &mut self.rx, &self.tx, context, |datagram| {
            answer_to(datagram, seq)
        })
    }
}

/// A ctnetlink request for the entry with `tuple` as its original (or reply) tuple.
fn encode(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, tuple: &Tuple) {
    let family = if tuple.src.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u8;
    let start = msg::begin_family(buf, kind, flags, seq, family, 0);
    let mut ip = Vec::new();
    match (tuple.src, tuple.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            attr::put(&mut ip, CTA_IP_V4_SRC, &s.octets());
            attr::put(&mut ip, CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            attr::put(&mut ip, CTA_IP_V6_SRC, &v6(s));
            attr::put(&mut ip, CTA_IP_V6_DST, &v6(d));
        }
    }
    let mut proto = Vec::new();
    attr::put(&mut proto, CTA_PROTO_NUM, &[tuple.protocol]);
    attr::put(&mut proto, CTA_PROTO_SRC_PORT, &tuple.src_port.to_be_bytes());
    attr::put(&mut proto, CTA_PROTO_DST_PORT, &tuple.dst_port.to_be_bytes());
    let mut orig = Vec::new();
    attr::put(&mut orig, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    attr::put(&mut orig, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    attr::put(buf, CTA_TUPLE_ORIG | NLA_F_NESTED, &orig);
    msg::finish(buf, start, 0);
}

/// The answer to request `seq` in one datagram: an entry, an ACK (`None`), or an errno.
fn answer_to(datagram: &[u8], seq: u32) -> Option<Result<Option<ConntrackEntry>, i32>> {
    exchange::answer_to(datagram, seq, |m| {
        if m.kind != IPCTNL_MSG_CT_NEW {
            return Err(libc::EPROTO);
        }
        let (_, attrs) = msg::split_nfgenmsg(m.payload).ok_or(libc::EPROTO)?;
        Ok(decode(attrs))
    })
}

fn decode(attrs: &[u8]) -> ConntrackEntry {
    let mut entry = ConntrackEntry::default();
    let be_u64 = |a: &Attr<'_>| a.payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
    let counters = |a: &Attr<'_>| {
        let mut packets_bytes = (None, None);
        for c in a.nested().filter_map(Result::ok) {
            match c.kind {
                CTA_COUNTERS_PACKETS => packets_bytes.0 = be_u64(&c),
                CTA_COUNTERS_BYTES => packets_bytes.1 = be_u64(&c),
                _ => {}
            }
        }
        match packets_bytes {
            (Some(p), Some(b)) => Some((p, b)),
            _ => None,
        }
    };
    for a in AttrIter::new(attrs).filter_map(Result::ok) {
        match a.kind {
            CTA_ID => entry.id = a.be_u32().unwrap_or_default(),
            CTA_STATUS => entry.status = a.be_u32().unwrap_or_default(),
            CTA_MARK => entry.mark = a.be_u32().unwrap_or_default(),
            CTA_TIMEOUT => entry.timeout = a.be_u32().unwrap_or_default(),
            CTA_COUNTERS_ORIG => entry.original = counters(&a),
            CTA_COUNTERS_REPLY => entry.reply = counters(&a),
            CTA_PROTOINFO => {
                let tcp = a.nested().filter_map(Result::ok).find(|p| p.kind == CTA_PROTOINFO_TCP);
                entry.tcp_state = tcp.and_then(|t| {
                    t.nested()
                        .filter_map(Result::ok)
                        .find(|s| s.kind == CTA_PROTOINFO_TCP_STATE)?
                        .payload
                        .first()
                        .copied()
                });
            }
            _ => {}
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_tuple_nested_and_answers_decode() {
        let tuple = Tuple {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            protocol: 6,
            src_port: 40000,
            dst_port: 80,
        };
        let mut buf = Vec::new();
        encode(&mut buf, IPCTNL_MSG_CT_GET, NLM_F_REQUEST, 9, &tuple);
        assert_eq!(u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize, buf.len());
        assert_eq!(buf[16], libc::AF_INET as u8, "the family is the tuple's");
        let (_, attrs) = msg::split_nfgenmsg(&buf[16..]).unwrap();
        let orig: Vec<_> = AttrIter::new(attrs).filter_map(Result::ok).collect();
        assert_eq!(orig.len(), 1);
        let parts: Vec<_> = orig[0].nested().filter_map(Result::ok).map(|a| a.kind).collect();
        assert_eq!(parts, [CTA_TUPLE_IP, CTA_TUPLE_PROTO]);

        // An answer: id 7, mark 0x30000000, timeout 120, ESTABLISHED, counters.
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
        attr::put_be_u32(&mut body, CTA_ID, 7);
        attr::put_be_u32(&mut body, CTA_MARK, 0x3000_0000);
        attr::put_be_u32(&mut body, CTA_TIMEOUT, 120);
        let mut state = Vec::new();
        attr::put(&mut state, CTA_PROTOINFO_TCP_STATE, &[3]);
        let mut tcp = Vec::new();
        attr::put(&mut tcp, CTA_PROTOINFO_TCP | NLA_F_NESTED, &state);
        attr::put(&mut body, CTA_PROTOINFO | NLA_F_NESTED, &tcp);
        let mut counters = Vec::new();
        attr::put(&mut counters, CTA_COUNTERS_PACKETS, &5u64.to_be_bytes());
        attr::put(&mut counters, CTA_COUNTERS_BYTES, &300u64.to_be_bytes());
        attr::put(&mut body, CTA_COUNTERS_ORIG | NLA_F_NESTED, &counters);
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&IPCTNL_MSG_CT_NEW.to_ne_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&9u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&body);
        let entry = answer_to(&m, 9).unwrap().unwrap().unwrap();
        assert_eq!((entry.id, entry.mark, entry.timeout, entry.tcp_state), (7, 0x3000_0000, 120, Some(3)));
        assert_eq!((entry.original, entry.reply), (Some((5, 300)), None));
        assert_eq!(answer_to(&m, 10), None);
    }

    #[test]
    fn only_tcp_and_udp_of_one_family() {
        let t = Tuple {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            protocol: 1,
            src_port: 0,
            dst_port: 0,
        };
        assert!(check(&t).is_err());
        assert!(check(&Tuple { protocol: 17, ..t }).is_ok());
        assert!(check(&Tuple { protocol: 17, dst: "::1".parse().unwrap(), ..t }).is_err());
    }
}
