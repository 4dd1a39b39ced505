//! Soak: a million UDP datagrams from namespace `a` through a Lua match on
//! NFQUEUE in namespace `b`, every one of them accounted for — accepted by the
//! final rule or dropped by the mark rule, exactly as the sender marked them —
//! with nothing left in the kernel queue and the daemon's RSS flat.
//! Needs root; skips loudly without it unless NFLUA_REQUIRE_PRIV=1.

#![allow(unsafe_code)] // libc calls the tests need (sockets, signals, namespaces)

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{in_netns, udp_exchange, NetPair, ADDR_B, GUARD, MATCHED};
use crate::util::{text, Daemon};

const PORT: u16 = 9400;
const TOTAL: u64 = 1_000_000;
/// RSS is first sampled after this many packets: buffers, arenas and the Lua
/// heap have reached their working size by then.
const WARMUP: u64 = 100_000;
const PAYLOAD: usize = 64;
/// First payload byte of the packets the filter matches: every `EVERY`th one.
const MARK: u8 = b'D';
const EVERY: u64 = 4;

/// Upper pace; a debug-built daemon on a busy machine is slower, and then the
/// backlog gate below sets the pace instead.
const RATE: f64 = 100_000.0;
const BURST: usize = 32;
/// Packets allowed to wait for a verdict before the sender holds off. The
/// daemon's queue holds 4096 and is fail-open: an overflow would not drop,
/// it would slip packets past Lua and spoil the accounting.
const BACKLOG: u64 = 1024;
const SEND_LIMIT: Duration = Duration::from_secs(90);
const SETTLE_LIMIT: Duration = Duration::from_secs(15);
const RSS_GROWTH_MAX_KIB: u64 = 4 * 1024;
/// Far beyond what the listener could fall behind by.
const LISTENER_RCVBUF: libc::c_int = 16 << 20;

#[test]
fn soak_a_million_packets_through_a_lua_match() {
    let Some(pair) = NetPair::new("soak_a_million_packets_through_a_lua_match") else { return };
    let rx = pair.udp_listener(PORT);
    let tx = pair.udp_sender(0);
    // Resolves the neighbour before any rule counts: while a neighbour is
    // unresolved the kernel queues only a few packets and silently drops the rest.
    assert_eq!(udp_exchange(&tx, &rx, &["prime"]), vec!["prime"], "no path from a to b");

    let d = Daemon::start_in(Some(&pair.b), &[]);
    install_match(&d, &pair);
    let queue = ProcNet::open(&pair.b, "netfilter/nfnetlink_queue");
    let snmp = ProcNet::open(&pair.b, "snmp");
    let rcvbuf_errors_before = udp_counter(&snmp, "RcvbufErrors");
    let listener = Listener::spawn(rx);

    let mut sender = Sender::new(tx);
    let deadline = sender.start + SEND_LIMIT;
    sender.send_until(WARMUP, deadline, &queue);
    let rss_warm = rss_kib(d.pid());
    sender.send_until(TOTAL, deadline, &queue);
    let secs = sender.start.elapsed().as_secs_f64();
    let sent = sender.sent;

    settle(|| {
        let c = Counters::read(&pair);
        let rcvbuf = udp_counter(&snmp, "RcvbufErrors") - rcvbuf_errors_before;
        c.accepted + c.dropped >= sent
            && QueueStats::read(&queue).waiting == 0
            && listener.received() + rcvbuf >= c.accepted
    });
    let (received, leaked) = listener.finish();
    let stats: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["stats", "--json"])).expect("stats --json is JSON");
    let report = Report {
        sent,
        secs,
        waits: sender.waits,
        counters: Counters::read(&pair),
        queue: QueueStats::read(&queue),
        received,
        leaked,
        rcvbuf_errors: udp_counter(&snmp, "RcvbufErrors") - rcvbuf_errors_before,
        hook: stats["hooks"][0].clone(),
        rss_warm,
        rss_end: rss_kib(d.pid()),
    };
    eprintln!("{report}");
    report.check();
}

/// What one soak run measured.
struct Report {
    sent: u64,
    secs: f64,
    /// Times the backlog gate held the sender off.
    waits: u64,
    counters: Counters,
    queue: QueueStats,
    /// Datagrams the listener read, and how many of them were marked.
    received: u64,
    leaked: u64,
    rcvbuf_errors: u64,
    /// The hook's entry in `nfluactl stats --json`.
    hook: serde_json::Value,
    rss_warm: u64,
    rss_end: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Report { sent, secs, waits, received, rcvbuf_errors, rss_warm, rss_end, .. } = self;
        write!(
            f,
            "soak: sent {sent} accepted {} dropped {} in {secs:.1} s ({:.0} pkt/s, {waits} backlog waits); \
             listener got {received} (+{rcvbuf_errors} rcvbuf errors); \
             daemon RSS {rss_warm} KiB after warm-up, {rss_end} KiB at end",
            self.counters.accepted,
            self.counters.dropped,
            *sent as f64 / secs,
        )
    }
}

impl Report {
    fn check(&self) {
        let Report { sent, counters: c, queue: q, hook, .. } = self;
        let sent = *sent;
        assert_eq!(sent, TOTAL, "the sender hit its {SEND_LIMIT:?} limit");
        assert_eq!(c.queued, sent, "every packet reaches the queue rule once: {c:?}");
        assert_eq!(q.id_sequence, sent, "packets not queued went past Lua (fail-open): {q:?}");
        assert_eq!(c.accepted + c.dropped, sent, "packets unaccounted for: {c:?}");
        assert_eq!(c.dropped, marked(sent), "drops must be exactly the marked packets: {c:?}");
        assert_eq!((q.waiting, q.dropped, q.user_dropped), (0, 0, 0), "queue left dirty: {q:?}");
        assert_eq!(self.received + self.rcvbuf_errors, c.accepted, "accepted packets lost before the socket");
        assert_eq!(self.leaked, 0, "marked packets reached the socket");
        assert_eq!(hook["packets"], sent, "{hook}");
        assert_eq!(hook["verdicts"]["repeat"], sent, "{hook}");
        assert_eq!(hook["errors"], 0, "{hook}");
        let growth = self.rss_end.saturating_sub(self.rss_warm);
        assert!(
            growth < RSS_GROWTH_MAX_KIB,
            "daemon RSS grew by {growth} KiB ({} -> {} KiB) over {} packets",
            self.rss_warm,
            self.rss_end,
            sent - WARMUP
        );
    }
}

/// State `fw` matching [`MARK`] packets on queue 0 (match mode), and the
/// rules: queue, drop what matched, count what passed.
fn install_match(d: &Daemon, pair: &NetPair) {
    d.ctl_ok(&["create", "fw", "--instructions", "100000", "--memory", "262144"]);
    // One byte read, as cheap as a filter gets: past the IPv4 header (20, no
    // options) and the UDP header (8), in the 1-based view of `packet`.
    let filter = format!("function filter(frame, packet) return packet[29] == {MARK} end");
    d.execute("fw", &filter).expect("load filter");
    d.ctl_ok(&["hook", "add", "--queue", "0", "--state", "fw", "--function", "filter"]);
    pair.iptables(&format!("-A INPUT -p udp --dport {PORT} {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    pair.iptables(&format!("-A INPUT -p udp --dport {PORT} {MATCHED} -j DROP"));
    pair.iptables(&format!("-A INPUT -p udp --dport {PORT} -j ACCEPT"));
}

fn is_marked(index: u64) -> bool {
    index.is_multiple_of(EVERY)
}

/// How many of the first `sent` packets carry [`MARK`].
fn marked(sent: u64) -> u64 {
    sent.div_ceil(EVERY)
}

/// Polls `done` until it holds or [`SETTLE_LIMIT`] passes; giving up is not
/// a failure here, the caller's assertions say what is off more precisely.
fn settle(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE_LIMIT;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Paced `sendmmsg` bursts from a socket in `a`, connected to the listener.
struct Sender {
    sock: UdpSocket,
    plain: [u8; PAYLOAD],
    marked: [u8; PAYLOAD],
    start: Instant,
    sent: u64,
    /// Times the backlog gate held the sender off.
    waits: u64,
}

impl Sender {
    fn new(sock: UdpSocket) -> Sender {
        sock.connect((ADDR_B, PORT)).expect("connect sender");
        let mut marked = [b'.'; PAYLOAD];
        marked[0] = MARK;
        Sender { sock, plain: [b'.'; PAYLOAD], marked, start: Instant::now(), sent: 0, waits: 0 }
    }

    /// Sends until `target` packets are out in total, or `deadline`.
    fn send_until(&mut self, target: u64, deadline: Instant, queue: &ProcNet) {
        while self.sent < target && Instant::now() < deadline {
            self.pace();
            if QueueStats::read(queue).waiting > BACKLOG {
                self.waits += 1;
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let n = BURST.min((target - self.sent) as usize);
            self.sent += self.burst(n);
        }
    }

    /// Sleeps until the next burst is due. The schedule is absolute, so time
    /// lost to the gate or to the scheduler is made up by later bursts.
    fn pace(&self) {
        let due = self.start + Duration::from_secs_f64(self.sent as f64 / RATE);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }

    /// Sends the next `n` packets (fewer if the kernel takes fewer); returns how many went.
    fn burst(&self, n: usize) -> u64 {
        let mut iov: Vec<libc::iovec> = (self.sent..self.sent + n as u64)
            .map(|i| {
                let payload = if is_marked(i) { &self.marked } else { &self.plain };
                libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: PAYLOAD }
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain data; all-zero is "no name, no control".
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: `msgs` holds `n` headers pointing at `iov` and the payloads, all
        // alive for the call; the kernel only reads them.
        let r = unsafe { libc::sendmmsg(self.sock.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if r >= 0 {
            return r as u64;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            // Transient: nothing went; the next round retries, bounded by the deadline.
            Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => 0,
            _ => panic!("sendmmsg: {e}"),
        }
    }
}

/// Counts datagrams arriving at the socket in `b` on its own thread.
struct Listener {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Listener {
    fn spawn(sock: UdpSocket) -> Listener {
        crate::util::force_recv_buffer(&sock, LISTENER_RCVBUF);
        // Short, so that a stop request is seen soon once traffic is over.
        sock.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut leaked = 0;
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        leaked += u64::from(n > 0 && buf[0] == MARK);
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if s.load(Ordering::Relaxed) {
                            return leaked;
                        }
                    }
                    Err(e) => panic!("listener recv: {e}"),
                }
            }
        });
        Listener { received, stop, thread: Some(thread) }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops at the next quiet moment; returns (received, marked ones among them).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let leaked = self.thread.take().expect("listener thread").join().expect("listener thread");
        (self.received(), leaked)
    }
}

impl Drop for Listener {
    /// A failing test must not leave the thread spinning on its timeout.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A file under `/proc/net` of namespace `ns`, opened once and re-read from
/// any thread: `/proc/net` follows the opener's namespace at open time only.
struct ProcNet {
    file: File,
    name: String,
}

impl ProcNet {
    fn open(ns: &str, name: &str) -> ProcNet {
        // `thread-self`, not `self`: `self` is the main thread, which stays in
        // the test's own namespace.
        let path = format!("/proc/thread-self/net/{name}");
        let file = in_netns(ns, move || File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}")));
        ProcNet { file, name: name.to_owned() }
    }

    fn read(&self) -> String {
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(len * 2, 0);
            }
            let n = self
                .file
                .read_at(&mut buf[len..], len as u64)
                .unwrap_or_else(|e| panic!("{}: {e}", self.name));
            if n == 0 {
                break;
            }
            len += n;
        }
        text(&buf[..len])
    }
}

/// A counter of the `Udp:` lines of `/proc/net/snmp` (names, then values).
fn udp_counter(snmp: &ProcNet, name: &str) -> u64 {
    let content = snmp.read();
    let mut lines = content.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next().expect("Udp: names"), lines.next().expect("Udp: values"));
    let value = names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == name);
    value.and_then(|(_, v)| v.parse().ok()).unwrap_or_else(|| panic!("no Udp {name} in:\n{content}"))
}

/// Queue 0's line of `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Debug)]
struct QueueStats {
    /// Waiting for a verdict now.
    waiting: u64,
    /// Dropped because the queue was full (without fail-open).
    dropped: u64,
    /// Dropped because the daemon's socket could not take them.
    user_dropped: u64,
    /// Packets ever queued.
    id_sequence: u64,
}

impl QueueStats {
    fn read(queue: &ProcNet) -> QueueStats {
        let content = queue.read();
        // Columns: queue, port id, waiting, copy mode, copy range, dropped,
        // user dropped, id sequence, 1.
        let fields: Vec<u64> = content
            .lines()
            .map(|l| l.split_whitespace().map(|f| f.parse().unwrap_or(u64::MAX)).collect::<Vec<_>>())
            .find(|f| f.len() >= 8 && f[0] == 0)
            .unwrap_or_else(|| panic!("queue 0 is not bound:\n{content}"));
        QueueStats { waiting: fields[2], dropped: fields[5], user_dropped: fields[6], id_sequence: fields[7] }
    }
}

/// Packet counters of the three rules in `b`'s INPUT chain.
#[derive(Debug, Default)]
struct Counters {
    queued: u64,
    dropped: u64,
    accepted: u64,
}

impl Counters {
    fn read(pair: &NetPair) -> Counters {
        let out = pair.exec_b(&["iptables", "-t", "filter", "-nvxL", "INPUT"]);
        assert!(out.status.success(), "iptables -L: {}", text(&out.stderr));
        let listing = text(&out.stdout);
        let mut c = Counters::default();
        // Two header lines, then: pkts bytes target prot ...
        for line in listing.lines().skip(2) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let slot = match f.get(2) {
                Some(&"NFQUEUE") => &mut c.queued,
                Some(&"DROP") => &mut c.dropped,
                Some(&"ACCEPT") => &mut c.accepted,
                _ => continue,
            };
            *slot = f[0].parse().unwrap_or_else(|_| panic!("packet count in {line:?}"));
        }
        c
    }
}

/// Resident set of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    // The child is `ip netns exec`, which must have exec'ed the daemon in place.
    assert!(status.starts_with("Name:\tnfluad"), "pid {pid} is not nfluad:\n{status}");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}
