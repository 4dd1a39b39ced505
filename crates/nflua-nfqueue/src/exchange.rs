//! One request and its answer on a `NETLINK_NETFILTER` socket: send, then read until the
//! message with the request's sequence number, within a time bound. Shared by the accounting
//! and conntrack clients (the queue itself never waits for answers in its packet path).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::consts::NLMSG_ERROR;
use crate::msg::{self, MsgIter, NlMsg};
use crate::sys::{self, Received, RecvSlots};
use crate::QueueError;

/// How long a request waits for the kernel's answer (it normally comes before `send` returns).
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends `request` and returns what `answer` makes of the first datagram that holds the answer
/// to `seq` (`Some`); an `Err(errno)` from it becomes the error, with `context`.
pub(crate) fn request<T>(
    fd: BorrowedFd<'_>,
    rx: &mut RecvSlots,
    request: &[u8],
    context: &'static str,
    mut answer: impl FnMut(&[u8]) -> Option<Result<T, i32>>,
) -> Result<T, QueueError> {
    sys::send_to_kernel(fd, &[request]).map_err(|e| QueueError::io(context, e))?;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(QueueError::io(
                context,
                io::Error::new(io::ErrorKind::TimedOut, "no answer from the kernel"),
            ));
        }
        if !sys::poll_readable(fd, left).map_err(|e| QueueError::io(context, e))? {
            continue;
        }
        let mut info = [Received::default()];
        let n = rx.recv(fd, &mut info, false).map_err(|e| QueueError::io(context, e))?;
        if n == 0 || !info[0].from_kernel {
            continue;
        }
        if let Some(result) = answer(rx.slot(0, info[0].len)) {
            return result.map_err(|errno| QueueError::io(context, io::Error::from_raw_os_error(errno)));
        }
    }
}

/// The answer to request `seq` in one datagram, if it holds one: what `decode` makes of the
/// message (`Ok(Some)`), an ACK (`Ok(None)`) or an errno; a datagram that cannot be read is
/// EPROTO.
pub(crate) fn answer_to<T>(
    datagram: &[u8],
    seq: u32,
    decode: impl FnOnce(&NlMsg<'_>) -> Result<T, i32>,
) -> Option<Result<Option<T>, i32>> {
    for m in MsgIter::new(datagram) {
        let Ok(m) = m else { return Some(Err(libc::EPROTO)) };
        if m.seq != seq {
            continue;
        }
        if m.kind == NLMSG_ERROR {
            return match msg::error_code(m.payload)? {
                0 => Some(Ok(None)),
                code => Some(Err(-code)),
            };
        }
        return Some(decode(&m).map(Some));
    }
    None
}
