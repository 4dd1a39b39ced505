//! The map of named states and the checks made before one is created.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::state::State;
use crate::{EngineConfig, EngineError, NetlinkSink, StateConfig, StateInfo, StateStats};

/// Longest state name in bytes (SPEC §2: 64 including the terminating NUL).
pub const STATE_NAME_MAX_BYTES: usize = 63;

/// All states of one daemon (one network namespace), by name.
///
/// `Engine` is `Send`: the daemon may move it to a worker thread. It is not `Sync`; one thread
/// drives it. Lua code runs on the calling thread, which needs a few MiB of stack (Lua stops C
/// recursion at 200 levels; see the crate's stack test).
pub struct Engine {
    config: EngineConfig,
    sink: Arc<dyn NetlinkSink>,
    /// Ordered by name, so `list` needs no sorting and LIST replies are stable.
    states: BTreeMap<String, State>,
}

impl Engine {
    pub fn new(config: EngineConfig, sink: Arc<dyn NetlinkSink>) -> Engine {
        Engine {
            config,
            sink,
            states: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Creates a state. Fails with `InvalidName` (empty, longer than 63 bytes, or holding a NUL),
    /// `InvalidMaxRuns` (0), `MemoryTooSmall`, `Exists`, `TooManyStates`, or `Create` when the
    /// state's libraries do not fit in its memory limit.
    pub fn create(&mut self, config: StateConfig) -> Result<(), EngineError> {
        check_name(&config.name)?;
        if config.max_runs == 0 {
            return Err(EngineError::InvalidMaxRuns);
        }
        if config.max_alloc_bytes < self.config.min_alloc_bytes {
            return Err(EngineError::MemoryTooSmall {
                got: config.max_alloc_bytes,
                min: self.config.min_alloc_bytes,
            });
        }
        if self.states.contains_key(&config.name) {
            return Err(EngineError::Exists(config.name));
        }
        if self.states.len() >= self.config.max_states {
            return Err(EngineError::TooManyStates(self.config.max_states));
        }
        let name = config.name.clone();
        let state = State::new(config, Arc::clone(&self.sink))?;
        tracing::info!(state = %name, "state created");
        self.states.insert(name, state);
        Ok(())
    }

    /// Destroys a state, closing its Lua (pending finalizers run then).
    pub fn destroy(&mut self, name: &str) -> Result<(), EngineError> {
        match self.states.remove(name) {
            Some(state) => {
                drop(state);
                tracing::info!(state = %name, "state destroyed");
                Ok(())
            }
            None => Err(EngineError::NotFound(name.to_string())),
        }
    }

    /// All states, sorted by name.
    pub fn list(&self) -> Vec<StateInfo> {
        self.states.values().map(State::info).collect()
    }

    pub fn state_count(&self) -> usize {
        self.states.len()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.states.contains_key(name)
    }

    /// Statistics of one state (SPEC §8), or `None` if there is no such state.
    pub fn stats(&self, name: &str) -> Option<StateStats> {
        self.states.get(name).map(State::stats)
    }

    /// Statistics of all states, sorted by name.
    pub fn all_stats(&self) -> Vec<StateStats> {
        self.states.values().map(State::stats).collect()
    }

    /// Runs `chunk` (Lua source; bytecode is refused) in state `name`. `chunk_name` is Lua's chunk
    /// name as sent by the client ("=chunk" by default; a leading `=` means "use as is").
    pub fn execute(
        &mut self,
        name: &str,
        chunk: &[u8],
        chunk_name: &str,
    ) -> Result<(), EngineError> {
        self.state_mut(name)?.execute(chunk, chunk_name)
    }

    /// Hands a DATA message from port `pid` to the state's `__receive_callback(pid, buffer)`.
    pub fn deliver(&mut self, name: &str, pid: u32, payload: &[u8]) -> Result<(), EngineError> {
        self.state_mut(name)?.deliver(pid, payload)
    }

    fn state_mut(&mut self, name: &str) -> Result<&mut State, EngineError> {
        self.states
            .get_mut(name)
            .ok_or_else(|| EngineError::NotFound(name.to_string()))
    }
}

fn check_name(name: &str) -> Result<(), EngineError> {
    let problem = if name.is_empty() {
        "empty"
    } else if name.len() > STATE_NAME_MAX_BYTES {
        "longer than 63 bytes"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(EngineError::InvalidName(format!(
        "{problem}: {:?}",
        truncate(name)
    )))
}

fn truncate(name: &str) -> &str {
    let mut end = name.len().min(STATE_NAME_MAX_BYTES + 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("a").is_ok());
        assert!(check_name(&"x".repeat(63)).is_ok());
        for bad in [String::new(), "x".repeat(64), "a\0b".to_string()] {
            let err = check_name(&bad).unwrap_err();
            assert_eq!(err.errno(), 22, "{err}");
        }
        // Multi-byte characters are counted in bytes and cut on a character boundary.
        let long = "é".repeat(40);
        assert!(check_name(&long).is_err());
    }

    #[test]
    fn engine_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Engine>();
    }
}
