//! Coalescing verdicts into `NFQNL_MSG_VERDICT_BATCH` messages: a pure state machine.
//!
//! A batch verdict for id N decides every packet of the queue with an id up to N that is still
//! waiting. The kernel numbers a queue's packets in increasing order (`id_sequence++`, wrapping
//! at 2^32), so when verdicts are given in the order packets were received, a *run* of
//! consecutive verdicts with the same (verdict, mark) is exactly "all waiting packets up to the
//! run's last id", and emitting runs in order gives every packet its own verdict.
//!
//! Rules, per pushed `(id, verdict, mark)`:
//! - an id after the previous one with the same (verdict, mark), while the open run is shorter
//!   than `max_run`, extends the open run;
//! - otherwise the open run is closed (emitted as an `UpTo` message for its last id) and a new
//!   run starts with this id;
//! - a run that reaches `max_run` is closed at once and the caller is told to send now, which
//!   bounds how long a packet waits behind a long run;
//! - an id *not* after the previous one breaks the ordering contract; a batch for it could
//!   decide other waiting packets, so it is emitted alone as a `One` message (`NFQNL_MSG_VERDICT`)
//!   and the open run is left untouched. (Runs emitted earlier with higher ids may already have
//!   covered it; then the kernel reports ENOENT for the single verdict.)
//!
//! Gaps in ids are fine: they are packets the kernel never delivered (socket overflow) or that
//! already had a verdict, and a batch verdict skips ids no longer waiting.

use crate::msg::VerdictScope;
use crate::Verdict;

/// One verdict message to put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VerdictMsg {
    pub scope: VerdictScope,
    pub id: u32,
    pub verdict: Verdict,
    pub mark: Option<u32>,
}

/// `a` comes after `b` in the queue's wrapping id sequence (the kernel's `nfq_id_after`).
pub(crate) fn id_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    verdict: Verdict,
    mark: Option<u32>,
    last_id: u32,
    len: u32,
}

impl Run {
    fn close(self) -> VerdictMsg {
        VerdictMsg { scope: VerdictScope::UpTo, id: self.last_id, verdict: self.verdict, mark: self.mark }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct VerdictBatch {
    max_run: u32,
    open: Option<Run>,
    /// The highest id given a verdict so far (pushed or noted), for the ordering check.
    last_id: Option<u32>,
}

impl VerdictBatch {
    /// `max_run` is the most packets one batch message decides; 0 is taken as 1.
    pub fn new(max_run: u32) -> Self {
        VerdictBatch { max_run: max_run.max(1), open: None, last_id: None }
    }

    pub fn set_max_run(&mut self, max_run: u32) {
        self.max_run = max_run.max(1);
    }

    /// The highest id given a verdict so far.
    pub fn last_id(&self) -> Option<u32> {
        self.last_id
    }

    /// Packets in the open run, decided but not yet emitted.
    pub fn open_len(&self) -> u32 {
        self.open.map_or(0, |run| run.len)
    }

    fn in_order(&self, id: u32) -> bool {
        self.last_id.is_none_or(|last| id_after(id, last))
    }

    /// Records a verdict; calls `emit` for each message that must go out, in order. Returns true
    /// when a run filled up, i.e. the caller should send what was emitted now.
    pub fn push(
        &mut self,
        id: u32,
        verdict: Verdict,
        mark: Option<u32>,
        emit: &mut impl FnMut(VerdictMsg),
    ) -> bool {
        if !self.in_order(id) {
            emit(VerdictMsg { scope: VerdictScope::One, id, verdict, mark });
            return false;
        }
        self.last_id = Some(id);
        match &mut self.open {
            Some(run) if run.verdict == verdict && run.mark == mark && run.len < self.max_run => {
                run.last_id = id;
                run.len += 1;
            }
            open => {
                if let Some(run) = open.take() {
                    emit(run.close());
                }
                *open = Some(Run { verdict, mark, last_id: id, len: 1 });
            }
        }
        if self.open_len() >= self.max_run {
            if let Some(run) = self.open.take() {
                emit(run.close());
            }
            return true;
        }
        false
    }

    /// Notes a verdict the caller sends by itself (a single verdict, e.g. with a new payload),
    /// so later batches keep the ordering check. Returns whether it was in order.
    pub fn note_single(&mut self, id: u32) -> bool {
        let in_order = self.in_order(id);
        if in_order {
            self.last_id = Some(id);
        }
        in_order
    }

    /// Closes the open run, if any.
    pub fn close(&mut self) -> Option<VerdictMsg> {
        self.open.take().map(Run::close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::VerdictScope::{One, UpTo};
    use crate::Verdict::{Accept, Drop, Repeat};

    fn msg(scope: VerdictScope, id: u32, verdict: Verdict, mark: Option<u32>) -> VerdictMsg {
        VerdictMsg { scope, id, verdict, mark }
    }

    /// Pushes every verdict, then closes; returns the messages and the indexes of pushes that
    /// asked for an immediate send.
    fn run(max_run: u32, input: &[(u32, Verdict, Option<u32>)]) -> (Vec<VerdictMsg>, Vec<usize>) {
        let mut batch = VerdictBatch::new(max_run);
        let mut out = Vec::new();
        let mut sends = Vec::new();
        for (i, &(id, verdict, mark)) in input.iter().enumerate() {
            if batch.push(id, verdict, mark, &mut |m| out.push(m)) {
                sends.push(i);
            }
        }
        out.extend(batch.close());
        (out, sends)
    }

    #[test]
    fn equal_verdicts_coalesce_into_one_batch() {
        let (out, sends) = run(64, &[(1, Accept, None), (2, Accept, None), (3, Accept, None)]);
        assert_eq!(out, [msg(UpTo, 3, Accept, None)]);
        assert!(sends.is_empty());
    }

    #[test]
    fn a_change_of_verdict_or_mark_closes_the_run() {
        let (out, _) = run(
            64,
            &[
                (1, Accept, None),
                (2, Accept, None),
                (3, Drop, None),
                (4, Repeat, Some(0x1000_0000)),
                (5, Repeat, Some(0x1000_0000)),
                (6, Repeat, Some(0x3000_0000)),
                (7, Accept, None),
            ],
        );
        assert_eq!(
            out,
            [
                msg(UpTo, 2, Accept, None),
                msg(UpTo, 3, Drop, None),
                msg(UpTo, 5, Repeat, Some(0x1000_0000)),
                msg(UpTo, 6, Repeat, Some(0x3000_0000)),
                msg(UpTo, 7, Accept, None),
            ]
        );
    }

    #[test]
    fn mark_none_and_mark_some_are_different_runs() {
        let (out, _) = run(64, &[(1, Accept, None), (2, Accept, Some(0))]);
        assert_eq!(out, [msg(UpTo, 1, Accept, None), msg(UpTo, 2, Accept, Some(0))]);
    }

    #[test]
    fn max_run_closes_and_asks_for_a_send() {
        let input: Vec<_> = (1..=7).map(|id| (id, Accept, None)).collect();
        let (out, sends) = run(3, &input);
        assert_eq!(out, [msg(UpTo, 3, Accept, None), msg(UpTo, 6, Accept, None), msg(UpTo, 7, Accept, None)]);
        assert_eq!(sends, [2, 5]);
    }

    #[test]
    fn max_run_one_sends_every_verdict() {
        let (out, sends) = run(1, &[(1, Accept, None), (2, Accept, None), (3, Drop, None)]);
        assert_eq!(out, [msg(UpTo, 1, Accept, None), msg(UpTo, 2, Accept, None), msg(UpTo, 3, Drop, None)]);
        assert_eq!(sends, [0, 1, 2]);
    }

    #[test]
    fn gaps_in_ids_stay_in_one_run() {
        let (out, _) = run(64, &[(10, Drop, None), (14, Drop, None), (15, Drop, None)]);
        assert_eq!(out, [msg(UpTo, 15, Drop, None)]);
    }

    #[test]
    fn out_of_order_id_goes_alone_and_keeps_the_run() {
        let (out, _) = run(
            64,
            &[(5, Accept, None), (6, Accept, None), (4, Drop, None), (6, Drop, None), (7, Accept, None)],
        );
        assert_eq!(out, [msg(One, 4, Drop, None), msg(One, 6, Drop, None), msg(UpTo, 7, Accept, None)]);
    }

    #[test]
    fn ids_wrap_around() {
        let (out, _) = run(
            64,
            &[(u32::MAX - 1, Accept, None), (u32::MAX, Accept, None), (0, Accept, None), (1, Accept, None)],
        );
        assert_eq!(out, [msg(UpTo, 1, Accept, None)]);
        assert!(id_after(0, u32::MAX));
        assert!(!id_after(u32::MAX, 0));
        assert!(!id_after(5, 5));
    }

    #[test]
    fn note_single_tracks_order() {
        let mut batch = VerdictBatch::new(64);
        let mut out = Vec::new();
        batch.push(1, Accept, None, &mut |m| out.push(m));
        assert!(batch.note_single(2));
        assert!(!batch.note_single(2));
        batch.push(2, Accept, None, &mut |m| out.push(m));
        assert_eq!(out, [msg(One, 2, Accept, None)]);
        batch.push(3, Accept, None, &mut |m| out.push(m));
        assert_eq!(batch.close(), Some(msg(UpTo, 3, Accept, None)));
        assert_eq!(batch.last_id(), Some(3));
        assert_eq!(batch.close(), None);
    }

    #[test]
    fn every_in_order_id_is_covered_by_the_next_message_with_its_verdict() {
        // Property over a fixed pseudo-random sequence: each packet's verdict equals that of the
        // first emitted message whose id is >= the packet's id.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut input = Vec::new();
        for id in 1..=500u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let verdict = [Accept, Drop, Repeat][(seed % 3) as usize];
            let mark = if seed & 8 == 0 { None } else { Some((seed >> 4) as u32 & 1) };
            input.push((id, verdict, mark));
        }
        for max_run in [1, 2, 7, 64] {
            let (out, _) = run(max_run, &input);
            let mut ids: Vec<u32> = out.iter().map(|m| m.id).collect();
            ids.dedup();
            assert_eq!(ids.len(), out.len(), "message ids strictly increase");
            for &(id, verdict, mark) in &input {
                let m = out.iter().find(|m| m.id >= id).unwrap();
                assert_eq!((m.verdict, m.mark), (verdict, mark), "packet {id}, max_run {max_run}");
            }
        }
    }
}
