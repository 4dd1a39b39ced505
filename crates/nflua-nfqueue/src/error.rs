//! The crate's error type.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The kernel refused the bind because another socket holds the queue (EBUSY, or EPERM
    /// while we have CAP_NET_ADMIN, which is how current kernels say it).
    #[error("queue {queue} is already bound by another program")]
    Busy { queue: u16 },
    /// A system call failed, or the kernel refused a request; `context` says which.
    #[error("{context}: {source}")]
    Io { context: &'static str, source: io::Error },
    #[error("malformed message from the kernel: {0}")]
    Malformed(String),
}

impl QueueError {
    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        QueueError::Io { context, source }
    }

    /// The errno behind this error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            QueueError::Busy { .. } => Some(libc::EBUSY),
            QueueError::Io { source, .. } => source.raw_os_error(),
            QueueError::Malformed(_) => None,
        }
    }
}
