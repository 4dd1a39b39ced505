//! Requests a client sends and the daemon decodes.
//!
//! ```text
//!  CREATE   hdr | state record (72 legacy / 80 extended)
//!  DESTROY  hdr | name[64]
//!  LIST     hdr                                  (flag EXT: answer with extended records)
//!  EXECUTE  hdr | total | name[64] | scriptname[255] | pad | seq | offset | bytes   (INIT)
//!           hdr | seq | offset | bytes                                         (follow-ups)
//!  DATA     hdr | total | name[64] | bytes                  (flags exactly REQUEST|DONE)
//! ```

use crate::consts::{
    DATA_HEADER_LEN, DATA_MAX, DESTROY_LEN, FRAGMENT_LEN, PAYLOAD_MAX, SCRIPT_HEADER_LEN, SCRIPT_NAME_MAX,
    STATE_NAME_MAX,
};
use crate::error::DecodeError;
use crate::header::{emit_message, Message, MsgFlags, MsgType};
use crate::name::{emit_name, read_name, state_name};
use crate::record::{RecordFormat, StateRecord};
use crate::wire::get_u32;

/// The script header of the first EXECUTE fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptHeader<'a> {
    /// Bytes of the whole script.
    pub total: u32,
    pub state: &'a str,
    /// As sent; may be empty (the daemon then uses `=chunk`).
    pub script_name: &'a str,
}

/// One EXECUTE message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecuteFragment<'a> {
    /// Present on the first fragment (flag INIT) only.
    pub script: Option<ScriptHeader<'a>>,
    pub frag_seq: u32,
    /// Byte offset of `bytes` within the script.
    pub frag_offset: u32,
    pub bytes: &'a [u8],
    pub flags: MsgFlags,
}

impl ExecuteFragment<'_> {
    /// The last fragment of its script: DONE, or a first fragment without MULTI.
    pub fn is_last(&self) -> bool {
        self.flags.contains(MsgFlags::DONE)
            || (self.script.is_some() && !self.flags.contains(MsgFlags::MULTI))
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Create(StateRecord),
    Destroy { name: &'a str },
    List { ext: bool },
    Execute(ExecuteFragment<'a>),
    Data { name: &'a str, payload: &'a [u8] },
    HookAdd(crate::hook::HookSpec),
    HookDel { queue: u16 },
    HookList,
    Stats,
}

impl<'a> Request<'a> {
    /// Decodes the request a message carries.
    ///
    /// Netlink's own NOOP/ERROR/DONE give [`DecodeError::NotARequest`]; a
    /// server should drop those without answering, so that two peers never
    /// bounce errors at each other.
    pub fn decode(msg: &Message<'a>) -> Result<Request<'a>, DecodeError> {
        let h = &msg.header;
        let p = msg.payload;
        if h.len as usize > PAYLOAD_MAX {
            return Err(DecodeError::TooLong { len: h.len as usize });
        }
        let ty = MsgType::from_u16(h.ty).ok_or(DecodeError::UnknownType(h.ty))?;
        let flags = h.msg_flags();
        match ty {
            MsgType::Noop | MsgType::Error | MsgType::Done => Err(DecodeError::NotARequest { ty: ty.name() }),
            MsgType::Create => Ok(Request::Create(StateRecord::parse(p).map_err(|e| match e {
                DecodeError::BadPayloadSize { got, .. } => {
                    DecodeError::BadPayloadSize { ty: "CREATE", expected: "72 or 80 bytes", got }
                }
                other => other,
            })?)),
            MsgType::Destroy => {
                if p.len() != DESTROY_LEN {
                    return Err(DecodeError::BadPayloadSize {
                        ty: "DESTROY",
                        expected: "64 bytes",
                        got: p.len(),
                    });
                }
                Ok(Request::Destroy { name: state_name(p).map_err(DecodeError::StateName)? })
            }
            // Old clients send LIST with no payload; anything they add is ignored.
            MsgType::List => Ok(Request::List { ext: flags.contains(MsgFlags::EXT) }),
            MsgType::Execute => decode_execute(p, flags).map(Request::Execute),
            MsgType::HookAdd => Ok(Request::HookAdd(crate::hook::HookSpec::parse(p)?)),
            MsgType::HookDel => Ok(Request::HookDel { queue: crate::hook::parse_hook_del(p)? }),
            MsgType::HookList => Ok(Request::HookList),
            MsgType::Stats => Ok(Request::Stats),
            MsgType::Data => {
                if flags & !MsgFlags::EXT != MsgFlags::REQUEST | MsgFlags::DONE {
                    return Err(DecodeError::BadFlags { ty: "DATA", flags: h.flags });
                }
                let (name, payload) = decode_data(p)?;
                Ok(Request::Data { name, payload })
            }
        }
    }
}

fn decode_execute(p: &[u8], flags: MsgFlags) -> Result<ExecuteFragment<'_>, DecodeError> {
    if flags.contains(MsgFlags::INIT) {
        if p.len() < SCRIPT_HEADER_LEN {
            return Err(DecodeError::BadPayloadSize {
                ty: "EXECUTE",
                expected: "at least 332 bytes (script header)",
                got: p.len(),
            });
        }
        let state = state_name(&p[4..4 + STATE_NAME_MAX]).map_err(DecodeError::StateName)?;
        let name_at = 4 + STATE_NAME_MAX;
        let script_name =
            read_name(&p[name_at..name_at + SCRIPT_NAME_MAX]).map_err(DecodeError::ScriptName)?;
        let frag_at = SCRIPT_HEADER_LEN - FRAGMENT_LEN;
        Ok(ExecuteFragment {
            script: Some(ScriptHeader { total: get_u32(p, 0), state, script_name }),
            frag_seq: get_u32(p, frag_at),
            frag_offset: get_u32(p, frag_at + 4),
            bytes: &p[SCRIPT_HEADER_LEN..],
            flags,
        })
    } else {
        if p.len() < FRAGMENT_LEN {
            return Err(DecodeError::BadPayloadSize {
                ty: "EXECUTE",
                expected: "at least 8 bytes (fragment header)",
                got: p.len(),
            });
        }
        Ok(ExecuteFragment {
            script: None,
            frag_seq: get_u32(p, 0),
            frag_offset: get_u32(p, 4),
            bytes: &p[FRAGMENT_LEN..],
            flags,
        })
    }
}

/// Splits a DATA payload into the state name and the bytes; shared by the
/// daemon (requests) and clients (messages from states).
pub fn decode_data(p: &[u8]) -> Result<(&str, &[u8]), DecodeError> {
    if p.len() < DATA_HEADER_LEN {
        return Err(DecodeError::BadPayloadSize {
            ty: "DATA",
            expected: "at least 68 bytes (data header)",
            got: p.len(),
        });
    }
    let total = get_u32(p, 0);
    let name = state_name(&p[4..DATA_HEADER_LEN]).map_err(DecodeError::StateName)?;
    let bytes = &p[DATA_HEADER_LEN..];
    if bytes.len() > DATA_MAX {
        return Err(DecodeError::DataTooLarge(bytes.len()));
    }
    if total as usize != bytes.len() {
        return Err(DecodeError::DataTotalMismatch { total, got: bytes.len() });
    }
    Ok((name, bytes))
}

/// Appends a CREATE request. The caller has validated the record's name.
pub fn encode_create(out: &mut Vec<u8>, seq: u32, pid: u32, record: &StateRecord, format: RecordFormat) {
    let mut body = Vec::with_capacity(format.record_len());
    record.emit(format, &mut body);
    emit_message(out, MsgType::Create.as_u16(), MsgFlags::REQUEST, seq, pid, &[&body]);
}

/// Appends a DESTROY request.
pub fn encode_destroy(out: &mut Vec<u8>, seq: u32, pid: u32, name: &str) {
    let mut body = Vec::with_capacity(DESTROY_LEN);
    emit_name(&mut body, name, STATE_NAME_MAX);
    emit_message(out, MsgType::Destroy.as_u16(), MsgFlags::REQUEST, seq, pid, &[&body]);
}

/// Appends a LIST request; `ext` asks for extended records.
pub fn encode_list(out: &mut Vec<u8>, seq: u32, pid: u32, ext: bool) {
    let flags = if ext { MsgFlags::REQUEST | MsgFlags::EXT } else { MsgFlags::REQUEST };
    emit_message(out, MsgType::List.as_u16(), flags, seq, pid, &[]);
}

/// Appends a DATA message (either direction: from a client `name` is the
/// target state, from the daemon the sending state). The caller has checked
/// `payload.len() <= DATA_MAX` and the name.
pub fn encode_data(out: &mut Vec<u8>, seq: u32, pid: u32, name: &str, payload: &[u8]) {
    // On the stack: DATA is the per-message path, so no allocation here.
    let mut head = [0u8; DATA_HEADER_LEN];
    head[..4].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
    let name = &name.as_bytes()[..name.len().min(STATE_NAME_MAX - 1)];
    head[4..4 + name.len()].copy_from_slice(name);
    emit_message(
        out,
        MsgType::Data.as_u16(),
        MsgFlags::REQUEST | MsgFlags::DONE,
        seq,
        pid,
        &[&head, payload],
    );
}

/// Appends a STATS request.
pub fn encode_stats(out: &mut Vec<u8>, seq: u32, pid: u32) {
    emit_message(out, MsgType::Stats.as_u16(), MsgFlags::REQUEST, seq, pid, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::messages;
    use crate::record::StateFlags;

    fn one(buf: &[u8]) -> Result<Request<'_>, DecodeError> {
        Request::decode(&messages(buf).next().unwrap().unwrap())
    }

    #[test]
    fn create_legacy_and_extended() {
        let rec = StateRecord {
            name: "s1".into(),
            max_alloc: 65536,
            cur_alloc: 0,
            max_runs: Some(500),
            flags: Some(StateFlags::DEBUG),
        };
        let mut b = Vec::new();
        encode_create(&mut b, 1, 9, &rec, RecordFormat::Extended);
        assert_eq!(b.len(), 16 + 80);
        assert_eq!(one(&b), Ok(Request::Create(rec.clone())));
        let mut b = Vec::new();
        encode_create(&mut b, 1, 9, &rec, RecordFormat::Legacy);
        assert_eq!(b.len(), 16 + 72);
        let Ok(Request::Create(r)) = one(&b) else { panic!("not a create") };
        assert_eq!((r.max_runs, r.flags), (None, None));
    }

    #[test]
    fn create_with_odd_size_is_rejected() {
        let mut b = Vec::new();
        emit_message(&mut b, 16, MsgFlags::REQUEST, 1, 1, &[&[0u8; 76]]);
        assert_eq!(
            one(&b),
            Err(DecodeError::BadPayloadSize { ty: "CREATE", expected: "72 or 80 bytes", got: 76 })
        );
    }

    #[test]
    fn destroy_and_list() {
        let mut b = Vec::new();
        encode_destroy(&mut b, 3, 1, "abc");
        assert_eq!(one(&b), Ok(Request::Destroy { name: "abc" }));
        let mut b = Vec::new();
        encode_list(&mut b, 3, 1, true);
        assert_eq!(one(&b), Ok(Request::List { ext: true }));
        let mut b = Vec::new();
        encode_list(&mut b, 3, 1, false);
        assert_eq!(one(&b), Ok(Request::List { ext: false }));
    }

    #[test]
    fn data_checks_total_and_flags() {
        let mut b = Vec::new();
        encode_data(&mut b, 1, 1, "st", b"hello");
        assert_eq!(one(&b), Ok(Request::Data { name: "st", payload: b"hello" }));
        // total says 6, 5 bytes follow
        b[16..20].copy_from_slice(&6u32.to_ne_bytes());
        assert_eq!(one(&b), Err(DecodeError::DataTotalMismatch { total: 6, got: 5 }));
        b[16..20].copy_from_slice(&5u32.to_ne_bytes());
        b[6..8].copy_from_slice(&1u16.to_ne_bytes()); // REQUEST only
        assert_eq!(one(&b), Err(DecodeError::BadFlags { ty: "DATA", flags: 1 }));
    }

    #[test]
    fn unknown_type_and_oversize() {
        let mut b = Vec::new();
        emit_message(&mut b, 99, MsgFlags::REQUEST, 1, 1, &[]);
        assert_eq!(one(&b), Err(DecodeError::UnknownType(99)));
        let mut b = Vec::new();
        emit_message(&mut b, 20, MsgFlags::REQUEST | MsgFlags::DONE, 1, 1, &[&vec![0u8; 4096]]);
        assert_eq!(one(&b), Err(DecodeError::TooLong { len: 4112 }));
    }

    #[test]
    fn netlink_control_types_are_not_requests() {
        let mut b = Vec::new();
        emit_message(&mut b, 2, MsgFlags::empty(), 1, 1, &[&[0u8; 20]]);
        assert_eq!(one(&b), Err(DecodeError::NotARequest { ty: "ERROR" }));
    }
}
