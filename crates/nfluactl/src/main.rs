//! `nfluactl`: command-line client of `nfluad`, built on `nflua-client`.
//!
//! Shaped like ripgrep's front end: `main` calls `run`, which returns an
//! `anyhow::Result`; the error is printed once, with its cause chain, and the
//! exit code is 1 for every error the daemon reported (an error reply, a
//! loss notice with its text, a state its STATS answer does not hold) and 2
//! for usage or local errors — including a request that got no answer in
//! time or whose daemon went away before answering: the daemon reported
//! nothing, and the message says the request may still be applied.
//!
//! Dependencies: `clap` + `clap_complete` (arguments and shell completions),
//! `serde_json` (`--json` output), `anyhow` (errors at this edge); for `nfluactl test`
//! (`offline`), the daemon's engine (`nflua-engine`, `nflua-stream`, `nflua-packet`, with a
//! vendored Lua 5.4 through `mlua`) and `pcap-file` (pcap and pcapng, pure Rust: no libpcap to
//! install for an offline run).

mod cli;
mod cmd;
mod nft;
mod offline;
mod output;

use std::process::ExitCode;

use clap::Parser;
use nflua_client::ClientError;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(e) = err.downcast_ref::<std::io::Error>() {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("nfluactl: {err:#}");
            if reported_by_daemon(&err) {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

fn reported_by_daemon(err: &anyhow::Error) -> bool {
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Daemon { .. } | ClientError::Overflow { message: Some(_) }) => true,
        Some(_) => false,
        None => err.downcast_ref::<cmd::Reported>().is_some(),
    }
}
