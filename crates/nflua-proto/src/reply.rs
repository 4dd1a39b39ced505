//! What the daemon sends back: acks, errors with extended-ack text, LIST
//! fragments, and DATA from states.
//!
//! ```text
//!  ack      hdr(type of request, DONE)
//!  error    hdr(NLMSG_ERROR, CAPPED|ACK_TLVS) | error i32 (negative) | request hdr
//!           | nla_len u16 | nla_type u16 = NLMSGERR_ATTR_MSG | text NUL | pad
//!  list     hdr(LIST, INIT[|MULTI][|DONE]) | total | seq 0 | offset 0 | records
//!           hdr(LIST, MULTI[|DONE])        | seq | offset (in records) | records
//! ```

use crate::consts::{
    nlmsg_align, FRAGMENT_LEN, LIST_FRAG_SIZE, LIST_HEADER_LEN, LIST_NEXT_FRAG_SIZE, NLMSG_HDRLEN,
    PAYLOAD_MAX,
};
use crate::error::DecodeError;
use crate::header::{emit_message, Header, Message, MsgFlags, MsgType};
use crate::record::{RecordFormat, StateRecord};
use crate::request::decode_data;
use crate::wire::{get_i32, get_u16, get_u32, put_u32};

/// `NLMSGERR_ATTR_MSG`.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Error text that fits one page with the headers around it.
const ERROR_TEXT_MAX: usize = PAYLOAD_MAX - NLMSG_HDRLEN - 4 - NLMSG_HDRLEN - 4 - 1;

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply<'a> {
    /// Positive errno.
    pub errno: i32,
    /// The extended-ack message, when the daemon sent one.
    pub message: Option<&'a str>,
    /// Header of the request that failed.
    pub request: Header,
}

/// One LIST reply message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFragment<'a> {
    /// Total number of states; only in the first fragment.
    pub total: Option<u32>,
    pub frag_seq: u32,
    /// Index of the first record of this fragment.
    pub frag_offset: u32,
    /// Raw records, a whole number of them.
    pub records: &'a [u8],
    pub flags: MsgFlags,
}

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// Empty CREATE / DESTROY / EXECUTE with DONE; NLMSG_ERROR with error 0
    /// also decodes to this.
    Ack {
        ty: MsgType,
    },
    Error(ErrorReply<'a>),
    List(ListFragment<'a>),
    Data {
        state: &'a str,
        payload: &'a [u8],
    },
    /// The answer to HOOK_LIST.
    Hooks(Vec<crate::hook::HookSpec>),
    /// A piece of the STATS answer (JSON text); `last` on the final piece.
    Stats {
        chunk: &'a [u8],
        last: bool,
    },
}

impl<'a> Reply<'a> {
    pub fn decode(msg: &Message<'a>) -> Result<Reply<'a>, DecodeError> {
        let h = &msg.header;
        let p = msg.payload;
        let ty = MsgType::from_u16(h.ty).ok_or(DecodeError::UnknownType(h.ty))?;
        let flags = h.msg_flags();
        match ty {
            MsgType::Error => decode_error(p, flags),
            MsgType::Create | MsgType::Destroy | MsgType::Execute | MsgType::HookAdd | MsgType::HookDel => {
                Ok(Reply::Ack { ty })
            }
            MsgType::HookList => crate::hook::parse_hook_list(p).map(Reply::Hooks),
            MsgType::Stats => Ok(Reply::Stats { chunk: p, last: flags.contains(MsgFlags::DONE) }),
            MsgType::List => decode_list(p, flags).map(Reply::List),
            MsgType::Data => {
                let (state, payload) = decode_data(p)?;
                Ok(Reply::Data { state, payload })
            }
            MsgType::Noop | MsgType::Done => Err(DecodeError::UnknownType(h.ty)),
        }
    }
}

fn decode_error(p: &[u8], flags: MsgFlags) -> Result<Reply<'_>, DecodeError> {
    if p.len() < 4 + NLMSG_HDRLEN {
        return Err(DecodeError::BadError);
    }
    let code = get_i32(p, 0);
    let request = Header::parse(&p[4..])?;
    if code == 0 {
        return Ok(Reply::Ack { ty: MsgType::from_u16(request.ty).unwrap_or(MsgType::Error) });
    }
    // Uncapped errors echo the whole request; attributes follow it.
    let echoed = if flags.contains(MsgFlags::CAPPED) { NLMSG_HDRLEN } else { request.len as usize };
    let mut message = None;
    if flags.contains(MsgFlags::ACK_TLVS) {
        let mut at = 4usize.saturating_add(nlmsg_align(echoed));
        while at + 4 <= p.len() {
            let nla_len = get_u16(p, at) as usize;
            let nla_type = get_u16(p, at + 2) & 0x3FFF;
            if nla_len < 4 || at + nla_len > p.len() {
                return Err(DecodeError::BadError);
            }
            if nla_type == NLMSGERR_ATTR_MSG {
                let text = &p[at + 4..at + nla_len];
                let text = text.split(|&b| b == 0).next().unwrap_or_default();
                message = Some(std::str::from_utf8(text).map_err(|_| DecodeError::BadError)?);
            }
            at += nlmsg_align(nla_len);
        }
    }
    Ok(Reply::Error(ErrorReply { errno: code.saturating_neg(), message, request }))
}

fn decode_list(p: &[u8], flags: MsgFlags) -> Result<ListFragment<'_>, DecodeError> {
    let (total, at) = if flags.contains(MsgFlags::INIT) {
        if p.len() < LIST_HEADER_LEN {
            return Err(DecodeError::BadPayloadSize {
                ty: "LIST",
                expected: "at least 12 bytes",
                got: p.len(),
            });
        }
        (Some(get_u32(p, 0)), 4)
    } else {
        if p.len() < FRAGMENT_LEN {
            return Err(DecodeError::BadPayloadSize {
                ty: "LIST",
                expected: "at least 8 bytes",
                got: p.len(),
            });
        }
        (None, 0)
    };
    Ok(ListFragment {
        total,
        frag_seq: get_u32(p, at),
        frag_offset: get_u32(p, at + 4),
        records: &p[at + FRAGMENT_LEN..],
        flags,
    })
}

/// Appends an empty reply of type `ty` with DONE: the success answer to
/// CREATE, DESTROY and EXECUTE.
pub fn encode_ack(out: &mut Vec<u8>, ty: MsgType, seq: u32, pid: u32) {
    emit_message(out, ty.as_u16(), MsgFlags::DONE, seq, pid, &[]);
}

/// Appends an NLMSG_ERROR for `request` with positive `errno` and `text` as
/// the extended-ack message (cut at a character boundary to fit one page).
pub fn encode_error(out: &mut Vec<u8>, errno: i32, request: &Header, text: &str, pid: u32) {
    let mut text = text;
    if text.len() > ERROR_TEXT_MAX {
        let mut end = ERROR_TEXT_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    let mut body = Vec::with_capacity(4 + NLMSG_HDRLEN + 4 + text.len() + 4);
    body.extend_from_slice(&errno.saturating_neg().to_ne_bytes());
    request.emit(&mut body);
    let nla_len = 4 + text.len() + 1;
    body.extend_from_slice(&(nla_len as u16).to_ne_bytes());
    body.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
    body.extend_from_slice(text.as_bytes());
    body.push(0);
    body.resize(body.len() + nlmsg_align(nla_len) - nla_len, 0);
    emit_message(
        out,
        MsgType::Error.as_u16(),
        MsgFlags::CAPPED | MsgFlags::ACK_TLVS,
        request.seq,
        0,
        &[&body],
    );
    // The header's pid is the sender's port; patch it in after the fact so
    // emit_message stays the one place that lays out headers.
    let at = out.len() - nlmsg_align(NLMSG_HDRLEN + body.len());
    out[at + 12..at + 16].copy_from_slice(&pid.to_ne_bytes());
}

/// Text bytes per STATS message (a page with room for the header).
pub const STATS_CHUNK: usize = 4000;

/// Encodes a STATS answer: the JSON text in pieces, MULTI on all but the
/// last, DONE on the last (one empty DONE message for empty text).
pub fn encode_stats_reply(text: &[u8], seq: u32, pid: u32) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = if text.is_empty() { vec![&[][..]] } else { text.chunks(STATS_CHUNK).collect() };
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let flags = if i == last { MsgFlags::DONE } else { MsgFlags::MULTI };
            let mut msg = Vec::with_capacity(NLMSG_HDRLEN + chunk.len() + 3);
            emit_message(&mut msg, MsgType::Stats.as_u16(), flags, seq, pid, &[chunk]);
            msg
        })
        .collect()
}

/// Records per LIST message: as many whole records as the space after the
/// list header (first message) or fragment header (the rest) holds, as the
/// original kernel module did.
pub fn records_per_fragment(format: RecordFormat, first: bool) -> usize {
    let room = if first { LIST_FRAG_SIZE } else { LIST_NEXT_FRAG_SIZE };
    room / format.record_len()
}

/// Encodes a LIST answer as one datagram per fragment.
pub fn encode_list_reply(records: &[StateRecord], format: RecordFormat, seq: u32, pid: u32) -> Vec<Vec<u8>> {
    let first_n = records_per_fragment(format, true);
    let next_n = records_per_fragment(format, false);
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut frag_seq = 0u32;
    loop {
        let first = at == 0;
        let n = (records.len() - at).min(if first { first_n } else { next_n });
        let last = at + n >= records.len();
        let mut body = Vec::with_capacity(LIST_HEADER_LEN + n * format.record_len());
        let mut flags = if first { MsgFlags::INIT } else { MsgFlags::MULTI };
        if first {
            put_u32(&mut body, records.len() as u32);
            if !last {
                flags |= MsgFlags::MULTI;
            }
        }
        if last {
            flags |= MsgFlags::DONE;
        }
        put_u32(&mut body, frag_seq);
        put_u32(&mut body, at as u32);
        for r in &records[at..at + n] {
            r.emit(format, &mut body);
        }
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
        emit_message(&mut msg, MsgType::List.as_u16(), flags, seq, pid, &[&body]);
        out.push(msg);
        at += n;
        frag_seq += 1;
        if last {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::messages;

    fn decode(buf: &[u8]) -> Reply<'_> {
        Reply::decode(&messages(buf).next().unwrap().unwrap()).unwrap()
    }

    #[test]
    fn error_with_text_round_trips() {
        let req = Header { len: 80, ty: 16, flags: 1, seq: 42, pid: 7 };
        let mut b = Vec::new();
        encode_error(&mut b, 17, &req, "state 'x' already exists", 99);
        let h = Header::parse(&b).unwrap();
        assert_eq!((h.ty, h.seq, h.pid), (2, 42, 99));
        assert_eq!(h.flags, 0x300); // CAPPED | ACK_TLVS
        assert_eq!(&b[16..20], &(-17i32).to_ne_bytes()); // nlmsgerr.error
        assert_eq!(
            &b[20..36],
            &{
                let mut v = Vec::new();
                req.emit(&mut v);
                v
            }[..]
        ); // echoed request header
        assert_eq!(&b[38..40], &1u16.to_ne_bytes()); // NLMSGERR_ATTR_MSG
        assert_eq!(b.len() % 4, 0);
        assert_eq!(
            decode(&b),
            Reply::Error(ErrorReply { errno: 17, message: Some("state 'x' already exists"), request: req })
        );
    }

    #[test]
    fn long_error_text_is_cut_to_a_page() {
        let req = Header { len: 16, ty: 19, flags: 1, seq: 1, pid: 1 };
        let mut b = Vec::new();
        encode_error(&mut b, 5, &req, &"é".repeat(5000), 1);
        assert!(b.len() <= PAYLOAD_MAX);
        let Reply::Error(e) = decode(&b) else { panic!() };
        assert!(e.message.unwrap().len() <= ERROR_TEXT_MAX);
    }

    #[test]
    fn ack_decodes() {
        let mut b = Vec::new();
        encode_ack(&mut b, MsgType::Create, 5, 0);
        assert_eq!(b.len(), 16);
        assert_eq!(decode(&b), Reply::Ack { ty: MsgType::Create });
    }

    fn recs(n: usize) -> Vec<StateRecord> {
        (0..n)
            .map(|i| StateRecord {
                name: format!("s{i}"),
                max_alloc: 65536,
                cur_alloc: i as u32,
                max_runs: Some(1),
                flags: Some(Default::default()),
            })
            .collect()
    }

    #[test]
    fn list_fragment_counts() {
        assert_eq!(records_per_fragment(RecordFormat::Legacy, true), 56);
        assert_eq!(records_per_fragment(RecordFormat::Legacy, false), 56);
        assert_eq!(records_per_fragment(RecordFormat::Extended, true), 50);
        assert_eq!(encode_list_reply(&[], RecordFormat::Legacy, 1, 0).len(), 1);
        assert_eq!(encode_list_reply(&recs(56), RecordFormat::Legacy, 1, 0).len(), 1);
        assert_eq!(encode_list_reply(&recs(57), RecordFormat::Legacy, 1, 0).len(), 2);
        assert_eq!(encode_list_reply(&recs(904), RecordFormat::Legacy, 1, 0).len(), 17);
        assert_eq!(encode_list_reply(&recs(904), RecordFormat::Extended, 1, 0).len(), 19);
        for m in encode_list_reply(&recs(904), RecordFormat::Extended, 1, 0) {
            assert!(m.len() <= PAYLOAD_MAX);
        }
    }

    #[test]
    fn empty_list_is_one_done_message() {
        let msgs = encode_list_reply(&[], RecordFormat::Legacy, 3, 0);
        let Reply::List(f) = decode(&msgs[0]) else { panic!() };
        assert_eq!(f.total, Some(0));
        assert_eq!(f.flags, MsgFlags::INIT | MsgFlags::DONE);
        assert!(f.records.is_empty());
    }

    #[test]
    fn list_flags_and_offsets() {
        let msgs = encode_list_reply(&recs(120), RecordFormat::Extended, 3, 0);
        assert_eq!(msgs.len(), 3);
        let frags: Vec<_> = msgs
            .iter()
            .map(|m| match decode(m) {
                Reply::List(f) => (f.total, f.frag_seq, f.frag_offset, f.records.len() / 80, f.flags),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(frags[0], (Some(120), 0, 0, 50, MsgFlags::INIT | MsgFlags::MULTI));
        assert_eq!(frags[1], (None, 1, 50, 50, MsgFlags::MULTI));
        assert_eq!(frags[2], (None, 2, 100, 20, MsgFlags::MULTI | MsgFlags::DONE));
    }

    #[test]
    fn stats_text_round_trips_in_pieces() {
        let text: Vec<u8> = (0..9000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let msgs = encode_stats_reply(&text, 4, 0);
        assert_eq!(msgs.len(), 3);
        let mut back = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            assert!(m.len() <= PAYLOAD_MAX);
            match Reply::decode(&messages(m).next().unwrap().unwrap()).unwrap() {
                Reply::Stats { chunk, last } => {
                    assert_eq!(last, i == 2);
                    back.extend_from_slice(chunk);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(back, text);
        assert_eq!(encode_stats_reply(b"", 1, 0).len(), 1);
    }
}
