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
//! (this artifact picks the Lua linkage), `libc` (poll).

mod clients;
mod config;
mod handler;
mod inject;
mod metrics;
mod queue;
mod server;
mod sink;
mod stats;
mod timers;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = config::Args::parse();
    init_logging(&args.log);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("nfluad: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: config::Args) -> anyhow::Result<()> {
    let config = args.into_config()?;
    server::Server::bind(config)?.run()
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: logs in files and journals stay plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
