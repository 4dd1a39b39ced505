//! Why an engine call failed, and the errno each failure travels with on the wire.

/// Failure of an [`Engine`](crate::Engine) call. The `Display` text is what the daemon sends as
/// the extended-ack message; [`EngineError::errno`] is the error code.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("state '{0}' already exists")]
    Exists(String),
    #[error("state '{0}' not found")]
    NotFound(String),
    #[error("too many states (max {0})")]
    TooManyStates(usize),
    #[error("invalid state name: {0}")]
    InvalidName(String),
    #[error("memory limit {got} is below the minimum of {min} bytes")]
    MemoryTooSmall { got: usize, min: usize },
    #[error("maxruns must be at least 1")]
    InvalidMaxRuns,
    /// The state's libraries did not fit in its memory limit (only possible with a minimum below
    /// what a fresh state needs, about 20 KiB).
    #[error("could not create state: {0}")]
    Create(String),
    /// A script failed: the Lua error message, then a traceback when there was a stack
    /// ("chunk:2: boom\nstack traceback:\n\t...").
    #[error("{0}")]
    Lua(String),
    #[error("state '{0}' has no __receive_callback")]
    NoReceiveCallback(String),
    /// DESTROY of a state a packet hook still references (see [`Engine::pin`](crate::Engine::pin)).
    #[error("state '{0}' is used by a packet hook")]
    Busy(String),
    /// A hook names a function the state does not define (the global is nil).
    #[error("state '{state}' has no function '{function}'")]
    NoFunction { state: String, function: String },
    /// The daemon handed a packet whose Lua range does not fit in its frame (a daemon bug, not
    /// the script's).
    #[error("packet range {start}..{end} does not fit in a frame of {len} bytes")]
    InvalidPacket { start: usize, end: usize, len: usize },
    /// A message for the state would not fit in its memory limit while it waits (it counts in
    /// `curralloc` until delivered).
    #[error(
        "state '{state}': not enough memory for a pending message of {bytes} bytes (maxalloc {max_alloc})"
    )]
    NoRoom { state: String, bytes: usize, max_alloc: usize },
}

impl EngineError {
    /// Positive errno this error is reported with on the wire.
    pub fn errno(&self) -> i32 {
        match self {
            EngineError::Exists(_) => libc_errno::EEXIST,
            EngineError::NotFound(_) | EngineError::NoReceiveCallback(_) | EngineError::NoFunction { .. } => {
                libc_errno::ENOENT
            }
            EngineError::Busy(_) => libc_errno::EBUSY,
            EngineError::TooManyStates(_) => libc_errno::ENOSPC,
            EngineError::InvalidName(_)
            | EngineError::MemoryTooSmall { .. }
            | EngineError::InvalidMaxRuns
            | EngineError::InvalidPacket { .. } => libc_errno::EINVAL,
            EngineError::Create(_) | EngineError::NoRoom { .. } => libc_errno::ENOMEM,
            EngineError::Lua(_) => libc_errno::EIO,
        }
    }
}

mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENOMEM: i32 = 12;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
}
