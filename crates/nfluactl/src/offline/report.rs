//! What an offline run found, and its three outputs: a line per packet, one JSON object
//! (`--json`), and a pcap of the packets the filter would have sent (`--write-pcap`); plus the
//! `--expect VERDICT=N` check.
//!
//! Verdict names: a target hook's verdict as the script returned it (`accept`, `drop`,
//! `stolen`, ...; `continue` for anything else), a match hook's `match` / `nomatch` (`drop`
//! after `nf.hotdrop(true)`), `error` when the call failed or a stream bound gave up on the
//! connection (the hook's on-error verdict would apply), `skipped` for frames no hook would see
//! (not IP, cut short by the capture), `undecided` for a stream hook's packets still held when
//! the capture ended.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nflua_engine::HookMode;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};
use serde_json::{json, Value};

/// One packet's fate.
#[derive(Debug, Clone)]
pub struct PacketResult {
    /// 1-based, in capture order.
    pub number: usize,
    /// Since the capture's first packet.
    pub time: Duration,
    pub summary: String,
    pub verdict: &'static str,
    /// The error, the reason a packet was skipped or not given, or the bound a stream hit.
    pub detail: Option<String>,
    /// `nf.reply` packets its call built.
    pub replies: usize,
    /// `packet:send` re-emitted it with these bytes.
    pub rewritten: Option<Vec<u8>>,
}

impl PacketResult {
    pub fn new(number: usize, time: Duration) -> PacketResult {
        PacketResult {
            number,
            time,
            summary: String::new(),
            verdict: "continue",
            detail: None,
            replies: 0,
            rewritten: None,
        }
    }

    pub fn skip(&mut self, reason: String) {
        self.verdict = "skipped";
        self.detail = Some(reason);
    }

    /// Not handed to Lua (as the daemon: the packet goes on unmatched).
    pub fn not_given(&mut self, mode: HookMode, reason: &str) {
        self.verdict = if mode == HookMode::Match { "nomatch" } else { "continue" };
        self.detail = Some(format!("not given to Lua: {reason}"));
    }

    pub fn fail(&mut self, error: String) {
        self.verdict = "error";
        self.detail = Some(error);
    }

    /// `packet:send`: the packet goes on with new bytes; "stolen" and "continue" mean that
    /// (the daemon accepts the rewritten packet), an explicit verdict stays.
    pub fn rewrite(&mut self, bytes: Vec<u8>) {
        if matches!(self.verdict, "stolen" | "continue") {
            self.verdict = "accept";
        }
        self.rewritten = Some(bytes);
    }
}

/// Everything an offline run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Capture time of the first packet.
    pub start: Option<Duration>,
    pub results: Vec<PacketResult>,
    /// Packets the filter built or rewrote, with the capture time they would have left at.
    pub sent: Vec<(Duration, Vec<u8>)>,
    pub timers_run: u64,
    pub timer_errors: u64,
    /// Capture instants where timers kept re-arming with no delay and were cut off.
    pub timer_storms: u64,
    pub netlink_messages: u64,
}

impl Report {
    /// Notes what the call for packet `index` sent.
    pub fn record_sent(&mut self, index: usize, time: Duration, replies: Vec<Vec<u8>>) {
        if let Some(result) = self.results.get_mut(index) {
            result.replies += replies.len();
            if let Some(bytes) = &result.rewritten {
                self.sent.push((time, bytes.clone()));
            }
        }
        self.sent.extend(replies.into_iter().map(|r| (time, r)));
    }

    /// Packets by verdict name.
    pub fn verdicts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for r in &self.results {
            *counts.entry(r.verdict).or_insert(0) += 1;
        }
        counts
    }

    /// Failed hook calls (and stream bounds) plus failed timer callbacks.
    pub fn errors(&self) -> u64 {
        self.results.iter().filter(|r| r.verdict == "error").count() as u64 + self.timer_errors
    }

    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for r in &self.results {
            let mut line =
                format!("{:>6} {:>12.6}  {:<52} {}", r.number, r.time.as_secs_f64(), r.summary, r.verdict);
            if r.rewritten.is_some() {
                line.push_str(" (rewritten)");
            }
            if r.replies > 0 {
                line.push_str(&format!(" ({} repl{})", r.replies, if r.replies == 1 { "y" } else { "ies" }));
            }
            if let Some(detail) = &r.detail {
                line.push_str(": ");
                line.push_str(&detail.replace('\n', "\n        "));
            }
            writeln!(out, "{line}")?;
        }
        let counts: Vec<String> = self.verdicts().iter().map(|(v, n)| format!("{v} {n}")).collect();
        writeln!(
            out,
            "{} packets: {}; errors {}; sent {}; timers {} ({} failed); netlink messages {}",
            self.results.len(),
            if counts.is_empty() { "-".to_owned() } else { counts.join(", ") },
            self.errors(),
            self.sent.len(),
            self.timers_run,
            self.timer_errors,
            self.netlink_messages
        )?;
        if self.timer_storms > 0 {
            writeln!(
                out,
                "warning: timers re-armed without delay were cut off at {} instants",
                self.timer_storms
            )?;
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        let list: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                let mut entry = json!({
                    "number": r.number,
                    "time": r.time.as_secs_f64(),
                    "summary": r.summary,
                    "verdict": r.verdict,
                });
                if let Some(detail) = &r.detail {
                    entry["detail"] = json!(detail);
                }
                if r.replies > 0 {
                    entry["replies"] = json!(r.replies);
                }
                if r.rewritten.is_some() {
                    entry["rewritten"] = json!(true);
                }
                entry
            })
            .collect();
        json!({
            "packets": self.results.len(),
            "verdicts": self.verdicts(),
            "errors": self.errors(),
            "sent": self.sent.len(),
            "timers": { "run": self.timers_run, "failed": self.timer_errors },
            "netlink_messages": self.netlink_messages,
            "per_packet": list,
        })
    }

    /// The `--expect` checks that fail, as "VERDICT: expected N, got M".
    pub fn unmet(&self, expected: &[(String, u64)]) -> Vec<String> {
        let counts = self.verdicts();
        expected
            .iter()
            .filter_map(|(verdict, n)| {
                let got = if verdict == "errors" {
                    self.errors()
                } else {
                    counts.get(verdict.as_str()).copied().unwrap_or(0)
                };
                (got != *n).then(|| format!("{verdict}: expected {n}, got {got}"))
            })
            .collect()
    }

    /// The packets the filter sent (replies and rewritten packets), as raw IP in a pcap file.
    pub fn write_sent(&self, path: &Path) -> anyhow::Result<()> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let header = PcapHeader {
            datalink: DataLink::RAW,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::native(),
            ..PcapHeader::default()
        };
        let mut writer = PcapWriter::with_header(BufWriter::new(file), header)
            .with_context(|| format!("writing {}", path.display()))?;
        for (time, bytes) in &self.sent {
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            writer
                .write_packet(&PcapPacket::new(*time, len, bytes))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        writer.into_writer().flush().with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// "192.0.2.1:4000 > 192.0.2.2:53 UDP len 12", with TCP flags; what is not TCP or UDP gets its
/// protocol number.
pub fn summary(ip_packet: &[u8]) -> String {
    let Ok(h) = nflua_packet::headers(ip_packet) else {
        return format!("IP, {} bytes, unreadable", ip_packet.len());
    };
    let s = &h.summary;
    let payload = s.l4_payload.len();
    let endpoint = |addr: std::net::IpAddr, port: Option<u16>| match (addr, port) {
        (std::net::IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    };
    let what = match (&h.tcp, &h.udp) {
        (Some(tcp), _) => format!("TCP [{}] len {payload}", tcp_flags(tcp.flags)),
        (None, Some(_)) => format!("UDP len {payload}"),
        _ => format!("proto {} len {payload}", s.protocol),
    };
    format!("{} > {} {what}", endpoint(s.src, s.src_port), endpoint(s.dst, s.dst_port))
}

fn tcp_flags(flags: u8) -> String {
    let names = [(0x02, 'S'), (0x01, 'F'), (0x04, 'R'), (0x08, 'P'), (0x10, '.')];
    let s: String = names.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, c)| *c).collect();
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}
