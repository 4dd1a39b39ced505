//! [`QueueStats`]: what a queue counts, for nfluad's metrics and the benchmarks.

/// Counters since the queue was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Packets handed to a receive callback.
    pub packets: u64,
    /// Verdict messages sent (a batch verdict counts once).
    pub verdict_messages: u64,
    /// Datagrams sent with verdicts (`sendmsg` calls).
    pub verdict_sends: u64,
    /// Times the socket overflowed (ENOBUFS): the kernel could not deliver some packets. Those
    /// got the queue's fail-open behaviour (accepted with `fail_open`, else dropped).
    pub overflows: u64,
    /// Datagrams longer than a receive slot (should not happen; see `SLOT_HEADROOM`).
    pub truncated: u64,
    /// Messages that could not be decoded.
    pub malformed: u64,
    /// Packets that could not be decoded but whose id could be read; they were given the
    /// fail-open verdict (accept with `fail_open`, else drop) instead of reaching the callback.
    pub given_up: u64,
    /// Datagrams from another process rather than the kernel (ignored).
    pub foreign: u64,
    /// Error replies from the kernel to verdicts (e.g. ENOENT: no such packet id).
    pub kernel_errors: u64,
    /// The errno of the last of those (0 if none).
    pub last_kernel_errno: i32,
}
