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
const EVAL: &str = "0x10000000/0x10000000";
const MATCH: &str = "0x20000000/0x20000000";

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
    /// (d) nfluad, a filter reading IPv4/UDP fields with a table lookup.
    LuaFilter,
    /// (e) (c) over two queues, `--queue-balance 0:1`.
    LuaBalanced,
}

pub const ALL: [Config; 6] = [
    Config::Kernel,
    Config::RawBatch,
    Config::RawSingle,
    Config::LuaTrivial,
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
            Config::LuaFilter => "(d) nfluad, header filter + lookup",
            Config::LuaBalanced => "(e) (c) on 2 queues, balance 0:1",
        }
    }

    pub fn parse(key: &str) -> Option<Config> {
        ALL.into_iter().find(|c| c.key() == key)
    }

    fn lua(self) -> Option<&'static str> {
        match self {
            Config::LuaTrivial | Config::LuaBalanced => Some(TRIVIAL),
            Config::LuaFilter => Some(FILTER),
            _ => None,
        }
    }
}

const TRIVIAL: &str = "function f() return false end";

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
            Config::LuaTrivial | Config::LuaFilter | Config::LuaBalanced => {
                let queues = if config == Config::LuaBalanced { "0:1" } else { "0" };
                path.daemon = Some(start_daemon(ns, config.lua().unwrap_or(TRIVIAL), queues)?);
                let target: &[&str] = if config == Config::LuaBalanced {
                    &["-j", "NFQUEUE", "--queue-balance", "0:1", "--queue-bypass"]
                } else {
                    &["-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"]
                };
                // The rules `nfluactl hook add` prints for match mode.
                let guard =
                    [&["-A", "INPUT"], &udp[..], &["-m", "mark", "!", "--mark", EVAL], target].concat();
                ns.iptables(&guard)?;
                ns.iptables(
                    &[&["-A", "INPUT"], &udp[..], &["-m", "mark", "--mark", MATCH, "-j", "DROP"]].concat(),
                )?;
                // nfluad is fail-open: on overflow packets pass unevaluated.
                // They would reach the sink, so they are counted here (the
                // security table runs after filter) and taken off "received".
                ns.iptables(
                    &[&["-t", "security", "-A", "INPUT"], &udp[..], &["-m", "mark", "!", "--mark", EVAL]]
                        .concat(),
                )?;
            }
        }
        Ok(path)
    }

    /// Zeroes the counter read by `bypassed`.
    pub fn reset_counters(&self) -> anyhow::Result<()> {
        if self.daemon.is_some() {
            self.ns.iptables(&["-t", "security", "-Z", "INPUT"])?;
        }
        Ok(())
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

    /// Packets that passed the queue rule without being evaluated (fail-open).
    pub fn bypassed(&self) -> anyhow::Result<u64> {
        if self.daemon.is_none() {
            return Ok(0);
        }
        let out = self.ns.iptables(&["-t", "security", "-L", "INPUT", "-v", "-n", "-x"])?;
        // Line 3 is the only rule: "pkts bytes ...".
        let pkts = out.lines().nth(2).and_then(|l| l.split_whitespace().next()).and_then(|w| w.parse().ok());
        pkts.context("parsing the security INPUT counter")
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
    ns.iptables(&["-t", "security", "-F", "INPUT"])?;
    Ok(())
}

fn start_daemon(ns: &Netns, lua: &str, queues: &str) -> anyhow::Result<Proc> {
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
    ns.run(&ctl, &["--port", port, "hook", "add", "--queue", queues, "--state", "bench", "--function", "f"])?;
    Ok(daemon)
}
