//! What can go wrong talking to the daemon, each with the errno the Lua
//! module reports (`nil, message, errno`).

use std::io;

use nflua_proto::consts::{DATA_MAX, SCRIPT_MAX};
use nflua_proto::{errno, FragmentError, NameError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("nfluad is not running on port {port}")]
    NotRunning { port: u32 },
    /// The daemon answered with an error; `message` is its text, or the
    /// errno's description when it sent none.
    #[error("{message}")]
    Daemon { errno: i32, message: String },
    /// A command was sent while another is outstanding, or `receive` was
    /// called with nothing outstanding (the seed's EPERM).
    #[error("Operation not permitted")]
    NotReady,
    /// The socket saw a protocol violation and must be closed.
    #[error("socket has failed: {0}")]
    Failed(String),
    #[error("socket is closed")]
    Closed,
    #[error("invalid state name: {0}")]
    StateName(NameError),
    #[error("invalid script name: {0}")]
    ScriptName(NameError),
    #[error("script of {0} bytes exceeds the maximum of {SCRIPT_MAX}")]
    ScriptTooLarge(usize),
    #[error("data of {0} bytes exceeds the maximum of {DATA_MAX}")]
    DataTooLarge(usize),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Messages to this socket were lost because its receive buffer was
    /// full: the kernel said so (multicast), or the daemon did, with its
    /// text (e.g. "3 messages from nfluad were dropped: receive buffer full").
    #[error("{}", message.as_deref().unwrap_or("receive buffer overflow: messages were lost"))]
    Overflow { message: Option<String> },
    #[error("timed out")]
    TimedOut,
    /// A blocking request saw no answer in time. The daemon may be busy
    /// with it (a long chunk, say): it may still be applied.
    #[error("no answer within {ms} ms; the request may still complete")]
    NoAnswer { ms: u64 },
    /// The daemon's port was given up while a request waited for its
    /// answer: the daemon died (or was stopped) with the request in hand.
    #[error("nfluad on port {port} went away before answering (its port is no longer bound); the request may or may not have been applied")]
    DaemonGone { port: u32 },
    #[error("{0}")]
    Io(io::Error),
}

impl ClientError {
    /// Positive errno for `nil, message, errno`.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::NotRunning { .. } => errno::ECONNREFUSED,
            ClientError::Daemon { errno, .. } => *errno,
            ClientError::NotReady => errno::EPERM,
            ClientError::Failed(_) => errno::EPROTO,
            ClientError::Closed => libc::EBADF,
            ClientError::StateName(_) | ClientError::ScriptName(_) | ClientError::InvalidArgument(_) => {
                errno::EINVAL
            }
            ClientError::ScriptTooLarge(_) | ClientError::DataTooLarge(_) => errno::EMSGSIZE,
            ClientError::Overflow { .. } => errno::ENOBUFS,
            ClientError::TimedOut | ClientError::NoAnswer { .. } => libc::ETIMEDOUT,
            ClientError::DaemonGone { .. } => errno::ECONNREFUSED,
            ClientError::Io(e) => e.raw_os_error().unwrap_or(errno::EIO),
        }
    }

    /// An io error from the socket, with the two cases that have a better name.
    pub(crate) fn from_io(err: io::Error, daemon_port: u32) -> ClientError {
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => ClientError::NotRunning { port: daemon_port },
            Some(libc::ENOBUFS) => ClientError::Overflow { message: None },
            _ => ClientError::Io(err),
        }
    }
}

impl From<FragmentError> for ClientError {
    fn from(e: FragmentError) -> Self {
        match e {
            FragmentError::StateName(n) => ClientError::StateName(n),
            FragmentError::ScriptName(n) => ClientError::ScriptName(n),
            FragmentError::TooLarge(n) | FragmentError::BundleTooLarge(n) => ClientError::ScriptTooLarge(n),
            FragmentError::Bundle(e) => ClientError::InvalidArgument(e.to_string()),
        }
    }
}

/// The C library's text for `errno`, without Rust's "(os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_has_no_suffix() {
        assert_eq!(strerror(1), "Operation not permitted");
        assert_eq!(strerror(2), "No such file or directory");
    }

    #[test]
    fn overflow_shows_the_daemons_text_when_there_is_one() {
        let kernel = ClientError::from_io(io::Error::from_raw_os_error(libc::ENOBUFS), 1);
        assert_eq!(kernel.to_string(), "receive buffer overflow: messages were lost");
        let daemon = ClientError::Overflow { message: Some("2 messages were dropped".into()) };
        assert_eq!(daemon.to_string(), "2 messages were dropped");
        assert_eq!((kernel.errno(), daemon.errno()), (errno::ENOBUFS, errno::ENOBUFS));
    }
}
