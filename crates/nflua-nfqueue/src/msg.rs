//! Netlink message framing plus the nfnetlink_queue requests this crate sends. Pure: bytes in,
//! bytes out.
//!
//! Every message is an `nlmsghdr` followed by an `nfgenmsg` and attributes:
//!
//! ```text
//!  0        4        6        8        12       16     17     18       20
//! +--------+--------+--------+--------+--------+------+------+--------+------------
//! | len    | type   | flags  | seq    | port   |family|vers. | res_id | attributes…
//! | u32 ne | u16 ne | u16 ne | u32 ne | u32 ne | u8   | u8   | u16 be |
//! +--------+--------+--------+--------+--------+------+------+--------+------------
//!  nlmsghdr (host byte order)                   nfgenmsg (res_id = queue number)
//! ```

use crate::attr::{self, align4};
use crate::consts::*;

/// One Netlink message, borrowed from the datagram it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NlMsg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub port: u32,
    /// Everything after the 16-byte header, up to the header's length.
    pub payload: &'a [u8],
}

/// Why a message header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MsgError {
    /// The length field is smaller than the header.
    TooShort { offset: usize, len: u32 },
    /// The length field runs past the end of the datagram (truncated or lying).
    PastEnd { offset: usize, len: u32, available: usize },
}

impl std::fmt::Display for MsgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MsgError::TooShort { offset, len } => {
                write!(f, "netlink message at byte {offset} claims {len} bytes, less than its header")
            }
            MsgError::PastEnd { offset, len, available } => {
                write!(f, "netlink message at byte {offset} claims {len} bytes but only {available} remain")
            }
        }
    }
}

/// Walks the messages of one datagram; stops for good after the first error. Trailing bytes
/// too short for a header are ignored.
///
/// nflua-proto has an iterator of its own (`Messages`) over the same `nlmsghdr` framing. This one
/// stays because this crate is a queue client for `NETLINK_NETFILTER` that depends on nothing of
/// NFLua's (not even its wire format crate, which would make every queue user build NFLua's
/// protocol), and because what it hands on differs: the netfilter messages' `nfgenmsg` and
/// attributes, with its errors counted per queue (`MsgError`) rather than answered to a client.
#[derive(Debug, Clone)]
pub(crate) struct MsgIter<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> MsgIter<'a> {
    pub fn new(datagram: &'a [u8]) -> Self {
        MsgIter { rest: datagram, offset: 0 }
    }
}

fn ne_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn ne_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

impl<'a> Iterator for MsgIter<'a> {
    type Item = Result<NlMsg<'a>, MsgError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let rest = self.rest;
        let offset = self.offset;
        let len = ne_u32(rest, 0);
        let total = len as usize;
        if total < NLMSG_HDRLEN {
            self.rest = &[];
            return Some(Err(MsgError::TooShort { offset, len }));
        }
        if total > rest.len() {
            self.rest = &[];
            return Some(Err(MsgError::PastEnd { offset, len, available: rest.len() }));
        }
        let msg = NlMsg {
            kind: ne_u16(rest, 4),
            flags: ne_u16(rest, 6),
            seq: ne_u32(rest, 8),
            port: ne_u32(rest, 12),
            payload: &rest[NLMSG_HDRLEN..total],
        };
        let step = align4(total).min(rest.len());
        self.rest = &rest[step..];
        self.offset += step;
        Some(Ok(msg))
    }
}

/// The error code of an `NLMSG_ERROR` payload (`struct nlmsgerr`): 0 for an ACK, `-errno`
/// otherwise. `None` when the payload is too short to hold it.
pub(crate) fn error_code(payload: &[u8]) -> Option<i32> {
    let bytes = payload.get(..4)?;
    Some(i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Splits an nfnetlink payload into its `nfgenmsg` resource id (the queue number) and the
/// attribute bytes after it.
pub(crate) fn split_nfgenmsg(payload: &[u8]) -> Option<(u16, &[u8])> {
    let header = payload.get(..NFGENMSG_LEN)?;
    let res_id = u16::from_be_bytes([header[2], header[3]]);
    Some((res_id, &payload[NFGENMSG_LEN..]))
}

/// Starts a message: nlmsghdr with the length left at 0, then the nfgenmsg. Returns where the
/// message starts, for [`finish`].
pub(crate) fn begin(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, queue: u16) -> usize {
    begin_family(buf, kind, flags, seq, AF_UNSPEC, queue)
}

/// [`begin`] with the nfgenmsg's address family (ctnetlink reads tuples by it).
pub(crate) fn begin_family(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by finish
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port 0: the kernel fills in ours
    buf.extend_from_slice(&[family, NFNETLINK_V0]);
    buf.extend_from_slice(&res_id.to_be_bytes());
    start
}

/// Writes the message length: what `buf` holds from `start`, plus `extra` bytes the caller
/// sends from elsewhere (a verdict's replacement payload).
pub(crate) fn finish(buf: &mut [u8], start: usize, extra: usize) {
    let len = (buf.len() - start + extra) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// An nfnetlink_acct request about the counter `name` (NUL-terminated on the wire; the caller
/// keeps it under [`NFACCT_NAME_MAX`]).
pub(crate) fn encode_acct(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, name: &str) {
    let start = begin(buf, kind, NLM_F_REQUEST | flags, seq, 0);
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    attr::put(buf, NFACCT_NAME, &bytes);
    finish(buf, start, 0);
}

/// A change of the queue's flags: only the bits in `mask` are touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlagChange {
    pub mask: u32,
    pub values: u32,
}

/// The contents of one `NFQNL_MSG_CONFIG` request. The kernel applies them in this order within
/// one message: command, copy parameters, queue length, flags. Sending bind and parameters
/// together means no packet is ever queued with the default "copy nothing" mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ConfigRequest {
    /// `NFQNL_CFG_CMD_*`.
    pub command: Option<u8>,
    /// Copy whole packets up to this many bytes (`NFQNL_COPY_PACKET`).
    pub copy_range: Option<u32>,
    pub max_len: Option<u32>,
    pub flags: Option<FlagChange>,
}

/// Appends an `NFQNL_MSG_CONFIG` message asking for an ACK.
pub(crate) fn encode_config(buf: &mut Vec<u8>, queue: u16, seq: u32, request: &ConfigRequest) {
    let start = begin(buf, NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, queue);
    if let Some(command) = request.command {
        // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf } — pf unused since 3.8.
        attr::put(buf, NFQA_CFG_CMD, &[command, 0, 0, 0]);
    }
    if let Some(copy_range) = request.copy_range {
        // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode } (packed, 5 bytes).
        let r = copy_range.to_be_bytes();
        attr::put(buf, NFQA_CFG_PARAMS, &[r[0], r[1], r[2], r[3], NFQNL_COPY_PACKET]);
    }
    if let Some(max_len) = request.max_len {
        attr::put_be_u32(buf, NFQA_CFG_QUEUE_MAXLEN, max_len);
    }
    if let Some(FlagChange { mask, values }) = request.flags {
        attr::put_be_u32(buf, NFQA_CFG_MASK, mask);
        attr::put_be_u32(buf, NFQA_CFG_FLAGS, values);
    }
    finish(buf, start, 0);
}

/// Which packets a verdict message decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum VerdictScope {
    /// `NFQNL_MSG_VERDICT`: exactly the packet with this id.
    One,
    /// `NFQNL_MSG_VERDICT_BATCH`: every packet of the queue with an id up to and including this
    /// one that is still waiting for a verdict.
    UpTo,
}

fn put_verdict_attrs(buf: &mut Vec<u8>, id: u32, verdict: u32, mark: Option<u32>) {
    // struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id }
    let v = verdict.to_be_bytes();
    let i = id.to_be_bytes();
    attr::put(buf, NFQA_VERDICT_HDR, &[v[0], v[1], v[2], v[3], i[0], i[1], i[2], i[3]]);
    if let Some(mark) = mark {
        attr::put_be_u32(buf, NFQA_MARK, mark);
    }
}

/// Appends a verdict message (no ACK requested: the kernel reports failures anyway, as
/// `NLMSG_ERROR` on the socket, and ACKs for every verdict would double the traffic).
pub(crate) fn encode_verdict(
    buf: &mut Vec<u8>,
    queue: u16,
    seq: u32,
    scope: VerdictScope,
    id: u32,
    verdict: u32,
    mark: Option<u32>,
) {
    let kind = match scope {
        VerdictScope::One => NFQNL_MSG_VERDICT,
        VerdictScope::UpTo => NFQNL_MSG_VERDICT_BATCH,
    };
    let start = begin(buf, kind, NLM_F_REQUEST, seq, queue);
    put_verdict_attrs(buf, id, verdict, mark);
    finish(buf, start, 0);
}

/// Largest replacement payload: its attribute length field is 16 bits and counts the header.
pub(crate) const MAX_VERDICT_PAYLOAD: usize = u16::MAX as usize - NLA_HDRLEN;

/// Appends the head of an `NFQNL_MSG_VERDICT` carrying a replacement payload: everything up to
/// and including the `NFQA_PAYLOAD` attribute header. The caller sends the payload itself and
/// then the returned number of zero padding bytes right after. `payload_len` must not exceed
/// [`MAX_VERDICT_PAYLOAD`].
pub(crate) fn encode_verdict_with_payload_head(
    buf: &mut Vec<u8>,
    queue: u16,
    seq: u32,
    id: u32,
    verdict: u32,
    mark: Option<u32>,
    payload_len: usize,
) -> usize {
    debug_assert!(payload_len <= MAX_VERDICT_PAYLOAD);
    let start = begin(buf, NFQNL_MSG_VERDICT, NLM_F_REQUEST, seq, queue);
    put_verdict_attrs(buf, id, verdict, mark);
    attr::put_header(buf, NFQA_PAYLOAD, payload_len as u16);
    let padding = align4(payload_len) - payload_len;
    finish(buf, start, payload_len + padding);
    padding
}

#[cfg(test)]
mod tests {
    // The hand-made attribute fixture builder the packet decoder tests use too.
    use super::*;
    use crate::packet::tests::attr;

    /// nlmsghdr + nfgenmsg as the kernel expects them, for fixtures.
    fn header(len: u32, kind: u16, flags: u16, seq: u32, queue: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&len.to_ne_bytes()); // nlmsg_len
        b.extend_from_slice(&kind.to_ne_bytes()); // nlmsg_type
        b.extend_from_slice(&flags.to_ne_bytes()); // nlmsg_flags
        b.extend_from_slice(&seq.to_ne_bytes()); // nlmsg_seq
        b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
        b.extend_from_slice(&[0, 0]); // nfgen_family AF_UNSPEC, version NFNETLINK_V0
        b.extend_from_slice(&queue.to_be_bytes()); // res_id, big endian
        b
    }

    #[test]
    fn message_type_numbers() {
        assert_eq!(NFQNL_MSG_PACKET, 0x300);
        assert_eq!(NFQNL_MSG_VERDICT, 0x301);
        assert_eq!(NFQNL_MSG_CONFIG, 0x302);
        assert_eq!(NFQNL_MSG_VERDICT_BATCH, 0x303);
    }

    #[test]
    fn bind_config_message_bytes() {
        let mut buf = Vec::new();
        let request = ConfigRequest {
            command: Some(NFQNL_CFG_CMD_BIND),
            copy_range: Some(0xFFFF),
            max_len: Some(1024),
            flags: Some(FlagChange { mask: 0b111, values: 0b101 }),
        };
        encode_config(&mut buf, 0x0102, 7, &request);

        let mut expected = header(0, 0x302, NLM_F_REQUEST | NLM_F_ACK, 7, 0x0102);
        expected.extend(attr(1, &[1, 0, 0, 0])); // NFQA_CFG_CMD: BIND, pad, pf 0
        expected.extend(attr(2, &[0, 0, 0xFF, 0xFF, 2])); // NFQA_CFG_PARAMS: be32 range, COPY_PACKET
        expected.extend(attr(3, &1024u32.to_be_bytes())); // NFQA_CFG_QUEUE_MAXLEN
        expected.extend(attr(4, &7u32.to_be_bytes())); // NFQA_CFG_MASK
        expected.extend(attr(5, &5u32.to_be_bytes())); // NFQA_CFG_FLAGS
        let len = expected.len() as u32;
        expected[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(buf, expected);
        assert_eq!(buf[18..20], [0x01, 0x02], "res_id is the queue in network byte order");
    }

    #[test]
    fn batch_verdict_message_bytes() {
        let mut buf = Vec::new();
        encode_verdict(&mut buf, 5, 9, VerdictScope::UpTo, 0x0A0B0C0D, 1, Some(0x10));
        let mut expected = header(0, 0x303, NLM_F_REQUEST, 9, 5);
        expected.extend(attr(2, &[0, 0, 0, 1, 0x0A, 0x0B, 0x0C, 0x0D])); // verdict ACCEPT, id
        expected.extend(attr(3, &[0, 0, 0, 0x10])); // NFQA_MARK
        let len = expected.len() as u32;
        expected[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(buf, expected);
        assert_eq!(len, 16 + 4 + 12 + 8);
    }

    #[test]
    fn single_verdict_without_mark() {
        let mut buf = Vec::new();
        encode_verdict(&mut buf, 5, 9, VerdictScope::One, 3, 0, None);
        let msg = MsgIter::new(&buf).next().unwrap().unwrap();
        assert_eq!(msg.kind, 0x301);
        assert_eq!(msg.payload.len(), 4 + 12);
    }

    #[test]
    fn payload_head_counts_payload_and_padding() {
        let mut buf = Vec::new();
        let padding = encode_verdict_with_payload_head(&mut buf, 1, 2, 3, 1, None, 5);
        assert_eq!(padding, 3);
        // head: 16 nlmsghdr + 4 nfgenmsg + 12 verdict hdr + 4 payload attr header
        assert_eq!(buf.len(), 36);
        assert_eq!(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]), 36 + 5 + 3);
        assert_eq!(&buf[32..36], &[9, 0, 10, 0][..], "NFQA_PAYLOAD len 9 type 10 (little endian)");
    }

    #[test]
    fn iterates_messages_and_their_payloads() {
        let mut buf = Vec::new();
        encode_verdict(&mut buf, 1, 1, VerdictScope::One, 1, 1, None);
        encode_verdict(&mut buf, 1, 2, VerdictScope::UpTo, 2, 1, Some(3));
        let seqs: Vec<u32> = MsgIter::new(&buf).map(|m| m.unwrap().seq).collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn lying_length_is_an_error() {
        let mut buf = header(200, 0x300, 0, 0, 0);
        buf.extend_from_slice(&[0; 8]);
        let got: Vec<_> = MsgIter::new(&buf).collect();
        assert_eq!(got, [Err(MsgError::PastEnd { offset: 0, len: 200, available: 28 })]);
        let tiny = header(3, 0x300, 0, 0, 0);
        let got: Vec<_> = MsgIter::new(&tiny).collect();
        assert_eq!(got, [Err(MsgError::TooShort { offset: 0, len: 3 })]);
    }

    #[test]
    fn error_code_and_nfgenmsg() {
        assert_eq!(error_code(&(-16i32).to_ne_bytes()), Some(-16));
        assert_eq!(error_code(&[0, 0]), None);
        assert_eq!(split_nfgenmsg(&[0, 0, 0x12, 0x34, 9]), Some((0x1234, &[9u8][..])));
        assert_eq!(split_nfgenmsg(&[0, 0, 1]), None);
    }
}
