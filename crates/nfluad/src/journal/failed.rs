//! States the journal holds but the daemon does not serve, because they
//! could not be restored: a chunk that no longer replays, a chunk file that
//! is damaged or missing. Shared between the journal (which keeps their
//! entries), the request handler (STATS, CREATE and DESTROY of such a name)
//! and the metrics server.

use std::sync::{Arc, RwLock};

use serde::Serialize;

/// One state that failed to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedState {
    pub name: String,
    /// Why, as logged at start.
    pub reason: String,
    /// The journaled hooks of the state, not restored either, as
    /// `queues FIRST:LAST function F`.
    pub hooks: Vec<String>,
}

/// The shared list; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RestoreFailures(Arc<RwLock<Vec<FailedState>>>);

impl RestoreFailures {
    pub fn list(&self) -> Vec<FailedState> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn get(&self, name: &str) -> Option<FailedState> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).iter().find(|f| f.name == name).cloned()
    }

    pub(super) fn add(&self, failed: FailedState) {
        let mut list = self.0.write().unwrap_or_else(|e| e.into_inner());
        list.retain(|f| f.name != failed.name);
        list.push(failed);
    }

    pub(super) fn remove(&self, name: &str) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).retain(|f| f.name != name);
    }
}
