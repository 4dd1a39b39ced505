//! [`Accounting`]: named kernel packet counters (`nfnetlink_acct`, the objects iptables' `-m
//! nfacct --nfacct-name NAME` counts into), made and read over their own `NETLINK_NETFILTER`
//! socket.
//!
//! nfluad uses one per hook to count the packets that reach the hook's NFQUEUE rule: a
//! fail-open queue that is full, or a `--queue-bypass` rule with nobody bound, accepts packets
//! without telling anyone, and this counter is the only kernel figure that sees them. Counters
//! live in the network namespace, not in the process, so they keep counting while nfluad is
//! down; reads take and zero the count in one atomic exchange, so nothing is counted twice or
//! lost between reads.

use std::os::fd::{AsFd, OwnedFd};

use crate::attr::AttrIter;
use crate::consts::*;
use crate::exchange;
use crate::msg;
use crate::sys::{self, RecvSlots};
use crate::QueueError;

/// Receive buffer for one answer: a counter's message is under 100 bytes.
const ANSWER_BYTES: usize = 8192;

pub struct Accounting {
    fd: OwnedFd,
    seq: u32,
    tx: Vec<u8>,
    rx: RecvSlots,
}

/// Why a counter name is refused before anything is sent.
fn check_name(name: &str) -> Result<(), QueueError> {
    if name.is_empty() || name.len() >= NFACCT_NAME_MAX || name.contains('\0') {
        return Err(QueueError::Malformed(format!("accounting name {name:?}: 1 to 31 bytes, no NUL")));
    }
    Ok(())
}

impl Accounting {
    pub fn open() -> Result<Accounting, QueueError> {
        let fd = sys::netfilter_socket().map_err(|e| QueueError::io("create NETLINK_NETFILTER socket", e))?;
        Ok(Accounting { fd, seq: 0, tx: Vec::with_capacity(64), rx: RecvSlots::new(1, ANSWER_BYTES) })
    }

    /// Makes the counter `name` unless it exists (then it is left as it is, count included).
    pub fn ensure(&mut self, name: &str) -> Result<(), QueueError> {
        check_name(name)?;
        match self.request(NFNL_MSG_ACCT_NEW, NLM_F_CREATE | NLM_F_ACK, name, "create an accounting object") {
            Ok(_) => Ok(()),
            // The kernel answers EBUSY for a name that exists and was not asked to be replaced.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The packets counted since the last take, zeroing the counter in the same step.
    pub fn take(&mut self, name: &str) -> Result<u64, QueueError> {
        check_name(name)?;
        self.request(NFNL_MSG_ACCT_GET_CTRZERO, 0, name, "read an accounting object")?
            .ok_or_else(|| QueueError::Malformed("accounting answer without a packet count".into()))
    }

    /// Sends one request and reads until its answer: `Ok(Some(packets))` for a counter's
    /// message, `Ok(None)` for an ACK, the errno of an error reply.
    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        name: &str,
        context: &'static str,
    ) -> Result<Option<u64>, QueueError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.tx.clear();
        msg::encode_acct(&mut self.tx, kind, flags, seq, name);
        exchange::request(self.fd.as_fd(), &mut self.rx, &self.tx, context, |datagram| {
            answer_to(datagram, seq)
        })
    }
}

/// The answer to request `seq` in one datagram, if it holds one: a packet count, an ACK (`None`)
/// or an errno.
fn answer_to(datagram: &[u8], seq: u32) -> Option<Result<Option<u64>, i32>> {
    exchange::answer_to(datagram, seq, |m| {
        let (_, attrs) = msg::split_nfgenmsg(m.payload).ok_or(libc::EPROTO)?;
        let packets = AttrIter::new(attrs).filter_map(Result::ok).find(|a| a.kind == NFACCT_PKTS);
        let bytes: Option<[u8; 8]> = packets.and_then(|a| a.payload.get(..8)?.try_into().ok());
        bytes.map(u64::from_be_bytes).ok_or(libc::EPROTO)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn answers_are_matched_by_sequence_and_decoded() {
        let mut body = vec![0, 0, 0, 0]; // nfgenmsg
        body.extend_from_slice(&12u16.to_ne_bytes());
        body.extend_from_slice(&NFACCT_PKTS.to_ne_bytes());
        body.extend_from_slice(&1234u64.to_be_bytes());
        let counter = message(NFNL_MSG_ACCT_NEW, 5, &body);
        assert_eq!(answer_to(&counter, 5), Some(Ok(Some(1234))));
        assert_eq!(answer_to(&counter, 6), None);
        let refused = message(NLMSG_ERROR, 6, &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(answer_to(&refused, 6), Some(Err(libc::ENOENT)));
        let ack = message(NLMSG_ERROR, 7, &0i32.to_ne_bytes());
        assert_eq!(answer_to(&ack, 7), Some(Ok(None)));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("nflua-q0").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(32)).is_err());
    }
}
