//! Putting fragments back together: EXECUTE scripts on the daemon side, LIST
//! answers on the client side. Every consistency rule of SPEC §2 lives here;
//! nothing of a rejected script is ever handed on.

use crate::consts::{MAX_FRAGMENTS, SCRIPT_FRAG_SIZE, SCRIPT_MAX};
use crate::error::{DecodeError, ReassemblyError};
use crate::header::MsgFlags;
use crate::record::{RecordFormat, StateRecord};
use crate::reply::ListFragment;
use crate::request::ExecuteFragment;

/// A complete script, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub state: String,
    /// Chunk name as sent (may be empty).
    pub name: String,
    pub body: Vec<u8>,
    /// The first fragment carried `RELOAD`: the body is a bundle replacing the state's code.
    pub reload: bool,
}

#[derive(Debug)]
struct PendingScript {
    request_seq: u32,
    next_frag: u32,
    total: usize,
    script: Script,
}

/// Per-client EXECUTE reassembly. At most one script is pending at a time.
#[derive(Debug, Default)]
pub struct ExecuteReassembler {
    pending: Option<PendingScript>,
}

impl ExecuteReassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// True while fragments of a script are awaited.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Bytes held for the pending script.
    pub fn pending_bytes(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.script.body.capacity())
    }

    /// Drops whatever is pending.
    pub fn clear(&mut self) {
        self.pending = None;
    }

    /// Feeds one EXECUTE message with its `nlmsg_seq`. Returns the script when
    /// this was its last fragment. On error the pending script is discarded.
    pub fn push(
        &mut self,
        request_seq: u32,
        frag: &ExecuteFragment<'_>,
    ) -> Result<Option<Script>, ReassemblyError> {
        let result = self.push_inner(request_seq, frag);
        if result.is_err() {
            self.pending = None;
        }
        result
    }

    fn push_inner(
        &mut self,
        request_seq: u32,
        frag: &ExecuteFragment<'_>,
    ) -> Result<Option<Script>, ReassemblyError> {
        if frag.bytes.len() > SCRIPT_FRAG_SIZE {
            return Err(ReassemblyError::FragmentTooLarge { len: frag.bytes.len(), max: SCRIPT_FRAG_SIZE });
        }
        if let Some(head) = frag.script {
            // A new INIT replaces any pending script: a client that reopened
            // its socket restarts and the daemon is never told.
            self.pending = None;
            if head.total as usize > SCRIPT_MAX {
                return Err(ReassemblyError::TooLarge(head.total));
            }
            if frag.frag_seq != 0 || frag.frag_offset != 0 {
                return Err(ReassemblyError::BadFirstFragment {
                    seq: frag.frag_seq,
                    offset: frag.frag_offset,
                });
            }
            let total = head.total as usize;
            if frag.bytes.len() > total {
                return Err(ReassemblyError::ExceedsTotal { total });
            }
            let mut body = Vec::with_capacity(if frag.is_last() { frag.bytes.len() } else { total });
            body.extend_from_slice(frag.bytes);
            self.pending = Some(PendingScript {
                request_seq,
                next_frag: 1,
                total,
                script: Script {
                    state: head.state.to_owned(),
                    name: head.script_name.to_owned(),
                    body,
                    reload: frag.flags.contains(MsgFlags::RELOAD),
                },
            });
        } else {
            let p = self.pending.as_mut().ok_or(ReassemblyError::NoPendingScript)?;
            if request_seq != p.request_seq {
                return Err(ReassemblyError::WrongRequestSeq { expected: p.request_seq, got: request_seq });
            }
            if !frag.flags.contains(MsgFlags::MULTI) {
                return Err(ReassemblyError::MissingMulti);
            }
            if frag.frag_seq as usize >= MAX_FRAGMENTS && frag.frag_seq == p.next_frag {
                return Err(ReassemblyError::TooManyFragments);
            }
            if frag.frag_seq != p.next_frag {
                return Err(ReassemblyError::OutOfOrder { expected: p.next_frag, got: frag.frag_seq });
            }
            if frag.frag_offset as usize != p.script.body.len() {
                return Err(ReassemblyError::BadOffset {
                    expected: p.script.body.len(),
                    got: frag.frag_offset,
                });
            }
            if p.script.body.len() + frag.bytes.len() > p.total {
                return Err(ReassemblyError::ExceedsTotal { total: p.total });
            }
            p.script.body.extend_from_slice(frag.bytes);
            p.next_frag += 1;
        }
        if !frag.is_last() {
            return Ok(None);
        }
        let Some(p) = self.pending.take() else {
            return Err(ReassemblyError::NoPendingScript);
        };
        if p.script.body.len() != p.total {
            return Err(ReassemblyError::Incomplete { got: p.script.body.len(), total: p.total });
        }
        Ok(Some(p.script))
    }
}

/// Why a LIST answer could not be put together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("LIST fragment without a list header (missing INIT)")]
    MissingInit,
    #[error("LIST fragment seq {got} out of order, expected {expected}")]
    OutOfOrder { expected: u32, got: u32 },
    #[error("LIST fragment offset {got} is wrong, expected {expected}")]
    BadOffset { expected: usize, got: u32 },
    #[error("LIST fragment of {0} bytes is not a whole number of records")]
    PartialRecord(usize),
    #[error("LIST carries more records than its total of {0}")]
    ExceedsTotal(u32),
    #[error("LIST ended with {got} of {total} records")]
    Incomplete { got: usize, total: u32 },
    #[error("LIST announces {0} states, more than any daemon holds")]
    TooMany(u32),
    #[error("bad state record: {0}")]
    Record(DecodeError),
}

/// Client-side LIST reassembly. `format` is what the request asked for.
#[derive(Debug)]
pub struct ListReassembler {
    format: RecordFormat,
    total: Option<u32>,
    next_frag: u32,
    records: Vec<StateRecord>,
}

/// Upper bound on states a LIST may announce, so a lying peer cannot make a
/// client reserve unbounded memory.
const LIST_TOTAL_LIMIT: u32 = 65_536;

impl ListReassembler {
    pub fn new(format: RecordFormat) -> Self {
        ListReassembler { format, total: None, next_frag: 0, records: Vec::new() }
    }

    /// Feeds one fragment; returns all records once the DONE fragment arrived.
    pub fn push(&mut self, frag: &ListFragment<'_>) -> Result<Option<Vec<StateRecord>>, ListError> {
        let total = match (self.total, frag.total) {
            (None, Some(t)) if frag.flags.contains(MsgFlags::INIT) => {
                if t > LIST_TOTAL_LIMIT {
                    return Err(ListError::TooMany(t));
                }
                self.total = Some(t);
                t
            }
            (Some(t), None) => t,
            (None, _) => return Err(ListError::MissingInit),
            (Some(_), Some(_)) => {
                return Err(ListError::OutOfOrder { expected: self.next_frag, got: frag.frag_seq })
            }
        };
        if frag.frag_seq != self.next_frag {
            return Err(ListError::OutOfOrder { expected: self.next_frag, got: frag.frag_seq });
        }
        if frag.frag_offset as usize != self.records.len() {
            return Err(ListError::BadOffset { expected: self.records.len(), got: frag.frag_offset });
        }
        let size = self.format.record_len();
        if !frag.records.len().is_multiple_of(size) {
            return Err(ListError::PartialRecord(frag.records.len()));
        }
        if self.records.len() + frag.records.len() / size > total as usize {
            return Err(ListError::ExceedsTotal(total));
        }
        for rec in frag.records.chunks_exact(size) {
            self.records.push(StateRecord::parse(rec).map_err(ListError::Record)?);
        }
        self.next_frag += 1;
        if !frag.flags.contains(MsgFlags::DONE) {
            return Ok(None);
        }
        if self.records.len() != total as usize {
            return Err(ListError::Incomplete { got: self.records.len(), total });
        }
        Ok(Some(std::mem::take(&mut self.records)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fragment::execute_messages;
    use crate::header::messages;
    use crate::reply::{encode_list_reply, Reply};
    use crate::request::Request;

    fn frags(msgs: &[Vec<u8>]) -> Vec<(u32, ExecuteFragment<'_>)> {
        msgs.iter()
            .map(|m| {
                let msg = messages(m).next().unwrap().unwrap();
                match Request::decode(&msg).unwrap() {
                    Request::Execute(f) => (msg.header.seq, f),
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    fn feed(
        r: &mut ExecuteReassembler,
        fs: &[(u32, ExecuteFragment<'_>)],
    ) -> Result<Option<Script>, ReassemblyError> {
        let mut last = None;
        for (seq, f) in fs {
            last = r.push(*seq, f)?;
        }
        Ok(last)
    }

    #[test]
    fn reassembles_a_multi_fragment_script() {
        let body: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let msgs = execute_messages(9, 1, "st", "x.lua", &body).unwrap();
        let fs = frags(&msgs);
        let mut r = ExecuteReassembler::new();
        for (seq, f) in &fs[..fs.len() - 1] {
            assert_eq!(r.push(*seq, f), Ok(None));
        }
        let (seq, f) = &fs[fs.len() - 1];
        let s = r.push(*seq, f).unwrap().unwrap();
        assert_eq!((s.state.as_str(), s.name.as_str(), s.body), ("st", "x.lua", body));
        assert!(!r.is_pending());
    }

    #[test]
    fn out_of_order_duplicate_and_wrong_offsets_discard_the_script() {
        let body = vec![b'x'; 3 * SCRIPT_FRAG_SIZE];
        let msgs = execute_messages(9, 1, "st", "", &body).unwrap();
        let fs = frags(&msgs);
        let mut r = ExecuteReassembler::new();
        // skipped fragment 1
        assert_eq!(feed(&mut r, &[fs[0], fs[2]]), Err(ReassemblyError::OutOfOrder { expected: 1, got: 2 }));
        assert!(!r.is_pending());
        // duplicate of fragment 1
        assert_eq!(
            feed(&mut r, &[fs[0], fs[1], fs[1]]),
            Err(ReassemblyError::OutOfOrder { expected: 2, got: 1 })
        );
        // wrong offset
        let mut bad = fs[1];
        bad.1.frag_offset = 5;
        assert_eq!(
            feed(&mut r, &[fs[0], bad]),
            Err(ReassemblyError::BadOffset { expected: SCRIPT_FRAG_SIZE, got: 5 })
        );
        // wrong request seq
        let mut other = fs[1];
        other.0 = 10;
        assert_eq!(
            feed(&mut r, &[fs[0], other]),
            Err(ReassemblyError::WrongRequestSeq { expected: 9, got: 10 })
        );
        // fragment with nothing pending
        assert_eq!(r.push(9, &fs[1].1), Err(ReassemblyError::NoPendingScript));
    }

    #[test]
    fn totals_are_checked() {
        let msgs = execute_messages(1, 1, "st", "", &[b'x'; 100]).unwrap();
        let fs = frags(&msgs);
        let mut r = ExecuteReassembler::new();
        let mut f = fs[0].1;
        let mut head = f.script.unwrap();
        head.total = 200;
        f.script = Some(head);
        assert_eq!(r.push(1, &f), Err(ReassemblyError::Incomplete { got: 100, total: 200 }));
        head.total = 50;
        f.script = Some(head);
        assert_eq!(r.push(1, &f), Err(ReassemblyError::ExceedsTotal { total: 50 }));
        head.total = SCRIPT_MAX as u32 + 1;
        f.script = Some(head);
        assert_eq!(r.push(1, &f), Err(ReassemblyError::TooLarge(SCRIPT_MAX as u32 + 1)));
    }

    #[test]
    fn seventeenth_fragment_is_rejected() {
        // 17 small fragments of a script whose total would still fit.
        let msgs = execute_messages(1, 1, "st", "", &[b'x'; 17 * 10]).unwrap();
        let fs = frags(&msgs);
        let mut r = ExecuteReassembler::new();
        let mut first = fs[0].1;
        first.bytes = &first.bytes[..10];
        first.flags = MsgFlags::REQUEST | MsgFlags::INIT | MsgFlags::MULTI;
        assert_eq!(r.push(1, &first), Ok(None));
        let tail = vec![b'x'; 10];
        for i in 1..=16u32 {
            let f = ExecuteFragment {
                script: None,
                frag_seq: i,
                frag_offset: i * 10,
                bytes: &tail,
                flags: MsgFlags::REQUEST | MsgFlags::MULTI,
            };
            let res = r.push(1, &f);
            if i < 16 {
                assert_eq!(res, Ok(None), "fragment {i}");
            } else {
                assert_eq!(res, Err(ReassemblyError::TooManyFragments));
            }
        }
    }

    #[test]
    fn new_init_replaces_pending() {
        let a = execute_messages(1, 1, "a", "", &vec![b'x'; 5000]).unwrap();
        let b = execute_messages(7, 1, "b", "", b"return 2").unwrap();
        let (fa, fb) = (frags(&a), frags(&b));
        let mut r = ExecuteReassembler::new();
        assert_eq!(r.push(1, &fa[0].1), Ok(None));
        assert_eq!(r.push(7, &fb[0].1).unwrap().unwrap().state, "b");
    }

    #[test]
    fn list_round_trip_and_errors() {
        let recs: Vec<StateRecord> = (0..130)
            .map(|i| StateRecord {
                name: format!("state{i}"),
                max_alloc: 1 << 16,
                cur_alloc: i,
                max_runs: Some(i + 1),
                flags: Some(Default::default()),
            })
            .collect();
        let msgs = encode_list_reply(&recs, RecordFormat::Extended, 1, 0);
        let decoded: Vec<ListFragment<'_>> = msgs
            .iter()
            .map(|m| match Reply::decode(&messages(m).next().unwrap().unwrap()).unwrap() {
                Reply::List(f) => f,
                other => panic!("{other:?}"),
            })
            .collect();
        let mut l = ListReassembler::new(RecordFormat::Extended);
        assert_eq!(l.push(&decoded[0]), Ok(None));
        assert_eq!(l.push(&decoded[1]), Ok(None));
        assert_eq!(l.push(&decoded[2]), Ok(Some(recs)));

        let mut l = ListReassembler::new(RecordFormat::Extended);
        assert_eq!(l.push(&decoded[1]), Err(ListError::MissingInit));
        let mut l = ListReassembler::new(RecordFormat::Extended);
        l.push(&decoded[0]).unwrap();
        assert_eq!(l.push(&decoded[2]), Err(ListError::OutOfOrder { expected: 1, got: 2 }));
        let mut l = ListReassembler::new(RecordFormat::Legacy);
        assert_eq!(l.push(&decoded[0]), Err(ListError::PartialRecord(4000)));
    }
}
