//! Errors of decoding and reassembly. Each maps to the errno the daemon
//! answers with, so the wire error and the message come from one place.

use crate::consts::{DATA_MAX, MAX_FRAGMENTS, SCRIPT_MAX};

/// Positive errno values used on the wire (Linux numbers; this crate stays
/// free of libc).
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENOBUFS: i32 = 105;
    pub const ENOMEM: i32 = 12;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const EPROTO: i32 = 71;
    pub const EBADMSG: i32 = 74;
    pub const EMSGSIZE: i32 = 90;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ECONNREFUSED: i32 = 111;
}

/// A name field that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name has no terminating NUL in its {field} bytes")]
    NoNul { field: usize },
    #[error("name is empty")]
    Empty,
    #[error("name is not valid UTF-8")]
    NotUtf8,
    #[error("name is {len} bytes long, the maximum is {max}")]
    TooLong { len: usize, max: usize },
    #[error("name contains a NUL byte")]
    InnerNul,
}

/// A message that does not have the shape its type demands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated message: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("invalid message length {len}")]
    BadLength { len: u32 },
    #[error("message of {len} bytes exceeds the maximum of 4096")]
    TooLong { len: usize },
    #[error("unknown message type {0}")]
    UnknownType(u16),
    #[error("{ty} payload must be {expected}, got {got} bytes")]
    BadPayloadSize { ty: &'static str, expected: &'static str, got: usize },
    #[error("invalid flags 0x{flags:x} for {ty}")]
    BadFlags { ty: &'static str, flags: u16 },
    #[error("invalid state name: {0}")]
    StateName(NameError),
    #[error("invalid script name: {0}")]
    ScriptName(NameError),
    #[error("invalid function name: {0}")]
    FunctionName(NameError),
    #[error("invalid {field} {value}")]
    BadField { field: &'static str, value: u32 },
    #[error("unknown state flags 0x{0:x}")]
    UnknownStateFlags(u32),
    #[error("data total {total} does not match the {got} bytes carried")]
    DataTotalMismatch { total: u32, got: usize },
    #[error("data message of {0} bytes exceeds the maximum of {DATA_MAX}")]
    DataTooLarge(usize),
    #[error("{ty} is not a request")]
    NotARequest { ty: &'static str },
    #[error("malformed error message")]
    BadError,
}

impl DecodeError {
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::Truncated { .. } | DecodeError::BadLength { .. } | DecodeError::BadError => {
                errno::EBADMSG
            }
            DecodeError::UnknownType(_) => errno::EOPNOTSUPP,
            DecodeError::BadPayloadSize { .. }
            | DecodeError::TooLong { .. }
            | DecodeError::DataTotalMismatch { .. }
            | DecodeError::DataTooLarge(_) => errno::EMSGSIZE,
            DecodeError::BadFlags { .. } | DecodeError::NotARequest { .. } => errno::EPROTO,
            DecodeError::StateName(_)
            | DecodeError::ScriptName(_)
            | DecodeError::FunctionName(_)
            | DecodeError::BadField { .. }
            | DecodeError::UnknownStateFlags(_) => errno::EINVAL,
        }
    }
}

/// An EXECUTE fragment that does not continue the pending script. The whole
/// pending script is discarded when one of these occurs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    #[error("script of {0} bytes exceeds the maximum of {SCRIPT_MAX}")]
    TooLarge(u32),
    #[error("first fragment must have seq 0 and offset 0, got seq {seq} offset {offset}")]
    BadFirstFragment { seq: u32, offset: u32 },
    #[error("fragment carries {len} bytes, more than the {max} allowed in one fragment")]
    FragmentTooLarge { len: usize, max: usize },
    #[error("fragment without a pending script (missing INIT fragment)")]
    NoPendingScript,
    #[error("fragment seq {got} out of order, expected {expected}")]
    OutOfOrder { expected: u32, got: u32 },
    #[error("fragment offset {got} is wrong, expected {expected}")]
    BadOffset { expected: usize, got: u32 },
    #[error("fragment belongs to request seq {got}, pending request has seq {expected}")]
    WrongRequestSeq { expected: u32, got: u32 },
    #[error("fragments carry more than the announced total of {total} bytes")]
    ExceedsTotal { total: usize },
    #[error("script ended after {got} of {total} bytes")]
    Incomplete { got: usize, total: usize },
    #[error("script needs more than {MAX_FRAGMENTS} fragments")]
    TooManyFragments,
    #[error("follow-up fragment without MULTI flag")]
    MissingMulti,
}

impl ReassemblyError {
    pub fn errno(&self) -> i32 {
        match self {
            ReassemblyError::TooLarge(_)
            | ReassemblyError::FragmentTooLarge { .. }
            | ReassemblyError::ExceedsTotal { .. }
            | ReassemblyError::TooManyFragments => errno::EMSGSIZE,
            _ => errno::EPROTO,
        }
    }
}
