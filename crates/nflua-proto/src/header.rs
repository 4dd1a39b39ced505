//! The 16-byte `nlmsghdr`, message types and flags, and splitting a datagram
//! into messages.
//!
//! ```text
//!  0               4       6       8               12              16
//!  +---------------+-------+-------+---------------+---------------+
//!  | nlmsg_len     | type  | flags | nlmsg_seq     | nlmsg_pid     |  host byte order
//!  +---------------+-------+-------+---------------+---------------+
//! ```

use crate::consts::{nlmsg_align, NLMSG_HDRLEN};
use crate::error::DecodeError;
use crate::wire::{get_u16, get_u32};

/// Message types. The first three are Netlink's own; 16..=20 are the
/// original NFLua commands; numbers from 32 up are this product's additions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MsgType {
    Noop = 1,
    Error = 2,
    Done = 3,
    Create = 16,
    Destroy = 17,
    List = 18,
    Execute = 19,
    Data = 20,
    /// Our addition: bind queues to a state's function.
    HookAdd = 32,
    /// Our addition: unbind the hook holding a queue.
    HookDel = 33,
    /// Our addition: list hooks.
    HookList = 34,
    /// Our addition: statistics of states and hooks, as JSON text.
    Stats = 35,
}

impl MsgType {
    pub fn from_u16(raw: u16) -> Option<MsgType> {
        Some(match raw {
            1 => MsgType::Noop,
            2 => MsgType::Error,
            3 => MsgType::Done,
            16 => MsgType::Create,
            17 => MsgType::Destroy,
            18 => MsgType::List,
            19 => MsgType::Execute,
            20 => MsgType::Data,
            32 => MsgType::HookAdd,
            33 => MsgType::HookDel,
            34 => MsgType::HookList,
            35 => MsgType::Stats,
            _ => return None,
        })
    }

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Name used in logs and error texts.
    pub fn name(self) -> &'static str {
        match self {
            MsgType::Noop => "NOOP",
            MsgType::Error => "ERROR",
            MsgType::Done => "DONE",
            MsgType::Create => "CREATE",
            MsgType::Destroy => "DESTROY",
            MsgType::List => "LIST",
            MsgType::Execute => "EXECUTE",
            MsgType::Data => "DATA",
            MsgType::HookAdd => "HOOK_ADD",
            MsgType::HookDel => "HOOK_DEL",
            MsgType::HookList => "HOOK_LIST",
            MsgType::Stats => "STATS",
        }
    }
}

bitflags::bitflags! {
    /// `nlmsg_flags` as NFLua uses them (they reuse Netlink's low bits with
    /// their own meaning).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MsgFlags: u16 {
        const REQUEST = 0x01;
        const MULTI = 0x02;
        const DONE = 0x04;
        const INIT = 0x08;
        /// Our addition: the requester understands extended state records.
        const EXT = 0x10;
        /// `NLM_F_CAPPED` on NLMSG_ERROR: only the request's header is echoed.
        const CAPPED = 0x100;
        /// `NLM_F_ACK_TLVS` on NLMSG_ERROR: extended-ack attributes follow.
        const ACK_TLVS = 0x200;
        /// Our addition, on an EXECUTE request's first fragment: the body is a bundle of
        /// chunks that replace the state's code (see `bundle`).
        const RELOAD = 0x400;
    }
}

/// An `nlmsghdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Length of the message, header included.
    pub len: u32,
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

impl Header {
    pub const LEN: usize = NLMSG_HDRLEN;

    /// Reads a header from the first 16 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Header, DecodeError> {
        if buf.len() < NLMSG_HDRLEN {
            return Err(DecodeError::Truncated { need: NLMSG_HDRLEN, have: buf.len() });
        }
        Ok(Header {
            len: get_u32(buf, 0),
            ty: get_u16(buf, 4),
            flags: get_u16(buf, 6),
            seq: get_u32(buf, 8),
            pid: get_u32(buf, 12),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_ne_bytes());
        out.extend_from_slice(&self.ty.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&self.pid.to_ne_bytes());
    }

    pub fn msg_type(&self) -> Option<MsgType> {
        MsgType::from_u16(self.ty)
    }

    /// Known flag bits; unknown bits are dropped.
    pub fn msg_flags(&self) -> MsgFlags {
        MsgFlags::from_bits_truncate(self.flags)
    }
}

/// One message of a datagram: its header and the payload that follows it
/// (exactly `len - 16` bytes, padding excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: Header,
    pub payload: &'a [u8],
}

/// Splits a datagram into messages; a datagram may carry several, each
/// starting at an aligned offset.
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages { rest: datagram }
}

/// Iterator returned by [`messages`]. After the first error it stops.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = self.rest;
        let header = match Header::parse(buf) {
            Ok(h) => h,
            Err(e) => {
                self.rest = &[];
                return Some(Err(e));
            }
        };
        let len = header.len as usize;
        if len < NLMSG_HDRLEN {
            self.rest = &[];
            return Some(Err(DecodeError::BadLength { len: header.len }));
        }
        if len > buf.len() {
            self.rest = &[];
            return Some(Err(DecodeError::Truncated { need: len, have: buf.len() }));
        }
        let next = nlmsg_align(len).min(buf.len());
        self.rest = &buf[next..];
        Some(Ok(Message { header, payload: &buf[NLMSG_HDRLEN..len] }))
    }
}

/// Appends a whole message (header, payload, padding to alignment) to `out`.
pub fn emit_message(out: &mut Vec<u8>, ty: u16, flags: MsgFlags, seq: u32, pid: u32, parts: &[&[u8]]) {
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    let len = NLMSG_HDRLEN + payload_len;
    Header { len: len as u32, ty, flags: flags.bits(), seq, pid }.emit(out);
    for p in parts {
        out.extend_from_slice(p);
    }
    out.resize(out.len() + nlmsg_align(len) - len, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(len: u32, ty: u16, flags: u16, seq: u32, pid: u32) -> Vec<u8> {
        let mut v = Vec::new();
        Header { len, ty, flags, seq, pid }.emit(&mut v);
        v
    }

    #[test]
    fn header_layout_is_host_order_16_bytes() {
        let v = raw(20, 16, 0x0009, 7, 0x1234);
        assert_eq!(v.len(), 16);
        assert_eq!(&v[0..4], &20u32.to_ne_bytes()); // nlmsg_len
        assert_eq!(&v[4..6], &16u16.to_ne_bytes()); // nlmsg_type
        assert_eq!(&v[6..8], &9u16.to_ne_bytes()); // nlmsg_flags
        assert_eq!(&v[8..12], &7u32.to_ne_bytes()); // nlmsg_seq
        assert_eq!(&v[12..16], &0x1234u32.to_ne_bytes()); // nlmsg_pid
        assert_eq!(Header::parse(&v).unwrap().pid, 0x1234);
    }

    #[test]
    fn splits_two_messages_with_padding() {
        let mut d = Vec::new();
        emit_message(&mut d, 18, MsgFlags::REQUEST, 1, 5, &[&[1, 2, 3]]);
        assert_eq!(d.len(), 20);
        emit_message(&mut d, 17, MsgFlags::REQUEST, 2, 5, &[]);
        let all: Vec<_> = messages(&d).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].payload, &[1, 2, 3]);
        assert_eq!(all[1].header.seq, 2);
    }

    #[test]
    fn truncated_and_lying_lengths_are_errors() {
        assert!(matches!(messages(&[0u8; 10]).next(), Some(Err(DecodeError::Truncated { .. }))));
        let short = raw(8, 16, 1, 1, 1);
        assert!(matches!(messages(&short).next(), Some(Err(DecodeError::BadLength { len: 8 }))));
        let long = raw(100, 16, 1, 1, 1);
        assert!(matches!(messages(&long).next(), Some(Err(DecodeError::Truncated { need: 100, have: 16 }))));
    }
}
