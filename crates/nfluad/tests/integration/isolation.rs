//! Issue 12: no state can stall the daemon. A state busy for seconds delays no other state and
//! no control request; the wall clock and SIGTERM end any entry; a state cannot feed itself
//! through the daemon; refused senders cannot flood the log. Each test prints the figures it
//! measured.

#![allow(unsafe_code)] // libc calls the tests need (sockets, signals, namespaces)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nflua_client::{ClientError, ControlSocket, CreateRequest, HookMode, HookSpec, OnError};

use crate::util::{have_root, Daemon};

/// What each request must be answered within while another state is busy (the figure).
const FAST: Duration = Duration::from_millis(50);

/// The answer to the busy call, how long it took and when it came.
type BusyCall = (Result<(), ClientError>, Duration, Instant);

/// Starts `while true do end` in state "busy" on a thread of its own: its answer, how long it
/// took and when it came, and a flag set once it came.
fn spin_in_busy(d: &Daemon) -> (std::thread::JoinHandle<BusyCall>, Arc<AtomicBool>) {
    let done = Arc::new(AtomicBool::new(false));
    let mut c = d.control();
    c.set_timeout(Some(Duration::from_secs(30)));
    let flag = Arc::clone(&done);
    let thread = std::thread::spawn(move || {
        let (result, took) = timed(|| c.execute("busy", b"while true do end", ""));
        flag.store(true, Ordering::SeqCst);
        (result, took, Instant::now())
    });
    (thread, done)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// The largest of the fastest 99 %.
fn p99(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = (sorted.len() * 99).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Asserts every sample of `what` is under [`FAST`] and prints p99 and max.
fn check(what: &str, samples: &[Duration]) {
    let max = samples.iter().max().copied().unwrap_or_default();
    eprintln!(
        "isolation: {what}: {} requests, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(p99(samples)),
        ms(max)
    );
    assert!(max < FAST, "{what}: a request took {:.2} ms while another state was busy", ms(max));
}

fn stats_json(c: &mut ControlSocket) -> serde_json::Value {
    serde_json::from_str(&c.stats().expect("stats")).expect("stats JSON")
}

fn state_stat(json: &serde_json::Value, state: &str, field: &str) -> u64 {
    json["states"]
        .as_array()
        .and_then(|states| states.iter().find(|s| s["name"] == state))
        .and_then(|s| s[field].as_u64())
        .unwrap_or_else(|| panic!("no {field} of state {state} in {json}"))
}

fn hook_spec(queue: u16, state: &str) -> HookSpec {
    HookSpec {
        queue_first: queue,
        queue_last: queue,
        mode: HookMode::Match,
        tcp_payload: false,
        on_error: OnError::Continue,
        overflow: nflua_proto::Overflow::Accept,
        stream_depth: None,
        eval_mark: nflua_proto::hook::DEFAULT_EVAL_MARK,
        match_mark: nflua_proto::hook::DEFAULT_MATCH_MARK,
        state: state.into(),
        function: "f".into(),
    }
}

#[test]
fn a_busy_state_delays_no_other_state_nor_the_control_plane() {
    let _exclusive = crate::util::exclusive();
    if !have_root("a_busy_state_delays_no_other_state_nor_the_control_plane") {
        return;
    }
    let d = Daemon::start_with(&["--max-call-ms", "6000"]);
    let mut c = d.control();
    c.create(&CreateRequest::new("busy", 4_000_000_000)).unwrap();
    d.create("echo");
    d.execute("echo", "function __receive_callback(pid, b) nf.netlink(pid, 0, b) end").unwrap();
    d.create("hooked");
    d.execute("hooked", "function f() return false end").unwrap();
    // A timer of another state re-arms itself every 20 ms and reports how late it fired.
    let mut timer_sink = d.data();
    let sink_port = timer_sink.port().unwrap();
    d.create("ticker");
    d.execute(
        "ticker",
        &format!(
            "local function now() local s, ms = nf.time() return s * 1000 + ms end
             function tick()
               local late = now() - due
               nf.netlink({sink_port}, 0, tostring(late))
               due = now() + 20
               timer.create(20, tick)
             end"
        ),
    )
    .unwrap();

    // State "busy" runs the longest call its limits allow: 4e9 instructions, cut at 6 s.
    let (busy, busy_done) = spin_in_busy(&d);
    crate::util::wait_for("the busy call to start", Duration::from_secs(5), || {
        state_stat(&stats_json(&mut d.control()), "busy", "calls") == 1
    });
    let started = Instant::now();
    // A second request to the busy state itself waits for it.
    let queued = {
        let mut c = d.control();
        c.set_timeout(Some(Duration::from_secs(30)));
        std::thread::spawn(move || {
            let result = c.execute("busy", b"after = true", "");
            (result, Instant::now())
        })
    };
    d.execute("ticker", "local s, ms = nf.time() due = s * 1000 + ms + 20 timer.create(20, tick)").unwrap();

    let queue = 20000 + (std::process::id() % 20000) as u16;
    let mut data = d.data();
    let mut buf = vec![0u8; 4096];
    let (mut list, mut stats, mut create, mut destroy, mut execute, mut send, mut hook_add, mut hook_del) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..100 {
        list.push(timed(|| c.list().unwrap()).1);
        stats.push(timed(|| c.stats().unwrap()).1);
        let name = format!("tmp{i}");
        create.push(timed(|| c.create(&CreateRequest::new(&name, 1000)).unwrap()).1);
        destroy.push(timed(|| c.destroy(&name).unwrap()).1);
        execute.push(timed(|| c.execute("echo", b"x = (x or 0) + 1", "").unwrap()).1);
        send.push(
            timed(|| {
                data.send("echo", b"ping").unwrap();
                data.receive_timeout(&mut buf, 5000).unwrap()
            })
            .1,
        );
        // A queue of its own each time: re-adding a queue just removed waits for its worker
        // to unbind it (up to its poll interval), which is not what is measured here.
        let queue = queue + i as u16;
        hook_add.push(timed(|| c.hook_add(&hook_spec(queue, "hooked")).unwrap()).1);
        hook_del.push(timed(|| c.hook_del(queue).unwrap()).1);
    }
    let mut timers = vec![];
    while timers.len() < 100 {
        let msg = timer_sink.receive_timeout(&mut buf, 5000).expect("a tick");
        let late: i64 = std::str::from_utf8(&buf[..msg.len]).unwrap().parse().unwrap();
        timers.push(Duration::from_millis(late.max(0) as u64));
    }
    let measured = started.elapsed();
    assert!(
        !busy_done.load(Ordering::SeqCst),
        "the busy call ended before the measurements did ({measured:?}): they prove nothing"
    );
    eprintln!("isolation: all measured within {:.0} ms of a 6000 ms busy call", ms(measured));
    check("list", &list);
    check("stats", &stats);
    check("create", &create);
    check("destroy", &destroy);
    check("execute in another state", &execute);
    check("send to another state and its answer", &send);
    check("hook add (another state)", &hook_add);
    check("hook del", &hook_del);
    // Timers fire on a 1 ms clock: lateness is whole milliseconds.
    check("timer lateness of another state", &timers);

    let (result, took, ended) = busy.join().unwrap();
    match result {
        Err(ClientError::Daemon { message, .. }) => {
            assert!(message.contains("time limit exceeded (6000 ms)"), "{message}")
        }
        other => panic!("the busy call should hit the wall clock: {other:?}"),
    }
    eprintln!("isolation: the busy call ended after {:.0} ms", ms(took));
    let (result, answered) = queued.join().unwrap();
    result.expect("the queued request to the busy state runs once the call ends");
    assert!(answered >= ended - Duration::from_millis(50), "answered before the busy call ended");
    d.execute("busy", "assert(after)").unwrap();
}

/// The median.
fn p50(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[(sorted.len().max(1) - 1) / 2]
}

#[test]
fn a_busy_state_delays_no_packet_of_another_states_hook() {
    let _exclusive = crate::util::exclusive();
    const PAIRS: usize = 100;
    let Some(pair) = crate::netns::NetPair::new("a_busy_state_delays_no_packet_of_another_states_hook")
    else {
        return;
    };
    let d = Daemon::start_in(Some(&pair.b), &["--max-call-ms", "6000"]);
    let mut c = d.control();
    c.create(&CreateRequest::new("busy", 4_000_000_000)).unwrap();
    d.create("fw");
    // Drops datagrams whose first payload byte (IPv4 without options; data is indexed from 1)
    // is 'x', accepts the others.
    d.execute(
        "fw",
        "function f(frame, packet) \
           if packet[29] == string.byte('x') then return 'drop' end \
           return 'accept' \
         end",
    )
    .unwrap();
    c.hook_add(&HookSpec { mode: HookMode::Target, ..hook_spec(0, "fw") }).unwrap();
    pair.iptables(&format!(
        "-A INPUT -p udp --dport 9000 {} -j NFQUEUE --queue-num 0 --queue-bypass",
        crate::netns::GUARD
    ));
    // With the target hook, a packet that reaches this rule was not decided by nflua.
    pair.iptables("-A INPUT -p udp --dport 9000 -j DROP");
    let (tx, rx) = (pair.udp_sender(0), pair.udp_listener(9000));
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let dst = rx.local_addr().unwrap();
    // The worker is bound and the filter answers before anything is measured.
    assert_eq!(crate::netns::udp_exchange(&tx, &rx, &["warm-up"]), vec!["warm-up"]);

    // Waited for from outside the daemon's namespace, with a socket made inside it: the
    // client's presence check asks through its socket, so it sees the daemon alive.
    let (busy, busy_done) = spin_in_busy(&d);
    crate::util::wait_for("the busy call to start", Duration::from_secs(5), || {
        state_stat(&stats_json(&mut d.control()), "busy", "calls") == 1
    });
    let started = Instant::now();

    // Each round sends one datagram the filter drops and then one it accepts. The worker
    // decides a queue's packets in order, so the second one arriving means both were
    // decided: the time from the first send to that arrival bounds both decisions.
    let mut delays = Vec::with_capacity(PAIRS);
    let mut buf = [0u8; 256];
    for i in 0..PAIRS {
        // Spread over about a second of the busy call rather than its first milliseconds.
        std::thread::sleep(Duration::from_millis(10));
        let sent = Instant::now();
        tx.send_to(format!("x{i}").as_bytes(), dst).expect("send");
        tx.send_to(format!("a{i}").as_bytes(), dst).expect("send");
        let n = rx.recv(&mut buf).unwrap_or_else(|e| panic!("round {i}: a{i} did not arrive: {e}"));
        delays.push(sent.elapsed());
        assert_eq!(&buf[..n], format!("a{i}").as_bytes(), "round {i}: only a{i} may arrive");
    }
    let rounds = started.elapsed();
    // Nothing else arrives: every 'x' was dropped, not late.
    rx.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    if let Ok(n) = rx.recv(&mut buf) {
        panic!("a dropped datagram arrived: {:?}", String::from_utf8_lossy(&buf[..n]));
    }
    let measured = started.elapsed();
    assert!(
        !busy_done.load(Ordering::SeqCst),
        "the busy call ended before the packets were measured ({measured:?}): they prove nothing"
    );
    eprintln!(
        "isolation: {} datagrams through another state's hook in {:.0} ms, checked within {:.0} ms \
         of a 6000 ms busy call: p50 {:.2} ms",
        2 * PAIRS,
        ms(rounds),
        ms(measured),
        ms(p50(&delays))
    );
    check("a dropped and an accepted datagram decided by another state's hook", &delays);

    let json = stats_json(&mut c);
    let hook = &json["hooks"][0];
    let sent = 2 * PAIRS as u64;
    assert_eq!(hook["packets"], sent + 1, "{hook}");
    assert_eq!(hook["errors"], 0, "{hook}");
    assert_eq!(hook["verdicts"]["drop"], PAIRS as u64, "{hook}");
    assert_eq!(hook["verdicts"]["accept"], PAIRS as u64 + 1, "{hook}");

    match busy.join().unwrap().0 {
        Err(ClientError::Daemon { message, .. }) => {
            assert!(message.contains("time limit exceeded (6000 ms)"), "{message}")
        }
        other => panic!("the busy call should hit the wall clock: {other:?}"),
    }
}

#[test]
fn the_wall_clock_ends_a_call() {
    let d = Daemon::start_with(&["--max-call-ms", "200"]);
    let mut c = d.control();
    c.create(&CreateRequest::new("spin", 4_000_000_000)).unwrap();
    let (result, took) = timed(|| c.execute("spin", b"while true do end", ""));
    match result {
        Err(ClientError::Daemon { message, .. }) => {
            assert!(message.contains("time limit exceeded (200 ms)"), "{message}")
        }
        other => panic!("expected the time limit: {other:?}"),
    }
    eprintln!("isolation: --max-call-ms 200 ended the call after {:.1} ms", ms(took));
    assert!(took >= Duration::from_millis(200), "ended early: {took:?}");
    assert!(took < Duration::from_millis(1500), "ended late: {took:?}");
    d.execute("spin", "x = 1").expect("the state serves again");
}

#[test]
fn sigterm_ends_a_spinning_daemon_within_a_second() {
    let d = Daemon::start_with(&["--max-call-ms", "0"]);
    let mut c = d.control();
    c.create(&CreateRequest::new("spin", 4_000_000_000)).unwrap();
    c.send_execute("spin", b"while true do end", "").unwrap();
    crate::util::wait_for("the spin to start", Duration::from_secs(5), || {
        state_stat(&stats_json(&mut d.control()), "spin", "calls") == 1
    });
    std::thread::sleep(Duration::from_millis(200));
    let ((status, log), took) = timed(|| d.terminate());
    eprintln!("isolation: SIGTERM to exit with a state spinning: {:.1} ms", ms(took));
    assert!(took < Duration::from_secs(1), "took {took:?}\n{log}");
    assert!(status.success(), "{status}\n{log}");
}

#[test]
fn a_state_cannot_feed_itself_through_the_daemon() {
    let d = Daemon::start();
    let mut c = d.control();
    d.create("ping");
    d.execute(
        "ping",
        "calls = 0 function __receive_callback(p, b) calls = calls + 1 nf.netlink(p, 0, b) end",
    )
    .unwrap();
    let err = d.execute("ping", &format!("nf.netlink({}, 0, 'ping')", d.port)).unwrap_err();
    let expected = format!("nf.netlink: port {:#x} is nfluad's own", d.port);
    assert!(err.to_string().contains(&expected), "{err}");
    let got = d.execute("ping", &format!("local ok, e = pcall(nf.netlink, {}, 0, 'x') assert(type(e) == 'string') assert(e:find(\"nfluad's own\", 1, true)) assert(calls == 0)", d.port));
    got.expect("the error is a string and the callback never ran");
    // CPU stays idle: the daemon is not answering itself.
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = ticks() - before;
    let json = stats_json(&mut c);
    eprintln!(
        "isolation: self-feeding: {used} CPU ticks in 1 s, {} callback calls",
        state_stat(&json, "ping", "calls") - 3
    );
    assert!(used <= 10, "the daemon used {used} ticks of CPU in 1 s");
    // Three executes, no callback.
    assert_eq!(state_stat(&json, "ping", "calls"), 3, "{json}");
    assert_eq!(json["requests"]["own_port"], 0, "{json}");
}

#[test]
fn refused_senders_cannot_flood_the_log() {
    if !have_root("refused_senders_cannot_flood_the_log") {
        return;
    }
    const FLOOD: u64 = 200_000;
    let d = Daemon::start();
    d.create("keeper");
    let lines_before = d.log_text().lines().count();
    let port = d.port;
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = Arc::clone(&flooding);
        std::thread::spawn(move || {
            let sock = nflua_client::socket::NetlinkSocket::bind(nflua_client::Port::Auto, 0).unwrap();
            // Only this thread becomes uid 65534 (the raw syscalls change the calling thread's
            // credentials; glibc's wrappers would change the whole test process).
            // SAFETY: plain syscalls on the calling thread.
            unsafe {
                assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
            }
            let mut list = Vec::new();
            nflua_proto::encode_list(&mut list, 1, sock.port(), true);
            for _ in 0..FLOOD {
                sock.send_to(&list, port, 0).expect("send");
            }
            flooding.store(false, Ordering::SeqCst);
        })
    };
    let mut c = d.control();
    let mut lists = vec![];
    while flooding.load(Ordering::SeqCst) {
        lists.push(timed(|| c.list().expect("list")).1);
        std::thread::sleep(Duration::from_millis(5));
    }
    flood.join().unwrap();
    crate::util::wait_for("every refusal to be counted", Duration::from_secs(10), || {
        stats_json(&mut c)["requests"]["refused"] == FLOOD
    });
    let log = d.log_text();
    let lines = log.lines().count() - lines_before;
    let refusal_lines =
        log.lines().filter(|l| l.contains("refused") || l.contains("without permission")).count();
    eprintln!(
        "isolation: {FLOOD} refused datagrams: {lines} log lines ({refusal_lines} about refusals); \
         {} root lists meanwhile",
        lists.len()
    );
    let sample: Vec<&str> = log.lines().skip(lines_before).take(8).collect();
    assert!(lines <= 30, "{lines} log lines, starting with:\n{}", sample.join("\n"));
    assert!(refusal_lines >= 1, "the first refusal is logged:\n{log}");
    check("list during a flood of refused datagrams", &lists);
}
