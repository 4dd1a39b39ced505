//! Rate-limited, aggregated logging of refused senders (`--allow-uid`/`--allow-gid` say who
//! may talk to the daemon): a sender flooding the port with datagrams must not flood the log.
//!
//! The first refusal of a uid is logged at once, with the sender's port. Later refusals of the
//! same uid are only counted, and at most one summary line per uid per [`WINDOW`] says how many
//! there were ("uid N: M requests refused in the last 10 s"). A window without refusals ends the
//! uid's entry, so the next refusal is again logged at once. At most [`MAX_UIDS`] uids are
//! tracked one by one; refusals of further uids (and of senders without credentials) share one
//! entry, so memory stays bounded whatever the senders do.
//!
//! Answers are rationed the same way: the first [`ANSWERS_PER_WINDOW`] refusals of a uid in a
//! window get their EPERM reply, later ones are dropped unanswered. A flood then costs the
//! daemon one receive per datagram and nothing more, so the requests of permitted senders
//! queued behind it are reached sooner.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Period of the summary lines.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Uids tracked one by one.
pub const MAX_UIDS: usize = 64;

/// Refusals of one uid answered per window.
pub const ANSWERS_PER_WINDOW: u64 = 64;

/// How often the windows are looked at.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Refusals of one uid since its window began.
#[derive(Debug)]
struct Tally {
    since: Instant,
    count: u64,
}

/// Refused senders, by uid (`None`: unknown, or past [`MAX_UIDS`]).
#[derive(Debug, Default)]
pub struct Refusals {
    by_uid: HashMap<Option<u32>, Tally>,
    last_flush: Option<Instant>,
    /// Log lines written so far (first refusals and summaries), for tests.
    lines: u64,
}

impl Refusals {
    /// Books one refused datagram from `uid` (port `port`) at `now`; logs it when it is the
    /// first of its uid's window, and the summaries of windows that ended. Returns whether to
    /// answer it.
    pub fn note(&mut self, uid: Option<u32>, port: u32, now: Instant) -> bool {
        if self.last_flush.is_none_or(|t| now.duration_since(t) >= FLUSH_EVERY) {
            self.flush(now);
        }
        let key = if uid.is_some() && (self.by_uid.contains_key(&uid) || self.by_uid.len() < MAX_UIDS) {
            uid
        } else {
            None
        };
        match self.by_uid.get_mut(&key) {
            Some(tally) => {
                tally.count += 1;
                tally.count < ANSWERS_PER_WINDOW
            }
            None => {
                self.by_uid.insert(key, Tally { since: now, count: 0 });
                self.lines += 1;
                match uid {
                    Some(uid) => tracing::warn!(
                        port,
                        uid,
                        "operation not permitted: request from a sender without permission (further refusals of this uid are summed up every {} s)",
                        WINDOW.as_secs()
                    ),
                    None => tracing::warn!(
                        port,
                        "operation not permitted: request from a sender without permission or credentials (further refusals are summed up every {} s)",
                        WINDOW.as_secs()
                    ),
                }
                true
            }
        }
    }

    /// Logs the summary of every window that ended by `now` and forgets uids that were quiet
    /// for a whole window. Cheap when nothing is tracked.
    pub fn flush(&mut self, now: Instant) {
        self.last_flush = Some(now);
        let mut lines = 0;
        self.by_uid.retain(|uid, tally| {
            if now.duration_since(tally.since) < WINDOW {
                return true;
            }
            if tally.count == 0 {
                return false;
            }
            lines += 1;
            let secs = now.duration_since(tally.since).as_secs();
            match uid {
                Some(uid) => tracing::warn!(
                    uid,
                    refused = tally.count,
                    "operation not permitted: uid {uid}: {} requests refused in the last {secs} s",
                    tally.count
                ),
                None => tracing::warn!(
                    refused = tally.count,
                    "operation not permitted: {} requests of other uids refused in the last {secs} s",
                    tally.count
                ),
            }
            *tally = Tally { since: now, count: 0 };
            true
        });
        self.lines += lines;
    }

    /// Log lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_one_line_then_one_per_window() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        // 200,000 refusals over 25 s: the first line, then two summaries.
        for i in 0..200_000u64 {
            r.note(Some(65534), 7, t0 + Duration::from_micros(i * 125));
        }
        assert_eq!(r.lines(), 3);
        // Quiet for a window: the rest is summed up, then the uid is forgotten.
        r.flush(t0 + Duration::from_secs(40));
        assert_eq!(r.lines(), 4);
        r.flush(t0 + Duration::from_secs(60));
        assert!(r.by_uid.is_empty());
        r.note(Some(65534), 7, t0 + Duration::from_secs(61));
        assert_eq!(r.lines(), 5, "a new burst is logged at once");
    }

    #[test]
    fn answers_are_rationed_per_window() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        let answered = (0..1000).filter(|_| r.note(Some(7), 1, t0)).count() as u64;
        assert_eq!(answered, ANSWERS_PER_WINDOW);
        assert!(r.note(Some(8), 1, t0), "another uid has its own ration");
        assert!(r.note(Some(7), 1, t0 + WINDOW), "a new window, a new ration");
    }

    #[test]
    fn uids_are_bounded() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        for uid in 0..1000 {
            r.note(Some(uid), 1, t0);
        }
        assert_eq!(r.by_uid.len(), MAX_UIDS + 1);
        assert_eq!(r.lines(), MAX_UIDS as u64 + 1);
    }
}
