//! [`Queue`]: one bound netfilter queue.
//!
//! Design. A `Queue` is two parts so a receive callback can give verdicts while packets are
//! still borrowed from the receive slots: `Rx` (`rx.rs`: the slots and the stash) and `Link`
//! (`socket.rs`: the socket, the verdict state machine, the outgoing buffer, the counters). This
//! module holds the public API and the config exchanges: open, conntrack, shutdown.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::batch::{id_after, VerdictMsg};
use crate::consts::*;
use crate::msg::{self, ConfigRequest, FlagChange, MsgIter, VerdictScope};
use crate::packet::Packet;
use crate::rx::Rx;
use crate::socket::QueueSocket;
use crate::sys::{self, Received};
use crate::{QueueConfig, QueueError, QueueStats, Verdict};

/// Default for the most packets one batch verdict decides. Also the receive batch size, so a
/// full receive batch of equal verdicts is one message.
pub const DEFAULT_MAX_BATCH: u32 = 64;

/// The most reads tried without waiting, yielding the core between them, before a receive
/// waits. A consumer that waits as soon as the queue is empty sleeps every few packets, and
/// each wake-up is an interrupt from the core that queued the packet, which on a VM exits to
/// the hypervisor; the sender's core (on veth it also runs the receive path up to the queue)
/// paid for that. Packet bench, 1400-byte payloads, 2-core VM: nfluad slept 18 times per
/// 1000 packets and delivered 188k packets/s; a raw loop that yields first slept 2 times per
/// 1000 and delivered 229k.
///
/// The tries pay only while packets come closer together than the tries last (a few
/// microseconds); at low rates every one of them fails and the consumer sleeps anyway, so they
/// are adaptive (see [`Spin`]).
const YIELDS_BEFORE_WAIT: usize = 10;

/// A wait shorter than this means the next packet came within the time the tries cover, so
/// trying again would have found it without sleeping.
const QUICK_WAIT: Duration = Duration::from_micros(30);

/// How many yielding tries the next receive makes before it waits. Tries that fail are CPU
/// spent for nothing: at 10k packets/s (one packet per 100 us) ten tries cost the packet
/// bench's consumer about 4 us of system time per packet, a third of its CPU. So every receive
/// whose tries all failed halves them, down to none; a try that found packets, or a wait that
/// ended quickly, restores them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spin(usize);

impl Spin {
    fn tries(self) -> usize {
        self.0
    }

    /// After a receive that found packets on try `index` (0: the first read, before any yield).
    fn found(&mut self, index: usize) {
        if index > 0 {
            self.0 = YIELDS_BEFORE_WAIT;
        }
    }

    /// After a receive whose tries all failed and that then waited `waited`.
    fn waited(&mut self, waited: Duration) {
        self.0 = if waited < QUICK_WAIT { YIELDS_BEFORE_WAIT } else { self.0 / 2 };
    }
}

/// The kernel answers config requests while processing them, so the ACK is normally already
/// queued when `send` returns; this only bounds the wait if it is not.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// Error context when the kernel refuses NFQA_CFG_F_CONNTRACK (EOPNOTSUPP): it needs the
/// conntrack glue for nfnetlink_queue, which some kernels are built without.
const CONNTRACK_CONTEXT: &str =
    "conntrack attributes for queued packets (needs kernel CONFIG_NETFILTER_NETLINK_GLUE_CT)";

/// Rounds of reading allowed at shutdown to collect packets waiting in the socket.
const SHUTDOWN_DRAIN_ROUNDS: usize = 16;

/// One bound netfilter queue. Not shared between threads: each worker opens its own queue.
///
/// Verdicts must be given in the order packets were received (the order of the callback
/// calls), each packet exactly once, because a batch verdict decides all waiting packets up to
/// its id. A verdict for an id not after the previous one is sent on its own as a single
/// verdict; see the `batch` module.
pub struct Queue {
    link: QueueSocket,
    rx: Rx,
    spin: Spin,
    closed: bool,
}

/// The sending half, lent to [`Queue::recv_batch_with`] callbacks so they can give verdicts
/// while the packet is borrowed.
pub struct Verdicts<'q> {
    link: &'q mut QueueSocket,
}

impl Queue {
    /// Opens a socket, sizes its receive buffer and binds `config.queue` with copy mode,
    /// queue length and flags in one config request, checking the kernel's ACK.
    ///
    /// Errors: [`QueueError::Busy`] when another socket holds the queue; `Io` when the
    /// socket cannot be made, the caller lacks CAP_NET_ADMIN, or the kernel refuses a setting
    /// (e.g. EOPNOTSUPP for conntrack on a kernel without
    /// CONFIG_NETFILTER_NETLINK_GLUE_CT, as on our test machines).
    pub fn open(config: &QueueConfig) -> Result<Queue, QueueError> {
        let fd = sys::netfilter_socket().map_err(|e| QueueError::io("create NETLINK_NETFILTER socket", e))?;
        // Receives wait in `recvmmsg` itself (bounded by SO_RCVTIMEO) rather than in `poll`
        // and then read: one system call less each time the queue runs dry, which at low
        // rates is every few packets. Every other read passes MSG_DONTWAIT.
        sys::set_blocking(fd.as_fd()).map_err(|e| QueueError::io("make the queue socket blocking", e))?;
        if config.recv_buffer > 0 {
            sys::set_recv_buffer(fd.as_fd(), config.recv_buffer)
                .map_err(|e| QueueError::io("set the socket receive buffer", e))?;
        }
        // Best effort: only shortens error replies (kernels before 4.3 lack it).
        let _ = sys::set_cap_ack(fd.as_fd());
        let mut queue = Queue {
            link: QueueSocket::new(fd, config),
            rx: Rx::new(config.copy_range),
            spin: Spin(YIELDS_BEFORE_WAIT),
            closed: false,
        };
        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
        let request = ConfigRequest {
            command: Some(NFQNL_CFG_CMD_BIND),
            copy_range: Some(config.copy_range.min(MAX_COPY_RANGE)),
            max_len: (config.max_len > 0).then_some(config.max_len),
            flags: Some(FlagChange {
                mask: NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO | NFQA_CFG_F_CONNTRACK,
                values: flag(config.fail_open, NFQA_CFG_F_FAIL_OPEN)
                    | flag(config.gso, NFQA_CFG_F_GSO)
                    | flag(config.conntrack, NFQA_CFG_F_CONNTRACK),
            }),
        };
        match queue.configure(&request, "bind the queue") {
            Ok(()) => {}
            Err(QueueError::Io { source, .. }) if is_busy(&source) => {
                queue.closed = true; // nothing bound, nothing to release
                return Err(QueueError::Busy { queue: config.queue });
            }
            Err(QueueError::Io { source, .. })
                if config.conntrack && source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                queue.closed = true;
                return Err(QueueError::io(CONNTRACK_CONTEXT, source));
            }
            Err(e) => {
                queue.closed = true;
                return Err(e);
            }
        }
        Ok(queue)
    }

    /// The queue number.
    pub fn queue(&self) -> u16 {
        self.link.queue()
    }

    /// Counters since the queue was opened.
    pub fn stats(&self) -> QueueStats {
        *self.link.stats()
    }

    /// Times the socket overflowed (ENOBUFS) so far; see [`QueueStats::overflows`].
    pub fn overflows(&self) -> u64 {
        self.link.stats().overflows
    }

    /// Whether conntrack attributes are being requested.
    pub fn conntrack(&self) -> bool {
        self.link.conntrack()
    }

    /// Sets the most packets one batch verdict may decide (at least 1; 1 sends every verdict
    /// at once, still as a batch message of one).
    pub fn set_max_batch(&mut self, packets: u32) {
        self.link.set_max_batch(packets);
    }

    /// Turns conntrack attributes (NFQA_CFG_F_CONNTRACK, for [`Packet::conntrack_id`]) on or
    /// off. Pending verdicts are flushed first; packets that arrive while waiting for the ACK
    /// are kept for the next receive.
    pub fn set_conntrack(&mut self, on: bool) -> Result<(), QueueError> {
        let request = ConfigRequest {
            flags: Some(FlagChange {
                mask: NFQA_CFG_F_CONNTRACK,
                values: if on { NFQA_CFG_F_CONNTRACK } else { 0 },
            }),
            ..ConfigRequest::default()
        };
        self.configure(&request, CONNTRACK_CONTEXT)?;
        self.link.set_conntrack(on);
        Ok(())
    }

    /// Waits at most `timeout` (rounded to whole microseconds; zero: does not wait) for
    /// packets, reads the datagrams that are ready (up to 64, one `recvmmsg`), and calls `f`
    /// for each packet. Returns how many packets `f` saw; 0 on
    /// timeout or a signal. Give each packet a verdict afterwards with [`VerdictSink::verdict`]
    /// in the same order, then [`flush`](Self::flush).
    ///
    /// A socket overflow (ENOBUFS) is counted in [`overflows`](Self::overflows), not returned
    /// as an error: the packets the kernel could not deliver are already gone.
    pub fn recv_batch(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&Packet<'_>),
    ) -> Result<usize, QueueError> {
        self.receive(timeout, &mut |packet, _| f(packet))
    }

    /// Like [`recv_batch`](Self::recv_batch), but `f` can give verdicts at once through the
    /// [`Verdicts`] it is lent; pending verdicts are flushed before returning.
    pub fn recv_batch_with(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&Packet<'_>, &mut Verdicts<'_>),
    ) -> Result<usize, QueueError> {
        let n = self.receive(timeout, &mut |packet, link| f(packet, &mut Verdicts { link }))?;
        self.link.flush()?;
        Ok(n)
    }

    /// Sends pending verdicts and then a single `NFQNL_MSG_VERDICT` for `id`, in one datagram.
    /// The unbatched path; the benchmarks use it as the "one message per packet" baseline.
    pub fn verdict_single(&mut self, id: u32, verdict: Verdict, mark: Option<u32>) -> Result<(), QueueError> {
        self.link.single(id, verdict, mark, None)
    }

    /// Sends pending batched verdicts.
    pub fn flush(&mut self) -> Result<(), QueueError> {
        self.link.flush()
    }

    /// Flushes pending verdicts, decides the packets received but not decided (accept when
    /// fail-open, else drop), and unbinds the queue. Dropping a `Queue` does the same but can
    /// only ignore errors.
    pub fn close(mut self) -> Result<(), QueueError> {
        self.closed = true;
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), QueueError> {
        let flushed = self.link.flush();
        if self.link.fail_open() {
            // Collect what waits in the socket too, so it is accepted rather than dropped by the
            // unbind. Packets arriving after this are dropped by the kernel when we unbind; with
            // --queue-bypass, packets after the unbind pass.
            for _ in 0..SHUTDOWN_DRAIN_ROUNDS {
                match self.receive(Duration::ZERO, &mut |_, _| {}) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let undecided = match self.link.last_ids() {
            (Some(received), Some(decided)) => id_after(received, decided).then_some(received),
            (received, _) => received,
        };
        let decided = match undecided {
            Some(id) => {
                let verdict = if self.link.fail_open() { Verdict::Accept } else { Verdict::Drop };
                self.link.encode(VerdictMsg { scope: VerdictScope::UpTo, id, verdict, mark: None });
                self.link.send_tx()
            }
            None => Ok(()),
        };
        let request = ConfigRequest { command: Some(NFQNL_CFG_CMD_UNBIND), ..ConfigRequest::default() };
        let unbound = self.configure(&request, "unbind the queue");
        flushed.and(decided).and(unbound)
    }

    /// Sends one config request (after any pending verdicts) and waits for its ACK. Retries
    /// once on EAGAIN, which the kernel answers after loading a module the request needs.
    fn configure(&mut self, request: &ConfigRequest, context: &'static str) -> Result<(), QueueError> {
        self.link.flush()?;
        for attempt in 0..2 {
            let seq = self.link.next_seq();
            let mut buf = Vec::with_capacity(64);
            msg::encode_config(&mut buf, self.link.queue(), seq, request);
            sys::send_to_kernel(self.link.fd(), &[&buf]).map_err(|e| QueueError::io(context, e))?;
            match self.wait_ack(seq, context) {
                Err(QueueError::Io { source, .. })
                    if attempt == 0 && source.raw_os_error() == Some(libc::EAGAIN) => {}
                other => return other,
            }
        }
        Err(QueueError::io(context, io::Error::from_raw_os_error(libc::EAGAIN)))
    }

    /// Reads until the ACK (or error reply) for `seq` arrives, stashing anything else.
    fn wait_ack(&mut self, seq: u32, context: &'static str) -> Result<(), QueueError> {
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QueueError::io(
                    context,
                    io::Error::new(io::ErrorKind::TimedOut, "no ACK from the kernel"),
                ));
            }
            if !sys::poll_readable(self.link.fd(), left)
                .map_err(|e| QueueError::io("poll the queue socket", e))?
            {
                continue;
            }
            let n = {
                let (fd, stats) = self.link.reader();
                self.rx.read(fd, stats)
            }?;
            let mut answer = None;
            for i in 0..n {
                let info = self.rx.received[i];
                let bytes = self.rx.slot(i, info.len);
                if !info.from_kernel {
                    self.link.stats_mut().foreign += 1;
                    continue;
                }
                let ack = MsgIter::new(bytes).map_while(Result::ok).find_map(|m| {
                    (m.kind == NLMSG_ERROR && m.seq == seq).then(|| msg::error_code(m.payload))
                });
                match ack {
                    Some(code) => answer = Some(code),
                    // Packets queued before the ACK: keep them for the next receive. Only
                    // happens while configuring, never in steady state.
                    None => self.rx.stash.push(bytes.to_vec()),
                }
            }
            match answer {
                None => continue,
                Some(Some(0)) => return Ok(()),
                Some(Some(code)) => {
                    return Err(QueueError::io(context, io::Error::from_raw_os_error(code.saturating_neg())))
                }
                Some(None) => return Err(QueueError::Malformed(format!("{context}: error reply too short"))),
            }
        }
    }

    /// Delivers stashed datagrams if any, else waits for and reads one batch.
    fn receive(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(&Packet<'_>, &mut QueueSocket),
    ) -> Result<usize, QueueError> {
        if !self.rx.stash.is_empty() {
            let stash = std::mem::take(&mut self.rx.stash);
            let info = |len| Received { len, truncated: false, from_kernel: true };
            return Ok(stash.iter().map(|d| self.link.deliver(d, info(d.len()), f)).sum());
        }
        // Without tries to make, a waiting read is the only read: it returns at once when
        // datagrams are ready, so a non-blocking read first would be one system call more per
        // wake-up.
        let waits_at_once = self.spin.tries() == 0 && !timeout.is_zero();
        let mut n = if waits_at_once {
            0
        } else {
            {
                let (fd, stats) = self.link.reader();
                self.rx.read(fd, stats)
            }?
        };
        let mut tries = 0;
        while n == 0 && tries < self.spin.tries() {
            std::thread::yield_now();
            tries += 1;
            n = {
                let (fd, stats) = self.link.reader();
                self.rx.read(fd, stats)
            }?;
        }
        if n > 0 {
            self.spin.found(tries);
        } else {
            if timeout.is_zero() {
                return Ok(0);
            }
            let started = Instant::now();
            n = {
                let (fd, stats) = self.link.reader();
                self.rx.wait(fd, stats, timeout)
            }?;
            self.spin.waited(started.elapsed());
        }
        let mut packets = 0;
        for i in 0..n {
            let info = self.rx.received[i];
            packets += self.link.deliver(self.rx.slot(i, info.len), info, f);
        }
        Ok(packets)
    }
}

/// How the kernel says "another socket holds this queue": EBUSY from older code paths, EPERM
/// from the port check that comes first in current kernels. EPERM also means "no
/// CAP_NET_ADMIN", so it only counts as busy when we have that capability.
fn is_busy(error: &io::Error) -> bool {
    match error.raw_os_error() {
        Some(libc::EBUSY) => true,
        Some(libc::EPERM) => sys::has_net_admin(),
        _ => false,
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            // Nowhere to report errors from a destructor; `close` returns them.
            let _ = self.shutdown();
        }
    }
}

impl AsRawFd for Queue {
    fn as_raw_fd(&self) -> RawFd {
        self.link.fd().as_raw_fd()
    }
}

impl AsFd for Queue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.link.fd()
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("queue", &self.link.queue())
            .field("fd", &self.link.fd().as_raw_fd())
            .field("stats", self.link.stats())
            .finish_non_exhaustive()
    }
}

/// What gives verdicts: a [`Queue`], or the [`Verdicts`] it lends while a batch is read, so that
/// code deciding packets can send through either.
pub trait VerdictSink {
    /// Queues a verdict (batched; equal consecutive verdicts/marks coalesce). Sent when the run
    /// reaches the maximum batch, or on [`Queue::flush`].
    fn verdict(&mut self, id: u32, verdict: Verdict, mark: Option<u32>) -> Result<(), QueueError>;
    /// Queues a verdict deciding `id` alone (`NFQNL_MSG_VERDICT`), sent with the next flush or
    /// batch: for a consumer that holds some packets undecided (a batch verdict would decide
    /// every waiting packet up to its id) and decides later ones meanwhile.
    fn verdict_one(&mut self, id: u32, verdict: Verdict, mark: Option<u32>) -> Result<(), QueueError>;
    /// A verdict replacing the packet's bytes; sent at once (after flushing the batch).
    ///
    /// `payload` replaces the whole packet: if the packet was copied only partly (copy range
    /// below its length), what was not copied is lost. At most 65531 bytes.
    fn verdict_with_payload(
        &mut self,
        id: u32,
        verdict: Verdict,
        mark: Option<u32>,
        payload: &[u8],
    ) -> Result<(), QueueError>;
}

/// Both senders hold the queue's socket as `link`; the verdicts are its.
macro_rules! sends_through_link {
    ($sender:ty) => {
        impl VerdictSink for $sender {
            fn verdict(&mut self, id: u32, verdict: Verdict, mark: Option<u32>) -> Result<(), QueueError> {
                self.link.verdict(id, verdict, mark)
            }

            fn verdict_one(
                &mut self,
                id: u32,
                verdict: Verdict,
                mark: Option<u32>,
            ) -> Result<(), QueueError> {
                self.link.one(id, verdict, mark)
            }

            fn verdict_with_payload(
                &mut self,
                id: u32,
                verdict: Verdict,
                mark: Option<u32>,
                payload: &[u8],
            ) -> Result<(), QueueError> {
                self.link.single(id, verdict, mark, Some(payload))
            }
        }
    };
}

sends_through_link!(Queue);
sends_through_link!(Verdicts<'_>);

impl Verdicts<'_> {
    /// The queue number.
    pub fn queue(&self) -> u16 {
        self.link.queue()
    }

    /// As [`Queue::verdict_single`].
    pub fn verdict_single(&mut self, id: u32, verdict: Verdict, mark: Option<u32>) -> Result<(), QueueError> {
        self.link.single(id, verdict, mark, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_halve_while_they_fail_and_come_back_when_they_pay() {
        let mut spin = Spin(YIELDS_BEFORE_WAIT);
        let slow = QUICK_WAIT * 4;
        let after: Vec<usize> = (0..5)
            .map(|_| {
                spin.waited(slow);
                spin.tries()
            })
            .collect();
        assert_eq!(after, [5, 2, 1, 0, 0]);
        spin.found(0);
        assert_eq!(spin.tries(), 0, "packets ready at the first read say nothing about the tries");
        spin.waited(QUICK_WAIT / 2);
        assert_eq!(spin.tries(), YIELDS_BEFORE_WAIT, "a short wait: a few tries would have found it");
        spin.waited(slow);
        spin.found(3);
        assert_eq!(spin.tries(), YIELDS_BEFORE_WAIT, "a try found packets");
    }

    #[test]
    fn queue_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Queue>();
    }
}
