//! Named, sandboxed Lua states with memory and instruction limits, the libraries they see, packet
//! hooks and timers.
//!
//! Used by the daemon `nfluad`: CREATE / DESTROY / LIST / EXECUTE requests, DATA messages,
//! queued packets and due timers become calls on an [`Engine`]; `nf.netlink` and `nf.reply`
//! inside a state go out through the [`NetlinkSink`] the daemon supplies.
//!
//! Never: opens sockets or files, lets a script load bytecode or reach `io`/`os`, lets one
//! state's error or limit disturb another, or panics on anything a script does.
//!
//! Depends on: `mlua` (Lua 5.4; its allocator enforces `maxalloc` exactly; feature `send` so
//! states can be used from several threads), `nflua-data` (the `data` buffers DATA messages and
//! packets arrive in), `nflua-packet` (`nf.reply` and `packet:send` build packets), `serde_json`
//! (module `json`), `base64` (module `base64`), `thiserror` ([`EngineError`]), `tracing` (Lua's
//! `print`, failed calls with their tracebacks).
//!
//! Layout: `engine` (the map of states and the locking design), `state` (one state, and the door
//! every call into Lua goes through), `hook` (packet hook calls and their outcome), `timers` (the
//! deadline heap behind `timer.create`), `memory` (what a state holds outside its Lua heap, against
//! `maxalloc`), `limits` (instruction budget, wall clock and halt: the count hook and the charges
//! of library work), `coroutines` (the coroutine functions that keep instruction accounting exact),
//! `costs` (what standard library functions charge: raw C wrappers), `patterns`
//! (`string.find/match/gmatch/gsub` over a matcher that charges its steps: one instruction per
//! matcher step and per byte produced), `sandbox` (library set, `print`, `require`, `load`, GC),
//! `traceback` (error text), `watchdog` (the thread that stops late entries), `lualib/` (one file per
//! built-in module: `nf`, `timer`, `json`, `base64`, and `packet`, the object `nf.getpacket`
//! returns; `data` is nflua-data's).
//!
//! Threads: [`Engine`] is `Send + Sync` and all its methods take `&self`. The daemon's control
//! thread creates and lists; its workers execute, deliver, destroy and run timers (a timer thread
//! sleeps until [`Engine::next_timer`], takes what is due with [`Engine::take_due_timers`] and
//! hands each to a worker, which calls [`Engine::run_timer`]); one NFQUEUE worker per queue calls
//! hooks. Calls into one state take turns on that state's lock; calls into different states run
//! in parallel; the map of states is locked only to look a state up; [`Engine::list`] and
//! [`Engine::stats`] never wait for a state (see `engine.rs`).
//!
//! Cost model (`costs` for the standard library, each module for its own functions): library
//! functions run no VM instructions, so those whose work grows with their arguments charge it
//! to the entry's instruction budget before (or while) doing it, and a charge that does not fit
//! stops the entry like the count hook does.
//!
//! | function | instructions charged |
//! |---|---|
//! | `string.rep(s, n, sep)` | n + n·(#s + #sep) |
//! | `string.byte`, `string.sub`, `utf8.codepoint`, `utf8.len` | bytes returned / scanned |
//! | `string.upper/lower/reverse`, `string.packsize`, `utf8.codes`, `tonumber` | #s |
//! | `string.char`, `utf8.char`, `table.pack`, `select` | arguments |
//! | `string.format` | format bytes + string argument bytes + arguments |
//! | `string.pack` / `string.unpack` | 16·#fmt + sizes in fmt + strings / 16·#fmt + #s |
//! | `string.dump` | bytes produced (after: bounded by a function already held) |
//! | `table.concat` | elements + separator bytes, then the elements' bytes |
//! | `table.move`, `table.unpack` | elements moved / returned |
//! | `table.insert(t, pos, v)`, `table.remove` | elements shifted |
//! | `table.sort` | n·⌈log2 n⌉ (comparator instructions besides) |
//! | `utf8.offset(s, n, i)` | bytes from i toward the end it walks |
//! | `load` | bytes compiled (each piece a reader returns) |
//! | `collectgarbage("collect"/"step")` | heap bytes / 16 |
//! | `print`, `warn` | string bytes |
//! | `json.encode` | entries + n·⌈log2 n⌉ per table, + string bytes |
//! | `json.decode` | bytes parsed + values made |
//! | `base64.encode` / `decode` | bytes produced / scanned |
//! | `nf.netlink`, `nf.reply`, `packet:send` | payload bytes |
//!
//! Free (work bounded by a small constant, paid by the call's own instruction): `math.*`,
//! `string.len`, `type`, `rawget`/`rawset`/`rawlen`/`rawequal`, `next`, `pairs`, `ipairs`,
//! `tostring`, `getmetatable`, `setmetatable`, `error`, `assert`, `pcall`, `xpcall`, `nf.time`,
//! `nf.connid`, `nf.hotdrop`, `nf.getpacket`, `timer.*`. Not covered by charges (the wall-clock
//! limit is their backstop): VM instructions whose work grows with their operands (`..` on long
//! strings, `...` and calls with very many arguments) and `next` over a large table that was
//! emptied. `string.find/match/gmatch/gsub` and the `data` module charge their own work.
//!
//! Behaviour worth knowing, each explained where it lives:
//! - [`Engine::list`] is sorted by name.
//! - A call whose instruction budget ran out fails even if the script caught the error.
//! - `maxruns` is exact across coroutines: `coroutine.resume`, `wrap` and `close` settle the
//!   instruction windows of both threads around every switch (`coroutines.rs`), so an entry runs
//!   at most `maxruns` VM instructions however many coroutines it makes, and the `instructions`
//!   statistic is exact.
//! - Each entry can also get a wall-clock allowance ([`EngineConfig::max_call`]; the daemon's
//!   default is 1 s, and [`EngineConfig::max_hook_call`] 100 ms for packet hooks), checked every
//!   thousand instructions, on large library charges, and by a watchdog thread that stops a late
//!   entry at its next instruction: "time limit exceeded (1000 ms)". And
//!   [`Engine::halt_scripts`] stops every entry at once, for shutdown.
//! - `setmetatable` refuses `__gc` (Lua 5.4 runs finalizers without hooks, so they cannot be
//!   stopped); `debug` states are trusted and may use `debug.setmetatable`.
//! - Library errors reach scripts as plain strings ("chunk:3: nf.netlink: ..."), as from C;
//!   so do the errors of `data` objects.
//! - `maxalloc` covers everything a script makes a state hold: its Lua heap, `data` buffers,
//!   pending timers ([`TIMER_BYTES`] each) and a hook call's replacement packet. `curralloc`
//!   shows their sum plus the reused buffers the state's packets and messages arrive in, which
//!   the traffic sizes (see `memory.rs`).
//! - `json.decode` gives `json.null` for `null`; decoders return `nil, message` on bad input.
//! - A fresh state uses about 20 KiB. The GC pause is 100, as the original, plus up to 100 when
//!   the state has room to spare (`sandbox::gc_pause`): at exactly 100 a small heap is collected
//!   whole on almost every allocation (5 µs per hook call instead of 0.9), and much more than
//!   the room allows lets garbage buffers outrun their finalizers and exhaust a small state.
//! - Buffers given to callbacks and hooks are invalid once the call returns; so are packet
//!   objects from `nf.getpacket`. The buffers are borrowed views of one reused buffer per state
//!   (no finalizer, no Rust allocation per call; see `hook.rs`).
//! - Timers are one-shot; `timer.destroy` returns true when it cancelled a pending timer and
//!   false when the timer had already fired or been destroyed. Destroying a state cancels its
//!   timers; a state holds at most [`MAX_TIMERS_PER_STATE`] pending timers.
//! - Lua runs on the caller's thread: give it at least 1 MiB of stack (Lua stops C recursion at
//!   200 levels; tested on 2 MiB threads in debug builds).

mod clock;
mod coroutines;
mod costs;
mod door;
mod engine;
mod error;
mod hook;
mod limits;
mod lualib;
mod memory;
mod patterns;
mod sandbox;
mod state;
mod timers;
mod traceback;
mod watchdog;

pub use clock::{Clock, ReplayClock};
pub use engine::{check_state_name, DueTimer, Engine, StateRef, STATE_NAME_MAX_BYTES};
pub use error::EngineError;
pub use hook::{
    link_header, FlowInfo, Given, HookMode, HookOutcome, HookResult, PacketContext, StreamContext, Verdict,
    ETHERNET_HEADER_LEN,
};
pub use limits::{HALT_MESSAGE, LIMIT_MESSAGE, TIME_LIMIT_MESSAGE};
pub use lualib::MODULES;
pub use memory::{PendingBytes, TIMER_BYTES};
pub use timers::MAX_TIMERS_PER_STATE;

/// Default wall-clock limit of one entry ([`EngineConfig::max_call`]).
pub const DEFAULT_MAX_CALL: std::time::Duration = std::time::Duration::from_millis(1000);

/// Default wall-clock limit of one packet hook call ([`EngineConfig::max_hook_call`]): lower,
/// since a hook holds its packet and every packet queued behind it.
pub const DEFAULT_MAX_HOOK_CALL: std::time::Duration = std::time::Duration::from_millis(100);

/// Largest `nf.netlink` payload (SPEC §2 data max size: 4096 − NLMSG_SPACE(68)).
pub const DATA_MAX_SIZE: usize = 4012;

/// Where states send: `nf.netlink` messages over the daemon's Netlink socket, `nf.reply`
/// packets over its raw socket. Called from whichever thread runs the state.
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

    /// Sends one IP packet (IPv4 or IPv6, checksums done) built by `nf.reply`. The default
    /// refuses, for sinks that carry no packets (tools, tests).
    fn send_packet(&self, ip_packet: &[u8]) -> std::io::Result<()> {
        let _ = ip_packet;
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// What the sink counted about undelivered `nf.netlink` messages, for the daemon's
    /// statistics. The default has nothing to report, for sinks that cannot lose messages.
    fn stats(&self) -> SinkStats {
        SinkStats::default()
    }

    /// The conntrack entry of the connection `ip_packet` belongs to (`nf.conntrack`, and
    /// `nf.connid` when the queue gives no id); `Ok(None)` when untracked. `Err` says why it
    /// cannot be asked (no ctnetlink). The default cannot, for sinks without a kernel.
    fn conntrack_lookup(&self, ip_packet: &[u8]) -> Result<Option<ConntrackInfo>, String> {
        let _ = ip_packet;
        Err("conntrack is not available here".into())
    }

    /// Deletes that entry (`nf.conntrack_delete`); false when there was none.
    fn conntrack_delete(&self, ip_packet: &[u8]) -> Result<bool, String> {
        let _ = ip_packet;
        Err("conntrack is not available here".into())
    }
}

/// A conntrack entry as `nf.conntrack()` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConntrackInfo {
    pub id: u32,
    pub status: u32,
    pub mark: u32,
    /// Seconds before it expires.
    pub timeout: u32,
    /// TCP state number (conntrack's: 1 SYN_SENT ... 3 ESTABLISHED ... 8 CLOSE); `None` for UDP.
    pub tcp_state: Option<u8>,
    /// Packets and bytes each way, when the kernel counts them (`nf_conntrack_acct`).
    pub original: Option<(u64, u64)>,
    pub reply: Option<(u64, u64)>,
}

/// Counters of a [`NetlinkSink`]: messages a full receiver refused, and the notices that told
/// receivers about it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// `nf.netlink` messages dropped because the receiver's buffer was full.
    pub dropped: u64,
    /// Loss notices (ENOBUFS errors) delivered to receivers that had lost messages.
    pub loss_notices: u64,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Maximum number of states (SPEC: 904).
    pub max_states: usize,
    /// Smallest accepted `maxalloc` (SPEC: 32768).
    pub min_alloc_bytes: usize,
    /// Largest `maxruns` and `maxalloc` a state gets: higher requests are lowered to these.
    /// No bound by default (the protocol's own limits); a fuzzer, which would otherwise spend
    /// its time in four-billion-instruction loops, sets them low.
    pub max_runs_cap: u32,
    pub max_alloc_cap: usize,
    /// Wall time one entry (execute, receive callback, timer) may take before it is stopped with
    /// "time limit exceeded": a backstop behind the instruction limit, for work no instruction
    /// count sees. `None`: no limit.
    pub max_call: Option<std::time::Duration>,
    /// The same for one packet hook call, which holds its packet (and the queue) while it runs.
    pub max_hook_call: Option<std::time::Duration>,
    /// The time scripts see (`nf.time`, timer deadlines): the system's, or a capture's.
    pub clock: Clock,
}

impl Default for EngineConfig {
    /// The SPEC's numbers: 904 states, 32768 bytes minimum; no caps; no wall-clock limits (the
    /// daemon sets [`DEFAULT_MAX_CALL`] and [`DEFAULT_MAX_HOOK_CALL`] unless told otherwise).
    fn default() -> EngineConfig {
        EngineConfig {
            max_states: 904,
            min_alloc_bytes: 32768,
            max_runs_cap: u32::MAX,
            max_alloc_cap: usize::MAX,
            max_call: None,
            max_hook_call: None,
            clock: Clock::System,
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
    /// Entries run: executes, receive callbacks, hook calls, timer callbacks.
    pub calls: u64,
    /// Entries that failed, DATA without a callback, and errors in `__gc` metamethods.
    pub errors: u64,
    /// VM instructions run plus library work charged (see the cost model), summed over all
    /// entries; exact except for an entry running right now.
    pub instructions: u64,
    /// Timers created and not yet fired or destroyed.
    pub timers: usize,
    /// Entries that found the state busy (another thread inside it) and waited.
    pub lock_waits: u64,
}
