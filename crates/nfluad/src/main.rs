//! `nfluad` binary: parses arguments, sets up logging, runs the server
//! (see the library crate for the design).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = nfluad::config::Args::parse();
    init_logging(&args.log);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Once, plainly, whatever the log filter (even `--log off`): the reason nfluad did
            // not start or stopped.
            eprintln!("nfluad: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: nfluad::config::Args) -> anyhow::Result<()> {
    let config = args.into_config()?;
    nfluad::server::Server::bind(config)?.run()
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
