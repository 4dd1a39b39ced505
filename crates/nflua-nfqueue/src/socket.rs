//! A queue's socket: what is sent on it (verdicts, batched by the verdict state machine into
//! the outgoing buffer; configuration requests), the decoding of what arrives on it into
//! packets, and the counters of both.
//!
//! Verdict messages are appended to the outgoing buffer and sent, several per datagram, when a
//! run reaches the maximum batch, when the buffer passes `TX_SEND_AT`, or on flush. A failed
//! send keeps the buffer, so the next flush sends it again: no verdict is dropped on the floor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::batch::{VerdictBatch, VerdictMsg};
use crate::consts::*;
use crate::msg::{self, MsgError, MsgIter, VerdictScope};
use crate::packet::{salvage_id, Packet};
use crate::sys::{self, Received};
use crate::{QueueConfig, QueueError, QueueStats, Verdict, DEFAULT_MAX_BATCH};

/// Send the outgoing buffer once it holds this much (about 200 verdict messages), so it never
/// grows in steady state.
const TX_SEND_AT: usize = 8 << 10;
const TX_CAPACITY: usize = TX_SEND_AT + 256;

pub(crate) struct QueueSocket {
    fd: OwnedFd,
    queue: u16,
    fail_open: bool,
    conntrack: bool,
    seq: u32,
    tx: Vec<u8>,
    /// Messages in `tx`, counted into the stats when sent.
    tx_msgs: u64,
    batch: VerdictBatch,
    /// Highest packet id handed to a callback, for the shutdown verdict.
    last_received: Option<u32>,
    stats: QueueStats,
}

impl QueueSocket {
    pub fn new(fd: OwnedFd, config: &QueueConfig) -> Self {
        QueueSocket {
            fd,
            queue: config.queue,
            fail_open: config.fail_open,
            conntrack: config.conntrack,
            seq: 0,
            tx: Vec::with_capacity(TX_CAPACITY),
            tx_msgs: 0,
            batch: VerdictBatch::new(DEFAULT_MAX_BATCH),
            last_received: None,
            stats: QueueStats::default(),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    pub fn fail_open(&self) -> bool {
        self.fail_open
    }

    pub fn conntrack(&self) -> bool {
        self.conntrack
    }

    pub fn set_conntrack(&mut self, on: bool) {
        self.conntrack = on;
    }

    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }

    pub fn stats_mut(&mut self) -> &mut QueueStats {
        &mut self.stats
    }

    /// The socket to read from and the counters a read updates, borrowed together.
    pub fn reader(&mut self) -> (BorrowedFd<'_>, &mut QueueStats) {
        (self.fd.as_fd(), &mut self.stats)
    }

    pub fn set_max_batch(&mut self, packets: u32) {
        self.batch.set_max_run(packets);
    }

    /// The highest packet id handed to a callback, and the highest one a pending batch
    /// verdict covers: what the shutdown verdict must reach.
    pub fn last_ids(&self) -> (Option<u32>, Option<u32>) {
        (self.last_received, self.batch.last_id())
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Hands the packets of one datagram to `f`; returns how many.
    pub fn deliver(
        &mut self,
        datagram: &[u8],
        info: Received,
        f: &mut dyn FnMut(&Packet<'_>, &mut QueueSocket),
    ) -> usize {
        if !info.from_kernel {
            self.stats.foreign += 1;
            return 0;
        }
        if info.truncated {
            self.stats.truncated += 1;
        }
        let mut packets = 0;
        for message in MsgIter::new(datagram) {
            let message = match message {
                Ok(message) => message,
                Err(MsgError::PastEnd { offset, .. }) => {
                    // A cut datagram: the header is there (MsgIter checked 16 bytes), the end
                    // is not. Still give the packet a verdict if its id can be read.
                    self.stats.malformed += 1;
                    let header = &datagram[offset..];
                    if u16::from_ne_bytes([header[4], header[5]]) == NFQNL_MSG_PACKET {
                        self.give_up(&header[NLMSG_HDRLEN..]);
                    }
                    break;
                }
                Err(MsgError::TooShort { .. }) => {
                    self.stats.malformed += 1;
                    break;
                }
            };
            match message.kind {
                NFQNL_MSG_PACKET => match Packet::decode(message.payload) {
                    Ok((queue, packet)) if queue == self.queue => {
                        self.stats.packets += 1;
                        self.last_received = Some(packet.id);
                        packets += 1;
                        f(&packet, self);
                    }
                    // Another queue's packet on our socket cannot be decided through our
                    // queue number; a socket binds one queue, so this does not happen.
                    Ok(_) => self.stats.malformed += 1,
                    Err(_) => {
                        self.stats.malformed += 1;
                        self.give_up(message.payload);
                    }
                },
                NLMSG_ERROR => match msg::error_code(message.payload) {
                    Some(0) => {} // an ACK nobody waits for any more
                    Some(code) => {
                        self.stats.kernel_errors += 1;
                        self.stats.last_kernel_errno = code.saturating_neg();
                    }
                    None => self.stats.malformed += 1,
                },
                NLMSG_NOOP | NLMSG_DONE | NLMSG_OVERRUN => {}
                _ => self.stats.malformed += 1,
            }
        }
        packets
    }

    /// Gives an undecodable packet the fail-open verdict, alone (a single verdict cannot decide
    /// packets the caller still holds).
    fn give_up(&mut self, payload: &[u8]) {
        if let Some((queue, id)) = salvage_id(payload) {
            if queue == self.queue {
                self.stats.given_up += 1;
                let verdict = if self.fail_open { Verdict::Accept } else { Verdict::Drop };
                self.encode(VerdictMsg { scope: VerdictScope::One, id, verdict, mark: None });
            }
        }
    }

    pub fn encode(&mut self, m: VerdictMsg) {
        let seq = self.next_seq();
        msg::encode_verdict(&mut self.tx, self.queue, seq, m.scope, m.id, m.verdict as u32, m.mark);
        self.tx_msgs += 1;
    }

    pub fn verdict(&mut self, id: u32, verdict: Verdict, mark: Option<u32>) -> Result<(), QueueError> {
        let QueueSocket { batch, tx, tx_msgs, seq, queue, .. } = self;
        let send_now = batch.push(id, verdict, mark, &mut |m| {
            *seq = seq.wrapping_add(1);
            msg::encode_verdict(tx, *queue, *seq, m.scope, m.id, m.verdict as u32, m.mark);
            *tx_msgs += 1;
        });
        if send_now || self.tx.len() >= TX_SEND_AT {
            self.send_tx()?;
        }
        Ok(())
    }

    /// Queues a verdict for `id` alone (`NFQNL_MSG_VERDICT`): unlike a batch it decides no
    /// other packet, so packets before it may still wait. Sent with the next flush.
    pub fn one(&mut self, id: u32, verdict: Verdict, mark: Option<u32>) -> Result<(), QueueError> {
        if let Some(m) = self.batch.close() {
            self.encode(m);
        }
        self.batch.note_single(id);
        self.encode(VerdictMsg { scope: VerdictScope::One, id, verdict, mark });
        if self.tx.len() >= TX_SEND_AT {
            self.send_tx()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), QueueError> {
        if let Some(m) = self.batch.close() {
            self.encode(m);
        }
        self.send_tx()
    }

    /// Sends everything pending plus one single verdict (with a new payload if given) in one
    /// datagram. On failure the pending verdicts stay queued; the single one is not sent.
    pub fn single(
        &mut self,
        id: u32,
        verdict: Verdict,
        mark: Option<u32>,
        payload: Option<&[u8]>,
    ) -> Result<(), QueueError> {
        if payload.is_some_and(|p| p.len() > msg::MAX_VERDICT_PAYLOAD) {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "payload longer than 65531 bytes");
            return Err(QueueError::io("verdict with payload", e));
        }
        if let Some(m) = self.batch.close() {
            self.encode(m);
        }
        self.batch.note_single(id);
        let pending = self.tx.len();
        let seq = self.next_seq();
        let padding = match payload {
            Some(p) => msg::encode_verdict_with_payload_head(
                &mut self.tx,
                self.queue,
                seq,
                id,
                verdict as u32,
                mark,
                p.len(),
            ),
            None => {
                msg::encode_verdict(
                    &mut self.tx,
                    self.queue,
                    seq,
                    VerdictScope::One,
                    id,
                    verdict as u32,
                    mark,
                );
                0
            }
        };
        let zeros = [0u8; 3];
        let sent =
            sys::send_to_kernel(self.fd.as_fd(), &[&self.tx, payload.unwrap_or(&[]), &zeros[..padding]]);
        match sent {
            Ok(_) => {
                self.count_sent(self.tx_msgs + 1);
                Ok(())
            }
            Err(e) => {
                self.tx.truncate(pending);
                Err(QueueError::io("send a verdict", e))
            }
        }
    }

    fn count_sent(&mut self, messages: u64) {
        self.stats.verdict_messages += messages;
        self.stats.verdict_sends += 1;
        self.tx.clear();
        self.tx_msgs = 0;
    }

    /// Sends the outgoing buffer as one datagram. Kept on failure, for the next flush.
    pub fn send_tx(&mut self) -> Result<(), QueueError> {
        if self.tx.is_empty() {
            return Ok(());
        }
        sys::send_to_kernel(self.fd.as_fd(), &[&self.tx]).map_err(|e| QueueError::io("send verdicts", e))?;
        self.count_sent(self.tx_msgs);
        Ok(())
    }
}
