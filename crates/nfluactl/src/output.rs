//! How results are printed.

use std::io::Write;

use nflua_client::{HookMode, HookSpec, OnError, StateInfo};
use serde::Serialize;

#[derive(Serialize)]
struct StateJson<'a> {
    name: &'a str,
    /// "ok", or "failed" for a journaled state that failed to restore.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    maxalloc: Option<u32>,
    curralloc: Option<u32>,
    maxruns: Option<u32>,
    flags: String,
}

/// A journaled state the daemon could not restore, from its STATS answer.
#[derive(Debug, serde::Deserialize)]
pub struct FailedState {
    pub name: String,
    pub reason: String,
}

/// The states of a LIST answer, then those in `failed` (not served).
pub fn states(
    out: &mut impl Write,
    states: &[StateInfo],
    failed: &[FailedState],
    json: bool,
) -> std::io::Result<()> {
    if json {
        let served = states.iter().map(|s| StateJson {
            name: &s.name,
            status: "ok",
            reason: None,
            maxalloc: Some(s.max_alloc),
            curralloc: Some(s.cur_alloc),
            maxruns: s.max_runs,
            flags: s.flags.to_letters(),
        });
        let failed = failed.iter().map(|f| StateJson {
            name: &f.name,
            status: "failed",
            reason: Some(&f.reason),
            maxalloc: None,
            curralloc: None,
            maxruns: None,
            flags: String::new(),
        });
        serde_json::to_writer_pretty(&mut *out, &served.chain(failed).collect::<Vec<_>>())?;
        return writeln!(out);
    }
    let names = states.iter().map(|s| s.name.len()).chain(failed.iter().map(|f| f.name.len()));
    let width = names.max().unwrap_or(0).max(4);
    writeln!(out, "{:<width$}  {:>10}  {:>10}  {:>10}  FLAGS", "NAME", "MAXALLOC", "CURRALLOC", "MAXRUNS")?;
    for s in states {
        let runs = s.max_runs.map_or_else(|| "-".to_owned(), |r| r.to_string());
        writeln!(
            out,
            "{:<width$}  {:>10}  {:>10}  {:>10}  {}",
            s.name,
            s.max_alloc,
            s.cur_alloc,
            runs,
            s.flags.to_letters()
        )?;
    }
    for f in failed {
        writeln!(out, "{:<width$}  {:>10}  {:>10}  {:>10}  failed: {}", f.name, "-", "-", "-", f.reason)?;
    }
    Ok(())
}

/// The `failed_states` of a STATS answer, if any, as a table of their own.
fn failed_states(out: &mut impl Write, stats: &serde_json::Value) -> std::io::Result<()> {
    let Some(failed) = stats["failed_states"].as_array().filter(|f| !f.is_empty()) else { return Ok(()) };
    writeln!(out)?;
    writeln!(out, "{:<16} REASON (not served; its journal entries are kept)", "FAILED STATE")?;
    for f in failed {
        writeln!(out, "{:<16} {}", f["name"].as_str().unwrap_or("?"), f["reason"].as_str().unwrap_or("?"))?;
        for hook in f["hooks"].as_array().into_iter().flatten() {
            writeln!(out, "{:<16}   hook not restored: {}", "", hook.as_str().unwrap_or("?"))?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct MessageJson<'a> {
    state: &'a str,
    /// The bytes as text when they are UTF-8.
    text: Option<&'a str>,
    hex: String,
}

/// One message from a state: `state: text` (or hex when not UTF-8).
pub fn message(out: &mut impl Write, state: &str, bytes: &[u8], json: bool) -> std::io::Result<()> {
    let text = std::str::from_utf8(bytes).ok();
    if json {
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        serde_json::to_writer(&mut *out, &MessageJson { state, text, hex })?;
        return writeln!(out);
    }
    match text {
        Some(t) => writeln!(out, "{state}: {t}"),
        None => writeln!(out, "{state}: 0x{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

fn queue_option(spec: &HookSpec) -> String {
    if spec.queue_first == spec.queue_last {
        format!("--queue-num {}", spec.queue_first)
    } else {
        format!("--queue-balance {}:{}", spec.queue_first, spec.queue_last)
    }
}

fn nft_queue(spec: &HookSpec) -> String {
    if spec.queue_first == spec.queue_last {
        format!("queue num {} bypass", spec.queue_first)
    } else {
        format!("queue num {}-{} fanout,bypass", spec.queue_first, spec.queue_last)
    }
}

/// The rules a hook expects, for iptables and for nft where `queue` exists.
pub fn hook_rules(
    out: &mut impl Write,
    spec: &HookSpec,
    chain: &str,
    rule: &str,
    target: &str,
) -> std::io::Result<()> {
    let rule = if rule.is_empty() { String::new() } else { format!("{rule} ") };
    let (eval, matched) = (spec.eval_mark, spec.match_mark);
    let nft_chain = chain.to_lowercase();
    writeln!(
        out,
        "# Count what reaches the queue rule, so nfluad can count what passes it unevaluated (queue full, nfluad down):"
    )?;
    writeln!(
        out,
        "iptables -A {chain} {rule}-m mark ! --mark {eval:#x}/{eval:#x} -m nfacct --nfacct-name {}",
        spec.accounting_name()
    )?;
    writeln!(
        out,
        "# Feed packets not yet evaluated to nflua; --queue-bypass keeps traffic flowing if nfluad is down:"
    )?;
    writeln!(
        out,
        "iptables -A {chain} {rule}-m mark ! --mark {eval:#x}/{eval:#x} -j NFQUEUE {} --queue-bypass",
        queue_option(spec)
    )?;
    if spec.mode == HookMode::Match {
        writeln!(out, "# Act on packets the Lua function matched:")?;
        writeln!(out, "iptables -A {chain} {rule}-m mark --mark {matched:#x}/{matched:#x} -j {target}")?;
    }
    writeln!(out, "# nft equivalent (where nft's queue statement is available):")?;
    writeln!(
        out,
        "nft add rule inet filter {nft_chain} meta mark and {eval:#x} != {eval:#x} {}",
        nft_queue(spec)
    )?;
    if spec.mode == HookMode::Match {
        writeln!(
            out,
            "nft add rule inet filter {nft_chain} meta mark and {matched:#x} == {matched:#x} {}",
            target.to_lowercase()
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct HookJson<'a> {
    queue_first: u16,
    queue_last: u16,
    state: &'a str,
    function: &'a str,
    mode: &'static str,
    tcp_payload: bool,
    on_error: &'static str,
    eval_mark: u32,
    match_mark: u32,
}

fn on_error_name(e: OnError) -> &'static str {
    match e {
        OnError::Continue => "continue",
        OnError::Verdict(0) => "drop",
        OnError::Verdict(_) => "accept",
    }
}

pub fn hooks(out: &mut impl Write, hooks: &[HookSpec], json: bool) -> std::io::Result<()> {
    if json {
        let list: Vec<HookJson<'_>> = hooks
            .iter()
            .map(|h| HookJson {
                queue_first: h.queue_first,
                queue_last: h.queue_last,
                state: &h.state,
                function: &h.function,
                mode: if h.mode == HookMode::Match { "match" } else { "target" },
                tcp_payload: h.tcp_payload,
                on_error: on_error_name(h.on_error),
                eval_mark: h.eval_mark,
                match_mark: h.match_mark,
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &list)?;
        return writeln!(out);
    }
    writeln!(out, "QUEUES     STATE            FUNCTION         MODE    TCP-PAYLOAD  ON-ERROR")?;
    for h in hooks {
        let queues = if h.queue_first == h.queue_last {
            h.queue_first.to_string()
        } else {
            format!("{}:{}", h.queue_first, h.queue_last)
        };
        writeln!(
            out,
            "{:<10} {:<16} {:<16} {:<7} {:<12} {}",
            queues,
            h.state,
            h.function,
            if h.mode == HookMode::Match { "match" } else { "target" },
            if h.tcp_payload { "yes" } else { "no" },
            on_error_name(h.on_error)
        )?;
    }
    Ok(())
}

/// Drops every state and hook but those of `name`.
pub fn keep_state(stats: &mut serde_json::Value, name: &str) {
    for key in ["states", "hooks", "failed_states"] {
        let field = if key == "hooks" { "state" } else { "name" };
        if let Some(list) = stats[key].as_array_mut() {
            list.retain(|item| item[field] == name);
        }
    }
}

fn micros(v: &serde_json::Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |s| format!("{:.1}", s * 1e6))
}

/// `nfluactl stats`: two tables, or the daemon's JSON as is.
pub fn stats(out: &mut impl Write, stats: &serde_json::Value, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, stats)?;
        return writeln!(out);
    }
    let empty = Vec::new();
    let states = stats["states"].as_array().unwrap_or(&empty);
    writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>10} {:>12} {:>10} {:>8} {:>6} {:>10}",
        "STATE", "MEMORY", "PEAK", "LIMIT", "INSTRUCTIONS", "CALLS", "ERRORS", "TIMERS", "LOCKWAITS"
    )?;
    for s in states {
        writeln!(
            out,
            "{:<16} {:>10} {:>10} {:>10} {:>12} {:>10} {:>8} {:>6} {:>10}",
            s["name"].as_str().unwrap_or("?"),
            s["memory_current"],
            s["memory_peak"],
            s["memory_limit"],
            s["instructions"],
            s["calls"],
            s["errors"],
            s["timers"],
            s["lock_waits"]
        )?;
    }
    failed_states(out, stats)?;
    let hooks = stats["hooks"].as_array().unwrap_or(&empty);
    if hooks.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<8} {:<16} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>11}",
        "QUEUES",
        "STATE",
        "PACKETS",
        "ERRORS",
        "ACCEPT",
        "DROP",
        "REPEAT",
        "OTHER",
        "P50(us)",
        "P99(us)",
        "UNEVALUATED"
    )?;
    for h in hooks {
        let v = &h["verdicts"];
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        writeln!(
            out,
            "{:<8} {:<16} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>11}",
            format!("{}:{}", h["queue_first"], h["queue_last"]),
            h["state"].as_str().unwrap_or("?"),
            h["packets"],
            h["errors"],
            n("accept"),
            n("drop"),
            n("repeat"),
            n("stolen") + n("queue") + n("stop"),
            micros(&h["lua_seconds_p50"]),
            micros(&h["lua_seconds_p99"]),
            // "-": not measured (no accounting object), which is not the same as none.
            h["unevaluated"].as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string())
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<8} {:<16} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "QUEUE", "STATE", "BACKLOG", "HIGHWATER", "FULL(s)", "DROPPED-FULL", "DROPPED-SOCKET"
    )?;
    for h in hooks {
        for q in h["queues"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "{:<8} {:<16} {:>10} {:>10} {:>10.3} {:>12} {:>14}",
                q["queue"],
                h["state"].as_str().unwrap_or("?"),
                q["backlog"],
                q["backlog_high_water"],
                q["full_seconds"].as_f64().unwrap_or(0.0),
                q["dropped_full"],
                q["dropped_socket"]
            )?;
        }
    }
    Ok(())
}
