//! `nflua-bench`: control, data-channel and Lua-call figures for nflua, each
//! beside a baseline measured in the same run on the same machine, printed as
//! a table with ratios. Targets live here, never in timed tests.
//!
//! Usage: `bench/run.sh` (builds release binaries, runs this, then as root
//! the packet-path benchmark). The daemon is started from
//! `target/release/nfluad` on a private port.

#![allow(unsafe_code)] // libc calls (sockets, signals, namespaces, CPU clocks)

mod stats;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nflua_client::consts::{DATA_MAX, SCRIPT_MAX};
use nflua_client::socket::{NetlinkSocket, Port};
use nflua_client::{ClientConfig, ControlSocket, CreateRequest, DataSocket};
use nflua_engine::{Engine, EngineConfig, HookMode, NetlinkSink, PacketContext, StateConfig};
use stats::{Row, Samples, Target};

const REPEATS: usize = 3;

fn main() -> anyhow::Result<()> {
    let daemon = Daemon::start()?;
    let config = ClientConfig::default().with_port(daemon.port);
    let mut rows = Vec::new();

    let create = repeat(|| create_destroy_latency(&config, 300))?;
    rows.push(Row::latency("create+destroy (µs per pair)", create));

    let exec = repeat(|| execute_latency(&config, 30))?;
    rows.push(Row::latency("execute 59968-byte script (µs)", exec));

    // Alternated run by run: a ping-pong's rate is mostly wake-up latency, which drifts with
    // the machine's load, and the ratio is what the target is about.
    let (raw, ours) = repeat_pair(|| raw_echo_rate(20_000), || data_round_trip_rate(&config, 20_000))?;
    rows.push(Row::rate("raw NETLINK_USERSOCK echo (msg/s)", raw.clone(), None));
    rows.push(
        Row::rate("data round trip via Lua (msg/s)", ours, Some(("vs raw echo", raw)))
            .with_target(Target::RatioAtLeast(0.8)),
    );

    // The in-process figures are for one core: pin this thread so the
    // scheduler cannot move it between cores mid-measurement.
    pin_to_last_cpu();
    let direct = repeat(|| direct_lua_call_rate(300_000))?;
    let engine = repeat(|| engine_callback_rate(300_000))?;
    let hook = repeat(|| engine_hook_rate(300_000))?;
    rows.push(Row::rate("plain mlua call, 64-byte string (calls/s)", direct.clone(), None));
    rows.push(
        Row::rate(
            "engine __receive_callback, 64 bytes (calls/s)",
            engine,
            Some(("vs plain call", direct.clone())),
        )
        .with_target(Target::AtLeast(1.5e6)),
    );
    rows.push(
        Row::rate("engine match hook `return false`, 64 B (calls/s)", hook, Some(("vs plain call", direct)))
            .with_target(Target::AtLeast(1.5e6)),
    );

    let memory = state_memory(&config, daemon.child.id(), 100)?;
    rows.push(
        Row::latency("idle state, default libraries (bytes, Lua heap)", Samples(vec![memory.idle]))
            .with_target(Target::AtMost(40960.0)),
    );
    rows.push(Row::latency("daemon RSS with 100 idle states (bytes)", Samples(vec![memory.rss_after])));
    rows.push(Row::latency("daemon RSS before them, no states (bytes)", Samples(vec![memory.rss_before])));
    rows.push(Row::latency("daemon RSS growth per state (bytes/state)", Samples(vec![memory.per_state])));

    drop(daemon);
    stats::print_table(&rows);
    Ok(())
}

fn repeat(mut f: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<Samples> {
    let mut s = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        s.push(f()?);
    }
    Ok(Samples(s))
}

/// [`repeat`] of two measurements taken in turn, so both see the same stretch of the machine's
/// load.
fn repeat_pair(
    mut f: impl FnMut() -> anyhow::Result<f64>,
    mut g: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<(Samples, Samples)> {
    let (mut a, mut b) = (Vec::with_capacity(REPEATS), Vec::with_capacity(REPEATS));
    for _ in 0..REPEATS {
        a.push(f()?);
        b.push(g()?);
    }
    Ok((Samples(a), Samples(b)))
}

struct Daemon {
    child: Child,
    port: u32,
}

impl Daemon {
    fn start() -> anyhow::Result<Daemon> {
        let exe = std::env::current_exe()?.with_file_name("nfluad");
        let port = 0x3100_0000 | (std::process::id() & 0xFFFF);
        let child = Command::new(&exe)
            .args(["--port", &port.to_string(), "--log", "warn"])
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let d = Daemon { child, port };
        let config = ClientConfig::default().with_port(port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ControlSocket::open(config.clone(), Port::Auto)?.list().is_err() {
            anyhow::ensure!(Instant::now() < deadline, "nfluad did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size of `pid` in bytes.
fn rss_bytes(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc/PID/status")?;
    Ok(kib * 1024.0)
}

/// Heap bytes of a fresh state as LIST reports it, and the daemon's RSS before and after
/// creating `n` states (all with the default library set).
fn state_memory(config: &ClientConfig, pid: u32, n: usize) -> anyhow::Result<StateMemory> {
    let mut c = ControlSocket::open(config.clone(), Port::Auto)?;
    let before = rss_bytes(pid)?;
    for i in 0..n {
        c.create(&CreateRequest::new(&format!("idle{i}"), 1000))?;
    }
    let after = rss_bytes(pid)?;
    let idle = c.list()?.iter().find(|s| s.name == "idle0").map_or(0.0, |s| f64::from(s.cur_alloc));
    for i in 0..n {
        c.destroy(&format!("idle{i}"))?;
    }
    Ok(StateMemory { idle, rss_before: before, rss_after: after, per_state: (after - before) / n as f64 })
}

/// What [`state_memory`] measured, in bytes.
struct StateMemory {
    /// Lua heap of a fresh state (LIST's current allocation).
    idle: f64,
    /// Daemon RSS before and after creating the states, and the growth per state.
    rss_before: f64,
    rss_after: f64,
    per_state: f64,
}

/// Mean µs for one CREATE + DESTROY pair.
fn create_destroy_latency(config: &ClientConfig, n: usize) -> anyhow::Result<f64> {
    let mut c = ControlSocket::open(config.clone(), Port::Auto)?;
    let start = Instant::now();
    for i in 0..n {
        let name = format!("b{i}");
        c.create(&CreateRequest::new(&name, 1000))?;
        c.destroy(&name)?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// Mean µs to send, reassemble, compile and run a maximum-size script.
fn execute_latency(config: &ClientConfig, n: usize) -> anyhow::Result<f64> {
    let mut c = ControlSocket::open(config.clone(), Port::Auto)?;
    let _ = c.destroy("exec");
    let mut req = CreateRequest::new("exec", 10_000_000);
    req.max_alloc = 1 << 20;
    c.create(&req)?;
    let mut code = String::from("local t = {}\n");
    let mut i = 0;
    while code.len() < SCRIPT_MAX - 40 {
        code.push_str(&format!("t[{i}] = {i}\n"));
        i += 1;
    }
    code.push_str(&" ".repeat(SCRIPT_MAX - code.len()));
    let start = Instant::now();
    for _ in 0..n {
        c.execute("exec", code.as_bytes(), "big")?;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    c.destroy("exec")?;
    Ok(us)
}

/// Messages/s of a 64-byte ping-pong through a state that echoes with nf.netlink.
fn data_round_trip_rate(config: &ClientConfig, n: usize) -> anyhow::Result<f64> {
    let mut c = ControlSocket::open(config.clone(), Port::Auto)?;
    let _ = c.destroy("echo");
    c.create(&CreateRequest::new("echo", 100_000))?;
    c.execute("echo", b"function __receive_callback(pid, b) nf.netlink(pid, 0, b) end", "echo")?;
    let mut s = DataSocket::open(config.clone(), Port::Auto)?;
    let payload = [0x5Au8; 64];
    let mut buf = vec![0u8; DATA_MAX];
    let start = Instant::now();
    for _ in 0..n {
        s.send("echo", &payload)?;
        s.receive_timeout(&mut buf, 5000)?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    c.destroy("echo")?;
    Ok(rate)
}

/// Messages/s of the same ping-pong between two plain sockets, echoed by a thread.
fn raw_echo_rate(n: usize) -> anyhow::Result<f64> {
    let a = NetlinkSocket::bind(Port::Auto, 0)?;
    let b = NetlinkSocket::bind(Port::Auto, 0)?;
    let a_port = a.port();
    let b_port = b.port();
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; 4096];
        for _ in 0..n {
            let info = b.recv(&mut buf, false)?;
            b.send_to(&buf[..info.len], a_port, 0)?;
        }
        Ok(())
    });
    // Same size on the wire as a DATA message with a 64-byte payload.
    let msg = vec![0x5Au8; 16 + 68 + 64];
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    for _ in 0..n {
        a.send_to(&msg, b_port, 0)?;
        a.recv(&mut buf, false)?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    echo.join().map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    Ok(rate)
}

struct NullSink;

impl NetlinkSink for NullSink {
    fn send_data(&self, _: &str, _: u32, _: u32, _: u32, payload: &[u8]) -> std::io::Result<usize> {
        Ok(payload.len())
    }
}

/// Calls/s of a trivial `__receive_callback` through the engine (limits,
/// data buffer, error handling included), no sockets.
fn engine_callback_rate(n: usize) -> anyhow::Result<f64> {
    let engine = engine_with(b"function __receive_callback(pid, b) return #b end")?;
    let payload = [0u8; 64];
    let start = Instant::now();
    for _ in 0..n {
        engine.deliver("b", 1, &payload)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// An engine with one state "b" (1 MiB, 1000 instructions) that ran `code`.
fn engine_with(code: &[u8]) -> anyhow::Result<Engine> {
    let engine = Engine::new(
        EngineConfig { max_states: 1, min_alloc_bytes: 32768, ..EngineConfig::default() },
        Arc::new(NullSink),
    );
    engine.create(StateConfig {
        name: "b".into(),
        max_alloc_bytes: 1 << 20,
        max_runs: 1000,
        debug: false,
    })?;
    engine.execute("b", code, "=bench")?;
    Ok(engine)
}

/// Calls/s of a match hook returning false on a 64-byte IPv4/UDP frame, as a
/// queue worker calls it (frame and packet views, limits, result reading).
fn engine_hook_rate(n: usize) -> anyhow::Result<f64> {
    let engine = engine_with(b"function f(frame, packet) return false end")?;
    let mut frame = [0u8; 14 + 20 + 8 + 64];
    frame[12] = 0x08;
    frame[14] = 0x45;
    frame[23] = 17;
    let packet = PacketContext::from_frame(&frame, HookMode::Match).context("frame")?;
    let start = Instant::now();
    for _ in 0..n {
        engine.call_hook("b", "f", &packet)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Pins the calling thread to the machine's last CPU (best effort).
fn pin_to_last_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Calls/s of the same function called straight through mlua with a string.
fn direct_lua_call_rate(n: usize) -> anyhow::Result<f64> {
    let lua = mlua::Lua::new();
    let f: mlua::Function = lua.load("return function(pid, b) return #b end").eval()?;
    let payload = lua.create_string([0u8; 64])?;
    let start = Instant::now();
    for _ in 0..n {
        let _: i64 = f.call((1, &payload))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
