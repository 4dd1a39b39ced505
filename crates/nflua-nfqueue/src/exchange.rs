//! One request and its answer on a `NETLINK_NETFILTER` socket: send, then read until the
//! message with the request's sequence number, within a time bound. Shared by the accounting
//! and conntrack clients (the queue itself never waits for answers in its packet path).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

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
