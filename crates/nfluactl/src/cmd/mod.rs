//! One function per subcommand.

mod hook;
mod repl;
mod test;

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;
use nflua_client::consts::DATA_MAX;
use nflua_client::{
    parse_port, BundleChunk, ClientConfig, ClientError, ControlSocket, CreateRequest, DataSocket, Port,
    StateFlags,
};

use crate::cli::{Cli, Command};
use crate::output;

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = ClientConfig::from_env();
    if let Some(p) = &cli.port {
        config.daemon_port = parse_port(p).with_context(|| format!("invalid --port {p:?}"))?;
    }
    let cli_timeout = (cli.reply_timeout > 0).then(|| Duration::from_millis(cli.reply_timeout));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Create { name, instructions, memory, debug } => {
            let flags = if debug { StateFlags::DEBUG } else { StateFlags::empty() };
            let req = CreateRequest { name: &name, max_runs: instructions, max_alloc: memory, flags };
            control(&cli_timeout, config)?.create(&req)?;
        }
        Command::Destroy { name } => control(&cli_timeout, config)?.destroy(&name)?,
        Command::List { json } => {
            let mut ctl = control(&cli_timeout, config)?;
            let states = ctl.list()?;
            output::states(&mut out, &states, &failed_states(&mut ctl, cli_timeout), json)?;
        }
        Command::Execute { name, file, code, chunk_name } => {
            let (chunk, default_name) = match (code, file) {
                (Some(code), _) => (code.into_bytes(), nflua_client::consts::DEFAULT_CHUNK_NAME.to_owned()),
                (None, Some(path)) if path.as_os_str() == "-" => (read_stdin()?, "=stdin".to_owned()),
                (None, Some(path)) => {
                    let bytes =
                        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                    (bytes, format!("@{}", path.display()))
                }
                (None, None) => anyhow::bail!("give a FILE or -e CODE"),
            };
            let chunk_name = chunk_name.unwrap_or(default_name);
            control(&cli_timeout, config)?.execute(&name, &chunk, &chunk_name)?;
        }
        Command::Reload { name, files } => {
            let mut bodies = Vec::with_capacity(files.len());
            for path in &files {
                let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                bodies.push((format!("@{}", path.display()), body));
            }
            let chunks: Vec<BundleChunk<'_>> =
                bodies.iter().map(|(name, body)| BundleChunk { name, body }).collect();
            control(&cli_timeout, config)?.reload(&name, &chunks)?;
        }
        Command::Send { name, data, wait } => {
            let payload = match data.as_deref() {
                None | Some("-") => read_stdin()?,
                Some(text) => text.as_bytes().to_vec(),
            };
            let mut sock = DataSocket::open(config, Port::Auto)?;
            sock.send(&name, &payload)?;
            let mut buf = vec![0u8; DATA_MAX];
            loop {
                match sock.receive_timeout(&mut buf, wait as i32) {
                    Ok(m) => output::message(&mut out, &m.state, &buf[..m.len], false)?,
                    Err(ClientError::TimedOut) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Command::Receive { pid, timeout, count, json } => {
            let port = match pid {
                Some(p) => Port::explicit(p as i64).context("--pid must be in range [1, 2^31)")?,
                None => Port::Auto,
            };
            let mut sock = DataSocket::open(config, port)?;
            eprintln!("nfluactl: listening on port {}", sock.port()?);
            let mut buf = vec![0u8; DATA_MAX];
            let timeout_ms = timeout.map_or(-1, |t| t.min(i32::MAX as u32) as i32);
            for _ in 0..count {
                let m = sock.receive_timeout(&mut buf, timeout_ms)?;
                output::message(&mut out, &m.state, &buf[..m.len], json)?;
                out.flush()?;
            }
        }
        Command::Stats { state, json } => {
            let text = control(&cli_timeout, config)?.stats()?;
            let mut stats: serde_json::Value =
                serde_json::from_str(&text).context("the daemon's STATS answer")?;
            if let Some(name) = &state {
                output::keep_state(&mut stats, name);
                let found = |key: &str| stats[key].as_array().is_some_and(|s| !s.is_empty());
                if !found("states") && !found("failed_states") {
                    return Err(Reported(format!("state '{name}' not found")).into());
                }
            }
            output::stats(&mut out, &stats, json)?;
        }
        Command::Hook(cmd) => hook::run(control(&cli_timeout, config)?, cmd, &mut out)?,
        Command::Repl { name } => repl::run(config, cli_timeout, &name)?,
        Command::Test(args) => test::run(&args, &mut out)?,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "nfluactl", &mut out);
        }
    }
    Ok(())
}

/// How long `list` waits for the STATS answer that names failed states.
const FAILED_STATES_WAIT: Duration = Duration::from_millis(1000);

/// The journaled states the daemon could not restore. LIST answers are
/// byte-exact per SPEC and cannot hold them; STATS can. Best effort: a daemon
/// without STATS (or with nothing failed) shows none.
fn failed_states(ctl: &mut ControlSocket, timeout: Option<Duration>) -> Vec<output::FailedState> {
    // The states are known already: a slow STATS must not hold them back.
    ctl.set_timeout(Some(timeout.map_or(FAILED_STATES_WAIT, |t| t.min(FAILED_STATES_WAIT))));
    let Ok(text) = ctl.stats() else { return Vec::new() };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|mut v| serde_json::from_value(v["failed_states"].take()).ok())
        .unwrap_or_default()
}

/// What the daemon's answer said was wrong, found by nfluactl in it rather
/// than sent as an error (a state missing from STATS): exit 1, as the
/// daemon's own errors.
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

fn control(timeout: &Option<Duration>, config: ClientConfig) -> Result<ControlSocket, ClientError> {
    let mut c = ControlSocket::open(config, Port::Auto)?;
    c.set_timeout(*timeout);
    Ok(c)
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).context("reading standard input")?;
    Ok(buf)
}
