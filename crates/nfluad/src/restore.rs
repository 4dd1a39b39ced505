//! Start-up from `--state-dir`: the journal's states, chunks and hooks
//! rebuilt through the engine, each state on its own — one that cannot be
//! rebuilt is put aside and reported, the rest come back (see
//! [`crate::journal`] for what is kept of it).

use nflua_engine::{EngineError, StateConfig};

use crate::handler::Handler;
use crate::journal::{Restored, StateEntry};

/// Why a journaled state could not be rebuilt.
#[derive(Debug, thiserror::Error)]
enum RestoreError {
    #[error("creating state {state:?}: {source}")]
    Create { state: String, source: EngineError },
    #[error("replaying chunk {chunk} ({name:?}) of state {state:?}: {source}")]
    Replay { chunk: u64, name: String, state: String, source: EngineError },
}

impl Handler {
    /// Rebuilds what the journal (already in `self.journal`) recorded:
    /// states, their chunks in order, then hooks. A state that cannot be
    /// rebuilt — damaged files, a chunk that no longer replays as it did — is
    /// dropped, logged at ERROR and listed as failed, and so are its hooks;
    /// everything else comes back. Returns (states, chunks, hooks) restored.
    pub fn restore(&mut self, restored: Restored) -> (usize, usize, usize) {
        let (mut states, mut chunks, mut hooks) = (0, 0, 0);
        let mut failed = restored.damaged;
        for (state, texts) in restored.states {
            match self.restore_state(&state, texts) {
                Ok(n) => {
                    states += 1;
                    chunks += n;
                }
                Err(reason) => {
                    let _ = self.engine.destroy(&state.name);
                    failed.push((state.name, reason.to_string()));
                }
            }
        }
        for (name, reason) in &failed {
            tracing::error!(
                state = %name,
                %reason,
                "state not restored from the journal: not served; its journal entries are kept \
                 (destroying the state discards them)"
            );
            if let Some(journal) = &self.journal {
                crate::jobs::lock_journal(journal).mark_failed(name, reason);
            }
        }
        for spec in restored.hooks {
            let (first, last) = (spec.queue_first, spec.queue_last);
            let reason = if failed.iter().any(|(name, _)| *name == spec.state) {
                format!("its state {:?} was not restored", spec.state)
            } else {
                match self.hooks.add(spec.clone()) {
                    Ok(()) => {
                        hooks += 1;
                        continue;
                    }
                    Err(e) => e.to_string(),
                }
            };
            tracing::error!(state = %spec.state, function = %spec.function, queues = %format_args!("{first}:{last}"), %reason, "hook not restored from the journal");
        }
        (states, chunks, hooks)
    }

    /// Creates one journaled state and replays its chunks; returns how many.
    fn restore_state(&mut self, state: &StateEntry, texts: Vec<Vec<u8>>) -> Result<usize, RestoreError> {
        let config = StateConfig {
            name: state.name.clone(),
            max_alloc_bytes: state.max_alloc,
            max_runs: state.max_runs,
            debug: state.debug,
        };
        self.engine
            .create(config)
            .map_err(|source| RestoreError::Create { state: state.name.clone(), source })?;
        for (chunk, text) in state.chunks.iter().zip(&texts) {
            match self.engine.execute(&state.name, text, &chunk.name) {
                Ok(()) => {}
                Err(e) if chunk.failed => {
                    tracing::debug!(state = %state.name, chunk = chunk.id, error = %e, "replayed chunk failed, as it did when executed");
                }
                Err(source) => {
                    return Err(RestoreError::Replay {
                        chunk: chunk.id,
                        name: chunk.name.clone(),
                        state: state.name.clone(),
                        source,
                    })
                }
            }
        }
        Ok(texts.len())
    }
}
