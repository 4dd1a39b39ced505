//! What a hook's evaluation means for the packet: a pure mapping from the
//! Lua outcome and the hook's settings to a netfilter verdict and mark.
//!
//! Match mode marks the packet (EVAL always, MATCH when matched) and repeats
//! the rule set, so the operator's own rules act on the mark. "Continue"
//! (target mode's unknown strings, failures under the default on-error) is
//! the same repeat with only EVAL set: the guard rule then lets the packet
//! fall through to the next rule.

use nflua_nfqueue::Verdict;
use nflua_proto::{HookSpec, OnError};

/// What happened when the hook looked at a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// Match mode: the function's truth value, and whether it asked for a hot drop.
    Matched { matched: bool, hotdrop: bool },
    /// Target mode: the verdict string it returned (`None`: continue).
    Target(Option<Verdict>),
    /// The packet was not given to Lua (`--tcp-payload` and no TCP payload).
    NotGiven,
    /// Lua failed (error, instruction or memory limit, missing function).
    Failed,
}

/// The verdict to send for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The packet's new mark, when it changes.
    pub mark: Option<u32>,
}

pub fn decide(spec: &HookSpec, packet_mark: u32, evaluation: &Evaluation) -> Decision {
    let base = packet_mark & !(spec.eval_mark | spec.match_mark);
    let proceed = |matched: bool| Decision {
        verdict: Verdict::Repeat,
        mark: Some(base | spec.eval_mark | if matched { spec.match_mark } else { 0 }),
    };
    match evaluation {
        Evaluation::Matched { hotdrop: true, .. } => Decision { verdict: Verdict::Drop, mark: None },
        Evaluation::Matched { matched, .. } => proceed(*matched),
        Evaluation::NotGiven | Evaluation::Target(None) => proceed(false),
        // A bare repeat would come straight back to this queue: mark it evaluated.
        Evaluation::Target(Some(Verdict::Repeat)) => proceed(false),
        Evaluation::Target(Some(v)) => Decision { verdict: *v, mark: None },
        Evaluation::Failed => match spec.on_error {
            OnError::Continue => proceed(false),
            OnError::Verdict(code) => Decision { verdict: verdict_from_code(code), mark: None },
        },
    }
}

/// With `packet:send`, the packet goes on with its new bytes: "stolen" and
/// "continue" both mean "send it as rewritten" (accept); an explicit verdict
/// stays.
pub fn with_replacement(decision: Decision) -> Decision {
    match decision.verdict {
        Verdict::Stolen | Verdict::Repeat => Decision { verdict: Verdict::Accept, mark: decision.mark },
        _ => decision,
    }
}

/// Netfilter verdict numbers as the wire's on-error field holds them.
pub fn verdict_from_code(code: u32) -> Verdict {
    match code {
        0 => Verdict::Drop,
        2 => Verdict::Stolen,
        3 => Verdict::Queue,
        4 => Verdict::Repeat,
        5 => Verdict::Stop,
        _ => Verdict::Accept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflua_proto::hook::{DEFAULT_EVAL_MARK as EVAL, DEFAULT_MATCH_MARK as MATCH};
    use nflua_proto::HookMode;

    fn spec(on_error: OnError) -> HookSpec {
        HookSpec {
            queue_first: 0,
            queue_last: 0,
            mode: HookMode::Match,
            tcp_payload: false,
            on_error,
            overflow: nflua_proto::Overflow::Accept,
            stream_depth: None,
            eval_mark: EVAL,
            match_mark: MATCH,
            state: "s".into(),
            function: "f".into(),
        }
    }

    #[test]
    fn match_marks_and_repeats_keeping_other_bits() {
        let s = spec(OnError::Continue);
        let d = decide(&s, 0x5 | MATCH, &Evaluation::Matched { matched: true, hotdrop: false });
        assert_eq!(d, Decision { verdict: Verdict::Repeat, mark: Some(0x5 | EVAL | MATCH) });
        // a stale MATCH bit from elsewhere is cleared when Lua says no
        let d = decide(&s, 0x5 | MATCH, &Evaluation::Matched { matched: false, hotdrop: false });
        assert_eq!(d, Decision { verdict: Verdict::Repeat, mark: Some(0x5 | EVAL) });
    }

    #[test]
    fn hotdrop_wins() {
        let d = decide(&spec(OnError::Continue), 0, &Evaluation::Matched { matched: false, hotdrop: true });
        assert_eq!(d.verdict, Verdict::Drop);
    }

    #[test]
    fn target_verdicts_continue_and_failures() {
        let s = spec(OnError::Continue);
        assert_eq!(decide(&s, 0, &Evaluation::Target(Some(Verdict::Drop))).verdict, Verdict::Drop);
        assert_eq!(
            decide(&s, 0, &Evaluation::Target(None)),
            Decision { verdict: Verdict::Repeat, mark: Some(EVAL) }
        );
        assert_eq!(decide(&s, 0, &Evaluation::Target(Some(Verdict::Repeat))).mark, Some(EVAL));
        assert_eq!(decide(&s, 0, &Evaluation::Failed).mark, Some(EVAL));
        assert_eq!(decide(&s, 0, &Evaluation::NotGiven).mark, Some(EVAL));
        let strict = spec(OnError::Verdict(0));
        assert_eq!(decide(&strict, 0, &Evaluation::Failed), Decision { verdict: Verdict::Drop, mark: None });
    }

    #[test]
    fn replacement_turns_stolen_into_accept() {
        let d = with_replacement(Decision { verdict: Verdict::Stolen, mark: None });
        assert_eq!(d.verdict, Verdict::Accept);
        let d = with_replacement(Decision { verdict: Verdict::Drop, mark: None });
        assert_eq!(d.verdict, Verdict::Drop);
    }
}
