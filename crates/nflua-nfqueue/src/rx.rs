//! The receive side: one buffer cut into `MAX_RECV_SLOTS` slots that `recvmmsg` fills in one
//! call, each big enough for a packet message at the configured copy range; plus the stash of
//! datagrams read while waiting for a config ACK.

use std::os::fd::BorrowedFd;

use crate::attr::align4;
use crate::consts::MAX_COPY_RANGE;
use crate::sys::{self, Received, MAX_RECV_SLOTS};
use crate::{QueueError, QueueStats};

/// Room in each receive slot beyond the copied packet bytes, for the nlmsghdr, nfgenmsg and
/// every attribute the kernel may add (conntrack info is the largest, a few hundred bytes).
const SLOT_HEADROOM: usize = 4096;

pub(crate) struct Rx {
    pub buf: Vec<u8>,
    pub slot_size: usize,
    pub received: [Received; MAX_RECV_SLOTS],
    /// Datagrams read while waiting for a config ACK, delivered by the next receive.
    pub stash: Vec<Vec<u8>>,
}

fn slot_size_for(copy_range: u32) -> usize {
    let copied = if copy_range == 0 { MAX_COPY_RANGE } else { copy_range.min(MAX_COPY_RANGE) };
    align4(copied as usize) + SLOT_HEADROOM
}

impl Rx {
    /// Slots for packets copied up to `copy_range` bytes, allocated once.
    pub fn new(copy_range: u32) -> Self {
        let slot_size = slot_size_for(copy_range);
        Rx {
            buf: vec![0; slot_size * MAX_RECV_SLOTS],
            slot_size,
            received: [Received::default(); MAX_RECV_SLOTS],
            stash: Vec::new(),
        }
    }

    pub fn slot(&self, index: usize, len: usize) -> &[u8] {
        let start = index * self.slot_size;
        &self.buf[start..start + len.min(self.slot_size)]
    }

    /// One `recvmmsg`. ENOBUFS is counted and the read retried once: the error only reports the
    /// overflow, the datagrams that did fit are still waiting.
    pub fn read(&mut self, fd: BorrowedFd<'_>, stats: &mut QueueStats) -> Result<usize, QueueError> {
        for _ in 0..2 {
            match sys::recv_many(fd, &mut self.buf, self.slot_size, &mut self.received) {
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
        assert_eq!(Rx::new(64).buf.len(), MAX_RECV_SLOTS * (64 + SLOT_HEADROOM));
    }
}
