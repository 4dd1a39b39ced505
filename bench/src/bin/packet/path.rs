//! The packet paths compared: iptables rules in the receiving namespace and
//! the queue consumer behind them.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::ns::{sibling, Netns, Proc};

/// Netlink ports are per namespace, so a fixed port cannot collide with a
/// daemon outside it.
const DAEMON_PORT: &str = "0x6e666c75";

/// Destination port of the benchmark traffic.
pub const PORT: &str = "9000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// (a) no queue: the kernel path alone.
    Kernel,
    /// (b) nfq-raw, batched verdicts (32) and GSO.
    RawBatch,
    /// (b1) nfq-raw, one verdict message per packet.
    RawSingle,
    /// (c) nfluad, `function f() return false end`.
    LuaTrivial,
    /// (c') nfluad, a target hook reading two header bytes.
    LuaTarget,
    /// (d) nfluad, a filter reading IPv4/UDP fields with a table lookup.
    LuaFilter,
    /// (e) (c) over two queues, `--queue-balance 0:1`.
    LuaBalanced,
}

pub const ALL: [Config; 7] = [
    Config::Kernel,
    Config::RawBatch,
    Config::RawSingle,
    Config::LuaTrivial,
    Config::LuaTarget,
    Config::LuaFilter,
    Config::LuaBalanced,
];

impl Config {
    pub fn key(self) -> &'static str {
        match self {
            Config::Kernel => "a",
            Config::RawBatch => "b",
            Config::RawSingle => "b1",
            Config::LuaTrivial => "c",
            Config::LuaTarget => "c'",
            Config::LuaFilter => "d",
            Config::LuaBalanced => "e",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Config::Kernel => "(a) no queue, kernel only",
            Config::RawBatch => "(b) raw NFQUEUE, batch 32 + GSO",
            Config::RawSingle => "(b1) raw NFQUEUE, 1 verdict/packet",
            Config::LuaTrivial => "(c) nfluad, trivial Lua match",
            Config::LuaTarget => "(c') nfluad, target, 2 header bytes",
            Config::LuaFilter => "(d) nfluad, header filter + lookup",
            Config::LuaBalanced => "(e) (c) on 2 queues, balance 0:1",
        }
    }

    /// A key of `--configs`; `c2` stands for `c'`, which needs quoting in a shell.
    pub fn parse(key: &str) -> Option<Config> {
        let key = if key == "c2" { "c'" } else { key };
        ALL.into_iter().find(|c| c.key() == key)
    }

    /// A path through nfluad (fail-open, with the accounting rule: unevaluated packets counted).
    pub fn is_nfluad(self) -> bool {
        self.lua().is_some()
    }

    fn lua(self) -> Option<&'static str> {
        match self {
            Config::LuaTrivial | Config::LuaBalanced => Some(TRIVIAL),
            Config::LuaTarget => Some(TARGET),
            Config::LuaFilter => Some(FILTER),
            _ => None,
        }
    }
}

const TRIVIAL: &str = "function f() return false end";

/// The hook of issue 13's measurement: two reads of the packet, a verdict string. Byte 1 is
/// IPv4's version/IHL (0x45), so every benchmark packet is accepted.
const TARGET: &str = r#"function f(frame, packet) if #packet > 28 and packet[1] == 0 then return "drop" end return "accept" end"#;

/// What a small host filter does per packet: check the protocol, read the
/// source address and destination port (IHL-aware) and look both up. No rule
/// matches the benchmark traffic, so every packet is accepted.
const FILTER: &str = r#"
local blocked_ports = { [23] = true, [445] = true, [3389] = true, [5900] = true }
local blocked_sources = {}
for i = 1, 64 do blocked_sources[(198 << 24) | (51 << 16) | (100 << 8) | i] = true end
function f(frame, packet)
  if packet[10] ~= 17 then return false end
  local src = (packet[13] << 24) | (packet[14] << 16) | (packet[15] << 8) | packet[16]
  local l4 = (packet[1] & 0x0F) * 4
  local dport = (packet[l4 + 3] << 8) | packet[l4 + 4]
  return blocked_sources[src] == true or blocked_ports[dport] == true
end
"#;

/// A configured path; dropping it (or `teardown`) removes rules and consumer.
pub struct Path {
    ns: Netns,
    daemon: Option<Proc>,
    raw: Option<Proc>,
}

impl Path {
    pub fn setup(config: Config, ns: &Netns) -> anyhow::Result<Path> {
        flush(ns)?;
        let mut path = Path { ns: ns.clone(), daemon: None, raw: None };
        let udp = ["-p", "udp", "--dport", PORT];
        match config {
            Config::Kernel => {}
            Config::RawBatch | Config::RawSingle => {
                let mut cmd = ns.command(sibling("nfq-raw")?);
                // Without fail-open (nfq-raw never sets it): a full queue shows up as loss at
                // the sink, not as packets slipping past the consumer.
                cmd.args(["--queue", "0", "--batch", "32"]);
                if config == Config::RawSingle {
                    cmd.arg("--single");
                }
                let mut p = Proc::spawn("nfq-raw", cmd)?;
                p.expect("ready queue")?;
                path.raw = Some(p);
                let rule = [&udp[..], &["-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"]].concat();
                ns.iptables(&[&["-A", "INPUT"], &rule[..]].concat())?;
            }
            Config::LuaTrivial | Config::LuaTarget | Config::LuaFilter | Config::LuaBalanced => {
                let queues = if config == Config::LuaBalanced { "0:1" } else { "0" };
                let mode = if config == Config::LuaTarget { "target" } else { "match" };
                let lua = config.lua().unwrap_or(TRIVIAL);
                let (daemon, printed) = start_daemon(ns, lua, queues, mode)?;
                path.daemon = Some(daemon);
                // The iptables rules exactly as `hook add` printed them, in order: the
                // accounting rule (nfluad's count of packets passed unevaluated), the queue
                // rule (fail-open: --queue-bypass) and, in match mode, the DROP of matches.
                let rules: Vec<&str> = printed.lines().filter_map(|l| l.strip_prefix("iptables ")).collect();
                anyhow::ensure!(
                    rules.iter().any(|r| r.contains("--nfacct-name")),
                    "hook add printed no accounting rule:\n{printed}"
                );
                for rule in rules {
                    ns.iptables(&rule.split_whitespace().collect::<Vec<_>>())?;
                }
            }
        }
        Ok(path)
    }

    /// CPU seconds the queue consumer (nfluad or nfq-raw) has used so far; `None` without
    /// one. Kernel work done in its system calls (receiving, and the verdicts' reinjection up
    /// to the sink's socket) counts as its system time.
    pub fn consumer_cpu_secs(&self) -> anyhow::Result<Option<f64>> {
        self.consumer().map(Proc::cpu_secs).transpose()
    }

    /// Sleeps of the queue consumer so far (see `Proc::sleeps`); `None` without one.
    pub fn consumer_sleeps(&self) -> anyhow::Result<Option<u64>> {
        self.consumer().map(Proc::sleeps).transpose()
    }

    /// The process reading the queue: nfluad or nfq-raw (neither for the kernel-only path).
    fn consumer(&self) -> Option<&Proc> {
        self.daemon.as_ref().or(self.raw.as_ref())
    }

    /// nfluad's count of packets that passed its hook unevaluated (fail-open overflow) since
    /// the hook was added, once it has settled (two readings 100 ms apart agree; the monitor
    /// publishes the exact figure within two 10 ms ticks of quiet); `None` for other paths.
    pub fn unevaluated(&self) -> anyhow::Result<Option<u64>> {
        if self.daemon.is_none() {
            return Ok(None);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = self.read_unevaluated()?;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.read_unevaluated()?;
            if now == last || Instant::now() > deadline {
                return Ok(Some(now));
            }
            last = now;
        }
    }

    fn read_unevaluated(&self) -> anyhow::Result<u64> {
        let json = self.ns.run(sibling("nfluactl")?, &["--port", DAEMON_PORT, "stats", "--json"])?;
        let stats: serde_json::Value = serde_json::from_str(&json).context("nfluactl stats --json")?;
        let hook = &stats["hooks"][0];
        hook["unevaluated"]
            .as_u64()
            .with_context(|| format!("nfluad does not count unevaluated packets (no nfacct?): {hook}"))
    }

    /// The daemon's count of hook calls that waited for the Lua state (held
    /// by the other queue's worker), and of calls into it, so far.
    pub fn lock_waits(&self) -> anyhow::Result<Option<(u64, u64)>> {
        if self.daemon.is_none() {
            return Ok(None);
        }
        let json = self.ns.run(sibling("nfluactl")?, &["--port", DAEMON_PORT, "stats", "--json"])?;
        let stats: serde_json::Value = serde_json::from_str(&json).context("nfluactl stats --json")?;
        let state = &stats["states"][0];
        Ok(state["lock_waits"].as_u64().zip(state["calls"].as_u64()))
    }

    pub fn teardown(mut self) -> anyhow::Result<()> {
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
        if let Some(r) = self.raw.take() {
            r.stop();
        }
        flush(&self.ns)
    }
}

fn flush(ns: &Netns) -> anyhow::Result<()> {
    ns.iptables(&["-F", "INPUT"])?;
    Ok(())
}

/// Starts nfluad with `lua` hooked to `queues`; returns it and what `hook add` printed.
fn start_daemon(ns: &Netns, lua: &str, queues: &str, mode: &str) -> anyhow::Result<(Proc, String)> {
    let port = DAEMON_PORT;
    let mut cmd = ns.command(sibling("nfluad")?);
    cmd.args(["--port", port, "--log", "warn"]);
    let daemon = Proc::spawn("nfluad", cmd)?;
    let ctl = sibling("nfluactl")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns.run(&ctl, &["--port", port, "list"]).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nfluad did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    ns.run(&ctl, &["--port", port, "create", "bench", "--instructions", "100000", "--memory", "1048576"])?;
    ns.run(&ctl, &["--port", port, "execute", "bench", "-e", lua])?;
    let rule = format!("-p udp --dport {PORT}");
    let printed = ns.run(
        &ctl,
        &[
            "--port",
            port,
            "hook",
            "add",
            "--queue",
            queues,
            "--state",
            "bench",
            "--function",
            "f",
            "--mode",
            mode,
            "--overflow",
            "accept",
            "--rule",
            &rule,
        ],
    )?;
    Ok((daemon, printed))
}
