//! The receive side: `MAX_RECV_SLOTS` slots that `recvmmsg` fills in one call, each big enough
//! for a packet message at the configured copy range; the stash of datagrams read while
//! waiting for a config ACK; and the socket's receive timeout, for waits without `poll`.

use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::attr::align4;
use crate::consts::MAX_COPY_RANGE;
use crate::sys::{self, Received, RecvSlots, MAX_RECV_SLOTS};
use crate::{QueueError, QueueStats};

/// Room in each receive slot beyond the copied packet bytes, for the nlmsghdr, nfgenmsg and
/// every attribute the kernel may add (conntrack info is the largest, a few hundred bytes).
const SLOT_HEADROOM: usize = 4096;

pub(crate) struct Rx {
    slots: RecvSlots,
    pub received: [Received; MAX_RECV_SLOTS],
    /// Datagrams read while waiting for a config ACK, delivered by the next receive.
    pub stash: Vec<Vec<u8>>,
    /// The socket's `SO_RCVTIMEO` as last set, so it is set again only when a caller's
    /// timeout changes (a worker always passes the same one).
    timeout: Option<Duration>,
}

fn slot_size_for(copy_range: u32) -> usize {
    let copied = if copy_range == 0 { MAX_COPY_RANGE } else { copy_range.min(MAX_COPY_RANGE) };
    align4(copied as usize) + SLOT_HEADROOM
}

impl Rx {
    /// Slots for packets copied up to `copy_range` bytes, allocated once.
    pub fn new(copy_range: u32) -> Self {
        Rx {
            slots: RecvSlots::new(MAX_RECV_SLOTS, slot_size_for(copy_range)),
            received: [Received::default(); MAX_RECV_SLOTS],
            stash: Vec::new(),
            timeout: None,
        }
    }

    pub fn slot(&self, index: usize, len: usize) -> &[u8] {
        self.slots.slot(index, len)
    }

    /// One `recvmmsg` that does not wait. ENOBUFS is counted and the read retried once: the
    /// error only reports the overflow, the datagrams that did fit are still waiting.
    pub fn read(&mut self, fd: BorrowedFd<'_>, stats: &mut QueueStats) -> Result<usize, QueueError> {
        self.read_with(fd, stats, false)
    }

    /// One `recvmmsg` that waits at most `timeout` for the first datagram (the socket must be
    /// blocking): one system call where `poll` and a read were two.
    pub fn wait(
        &mut self,
        fd: BorrowedFd<'_>,
        stats: &mut QueueStats,
        timeout: Duration,
    ) -> Result<usize, QueueError> {
        if self.timeout != Some(timeout) {
            sys::set_recv_timeout(fd, timeout).map_err(|e| QueueError::io("set the receive timeout", e))?;
            self.timeout = Some(timeout);
        }
        self.read_with(fd, stats, true)
    }

    fn read_with(
        &mut self,
        fd: BorrowedFd<'_>,
        stats: &mut QueueStats,
        wait: bool,
    ) -> Result<usize, QueueError> {
        for _ in 0..2 {
            match self.slots.recv(fd, &mut self.received, wait) {
                Ok(n) => return Ok(n),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => stats.overflows += 1,
                Err(e) => return Err(QueueError::io("receive from the queue socket", e)),
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_copy_range() {
        assert_eq!(slot_size_for(64), 64 + SLOT_HEADROOM);
        assert_eq!(slot_size_for(65), 68 + SLOT_HEADROOM);
        assert_eq!(slot_size_for(0), slot_size_for(0xFFFF));
        assert_eq!(slot_size_for(u32::MAX), align4(65531) + SLOT_HEADROOM);
        let rx = Rx::new(64);
        assert_eq!(rx.slots.slot_size(), 64 + SLOT_HEADROOM);
        assert_eq!(rx.slots.capacity(), MAX_RECV_SLOTS * (64 + SLOT_HEADROOM));
    }
}
