//! End-to-end tests: a real nfluad on a private port, driven through the Rust
//! client, nfluactl and raw Netlink sockets.

mod netns;
mod util;

mod bad_input;
mod bypass;
mod cli;
mod control;
mod data;
mod isolation;
mod journal;
mod legacy;
mod lifecycle;
mod limits;
mod memory;
mod offline;
mod overflow;
mod packets;
mod printed_rules;
mod readme;
mod reload;
mod repl;
mod soak;
mod stats;
mod streams;
