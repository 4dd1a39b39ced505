//! Named, sandboxed Lua states with memory and instruction limits, and the libraries they see.
//!
//! Used by the daemon `nfluad`: CREATE / DESTROY / LIST / EXECUTE requests and DATA messages
//! become calls on an [`Engine`]; `nf.netlink` inside a state goes out through the
//! [`NetlinkSink`] the daemon supplies.
//!
//! Never: opens sockets or files, lets a script load bytecode or reach `io`/`os`, lets one
//! state's error or limit disturb another, or panics on anything a script does.
//!
//! Depends on: `mlua` (Lua 5.4; its allocator enforces `maxalloc` exactly; feature `send` so the
//! daemon can move the engine to a worker thread), `nflua-data` (the `data` buffers DATA
//! messages arrive in), `serde_json` (module `json`), `base64` (module `base64`), `thiserror`
//! ([`EngineError`]), `tracing` (Lua's `print`, failed calls with their tracebacks).
//!
//! Layout: `engine` (the map of states), `state` (one state, and the door every call into Lua
//! goes through), `limits` (the instruction hook, the only raw Lua C API use), `sandbox` (library
//! set, `print`, `require`, `load`, GC), `traceback` (error text), `lib/` (one file per built-in
//! module: `nf`, `timer`, `json`, `base64`; `data` is nflua-data's).
//!
//! Behaviour worth knowing, each explained where it lives:
//! - [`Engine::list`] is sorted by name.
//! - A call whose instruction budget ran out fails even if the script caught the error.
//! - `setmetatable` refuses `__gc` (Lua 5.4 runs finalizers without hooks, so they cannot be
//!   stopped); `debug` states are trusted and may use `debug.setmetatable`.
//! - Library errors reach scripts as plain strings ("chunk:3: nf.netlink: ..."), as from C.
//! - `json.decode` gives `json.null` for `null`; decoders return `nil, message` on bad input.
//! - A fresh state uses about 20 KiB. The GC runs with pause 100, as the original: a DATA
//!   delivery costs about 3 µs (release build) where pause 200 would take 0.5 µs, but pause 200
//!   lets garbage buffers outrun their finalizers and exhaust a small state.
//! - Lua runs on the caller's thread: give it at least 1 MiB of stack (Lua stops C recursion at
//!   200 levels; tested on 2 MiB threads in debug builds).

mod engine;
mod error;
mod limits;
#[path = "lib/mod.rs"]
mod lualib;
mod sandbox;
mod state;
mod traceback;

pub use engine::{Engine, STATE_NAME_MAX_BYTES};
pub use error::EngineError;
pub use limits::LIMIT_MESSAGE;
pub use lualib::MODULES;

/// Largest `nf.netlink` payload (SPEC §2 data max size: 4096 − NLMSG_SPACE(68)).
pub const DATA_MAX_SIZE: usize = 4012;

/// Where `nf.netlink` sends: the daemon implements this over its socket.
pub trait NetlinkSink: Send + Sync {
    /// Sends one DATA message from state `state` (already NUL-checked name) with
    /// netlink sequence `seq` to `port` (0 = none) and multicast `groups`.
    /// Returns the payload bytes sent.
    fn send_data(
        &self,
        state: &str,
        seq: u32,
        port: u32,
        groups: u32,
        payload: &[u8],
    ) -> std::io::Result<usize>;
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Maximum number of states (SPEC: 904).
    pub max_states: usize,
    /// Smallest accepted `maxalloc` (SPEC: 32768).
    pub min_alloc_bytes: usize,
}

impl Default for EngineConfig {
    /// The SPEC's numbers: 904 states, 32768 bytes minimum.
    fn default() -> EngineConfig {
        EngineConfig {
            max_states: 904,
            min_alloc_bytes: 32768,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    pub name: String,
    /// Memory limit in bytes; an allocation past it fails as Lua's "not enough memory".
    pub max_alloc_bytes: usize,
    /// VM instructions one entry into the state (one execute, one callback) may run.
    pub max_runs: u32,
    /// The `d` flag: open the `debug` library.
    pub debug: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInfo {
    pub name: String,
    pub max_alloc_bytes: usize,
    pub cur_alloc_bytes: usize,
    pub max_runs: u32,
    pub debug: bool,
}

/// Per-state statistics (SPEC §8 `nfluactl stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateStats {
    pub name: String,
    pub cur_alloc_bytes: usize,
    /// Highest memory use seen at the end of an entry, or the limit once an allocation was
    /// refused (the true peak inside an entry is not tracked).
    pub peak_alloc_bytes: usize,
    pub max_alloc_bytes: usize,
    pub max_runs: u32,
    /// Entries run: executes and receive callbacks.
    pub calls: u64,
    /// Entries that failed, DATA without a callback, and errors in `__gc` metamethods.
    pub errors: u64,
    /// Instructions counted by the limit hook, in windows of up to 1000 per thread: a lower
    /// bound, good for spotting busy states rather than exact accounting.
    pub instructions: u64,
}
