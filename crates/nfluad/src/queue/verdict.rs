//! What a hook's evaluation means for the packet: a pure mapping from the
//! Lua outcome and the hook's settings to a netfilter verdict and mark.
//!
//! Match mode marks the packet (EVAL always, MATCH when matched) and repeats
//! the rule set, so the operator's own rules act on the mark. "Continue"
//! (target mode's unknown strings, failures under the default on-error) is
//! the same repeat with only EVAL set: the guard rule then lets the packet
//! fall through to the next rule.

use nflua_proto::{HookSpec, OnError, Verdict};

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
            OnError::Verdict(verdict) => Decision { verdict, mark: None },
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

/// The queue's spelling of a verdict: the one translation on the packet path. nflua-nfqueue is a
/// queue client that knows nothing of NFLua (not even its wire format), so it has a verdict type
/// of its own; both number verdicts as netfilter does.
pub fn to_queue(verdict: Verdict) -> nflua_nfqueue::Verdict {
    match verdict {
        Verdict::Drop => nflua_nfqueue::Verdict::Drop,
        Verdict::Accept => nflua_nfqueue::Verdict::Accept,
        Verdict::Stolen => nflua_nfqueue::Verdict::Stolen,
        Verdict::Queue => nflua_nfqueue::Verdict::Queue,
        Verdict::Repeat => nflua_nfqueue::Verdict::Repeat,
        Verdict::Stop => nflua_nfqueue::Verdict::Stop,
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
        let strict = spec(OnError::Verdict(Verdict::Drop));
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
