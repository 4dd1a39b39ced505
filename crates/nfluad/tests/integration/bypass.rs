//! Packets that pass a hook without a verdict from Lua are counted (`queue::bypass`): a flood
//! against a slow hook on a short fail-open queue, and traffic while nfluad is down, with the
//! rules `hook add` prints. The count must equal what the receiver got minus what Lua accepted.
//! With `--overflow drop` the same flood must leave the count at 0, and the queue's drops nfluad
//! reports must be every packet that neither arrived nor was dropped by Lua.

use std::net::UdpSocket;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{NetPair, ADDR_B};
use crate::util::{text, Daemon};

const PORT: u16 = 9000;

/// Lua drops datagrams starting with 'd' and accepts the others; `spin` loop turns per call make
/// the hook slow enough for a flood to overflow its queue.
fn filter(spin: u32) -> String {
    format!(
        "function filter(frame, packet)
           for i = 1, {spin} do end
           if packet[29] == string.byte('d') then return 'drop' end
           return 'accept'
         end"
    )
}

/// Adds the hook on queue 0 (fail-open) and applies the iptables rules `hook add` printed
/// (accounting rule included), in order.
fn hook_with_printed_rules(pair: &NetPair, d: &Daemon, spin: u32) -> String {
    hook_with_overflow(pair, d, spin, "accept")
}

fn hook_with_overflow(pair: &NetPair, d: &Daemon, spin: u32, overflow: &str) -> String {
    d.ctl_ok(&["create", "fw", "--instructions", "10000000", "--memory", "1000000"]);
    d.execute("fw", &filter(spin)).expect("load filter");
    let printed = d.add_udp_target_hook(overflow);
    apply_iptables(pair, &printed);
    printed
}

fn apply_iptables(pair: &NetPair, printed: &str) {
    let rules: Vec<&str> = printed.lines().filter_map(|l| l.strip_prefix("iptables ")).collect();
    assert!(rules.iter().any(|r| r.contains("-m nfacct --nfacct-name nflua-q0")), "{printed}");
    for r in rules {
        pair.iptables(r);
    }
}

/// A receiver in `b` counting datagrams until 1 s of silence after `done`: (total, starting with 'd').
fn receiver(pair: &NetPair) -> (JoinHandle<(u64, u64)>, mpsc::Sender<()>) {
    let sock = pair.udp_listener(PORT);
    // Big enough that the receiver's own buffer never drops what netfilter passed.
    crate::util::force_recv_buffer(&sock, 32 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let (done_tx, done_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let (mut total, mut dropped_kind) = (0u64, 0u64);
        let mut buf = [0u8; 2048];
        let mut quiet_since: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut done = false;
        while Instant::now() < deadline {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    total += 1;
                    dropped_kind += u64::from(n > 0 && buf[0] == b'd');
                    quiet_since = None;
                }
                Err(_) => {
                    done |= done_rx.try_recv().is_ok();
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if done && since.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                }
            }
        }
        (total, dropped_kind)
    });
    (thread, done_tx)
}

/// Sends `count` datagrams from `a`, alternating 'a…' and 'd…'; returns how many were sent.
fn flood(tx: &UdpSocket, count: u32) -> u64 {
    let dst = format!("{ADDR_B}:{PORT}");
    let (mut a, mut d) = ([b'a'; 36], [b'd'; 36]);
    let mut sent = 0;
    for i in 0..count {
        let payload: &mut [u8; 36] = if i % 2 == 0 { &mut a } else { &mut d };
        payload[1..5].copy_from_slice(&i.to_be_bytes());
        sent += u64::from(tx.send_to(payload, &dst).is_ok());
    }
    sent
}

fn hook_stats(d: &Daemon) -> serde_json::Value {
    let stats: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["stats", "--json"])).expect("stats json");
    stats["hooks"][0].clone()
}

/// The hook's figures once its queue is empty and the unevaluated count stopped moving.
fn settled(d: &Daemon) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = hook_stats(d);
    loop {
        std::thread::sleep(Duration::from_millis(1200));
        let now = hook_stats(d);
        let empty = now["queues"].as_array().is_some_and(|qs| qs.iter().all(|q| q["backlog"] == 0));
        if (empty && now["unevaluated"] == last["unevaluated"] && now["packets"] == last["packets"])
            || Instant::now() > deadline
        {
            return now;
        }
        last = now;
    }
}

/// CPU clock ticks (user + system) of the daemon's `nfq-monitor` thread, and the daemon's age in s.
fn monitor_cpu_ticks(d: &Daemon) -> (u64, f64) {
    let task_dir = format!("/proc/{}/task", d.pid());
    let mut ticks = 0;
    for entry in std::fs::read_dir(&task_dir).expect("task dir").flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == "nfq-monitor" {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // Fields after the parenthesized name: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit(')').next().unwrap_or("");
            let f: Vec<u64> = rest.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
            ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
        }
    }
    let started = std::fs::metadata(format!("/proc/{}", d.pid())).and_then(|m| m.modified()).ok();
    let wall = started.and_then(|t| t.elapsed().ok()).map_or(0.0, |e| e.as_secs_f64());
    (ticks, wall)
}

/// Receive-buffer drops of UDP in `b`: must be 0 for the receiver's count to be what passed.
fn udp_rcvbuf_errors(pair: &NetPair) -> u64 {
    let snmp = text(&pair.exec_b(&["cat", "/proc/net/snmp"]).stdout);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn overflowing_fail_open_queue_counts_every_unevaluated_packet() {
    let _exclusive = crate::util::exclusive();
    let test = "overflowing_fail_open_queue_counts_every_unevaluated_packet";
    let Some(pair) = NetPair::new(test) else { return };
    let d = Daemon::start_in(Some(&pair.b), &["--queue-maxlen", "16"]);
    let printed = hook_with_printed_rules(&pair, &d, 20_000);
    assert!(printed.contains("nfacct"), "{printed}");
    let (rx, done) = receiver(&pair);
    let tx = pair.udp_sender(0);
    let sent = flood(&tx, 20_000);
    let _ = done.send(());
    let (received, received_d) = rx.join().expect("receiver");
    let h = settled(&d);
    let accepted = h["verdicts"]["accept"].as_u64().expect("accept count");
    let dropped = h["verdicts"]["drop"].as_u64().expect("drop count");
    let unevaluated = h["unevaluated"].as_u64().unwrap_or_else(|| panic!("not measured: {h}"));
    let q = &h["queues"][0];
    eprintln!(
        "{test}: sent {sent}, received {received} ({received_d} 'd'), Lua accepted {accepted} dropped {dropped}, \
         unevaluated {unevaluated}, backlog high-water {}, full {} s",
        q["backlog_high_water"], q["full_seconds"]
    );
    assert_eq!(udp_rcvbuf_errors(&pair), 0, "the receiver itself lost datagrams");
    assert!(unevaluated > 1000, "the flood did not overflow the queue: {h}");
    assert_eq!(
        unevaluated,
        received - accepted,
        "unevaluated must be what arrived without Lua's accept: {h}"
    );
    assert!(received_d <= unevaluated, "every 'd' that arrived passed unevaluated: {h}");
    assert_eq!(h["unevaluated_while_down"], 0, "{h}");
    assert_eq!(q["backlog_high_water"], 16, "a flood fills the 16-packet queue: {h}");
    assert!(q["full_seconds"].as_f64().is_some_and(|s| s > 0.0), "{h}");
    let (ticks, wall) = monitor_cpu_ticks(&d);
    eprintln!("{test}: monitor thread CPU {ticks} clock ticks over {wall:.1} s of daemon life");
    let metrics = d.ctl_ok(&["stats"]);
    assert!(metrics.contains("UNEVALUATED") && metrics.contains("HIGHWATER"), "{metrics}");
}

/// A counter of `/proc/net/snmp` in `b`, e.g. ("Ip", "InReceives").
fn snmp_b(pair: &NetPair, proto: &str, field: &str) -> u64 {
    let snmp = text(&pair.exec_b(&["cat", "/proc/net/snmp"]).stdout);
    let mut rows = snmp.lines().filter(|l| l.starts_with(&format!("{proto}:")));
    let (names, values) = (rows.next().unwrap_or(""), rows.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {proto} {field} in {snmp}"))
}

#[test]
fn overflowing_fail_closed_queue_lets_nothing_pass_unevaluated() {
    let _exclusive = crate::util::exclusive();
    let test = "overflowing_fail_closed_queue_lets_nothing_pass_unevaluated";
    let Some(pair) = NetPair::new(test) else { return };
    let d = Daemon::start_in(Some(&pair.b), &["--queue-maxlen", "16"]);
    hook_with_overflow(&pair, &d, 20_000, "drop");
    let (rx, done) = receiver(&pair);
    let arrived_before = snmp_b(&pair, "Ip", "InReceives");
    let tx = pair.udp_sender(0);
    let sent = flood(&tx, 20_000);
    let _ = done.send(());
    let (received, received_d) = rx.join().expect("receiver");
    let h = settled(&d);
    let arrived = snmp_b(&pair, "Ip", "InReceives") - arrived_before;
    let accepted = h["verdicts"]["accept"].as_u64().expect("accept count");
    let lua_dropped = h["verdicts"]["drop"].as_u64().expect("drop count");
    let unevaluated = h["unevaluated"].as_u64().unwrap_or_else(|| panic!("not measured: {h}"));
    let q = &h["queues"][0];
    let queue_dropped = q["dropped_full"].as_u64().expect("dropped_full")
        + q["dropped_socket"].as_u64().expect("dropped_socket");
    eprintln!(
        "{test}: sent {sent}, arrived at b's IP input {arrived}, received {received} ({received_d} 'd'), \
         Lua accepted {accepted} dropped {lua_dropped}, unevaluated {unevaluated}, queue dropped {} full + {} socket, \
         backlog high-water {}, full {} s",
        q["dropped_full"], q["dropped_socket"], q["backlog_high_water"], q["full_seconds"]
    );
    assert_eq!(udp_rcvbuf_errors(&pair), 0, "the receiver itself lost datagrams");
    assert_eq!(arrived, sent, "the veth lost datagrams before netfilter: the sums below would not hold");
    assert!(queue_dropped > 1000, "the flood did not overflow the queue: {h}");
    assert_eq!(unevaluated, 0, "fail-closed lets nothing pass without Lua: {h}");
    assert_eq!(received_d, 0, "a 'd' arrived: Lua drops those, so it passed unevaluated: {h}");
    assert_eq!(received, accepted, "the receiver got exactly what Lua accepted: {h}");
    assert_eq!(
        queue_dropped,
        sent - received - lua_dropped,
        "the queue's drops are the packets that neither arrived nor were dropped by Lua: {h}"
    );
    assert_eq!(q["backlog_high_water"], 16, "a flood fills the 16-packet queue: {h}");
    assert!(q["full_seconds"].as_f64().is_some_and(|s| s > 0.0), "{h}");
}

#[test]
fn packets_passed_while_nfluad_is_down_are_counted_on_restart() {
    down_and_back("packets_passed_while_nfluad_is_down_are_counted_on_restart", false);
}

/// After a crash the count is exact too when the monitor read the counter after the last
/// packets the old daemon decided (it reads within 10 ms of traffic; we wait 300 ms).
#[test]
fn packets_passed_after_a_crash_are_counted_on_restart() {
    down_and_back("packets_passed_after_a_crash_are_counted_on_restart", true);
}

fn down_and_back(test: &str, crash: bool) {
    let Some(pair) = NetPair::new(test) else { return };
    let d = Daemon::start_in(Some(&pair.b), &[]);
    hook_with_printed_rules(&pair, &d, 0);
    let (rx, done) = receiver(&pair);
    let tx = pair.udp_sender(0);
    assert_eq!(flood(&tx, 10), 10);
    std::thread::sleep(Duration::from_millis(300));
    let before = hook_stats(&d);
    assert_eq!(before["packets"], 10, "{before}");
    if crash {
        d.kill();
    } else {
        let (status, log) = d.terminate();
        assert!(status.success(), "{log}");
    }
    // Nobody bound: --queue-bypass passes all of these, 'd' included.
    assert_eq!(flood(&tx, 30), 30);
    std::thread::sleep(Duration::from_millis(300));
    let d = Daemon::start_in(Some(&pair.b), &[]);
    d.ctl_ok(&["create", "fw", "--instructions", "10000000", "--memory", "1000000"]);
    d.execute("fw", &filter(0)).expect("load filter");
    d.ctl_ok(&["hook", "add", "--queue", "0", "--state", "fw", "--function", "filter", "--mode", "target"]);
    assert_eq!(flood(&tx, 10), 10);
    let _ = done.send(());
    let (received, received_d) = rx.join().expect("receiver");
    let h = settled(&d);
    eprintln!("{test}: received {received} ({received_d} 'd'), after restart {h}");
    // 5 accepted before, 30 passed while down, 5 accepted after.
    assert_eq!((received, received_d), (40, 15));
    assert_eq!(h["unevaluated_while_down"], 30, "{h}");
    assert_eq!(h["unevaluated"], 30, "{h}");
    assert_eq!(h["verdicts"]["accept"], 5, "{h}");
}
