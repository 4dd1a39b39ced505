//! `nfluad`: the nflua engine daemon. Holds named Lua states (SPEC §5) and
//! serves the NFLua control and data protocol over a `NETLINK_USERSOCK`
//! socket (SPEC §2), one daemon per network namespace.
//!
//! Data flows one way: socket → `nflua-proto` decode → `nflua-engine` →
//! encode → socket. The daemon knows sockets, clients and policy; it knows
//! nothing of Lua beyond the engine's API.
//!
//! Dependencies: `clap` (arguments), `tracing` + `tracing-subscriber`
//! (structured logs to stderr), `signal-hook` (SIGTERM through a pipe the
//! loop polls), `anyhow` (errors at this edge only), `mlua` with `vendored`
//! (this artifact picks the Lua linkage), `libc` (poll), `crc32fast`
//! (journal checksums). `--metrics` is served by `hyper` (HTTP/1.1, server
//! side only) with `hyper-util`/`http-body-util` glue on a one-thread `tokio`
//! runtime (rt, net, time): hyper is the most used and actively maintained
//! Rust HTTP implementation, runs each connection as a task (a slow client
//! never blocks a scrape) and has a header read timeout built in. tiny_http,
//! the lighter choice, has had no release in years and no read timeout, so
//! every idle client would pin one of its threads for good.

pub mod clients;
pub mod config;
mod failure_log;
pub mod handler;
mod inject;
pub mod jobs;
pub mod journal;
pub mod lanes;
mod metrics;
mod protocol_facts;
pub mod queue;
pub mod refusals;
mod restore;
pub mod server;
mod signals;
pub mod sink;
pub mod stats;
mod timers;
