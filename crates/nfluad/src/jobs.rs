//! Work that enters a state — EXECUTE, DATA, DESTROY and due timers — as jobs for the state's
//! lane (see `lanes.rs`), and what running one does: the engine call, the journal record, the
//! reply datagram.
//!
//! A job runs on a worker thread, never on the receiving thread, so the time a script takes
//! delays only later jobs of its own state. The worker sends the reply itself.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nflua_engine::{DueTimer, Engine, EngineError, PendingBytes};
use nflua_proto::{Header, MsgType};

use crate::handler::{ack, error_datagram, Failure};
use crate::journal::{Journal, RecordError};

/// The journal, shared by the receiving thread and the workers. Its lock orders the records of
/// changes made on different threads (see [`JobContext::run`] for DESTROY).
pub type SharedJournal = Arc<Mutex<Journal>>;

/// Locks the journal. A panic while it was held left at most a record half-written, which the
/// journal's own checks catch on the next start.
pub fn lock_journal(journal: &SharedJournal) -> MutexGuard<'_, Journal> {
    journal.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who asked for a job, to answer them: their port and their request's header.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub port: u32,
    pub header: Header,
}

/// One piece of work for one state.
#[derive(Debug)]
pub enum Job {
    /// A complete (reassembled) script.
    Execute {
        origin: Origin,
        state: String,
        chunk_name: String,
        body: Vec<u8>,
    },
    /// A reload: chunks (name, body) that replace the state's code if all of them run.
    Reload {
        origin: Origin,
        state: String,
        chunks: Vec<(String, Vec<u8>)>,
    },
    /// A DATA message for the state's `__receive_callback`; counted in the state's memory
    /// while it waits (`held`).
    Data {
        origin: Origin,
        state: String,
        payload: Vec<u8>,
        held: PendingBytes,
    },
    Destroy {
        origin: Origin,
        state: String,
    },
    Timer(DueTimer),
}

impl Job {
    /// The state (and lane) the job belongs to.
    pub fn state(&self) -> &str {
        match self {
            Job::Execute { state, .. }
            | Job::Reload { state, .. }
            | Job::Data { state, .. }
            | Job::Destroy { state, .. } => state,
            Job::Timer(timer) => timer.state_name(),
        }
    }

    /// Bytes the job holds while queued, for the lane's bounds.
    pub fn bytes(&self) -> usize {
        match self {
            Job::Execute { body, chunk_name, .. } => body.len() + chunk_name.len(),
            Job::Reload { chunks, .. } => chunks.iter().map(|(name, body)| name.len() + body.len()).sum(),
            Job::Data { payload, .. } => payload.len(),
            Job::Destroy { .. } | Job::Timer(_) => 0,
        }
    }
}

/// What running a job needs.
pub struct JobContext {
    pub engine: Arc<Engine>,
    pub journal: Option<SharedJournal>,
    /// Our own port id, the sender field of every reply header.
    pub port: u32,
}

impl JobContext {
    /// Runs `job`; returns the reply to send and the port to send it to (none for timers and
    /// for DATA delivered without error, which the protocol does not acknowledge).
    pub fn run(&self, job: Job) -> Option<(u32, Vec<u8>)> {
        let (origin, state, result) = match job {
            Job::Execute { origin, state, chunk_name, body } => {
                let result = self.execute(&state, &chunk_name, &body).map(|()| Some(MsgType::Execute));
                (origin, Some(state), result)
            }
            Job::Reload { origin, state, chunks } => {
                let result = self.reload(&state, &chunks).map(|()| Some(MsgType::Execute));
                (origin, Some(state), result)
            }
            Job::Data { origin, state, payload, held } => {
                // The callback gets the room back: the payload moves into its buffer.
                drop(held);
                let result =
                    self.engine.deliver(&state, origin.port, &payload).map(|()| None).map_err(Failure::from);
                (origin, Some(state), result)
            }
            Job::Destroy { origin, state } => {
                let result = self.destroy(&state).map(|()| Some(MsgType::Destroy));
                (origin, Some(state), result)
            }
            Job::Timer(timer) => {
                self.engine.run_timer(timer);
                return None;
            }
        };
        let reply = match result {
            Ok(None) => return None,
            Ok(Some(ty)) => ack(ty, origin.header.seq, self.port),
            Err(f) => {
                crate::failure_log::warn(origin.header.ty, state.as_deref(), origin.port, f.errno, &f.text);
                error_datagram(f.errno, &origin.header, &f.text, self.port)
            }
        };
        Some((origin.port, reply))
    }

    fn execute(&self, state: &str, chunk_name: &str, body: &[u8]) -> Result<(), Failure> {
        let ran = self.engine.execute(state, body, chunk_name);
        // A chunk that raised may still have changed globals before it did: it is journaled
        // too, so a replay ends in the same place.
        if let Ok(()) | Err(EngineError::Lua(_)) = &ran {
            let failed = ran.is_err();
            journaled(self.journal.as_ref(), state, |j| j.record_execute(state, chunk_name, body, failed))?;
        }
        ran.map_err(Failure::from)
    }

    /// Destroys `state`. With a journal, its lock is held from before the state leaves the
    /// engine until the record is written: a CREATE of the same name on the receiving thread
    /// can only succeed after the removal, so its record then lands after this one and a replay
    /// does not destroy the new state. (The wait inside is for a packet hook call in the state,
    /// bounded by its limits.)
    /// The new code is journaled in place of the old only once it is in place: the journal
    /// replays what runs.
    fn reload(&self, state: &str, chunks: &[(String, Vec<u8>)]) -> Result<(), Failure> {
        let borrowed: Vec<(&str, &[u8])> = chunks.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        self.engine.reload(state, &borrowed)?;
        journaled(self.journal.as_ref(), state, |j| j.record_reload(state, &borrowed))
    }

    fn destroy(&self, state: &str) -> Result<(), Failure> {
        let Some(journal) = &self.journal else {
            return self.engine.destroy(state).map_err(Failure::from);
        };
        let mut journal = lock_journal(journal);
        self.engine.destroy(state)?;
        record(&mut journal, state, |j| j.record_destroy(state))
    }
}

/// Records a change that already took effect. If the disk refuses, the client is told how far
/// the record got (see [`RecordError`]: lost on restart, or journaled but not synced).
pub(crate) fn journaled(
    journal: Option<&SharedJournal>,
    what: &str,
    write: impl FnOnce(&mut Journal) -> Result<(), RecordError>,
) -> Result<(), Failure> {
    match journal {
        Some(journal) => record(&mut lock_journal(journal), what, write),
        None => Ok(()),
    }
}

fn record(
    journal: &mut Journal,
    what: &str,
    write: impl FnOnce(&mut Journal) -> Result<(), RecordError>,
) -> Result<(), Failure> {
    write(journal).map_err(|e| {
        tracing::error!(%what, error = %e, "journal write failed");
        Failure::new(nflua_proto::errno::EIO, format!("{what}: {e}"))
    })
}
