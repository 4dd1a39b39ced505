//! The overflow policy of a hook against real traffic: a slow filter behind a
//! 16-packet queue, flooded with UDP. Fail-open lets what does not fit pass
//! unevaluated; fail-closed drops it. Counts come from the kernel (IP input
//! and UDP counters of the receiving namespace, the queue's own drop
//! counters) and from the daemon (packets its hook evaluated), so the test
//! accounts for every packet rather than guessing from timing.

use std::time::{Duration, Instant};

use crate::netns::{in_netns, NetPair, ADDR_B};
use crate::util::{text, Daemon};

const PORT: u16 = 9000;
const SENT: u64 = 3000;
const QUEUE_LEN: &str = "16";

/// A counter of `/proc/net/snmp` in namespace `ns`, e.g. ("Ip", "InReceives").
fn snmp(pair: &NetPair, proto: &str, field: &str) -> u64 {
    let out = text(&pair.exec_b(&["cat", "/proc/net/snmp"]).stdout);
    let mut lines = out.lines().filter(|l| l.starts_with(&format!("{proto}:")));
    let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let at =
        names.split_whitespace().position(|n| n == field).unwrap_or_else(|| panic!("no {proto} {field}"));
    values
        .split_whitespace()
        .nth(at)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{proto} {field}"))
}

/// Queue 0's row of `/proc/net/netfilter/nfnetlink_queue` in `b`: (waiting,
/// dropped because the queue was full, dropped because the socket was full).
fn queue_row(pair: &NetPair) -> (u64, u64, u64) {
    let out = text(&pair.exec_b(&["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout);
    let row: Vec<u64> = out
        .lines()
        .map(|l| l.split_whitespace().filter_map(|w| w.parse().ok()).collect::<Vec<u64>>())
        .find(|r| r.first() == Some(&0))
        .unwrap_or_else(|| panic!("queue 0 not bound: {out:?}"));
    (row[2], row[5], row[6])
}

fn hook_stats(d: &Daemon) -> serde_json::Value {
    let stats: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["stats", "--json"])).expect("stats json");
    stats["hooks"][0].clone()
}

fn hook_packets(d: &Daemon) -> u64 {
    let hook = hook_stats(d);
    hook["packets"].as_u64().unwrap_or_else(|| panic!("no hook packets in {hook}"))
}

struct Figures {
    /// Packets that reached the receiving namespace's IP input.
    arrived: u64,
    /// Packets the hook's Lua function evaluated (each returned "accept").
    evaluated: u64,
    /// Datagrams the receiving socket got.
    received: u64,
    queue_dropped: u64,
    user_dropped: u64,
    /// Median Lua time per evaluated packet, microseconds.
    lua_us: f64,
}

fn flood(test: &str, overflow: &str) -> Option<Figures> {
    let pair = NetPair::new(test)?;
    let d = Daemon::start_in(Some(&pair.b), &["--queue-maxlen", QUEUE_LEN]);
    d.ctl_ok(&["create", "fw", "--instructions", "1000000", "--memory", "262144"]);
    // Slow on purpose: a few hundred microseconds per packet, far slower than the sender.
    d.execute("fw", "function filter(frame, packet) for i = 1, 20000 do end return 'accept' end").unwrap();
    let rules = d.add_udp_target_hook(overflow);
    // The rules exactly as printed (IPv4 ones: the flood is IPv4).
    for line in rules.lines().filter(|l| l.starts_with("iptables ")) {
        pair.iptables(line.trim_start_matches("iptables "));
    }
    let listed = d.ctl_ok(&["hook", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("hook list json");
    assert_eq!(listed[0]["overflow"], overflow, "{listed}");
    let table = d.ctl_ok(&["hook", "list"]);
    assert!(table.lines().next().is_some_and(|h| h.ends_with("OVERFLOW")), "{table}");
    assert_eq!(table.lines().nth(1).and_then(|l| l.split_whitespace().last()), Some(overflow), "{table}");

    let rx = pair.udp_listener(PORT);
    // Room for every datagram, so the socket never drops and `received` is exact.
    crate::util::force_recv_buffer(&rx, 64 << 20);
    let (ip_before, errors_before) = (snmp(&pair, "Ip", "InReceives"), snmp(&pair, "Udp", "RcvbufErrors"));

    let a = pair.a.clone();
    in_netns(&a, move || {
        let tx = std::net::UdpSocket::bind(("0.0.0.0", 0)).expect("bind sender");
        let payload = [7u8; 64];
        for _ in 0..SENT {
            // A send the local stack refused is not a packet that arrived; `arrived` counts those.
            let _ = tx.send_to(&payload, (ADDR_B, PORT));
        }
    });
    let flooded = Instant::now();
    // Wait until the queue is empty and the hook has stopped counting (bounded).
    let deadline = flooded + Duration::from_secs(20);
    let mut last = u64::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = hook_packets(&d);
        if (now == last && queue_row(&pair).0 == 0) || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let drained = flooded.elapsed();
    let (waiting, queue_dropped, user_dropped) = queue_row(&pair);
    assert_eq!(waiting, 0, "the queue did not drain within 20 s");
    let evaluated = hook_packets(&d);
    let arrived = snmp(&pair, "Ip", "InReceives") - ip_before;
    assert_eq!(snmp(&pair, "Udp", "RcvbufErrors"), errors_before, "the receiving socket dropped datagrams");

    rx.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 2048];
    let mut received = 0u64;
    while rx.recv(&mut buf).is_ok() {
        received += 1;
    }
    let lua_us = hook_stats(&d)["lua_seconds_p50"].as_f64().unwrap_or(0.0) * 1e6;
    eprintln!(
        "{test}: sent {SENT}, arrived {arrived}, evaluated {evaluated}, received {received}, \
         queue_dropped {queue_dropped}, user_dropped {user_dropped}, Lua p50 {lua_us:.0} us per packet, \
         drained {drained:?} after the flood"
    );
    Some(Figures { arrived, evaluated, received, queue_dropped, user_dropped, lua_us })
}

#[test]
fn overflow_accept_lets_what_does_not_fit_pass_unevaluated() {
    let _exclusive = crate::util::exclusive();
    let Some(f) = flood("overflow_accept_lets_what_does_not_fit_pass_unevaluated", "accept") else { return };
    assert!(
        f.arrived > f.evaluated * 2,
        "the flood did not overflow the queue: {:.0} us per packet",
        f.lua_us
    );
    // Fail-open: every packet that arrived reached the socket, evaluated or not.
    assert_eq!(f.received, f.arrived);
    let unevaluated = f.received - f.evaluated;
    assert!(unevaluated > 0);
    // The kernel counts no drop for a fail-open queue.
    assert_eq!((f.queue_dropped, f.user_dropped), (0, 0));
}

#[test]
fn overflow_drop_lets_nothing_pass_unevaluated() {
    let _exclusive = crate::util::exclusive();
    let Some(f) = flood("overflow_drop_lets_nothing_pass_unevaluated", "drop") else { return };
    assert!(
        f.arrived > f.evaluated * 2,
        "the flood did not overflow the queue: {:.0} us per packet",
        f.lua_us
    );
    // Fail-closed: only what Lua accepted reached the socket ...
    assert_eq!(f.received, f.evaluated);
    // ... and every other packet was dropped by the queue, counted by the kernel.
    assert_eq!(f.arrived, f.evaluated + f.queue_dropped + f.user_dropped);
}
