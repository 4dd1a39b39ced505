//! `nfluactl test`: the offline run (see `crate::offline`) and its output.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use nflua_engine::HookMode;

use super::Reported;
use crate::cli::{ModeArg, TestArgs};
use crate::offline::{self, Options};

/// Default bytes per direction a stream function sees (the daemon's default too).
const DEFAULT_STREAM_DEPTH: u32 = 16384;

pub fn run(args: &TestArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mode = match args.mode {
        ModeArg::Match => HookMode::Match,
        ModeArg::Target => HookMode::Target,
    };
    if args.stream && mode != HookMode::Target {
        bail!("--stream needs --mode target: a stream function's verdict decides the connection");
    }
    let options = Options {
        pcap: args.pcap.clone(),
        scripts: args.scripts.clone(),
        function: args.function.clone(),
        mode,
        stream: args.stream,
        stream_depth: args.stream_depth.unwrap_or(DEFAULT_STREAM_DEPTH),
        hold_timeout: Duration::from_millis(args.stream_timeout_ms),
        tcp_payload: args.tcp_payload,
        instructions: args.instructions,
        memory: args.memory,
    };
    // What the scripts print, on stderr as the daemon would log it (the engine's target for
    // Lua's print and warn), so that a filter can be debugged offline.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("nflua::lua=info")
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .try_init();
    let report = offline::run(&options)?;
    if let Some(path) = &args.write_pcap {
        report.write_sent(path)?;
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report.to_json())?;
        writeln!(out)?;
    } else {
        report.write_text(out)?;
    }
    let unmet = report.unmet(&args.expect);
    if !unmet.is_empty() {
        return Err(Reported(format!("expectations not met: {}", unmet.join("; "))).into());
    }
    Ok(())
}
