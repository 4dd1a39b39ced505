//! Hook messages, this product's addition (types 32..=34): bind NFQUEUE
//! queues to a state's function.
//!
//! ```text
//!  hook record (156 bytes)
//!   0 queue_first u32 | 4 queue_last u32 | 8 mode u32 (0 match, 1 target)
//!  12 flags u32 (bit 0: tcp-payload, bit 1: overflow drop, bit 2: stream,
//!                bits 8-31: stream depth in bytes, 0 = the default)
//!  16 on_error u32 (verdict, or 0xFFFFFFFF = continue)
//!  20 eval_mark u32 | 24 match_mark u32 | 28 state[64] | 92 function[64]
//!
//!  HOOK_ADD   hdr | hook record                → ack
//!  HOOK_DEL   hdr | queue u32 (any queue of it) → ack
//!  HOOK_LIST  hdr                              → hdr(HOOK_LIST, DONE) | count u32 | records
//! ```
//!
//! The overflow policy came later as a flag bit, so the record kept its size: a
//! client that predates it leaves the bit clear and gets fail-open, today's
//! behaviour, and a journal written before it replays the same way. A daemon
//! that predates it refuses the bit (`flags`), rather than silently failing open.
//! Stream hooks came the same way (bit 2, their depth in the flags' top 24
//! bits): an older daemon refuses them instead of calling the function per
//! packet.

use crate::consts::STATE_NAME_MAX;
use crate::error::DecodeError;
use crate::header::{emit_message, MsgFlags, MsgType};
use crate::name::{emit_name, state_name};
use crate::wire::{get_u32, put_u32};

/// Size of a hook record on the wire.
pub const HOOK_RECORD_LEN: usize = 28 + 2 * STATE_NAME_MAX;
/// Hooks a daemon holds at most: their listing fits one page.
pub const MAX_HOOKS: usize = 16;
/// Queues one hook may span (`--queue-balance`).
pub const MAX_HOOK_QUEUES: u32 = 64;
/// Default mark bit saying "evaluated by nflua".
pub const DEFAULT_EVAL_MARK: u32 = 0x1000_0000;
/// Default mark bit saying "the Lua function matched".
pub const DEFAULT_MATCH_MARK: u32 = 0x2000_0000;

/// How the function's result is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookMode {
    /// true/false: marks the packet and repeats the rule set.
    Match,
    /// The returned string is the verdict.
    Target,
}

/// A netfilter verdict, numbered as the kernel numbers them (`NF_DROP` = 0, `NF_ACCEPT` = 1, ...)
/// and named as scripts name them: what a target hook's function returns, what a hook does when
/// Lua fails, and (translated once, at the queue) what the daemon sends. The one verdict type of
/// the packet path, here because the wire carries it (the on-error field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop = 0,
    Accept = 1,
    /// The packet was consumed (e.g. re-emitted with `packet:send`).
    Stolen = 2,
    Queue = 3,
    Repeat = 4,
    Stop = 5,
}

impl Verdict {
    /// Every verdict, in netfilter's order.
    pub const ALL: [Verdict; 6] =
        [Verdict::Drop, Verdict::Accept, Verdict::Stolen, Verdict::Queue, Verdict::Repeat, Verdict::Stop];

    /// The string a script returns for this verdict.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Drop => "drop",
            Verdict::Accept => "accept",
            Verdict::Stolen => "stolen",
            Verdict::Queue => "queue",
            Verdict::Repeat => "repeat",
            Verdict::Stop => "stop",
        }
    }

    /// The verdict named exactly `name` (lower case, as the original), if any.
    pub fn from_name(name: &[u8]) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.name().as_bytes() == name)
    }

    /// Netfilter's number for it.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The verdict numbered `code`, if netfilter has one.
    pub fn from_code(code: u32) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.code() == code)
    }
}

/// What a hook does when Lua fails (error, limit, missing function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Continue with the next rule (fail-open), the default.
    Continue,
    /// This verdict.
    Verdict(Verdict),
}

/// What the kernel does with a packet for a queue that is full (or whose socket
/// buffer is): `NFQA_CFG_F_FAIL_OPEN` set or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Fail-open: the packet passes unevaluated. Traffic keeps flowing under
    /// overload, but a blocklist can be bypassed by sending fast enough.
    #[default]
    Accept,
    /// Fail-closed: the packet is dropped. Nothing passes unevaluated, but
    /// legitimate traffic is lost under overload.
    Drop,
}

impl Overflow {
    /// The name `nfluactl` takes and prints.
    pub fn name(self) -> &'static str {
        match self {
            Overflow::Accept => "accept",
            Overflow::Drop => "drop",
        }
    }
}

const FLAG_TCP_PAYLOAD: u32 = 1 << 0;
const FLAG_OVERFLOW_DROP: u32 = 1 << 1;
const FLAG_STREAM: u32 = 1 << 2;
const DEPTH_SHIFT: u32 = 8;
const KNOWN_FLAGS: u32 = FLAG_TCP_PAYLOAD | FLAG_OVERFLOW_DROP | FLAG_STREAM;

/// Bytes of each direction a stream hook passes to its function when no depth is given.
pub const DEFAULT_STREAM_DEPTH: u32 = 16384;
/// The largest stream depth (the flags field has 24 bits for it; a megabyte per direction is
/// already more than any handshake or request head).
pub const MAX_STREAM_DEPTH: u32 = 1 << 20;

const CONTINUE_CODE: u32 = u32::MAX;

/// A hook as created by HOOK_ADD and listed by HOOK_LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    pub queue_first: u16,
    pub queue_last: u16,
    pub mode: HookMode,
    /// Give Lua only the TCP payload; packets without one do not match.
    pub tcp_payload: bool,
    pub on_error: OnError,
    /// What the kernel does with packets that do not fit in the queue.
    pub overflow: Overflow,
    /// A stream hook: the function sees each TCP connection's reassembled payload, per
    /// direction, up to this many bytes, and its answer decides the whole connection.
    pub stream_depth: Option<u32>,
    pub eval_mark: u32,
    pub match_mark: u32,
    pub state: String,
    pub function: String,
}

/// What [`HookSpec::validate`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookSpecError {
    #[error("queue range {first}:{last} is empty")]
    EmptyRange { first: u16, last: u16 },
    #[error("a hook spans at most {MAX_HOOK_QUEUES} queues")]
    TooManyQueues,
    #[error("eval and match marks must be non-zero and disjoint")]
    Marks,
    #[error("a stream hook decides connections: it needs --mode target")]
    StreamNeedsTarget,
    #[error("stream depth must be 1 to {MAX_STREAM_DEPTH} bytes, got {0}")]
    StreamDepth(u32),
}

impl HookSpec {
    /// Checks what decoding cannot: ranges and marks.
    pub fn validate(&self) -> Result<(), HookSpecError> {
        if self.queue_last < self.queue_first {
            return Err(HookSpecError::EmptyRange { first: self.queue_first, last: self.queue_last });
        }
        if u32::from(self.queue_last - self.queue_first) >= MAX_HOOK_QUEUES {
            return Err(HookSpecError::TooManyQueues);
        }
        if self.eval_mark == 0 || self.match_mark == 0 || self.eval_mark & self.match_mark != 0 {
            return Err(HookSpecError::Marks);
        }
        if let Some(depth) = self.stream_depth {
            if self.mode != HookMode::Target {
                return Err(HookSpecError::StreamNeedsTarget);
            }
            if !(1..=MAX_STREAM_DEPTH).contains(&depth) {
                return Err(HookSpecError::StreamDepth(depth));
            }
        }
        Ok(())
    }

    /// The kernel packet counter (nfacct object) of this hook: nfluad makes it, the
    /// accounting rule `hook add` prints counts into it, one per hook (named after its first
    /// queue, which no other hook holds).
    pub fn accounting_name(&self) -> String {
        format!("nflua-q{}", self.queue_first)
    }

    pub fn queues(&self) -> std::ops::RangeInclusive<u16> {
        self.queue_first..=self.queue_last
    }

    pub fn parse(p: &[u8]) -> Result<HookSpec, DecodeError> {
        if p.len() != HOOK_RECORD_LEN {
            return Err(DecodeError::BadPayloadSize { ty: "HOOK_ADD", expected: "156 bytes", got: p.len() });
        }
        let first = get_u32(p, 0);
        let last = get_u32(p, 4);
        let (Ok(queue_first), Ok(queue_last)) = (u16::try_from(first), u16::try_from(last)) else {
            return Err(DecodeError::BadField { field: "queue", value: first.max(last) });
        };
        let mode = match get_u32(p, 8) {
            0 => HookMode::Match,
            1 => HookMode::Target,
            other => return Err(DecodeError::BadField { field: "mode", value: other }),
        };
        let flags = get_u32(p, 12);
        let depth = flags >> DEPTH_SHIFT;
        let low = flags & ((1 << DEPTH_SHIFT) - 1);
        if low & !KNOWN_FLAGS != 0 || (depth != 0 && low & FLAG_STREAM == 0) {
            return Err(DecodeError::BadField { field: "flags", value: flags });
        }
        let stream_depth =
            (low & FLAG_STREAM != 0).then_some(if depth == 0 { DEFAULT_STREAM_DEPTH } else { depth });
        let on_error = match get_u32(p, 16) {
            CONTINUE_CODE => OnError::Continue,
            code => match Verdict::from_code(code) {
                Some(verdict) => OnError::Verdict(verdict),
                None => return Err(DecodeError::BadField { field: "on_error", value: code }),
            },
        };
        let state = state_name(&p[28..92]).map_err(DecodeError::StateName)?.to_owned();
        let function = state_name(&p[92..156]).map_err(DecodeError::FunctionName)?.to_owned();
        Ok(HookSpec {
            queue_first,
            queue_last,
            mode,
            tcp_payload: flags & FLAG_TCP_PAYLOAD != 0,
            on_error,
            overflow: if flags & FLAG_OVERFLOW_DROP != 0 { Overflow::Drop } else { Overflow::Accept },
            stream_depth,
            eval_mark: get_u32(p, 20),
            match_mark: get_u32(p, 24),
            state,
            function,
        })
    }

    /// Appends the record. Names are cut to 63 bytes; callers check them first.
    pub fn emit(&self, out: &mut Vec<u8>) {
        put_u32(out, u32::from(self.queue_first));
        put_u32(out, u32::from(self.queue_last));
        put_u32(out, if self.mode == HookMode::Match { 0 } else { 1 });
        let overflow = if self.overflow == Overflow::Drop { FLAG_OVERFLOW_DROP } else { 0 };
        // A depth past the 24 bits is refused by `validate`; here it is only kept in range.
        let stream = self.stream_depth.map_or(0, |depth| FLAG_STREAM | (depth.min(0xFF_FFFF) << DEPTH_SHIFT));
        put_u32(out, if self.tcp_payload { FLAG_TCP_PAYLOAD } else { 0 } | overflow | stream);
        put_u32(
            out,
            match self.on_error {
                OnError::Continue => CONTINUE_CODE,
                OnError::Verdict(v) => v.code(),
            },
        );
        put_u32(out, self.eval_mark);
        put_u32(out, self.match_mark);
        emit_name(out, &self.state, STATE_NAME_MAX);
        emit_name(out, &self.function, STATE_NAME_MAX);
    }
}

pub fn encode_hook_add(out: &mut Vec<u8>, seq: u32, pid: u32, spec: &HookSpec) {
    let mut body = Vec::with_capacity(HOOK_RECORD_LEN);
    spec.emit(&mut body);
    emit_message(out, MsgType::HookAdd.as_u16(), MsgFlags::REQUEST, seq, pid, &[&body]);
}

pub fn encode_hook_del(out: &mut Vec<u8>, seq: u32, pid: u32, queue: u16) {
    emit_message(
        out,
        MsgType::HookDel.as_u16(),
        MsgFlags::REQUEST,
        seq,
        pid,
        &[&u32::from(queue).to_ne_bytes()],
    );
}

pub fn encode_hook_list(out: &mut Vec<u8>, seq: u32, pid: u32) {
    emit_message(out, MsgType::HookList.as_u16(), MsgFlags::REQUEST, seq, pid, &[]);
}

/// The whole HOOK_LIST answer: one message (at most [`MAX_HOOKS`] records fit a page).
pub fn encode_hook_list_reply(out: &mut Vec<u8>, seq: u32, pid: u32, hooks: &[HookSpec]) {
    let mut body = Vec::with_capacity(4 + hooks.len() * HOOK_RECORD_LEN);
    put_u32(&mut body, hooks.len() as u32);
    for h in hooks {
        h.emit(&mut body);
    }
    emit_message(out, MsgType::HookList.as_u16(), MsgFlags::DONE, seq, pid, &[&body]);
}

/// Decodes a HOOK_DEL payload.
pub fn parse_hook_del(p: &[u8]) -> Result<u16, DecodeError> {
    if p.len() != 4 {
        return Err(DecodeError::BadPayloadSize { ty: "HOOK_DEL", expected: "4 bytes", got: p.len() });
    }
    let q = get_u32(p, 0);
    u16::try_from(q).map_err(|_| DecodeError::BadField { field: "queue", value: q })
}

/// Decodes a HOOK_LIST answer.
pub fn parse_hook_list(p: &[u8]) -> Result<Vec<HookSpec>, DecodeError> {
    if p.len() < 4 {
        return Err(DecodeError::BadPayloadSize {
            ty: "HOOK_LIST",
            expected: "at least 4 bytes",
            got: p.len(),
        });
    }
    let n = get_u32(p, 0) as usize;
    let records = &p[4..];
    if n > MAX_HOOKS || records.len() != n * HOOK_RECORD_LEN {
        return Err(DecodeError::BadPayloadSize {
            ty: "HOOK_LIST",
            expected: "count × 156 bytes",
            got: records.len(),
        });
    }
    records.chunks_exact(HOOK_RECORD_LEN).map(HookSpec::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> HookSpec {
        HookSpec {
            queue_first: 2,
            queue_last: 3,
            mode: HookMode::Target,
            tcp_payload: true,
            on_error: OnError::Verdict(Verdict::Drop),
            overflow: Overflow::Accept,
            stream_depth: None,
            eval_mark: DEFAULT_EVAL_MARK,
            match_mark: DEFAULT_MATCH_MARK,
            state: "fw".into(),
            function: "filter".into(),
        }
    }

    #[test]
    fn record_layout_and_round_trip() {
        let mut b = Vec::new();
        spec().emit(&mut b);
        assert_eq!(b.len(), HOOK_RECORD_LEN);
        assert_eq!(&b[0..4], &2u32.to_ne_bytes()); // queue_first
        assert_eq!(&b[8..12], &1u32.to_ne_bytes()); // mode: target
        assert_eq!(&b[12..16], &1u32.to_ne_bytes()); // flags: tcp-payload
        assert_eq!(&b[16..20], &0u32.to_ne_bytes()); // on_error: NF_DROP
        assert_eq!(&b[28..31], b"fw\0");
        assert_eq!(&b[92..99], b"filter\0");
        assert_eq!(HookSpec::parse(&b), Ok(spec()));
    }

    #[test]
    fn overflow_drop_is_flag_bit_1_and_its_absence_means_accept() {
        let mut b = Vec::new();
        HookSpec { overflow: Overflow::Drop, ..spec() }.emit(&mut b);
        assert_eq!(&b[12..16], &3u32.to_ne_bytes()); // tcp-payload | overflow drop
        assert_eq!(HookSpec::parse(&b).map(|s| s.overflow), Ok(Overflow::Drop));
        // A record from a client that predates the policy: bit 1 clear.
        b[12..16].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(HookSpec::parse(&b).map(|s| s.overflow), Ok(Overflow::Accept));
        b[12..16].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(HookSpec::parse(&b), Err(DecodeError::BadField { field: "flags", value: 8 }));
    }

    #[test]
    fn stream_is_flag_bit_2_with_the_depth_above_bit_8() {
        let mut b = Vec::new();
        HookSpec { stream_depth: Some(4096), tcp_payload: false, ..spec() }.emit(&mut b);
        assert_eq!(&b[12..16], &(4u32 | 4096 << 8).to_ne_bytes());
        assert_eq!(HookSpec::parse(&b).map(|s| s.stream_depth), Ok(Some(4096)));
        b[12..16].copy_from_slice(&4u32.to_ne_bytes());
        assert_eq!(HookSpec::parse(&b).map(|s| s.stream_depth), Ok(Some(DEFAULT_STREAM_DEPTH)));
        // A depth without the stream bit is not a record this daemon wrote.
        b[12..16].copy_from_slice(&(1u32 << 8).to_ne_bytes());
        assert!(matches!(HookSpec::parse(&b), Err(DecodeError::BadField { field: "flags", .. })));
        let matching = HookSpec { stream_depth: Some(10), mode: HookMode::Match, ..spec() };
        let refused = matching.validate().unwrap_err();
        assert_eq!(refused.to_string(), "a stream hook decides connections: it needs --mode target");
        let deep = HookSpec { stream_depth: Some(MAX_STREAM_DEPTH + 1), ..spec() };
        assert!(deep
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("stream depth must be 1 to 1048576 bytes"));
    }

    #[test]
    fn bad_fields_are_errors() {
        let mut b = Vec::new();
        spec().emit(&mut b);
        b[8..12].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(HookSpec::parse(&b), Err(DecodeError::BadField { field: "mode", value: 7 }));
        let mut b = Vec::new();
        spec().emit(&mut b);
        b[16..20].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(HookSpec::parse(&b), Err(DecodeError::BadField { field: "on_error", value: 9 }));
        let mut s = spec();
        s.queue_last = 1;
        assert!(s.validate().is_err());
        s.queue_last = 200;
        assert!(s.validate().is_err());
    }

    #[test]
    fn list_round_trip() {
        let mut b = Vec::new();
        encode_hook_list_reply(&mut b, 1, 0, &[spec(), spec()]);
        let msg = crate::messages(&b).next().unwrap().unwrap();
        assert_eq!(parse_hook_list(msg.payload).unwrap(), vec![spec(), spec()]);
    }
}

#[cfg(test)]
mod verdict_tests {
    use super::*;

    #[test]
    fn verdict_names_round_trip() {
        for verdict in Verdict::ALL {
            assert_eq!(Verdict::from_name(verdict.name().as_bytes()), Some(verdict));
        }
        for other in [&b"DROP"[..], b"", b"continue", b"drop "] {
            assert_eq!(Verdict::from_name(other), None);
        }
        for verdict in Verdict::ALL {
            assert_eq!(Verdict::from_code(verdict.code()), Some(verdict));
        }
        assert_eq!(Verdict::from_code(6), None);
    }
}
