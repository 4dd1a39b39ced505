//! How results are printed.

use std::io::Write;

use nflua_client::{HookMode, HookSpec, OnError, Overflow, StateInfo};

use crate::nft;
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

fn fail_open(spec: &HookSpec) -> bool {
    spec.overflow == Overflow::Accept
}

fn queue_option(spec: &HookSpec) -> String {
    let queues = if spec.queue_first == spec.queue_last {
        format!("--queue-num {}", spec.queue_first)
    } else {
        format!("--queue-balance {}:{}", spec.queue_first, spec.queue_last)
    };
    if fail_open(spec) {
        queues + " --queue-bypass"
    } else {
        queues
    }
}

fn nft_queue(spec: &HookSpec) -> String {
    let flags = match (spec.queue_first == spec.queue_last, fail_open(spec)) {
        (true, true) => " bypass",
        (true, false) => "",
        (false, true) => " fanout,bypass",
        (false, false) => " fanout",
    };
    if spec.queue_first == spec.queue_last {
        format!("queue num {}{flags}", spec.queue_first)
    } else {
        format!("queue num {}-{}{flags}", spec.queue_first, spec.queue_last)
    }
}

/// What `hook add` says of the overflow policy in force.
fn overflow_line(spec: &HookSpec) -> &'static str {
    match spec.overflow {
        Overflow::Accept => {
            "# overflow: accept (fail-open): packets that do not fit in the queue pass unevaluated \
             (--overflow drop drops them instead)"
        }
        Overflow::Drop => {
            "# overflow: drop (fail-closed): packets that do not fit in the queue are dropped, \
             never passed unevaluated"
        }
    }
}

/// The rules a hook expects, for iptables (and ip6tables when the rule
/// covers IPv6) and for nft where `queue` exists; an nft rule is printed only
/// if `rule` translates, since one without the operator's match would queue
/// the whole chain.
pub fn hook_rules(
    out: &mut impl Write,
    spec: &HookSpec,
    chain: &str,
    rule: &str,
    target: &str,
) -> std::io::Result<()> {
    let translated = nft::translate(rule);
    let commands = translated.as_ref().map_or(&["iptables"][..], |m| m.family.commands());
    let rule_words = if rule.trim().is_empty() { String::new() } else { format!("{} ", rule.trim()) };
    let (eval, matched) = (spec.eval_mark, spec.match_mark);
    let nft_chain = chain.to_lowercase();
    writeln!(out, "{}", overflow_line(spec))?;
    let decided = eval | matched;
    if spec.stream_depth.is_some() {
        writeln!(
            out,
            "# Stream hook: a connection nflua accepted keeps the decision in its conntrack mark, so its later packets skip the queue:"
        )?;
        for cmd in commands {
            writeln!(
                out,
                "{cmd} -A {chain} {rule_words}-m mark --mark {decided:#x}/{decided:#x} -j CONNMARK --save-mark --mask {decided:#x}"
            )?;
            writeln!(
                out,
                "{cmd} -A {chain} {rule_words}-m connmark --mark {decided:#x}/{decided:#x} -j CONNMARK --restore-mark --mask {decided:#x}"
            )?;
            writeln!(out, "{cmd} -A {chain} {rule_words}-m mark --mark {decided:#x}/{decided:#x} -j ACCEPT")?;
        }
    }
    writeln!(
        out,
        "# Count what reaches the queue rule, so nfluad can count what passes it unevaluated (queue full, nfluad down):"
    )?;
    for cmd in commands {
        writeln!(
            out,
            "{cmd} -A {chain} {rule_words}-m mark ! --mark {eval:#x}/{eval:#x} -m nfacct --nfacct-name {}",
            spec.accounting_name()
        )?;
    }
    if fail_open(spec) {
        writeln!(
            out,
            "# Feed packets not yet evaluated to nflua; --queue-bypass keeps traffic flowing if nfluad is down:"
        )?;
    } else {
        writeln!(
            out,
            "# Feed packets not yet evaluated to nflua; without --queue-bypass nothing passes while nfluad is down:"
        )?;
    }
    for cmd in commands {
        writeln!(
            out,
            "{cmd} -A {chain} {rule_words}-m mark ! --mark {eval:#x}/{eval:#x} -j NFQUEUE {}",
            queue_option(spec)
        )?;
    }
    if spec.mode == HookMode::Match {
        writeln!(out, "# Act on packets the Lua function matched:")?;
        for cmd in commands {
            writeln!(
                out,
                "{cmd} -A {chain} {rule_words}-m mark --mark {matched:#x}/{matched:#x} -j {target}"
            )?;
        }
    }
    let nft_match = match translated {
        Ok(m) => m.text,
        Err(why) => {
            writeln!(out, "# nft: no rule printed: --rule {rule:?} cannot be translated ({why});")?;
            return writeln!(out, "# an nft rule without it would queue every packet of the chain.");
        }
    };
    // Quoted for the shell: the match may hold `"eth*"`, `{ ... }` and `!=`.
    writeln!(out, "# nft equivalent (where nft's queue statement is available):")?;
    if spec.stream_depth.is_some() {
        writeln!(out, "# (nft copies whole marks here: the rest of the conntrack mark is overwritten)")?;
        writeln!(
            out,
            "nft add rule inet filter {nft_chain} '{nft_match}meta mark and {decided:#x} == {decided:#x} ct mark set meta mark'"
        )?;
        writeln!(
            out,
            "nft add rule inet filter {nft_chain} '{nft_match}ct mark and {decided:#x} == {decided:#x} meta mark set ct mark'"
        )?;
        writeln!(out, "nft add rule inet filter {nft_chain} '{nft_match}meta mark and {decided:#x} == {decided:#x} accept'")?;
    }
    writeln!(
        out,
        "nft add rule inet filter {nft_chain} '{nft_match}meta mark and {eval:#x} != {eval:#x} {}'",
        nft_queue(spec)
    )?;
    if spec.mode == HookMode::Match {
        writeln!(
            out,
            "nft add rule inet filter {nft_chain} '{nft_match}meta mark and {matched:#x} == {matched:#x} {}'",
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
    /// A stream hook's depth in bytes; null for a packet hook.
    stream_depth: Option<u32>,
    /// "accept" (fail-open) or "drop" (fail-closed).
    overflow: &'static str,
    eval_mark: u32,
    match_mark: u32,
}

fn on_error_name(e: OnError) -> &'static str {
    match e {
        OnError::Continue => "continue",
        OnError::Verdict(verdict) => verdict.name(),
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
                stream_depth: h.stream_depth,
                overflow: h.overflow.name(),
                eval_mark: h.eval_mark,
                match_mark: h.match_mark,
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &list)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "QUEUES     STATE            FUNCTION         MODE    TCP-PAYLOAD  ON-ERROR  STREAM   OVERFLOW"
    )?;
    for h in hooks {
        let queues = if h.queue_first == h.queue_last {
            h.queue_first.to_string()
        } else {
            format!("{}:{}", h.queue_first, h.queue_last)
        };
        writeln!(
            out,
            "{:<10} {:<16} {:<16} {:<7} {:<12} {:<9} {:<8} {}",
            queues,
            h.state,
            h.function,
            if h.mode == HookMode::Match { "match" } else { "target" },
            if h.tcp_payload { "yes" } else { "no" },
            on_error_name(h.on_error),
            h.stream_depth.map_or_else(|| "no".to_owned(), |d| d.to_string()),
            h.overflow.name()
        )?;
    }
    Ok(())
}

/// A JSON value as table text: numbers and strings as they read (no quotes), null as "-".
/// (`serde_json::Value`'s own Display ignores the column width.)
fn txt(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
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
            txt(&s["memory_current"]),
            txt(&s["memory_peak"]),
            txt(&s["memory_limit"]),
            txt(&s["instructions"]),
            txt(&s["calls"]),
            txt(&s["errors"]),
            txt(&s["timers"]),
            txt(&s["lock_waits"])
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
            txt(&h["packets"]),
            txt(&h["errors"]),
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
                txt(&q["queue"]),
                h["state"].as_str().unwrap_or("?"),
                txt(&q["backlog"]),
                txt(&q["backlog_high_water"]),
                q["full_seconds"].as_f64().unwrap_or(0.0),
                txt(&q["dropped_full"]),
                txt(&q["dropped_socket"])
            )?;
        }
    }
    let streams: Vec<_> = hooks.iter().filter(|h| h["stream"].is_object()).collect();
    if !streams.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:<8} {:<16} {:>7} {:>7} {:>8} {:>9} {:>6} {:>9} {:>9} {:>7} {:>9} {:>8}",
            "QUEUES",
            "STATE",
            "DEPTH",
            "FLOWS",
            "READING",
            "BYTES",
            "HELD",
            "DECIDED",
            "TIMEDOUT",
            "BROKEN",
            "HELDOVER",
            "REFUSED"
        )?;
        for h in streams {
            let f = &h["stream"];
            writeln!(
                out,
                "{:<8} {:<16} {:>7} {:>7} {:>8} {:>9} {:>6} {:>9} {:>9} {:>7} {:>9} {:>8}",
                format!("{}:{}", h["queue_first"], h["queue_last"]),
                h["state"].as_str().unwrap_or("?"),
                txt(&f["depth"]),
                txt(&f["flows"]),
                txt(&f["reading"]),
                txt(&f["bytes"]),
                txt(&f["held"]),
                txt(&f["decided"]),
                txt(&f["timed_out"]),
                txt(&f["broken"]),
                txt(&f["held_over"]),
                txt(&f["refused"])
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflua_client::HookSpec;

    fn spec(overflow: Overflow) -> HookSpec {
        HookSpec {
            queue_first: 0,
            queue_last: 0,
            mode: HookMode::Match,
            tcp_payload: false,
            on_error: OnError::Continue,
            overflow,
            stream_depth: None,
            eval_mark: 0x1000_0000,
            match_mark: 0x2000_0000,
            state: "fw".into(),
            function: "f".into(),
        }
    }

    fn rules(spec: &HookSpec, rule: &str) -> String {
        let mut out = Vec::new();
        hook_rules(&mut out, spec, "INPUT", rule, "DROP").unwrap();
        String::from_utf8(out).unwrap()
    }

    fn commands(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    /// A stream hook's rules: the offload rules come first, in order (save the decision, restore
    /// it, accept), before the accounting and queue rules.
    /// Every row of every table lines up with its header: values fill their column widths.
    #[test]
    fn stats_tables_are_aligned() {
        let stats = serde_json::json!({
            "states": [
                {"name": "a", "memory_current": 1, "memory_peak": 22, "memory_limit": 65536, "instructions": 7,
                 "calls": 1, "errors": 0, "timers": 0, "lock_waits": 0},
                {"name": "long-name", "memory_current": 123456, "memory_peak": 1234567, "memory_limit": 1048576,
                 "instructions": 123456789, "calls": 99999, "errors": 12, "timers": 3, "lock_waits": 4}
            ],
            "hooks": [{
                "queue_first": 0, "queue_last": 1, "state": "a", "packets": 5, "errors": 0,
                "verdicts": {"accept": 5}, "lua_seconds_p50": null, "lua_seconds_p99": null, "unevaluated": 0,
                "queues": [{"queue": 0, "backlog": 0, "backlog_high_water": 12, "full_seconds": 0.0,
                            "dropped_full": 0, "dropped_socket": 0}],
                "stream": {"depth": 16384, "flows": 2, "reading": 1, "bytes": 300, "held": 1, "decided": 7, "timed_out": 0,
                           "broken": 0, "held_over": 0, "refused": 0}
            }]
        });
        let mut out = Vec::new();
        super::stats(&mut out, &stats, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        for table in text.split("\n\n") {
            let lines: Vec<&str> = table.lines().collect();
            let width = lines[0].len();
            for line in &lines[1..] {
                assert_eq!(line.len(), width, "a row longer or shorter than its header:\n{table}");
            }
        }
    }

    #[test]
    fn stream_hooks_print_the_offload_rules_first() {
        let stream = HookSpec { mode: HookMode::Target, stream_depth: Some(16384), ..spec(Overflow::Accept) };
        let text = rules(&stream, "-p tcp --dport 443");
        let v4: Vec<&str> = commands(&text).into_iter().filter(|l| l.starts_with("iptables ")).collect();
        assert_eq!(
            v4,
            [
                "iptables -A INPUT -p tcp --dport 443 -m mark --mark 0x30000000/0x30000000 -j CONNMARK --save-mark --mask 0x30000000",
                "iptables -A INPUT -p tcp --dport 443 -m connmark --mark 0x30000000/0x30000000 -j CONNMARK --restore-mark --mask 0x30000000",
                "iptables -A INPUT -p tcp --dport 443 -m mark --mark 0x30000000/0x30000000 -j ACCEPT",
                "iptables -A INPUT -p tcp --dport 443 -m mark ! --mark 0x10000000/0x10000000 -m nfacct --nfacct-name nflua-q0",
                "iptables -A INPUT -p tcp --dport 443 -m mark ! --mark 0x10000000/0x10000000 -j NFQUEUE --queue-num 0 --queue-bypass",
            ]
        );
        assert!(text.contains("ct mark set meta mark"), "{text}");
        assert!(!rules(&spec(Overflow::Accept), "-p tcp").contains("CONNMARK"), "packet hooks print none");
    }

    #[test]
    fn printed_rules_carry_the_match_for_both_tools() {
        let text = rules(&spec(Overflow::Accept), "-p udp --dport 9000");
        assert!(text.starts_with("# overflow: accept (fail-open)"), "{text}");
        assert_eq!(
            commands(&text),
            [
                "iptables -A INPUT -p udp --dport 9000 -m mark ! --mark 0x10000000/0x10000000 -m nfacct --nfacct-name nflua-q0",
                "ip6tables -A INPUT -p udp --dport 9000 -m mark ! --mark 0x10000000/0x10000000 -m nfacct --nfacct-name nflua-q0",
                "iptables -A INPUT -p udp --dport 9000 -m mark ! --mark 0x10000000/0x10000000 -j NFQUEUE --queue-num 0 --queue-bypass",
                "ip6tables -A INPUT -p udp --dport 9000 -m mark ! --mark 0x10000000/0x10000000 -j NFQUEUE --queue-num 0 --queue-bypass",
                "iptables -A INPUT -p udp --dport 9000 -m mark --mark 0x20000000/0x20000000 -j DROP",
                "ip6tables -A INPUT -p udp --dport 9000 -m mark --mark 0x20000000/0x20000000 -j DROP",
                "nft add rule inet filter input 'udp dport 9000 meta mark and 0x10000000 != 0x10000000 queue num 0 bypass'",
                "nft add rule inet filter input 'udp dport 9000 meta mark and 0x20000000 == 0x20000000 drop'",
            ]
        );
    }

    #[test]
    fn fail_closed_rules_have_no_bypass_and_an_ipv4_rule_no_ip6tables() {
        let mut s = spec(Overflow::Drop);
        s.queue_last = 1;
        let text = rules(&s, "-s 192.0.2.0/24");
        assert!(text.starts_with("# overflow: drop (fail-closed)"), "{text}");
        let cmds = commands(&text);
        assert_eq!(cmds[0], "iptables -A INPUT -s 192.0.2.0/24 -m mark ! --mark 0x10000000/0x10000000 -m nfacct --nfacct-name nflua-q0");
        assert_eq!(cmds[1], "iptables -A INPUT -s 192.0.2.0/24 -m mark ! --mark 0x10000000/0x10000000 -j NFQUEUE --queue-balance 0:1");
        assert!(!cmds.iter().any(|c| c.starts_with("ip6tables")), "{text}");
        assert!(cmds.contains(&"nft add rule inet filter input 'ip saddr 192.0.2.0/24 meta mark and 0x10000000 != 0x10000000 queue num 0-1 fanout'"), "{text}");
    }

    #[test]
    fn an_untranslatable_rule_prints_no_nft_rule() {
        let text = rules(&spec(Overflow::Accept), "-p tcp -m limit --limit 5/s");
        assert!(!text.lines().any(|l| l.starts_with("nft ")), "{text}");
        assert!(text.contains("# nft: no rule printed: --rule \"-p tcp -m limit --limit 5/s\" cannot be translated (match module 'limit' is not translated);"), "{text}");
        assert!(
            commands(&text)[0].starts_with("iptables -A INPUT -p tcp -m limit --limit 5/s -m mark"),
            "{text}"
        );
    }
}
