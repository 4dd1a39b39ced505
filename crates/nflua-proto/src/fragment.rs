//! Splitting a script into EXECUTE messages (the client side of SPEC §2).

use crate::bundle::{check_bundle, encode_bundle, BundleChunk, BundleError};
use crate::consts::{DEFAULT_CHUNK_NAME, SCRIPT_FRAG_SIZE, SCRIPT_MAX, SCRIPT_NAME_MAX, STATE_NAME_MAX};
use crate::error::NameError;
use crate::header::{emit_message, MsgFlags, MsgType};
use crate::name::{check_name, check_state_name, emit_name};
use crate::wire::put_u32;

/// Why a script cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("invalid state name: {0}")]
    StateName(NameError),
    #[error("invalid script name: {0}")]
    ScriptName(NameError),
    #[error("script of {0} bytes exceeds the maximum of {SCRIPT_MAX}")]
    TooLarge(usize),
    #[error("{0}")]
    Bundle(BundleError),
    #[error("the files of a reload take {0} bytes together, more than the maximum of {SCRIPT_MAX}")]
    BundleTooLarge(usize),
}

/// The chunk name a reload request's header carries (its chunks carry their own).
pub const RELOAD_REQUEST_NAME: &str = "=reload";

/// Encodes a reload of `state` with `chunks` (run in order in a new state that replaces it
/// only if all succeed) as EXECUTE messages flagged `RELOAD`, all with request sequence `seq`.
pub fn reload_messages(
    seq: u32,
    pid: u32,
    state: &str,
    chunks: &[BundleChunk<'_>],
) -> Result<Vec<Vec<u8>>, FragmentError> {
    check_bundle(chunks).map_err(FragmentError::Bundle)?;
    let mut body = Vec::new();
    encode_bundle(&mut body, chunks);
    if body.len() > SCRIPT_MAX {
        return Err(FragmentError::BundleTooLarge(body.len()));
    }
    script_messages(seq, pid, state, RELOAD_REQUEST_NAME, &body, MsgFlags::RELOAD)
}

/// Encodes `script` for `state` as EXECUTE messages, one datagram each, all
/// with request sequence `seq`. An empty `script_name` becomes `=chunk`.
pub fn execute_messages(
    seq: u32,
    pid: u32,
    state: &str,
    script_name: &str,
    script: &[u8],
) -> Result<Vec<Vec<u8>>, FragmentError> {
    script_messages(seq, pid, state, script_name, script, MsgFlags::empty())
}

/// EXECUTE messages for `script`, `first_flags` added to the first one's.
fn script_messages(
    seq: u32,
    pid: u32,
    state: &str,
    script_name: &str,
    script: &[u8],
    first_flags: MsgFlags,
) -> Result<Vec<Vec<u8>>, FragmentError> {
    check_state_name(state).map_err(FragmentError::StateName)?;
    let script_name = if script_name.is_empty() { DEFAULT_CHUNK_NAME } else { script_name };
    check_name(script_name, SCRIPT_NAME_MAX).map_err(FragmentError::ScriptName)?;
    if script.len() > SCRIPT_MAX {
        return Err(FragmentError::TooLarge(script.len()));
    }
    let chunks: Vec<&[u8]> =
        if script.is_empty() { vec![&[][..]] } else { script.chunks(SCRIPT_FRAG_SIZE).collect() };
    let last = chunks.len() - 1;
    let mut out = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        let mut head = Vec::new();
        let mut flags = MsgFlags::REQUEST;
        if i == 0 {
            flags |= MsgFlags::INIT | first_flags;
            put_u32(&mut head, script.len() as u32);
            emit_name(&mut head, state, STATE_NAME_MAX);
            emit_name(&mut head, script_name, SCRIPT_NAME_MAX);
            head.push(0); // pad[1]
        }
        if i > 0 || last > 0 {
            flags |= MsgFlags::MULTI;
        }
        if i == last {
            flags |= MsgFlags::DONE;
        }
        put_u32(&mut head, i as u32);
        put_u32(&mut head, (i * SCRIPT_FRAG_SIZE) as u32);
        let mut msg = Vec::with_capacity(16 + head.len() + chunk.len() + 3);
        emit_message(&mut msg, MsgType::Execute.as_u16(), flags, seq, pid, &[&head, chunk]);
        out.push(msg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::PAYLOAD_MAX;
    use crate::header::{messages, Header};

    #[test]
    fn single_fragment_layout() {
        let msgs = execute_messages(4, 77, "st", "", b"return 1").unwrap();
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        let h = Header::parse(m).unwrap();
        assert_eq!(h.len as usize, 16 + 332 + 8);
        assert_eq!(h.msg_flags(), MsgFlags::REQUEST | MsgFlags::INIT | MsgFlags::DONE);
        assert_eq!(&m[16..20], &8u32.to_ne_bytes()); // total
        assert_eq!(&m[20..23], b"st\0"); // name[64]
        assert_eq!(&m[84..91], b"=chunk\0"); // scriptname[255]
        assert_eq!(m[84 + 255], 0); // pad
        assert_eq!(&m[340..348], &[0u8; 8]); // fragment seq 0, offset 0
        assert_eq!(&m[348..356], b"return 1");
    }

    #[test]
    fn largest_script_is_sixteen_full_fragments() {
        let script = vec![b' '; SCRIPT_MAX];
        let msgs = execute_messages(1, 1, "s", "big", &script).unwrap();
        assert_eq!(msgs.len(), 16);
        for (i, m) in msgs.iter().enumerate() {
            assert!(m.len() <= PAYLOAD_MAX, "fragment {i} is {} bytes", m.len());
            let msg = messages(m).next().unwrap().unwrap();
            let f = msg.header.msg_flags();
            assert_eq!(f.contains(MsgFlags::INIT), i == 0);
            assert!(f.contains(MsgFlags::MULTI));
            assert_eq!(f.contains(MsgFlags::DONE), i == 15);
        }
        assert_eq!(msgs[0].len(), PAYLOAD_MAX);
        assert_eq!(
            execute_messages(1, 1, "s", "", &vec![0; SCRIPT_MAX + 1]),
            Err(FragmentError::TooLarge(SCRIPT_MAX + 1))
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(execute_messages(1, 1, "", "", b""), Err(FragmentError::StateName(_))));
        assert!(matches!(
            execute_messages(1, 1, "s", &"x".repeat(255), b""),
            Err(FragmentError::ScriptName(_))
        ));
    }
}
