//! `nfluactl`: command-line client of `nfluad`, built on `nflua-client`.
//!
//! Shaped like ripgrep's front end: `main` calls `run`, which returns an
//! `anyhow::Result`; the error is printed once, with its cause chain, and the
//! exit code is 1 for daemon errors and 2 for usage or local errors.
//!
//! Dependencies: `clap` + `clap_complete` (arguments and shell completions),
//! `serde_json` (`--json` output), `anyhow` (errors at this edge).

mod cli;
mod cmd;
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
            match err.downcast_ref::<ClientError>() {
                Some(ClientError::Daemon { .. }) => ExitCode::from(1),
                _ => ExitCode::from(2),
            }
        }
    }
}
