//! Stream hooks with real TCP between two namespaces: requests split across segments, held
//! packets, connection verdicts, the hold timeout. Need root; skip loudly without it unless
//! NFLUA_REQUIRE_PRIV=1.

#![allow(unsafe_code)] // libc calls the tests need (sockets, signals, namespaces)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::netns::{in_netns, NetPair, ADDR_B};
use crate::util::Daemon;

const PORT: u16 = 8080;

fn example(path: &str) -> String {
    let file = format!("{}/../../examples/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// nfluad in `b` with `args`, state `web` running `code`, a stream hook on queue 0 for TCP
/// port 8080 with `extra` hook arguments, and the printed iptables rules added.
fn setup(test: &str, args: &[&str], code: &str, extra: &[&str]) -> Option<(NetPair, Daemon, String)> {
    setup_on(test, PORT, args, code, extra)
}

/// [`setup`] for TCP port `port`.
fn setup_on(
    test: &str,
    port: u16,
    args: &[&str],
    code: &str,
    extra: &[&str],
) -> Option<(NetPair, Daemon, String)> {
    let pair = NetPair::new(test)?;
    let d = Daemon::start_in(Some(&pair.b), args);
    d.ctl_ok(&["create", "web", "--instructions", "1000000", "--memory", "1048576"]);
    d.execute("web", code).expect("load filter");
    let rule = format!("-p tcp --dport {port}");
    let mut hook = vec!["hook", "add", "--queue", "0", "--state", "web", "--function", "filter"];
    hook.extend_from_slice(&["--mode", "target", "--stream", "--rule", &rule]);
    hook.extend_from_slice(extra);
    let rules = d.ctl_ok(&hook);
    for rule in rules.lines().filter_map(|l| l.strip_prefix("iptables ")) {
        pair.iptables(rule);
    }
    Some((pair, d, rules))
}

/// A server in `b` accepting `connections` connections, each on its own thread, answering each
/// request (read until the blank line) with `hello`; returns how many it answered.
fn serve(pair: &NetPair, connections: usize) -> std::thread::JoinHandle<usize> {
    let listener = pair.tcp_listener(PORT);
    std::thread::spawn(move || {
        let mut handlers = Vec::new();
        for _ in 0..connections {
            let Ok((mut conn, _)) = listener.accept() else { break };
            handlers.push(std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                let mut seen = Vec::new();
                let mut buf = [0u8; 2048];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n")
                    .is_ok()
            }));
        }
        handlers.into_iter().filter_map(|h| h.join().ok()).filter(|served| *served).count()
    })
}

/// Sends `parts` from `a` as separate segments (no Nagle, a pause between them) and returns
/// what came back until the server closed or 3 s passed.
fn send_in_parts(pair: &NetPair, parts: &'static [&'static [u8]]) -> String {
    send_in_parts_from(&pair.a, parts)
}

/// [`send_in_parts`] from namespace `ns` (callable from any thread).
fn send_in_parts_from(ns: &str, parts: &'static [&'static [u8]]) -> String {
    let addr = format!("{ADDR_B}:{PORT}").parse().expect("addr");
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        for part in parts {
            s.write_all(part).expect("write");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
}

fn stream_stats(d: &Daemon) -> serde_json::Value {
    let stats: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["stats", "--json"])).expect("stats json");
    stats["hooks"][0].clone()
}

const SPLIT_BLOCKED: &[&[u8]] = &[b"GET / HTTP/1.1\r\nHost: blo", b"cked.example\r\n\r\n"];
const SPLIT_ALLOWED: &[&[u8]] = &[b"GET / HTTP/1.1\r\nHost: fi", b"ne.example\r\n\r\n"];

/// The shipped HTTP blocklist as a stream hook: a Host header split across two segments is
/// read whole; the blocked name gets the block page (the first segment, held, never reaches the
/// server), the allowed one the real page.
#[test]
fn http_blocklist_reads_a_host_split_across_segments() {
    let Some((pair, d, rules)) = setup(
        "http_blocklist_reads_a_host_split_across_segments",
        &[],
        &example("http-blocklist/filter.lua"),
        &[],
    ) else {
        return;
    };
    assert!(rules.contains("-j NFQUEUE"), "{rules}");
    assert_eq!(d.ctl_ok(&["send", "web", "add blocked.example"]), "web: blocked.example\n");
    let server = serve(&pair, 2);
    let blocked = send_in_parts(&pair, SPLIT_BLOCKED);
    assert!(blocked.ends_with("blocked by nflua: blocked.example\n"), "{blocked:?}");
    let allowed = send_in_parts(&pair, SPLIT_ALLOWED);
    assert!(allowed.ends_with("\r\n\r\nhello\n"), "{allowed:?}");
    // The server answered only what reached it: the allowed request.
    assert_eq!(server.join().expect("server"), 1, "the blocked request never reached the server");
    let h = stream_stats(&d);
    assert_eq!(h["stream"]["decided"], 2, "{h}");
    assert_eq!((h["stream"]["held"].as_u64(), h["errors"].as_u64()), (Some(0), Some(0)), "{h}");
    assert_eq!(h["stream"]["reading"], 0, "both decided: none being read: {h}");
    assert!(h["verdicts"]["drop"].as_u64() >= Some(2), "both segments of the blocked request dropped: {h}");
}

/// A connection that never completes its ClientHello: the SNI filter waits ("need more"), and
/// after the hold timeout the held packets get the hook's on-error verdict (here drop), which
/// then decides the connection; the figures say so.
#[test]
fn an_unfinished_client_hello_times_out_with_the_error_verdict() {
    let Some((pair, d, _)) = setup(
        "an_unfinished_client_hello_times_out_with_the_error_verdict",
        &["--stream-timeout-ms", "500"],
        &example("sni-blocklist/filter.lua"),
        &["--on-error", "drop"],
    ) else {
        return;
    };
    let server = serve(&pair, 1);
    let hello = nflua_dissect::tls::build::hello(
        &[0x1301],
        &[(0, nflua_dissect::tls::build::sni("never.example")), (0x15, vec![0; 300])],
    );
    let records = nflua_dissect::tls::build::records(&hello, 16384);
    // All but the last 50 bytes: a correct beginning that never ends.
    let partial: &'static [u8] = Vec::leak(records[..records.len() - 50].to_vec());
    let parts: &'static [&'static [u8]] = Vec::leak(vec![partial]);
    let started = Instant::now();
    let answer = send_in_parts(&pair, parts);
    assert_eq!(answer, "", "nothing reached the server, nothing came back");
    assert!(started.elapsed() >= Duration::from_millis(500));
    let h = stream_stats(&d);
    assert_eq!(h["stream"]["timed_out"], 1, "{h}");
    assert_eq!((h["stream"]["held"].as_u64(), h["stream"]["decided"].as_u64()), (Some(0), Some(1)), "{h}");
    assert!(h["verdicts"]["drop"].as_u64() >= Some(1), "{h}");
    assert_eq!(server.join().expect("server"), 0);
}

/// Kills and reaps a child process when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shipped SNI blocklist against a real TLS client and server, the server advertising an MSS
/// of 88 bytes so that curl's ClientHello (about 500 bytes) spans several segments: the blocked
/// name's connection is dropped before the server answers, the allowed one completes, and the
/// function was called once per segment until the hello was whole.
#[test]
fn sni_blocklist_reads_a_hello_split_by_a_tiny_mss() {
    let _exclusive = crate::util::exclusive();
    const TLS_PORT: u16 = 8443;
    // Counts the calls, around the example's own functions.
    let counting = "local inner, recv = filter, __receive_callback calls = 0 \
                    function filter(frame, stream) calls = calls + 1 return inner(frame, stream) end \
                    function __receive_callback(pid, b) \
                      if tostring(b) == 'calls' then nf.netlink(pid, 0, tostring(calls)) else recv(pid, b) end \
                    end";
    let code = format!("{}\n{counting}", example("sni-blocklist/filter.lua"));
    let Some((pair, d, _)) =
        setup_on("sni_blocklist_reads_a_hello_split_by_a_tiny_mss", TLS_PORT, &[], &code, &[])
    else {
        return;
    };
    assert_eq!(d.ctl_ok(&["send", "web", "add blocked.example"]), "web: blocked.example\n");
    // The server's SYN-ACK tells the client to send at most 88 bytes per segment.
    let route = format!("{}/32", crate::netns::ADDR_A);
    pair.run_b(&["ip", "route", "add", &route, "dev", &pair.dev_b, "advmss", "88"]);
    pair.segment_in_a();
    let dir = std::env::temp_dir().join(format!("nflua-sni-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=test", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.b,
            "openssl",
            "s_server",
            "-accept",
            &TLS_PORT.to_string(),
            "-www",
            "-quiet",
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let _server = Child(server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&pair.run_b(&["ss", "-ltn"]).stdout).contains(&format!(":{TLS_PORT}")) {
        assert!(Instant::now() < deadline, "s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let curl = |name: &str| {
        let resolve = format!("{name}:{TLS_PORT}:{ADDR_B}");
        let url = format!("https://{name}:{TLS_PORT}/");
        pair.exec_a(&["curl", "-sk", "-m", "3", "--resolve", &resolve, &url])
    };
    let allowed = curl("fine.example");
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("Ciphers"), "the s_server -www page");
    let calls_allowed: u64 =
        d.ctl_ok(&["send", "web", "calls"]).trim().trim_start_matches("web: ").parse().unwrap();
    assert!(calls_allowed >= 4, "the hello spanned several segments, one call each: {calls_allowed}");
    let blocked = curl("blocked.example");
    assert!(!blocked.status.success(), "the blocked name's connection must fail");
    assert!(blocked.stdout.is_empty());
    let h = stream_stats(&d);
    assert_eq!((h["stream"]["decided"].as_u64(), h["errors"].as_u64()), (Some(2), Some(0)), "{h}");
    assert!(h["verdicts"]["drop"].as_u64() >= Some(3), "the held segments of the blocked hello: {h}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP segment from 192.0.2.1:`sport` to 192.0.2.2:8080 (header and payload; the kernel adds
/// the IP header), checksum right.
fn segment(sport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&PORT.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let mut pseudo = vec![192, 0, 2, 1, 192, 0, 2, 2, 0, 6];
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let mut sum: u32 =
        pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    tcp[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    tcp
}

/// Sends `segments` from `a` through a raw TCP socket, 20 ms apart.
fn send_raw(pair: &NetPair, segments: Vec<Vec<u8>>) {
    in_netns(&pair.a, move || {
        // SAFETY: plain socket calls on a descriptor this closure owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let mut to: libc::sockaddr_in = std::mem::zeroed();
            to.sin_family = libc::AF_INET as libc::sa_family_t;
            to.sin_addr.s_addr = u32::from_ne_bytes([192, 0, 2, 2]);
            for s in segments {
                let sent = libc::sendto(
                    fd,
                    s.as_ptr().cast(),
                    s.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                assert_eq!(sent, s.len() as isize, "sendto: {}", std::io::Error::last_os_error());
                std::thread::sleep(Duration::from_millis(20));
            }
            libc::close(fd);
        }
    });
}

/// What the function saw, asked over the data channel: "calls|last stream".
const RECORDING: &str = "calls, last = 0, '' \
    function filter(frame, stream) \
      calls = calls + 1 last = tostring(stream) \
      if last:find('\\r\\n\\r\\n', 1, true) then return 'drop' end \
    end \
    function __receive_callback(pid) nf.netlink(pid, 0, calls .. '|' .. last) end";

/// Crafted segments: one beyond a hole first, then the hole (the function sees the bytes in
/// order, called once, when the stream grew), then a copy of the hole with other bytes: which
/// copy the server keeps depends on its stack, so the stream is broken and the connection gets
/// the on-error verdict (here drop), held packets included.
#[test]
fn out_of_order_segments_reassemble_and_a_conflicting_copy_breaks_the_stream() {
    let Some((pair, d, _)) = setup(
        "out_of_order_segments_reassemble_and_a_conflicting_copy_breaks_the_stream",
        &[],
        RECORDING,
        &["--on-error", "drop"],
    ) else {
        return;
    };
    const ISN: u32 = 0xffff_ff00; // the sequence space wraps inside the request
    let at = |offset: u32| ISN.wrapping_add(1).wrapping_add(offset);
    const ACK: u8 = 0x10;
    send_raw(
        &pair,
        vec![
            segment(40001, ISN, 0x02, b""),
            segment(40001, at(8), ACK, b"TP/1.1\r\nHost: bl"),
            segment(40001, at(0), ACK, b"GET / HT"),
            segment(40001, at(0), ACK, b"XXXXXXXX"),
            segment(40001, at(24), ACK, b"ocked.example\r\n\r\n"),
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.ctl_ok(&["send", "web", "?"]), "web: 1|GET / HTTP/1.1\r\nHost: bl\n");
    let h = stream_stats(&d);
    assert_eq!(h["verdicts"]["drop"], 4, "two held, the conflicting copy and the last segment: {h}");
    assert_eq!(h["stream"]["broken"], 1, "{h}");
    assert_eq!((h["stream"]["decided"].as_u64(), h["stream"]["held"].as_u64()), (Some(1), Some(0)), "{h}");
}

/// Many connections at once, each sending its request in two parts: every one is decided, what
/// the table keeps stays within its bound, and none is left holding packets.
#[test]
fn many_concurrent_connections_are_each_decided() {
    let _exclusive = crate::util::exclusive();
    let Some((pair, d, _)) = setup(
        "many_concurrent_connections_are_each_decided",
        &[],
        &example("http-blocklist/filter.lua"),
        &[],
    ) else {
        return;
    };
    d.ctl_ok(&["send", "web", "add blocked.example"]);
    const CLIENTS: usize = 40;
    let server = serve(&pair, CLIENTS);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let parts: &'static [&'static [u8]] = if i % 2 == 0 { SPLIT_ALLOWED } else { SPLIT_BLOCKED };
            let pair_a = pair.a.clone();
            std::thread::spawn(move || send_in_parts_from(&pair_a, parts))
        })
        .collect();
    let answers: Vec<String> = clients.into_iter().map(|c| c.join().expect("client")).collect();
    for (i, answer) in answers.iter().enumerate() {
        let wanted = if i % 2 == 0 { "hello\n" } else { "blocked by nflua: blocked.example\n" };
        assert!(answer.ends_with(wanted), "client {i}: {answer:?}");
    }
    assert_eq!(server.join().expect("server"), CLIENTS / 2);
    let h = stream_stats(&d);
    assert_eq!(h["stream"]["decided"], CLIENTS as u64, "{h}");
    assert_eq!((h["stream"]["held"].as_u64(), h["stream"]["held_over"].as_u64()), (Some(0), Some(0)), "{h}");
    assert_eq!(h["errors"], 0, "{h}");
}

/// An accepted connection is offloaded: with the rules `hook add` printed, its decision is kept
/// in the conntrack mark and the rest of its packets never reach the queue — a 1 MiB upload
/// after the request head passes with a handful of packets seen by the hook.
#[test]
fn an_accepted_connection_no_longer_enters_userspace() {
    let _exclusive = crate::util::exclusive();
    let Some((pair, d, rules)) = setup(
        "an_accepted_connection_no_longer_enters_userspace",
        &[],
        &example("http-blocklist/filter.lua"),
        &[],
    ) else {
        return;
    };
    assert!(rules.contains("-j CONNMARK --save-mark --mask 0x30000000"), "{rules}");
    pair.segment_in_a();
    const BODY: usize = 1 << 20;
    let listener = pair.tcp_listener(PORT);
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < BODY + 64 {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
            if head_end.is_some_and(|end| got.len() - end >= BODY) {
                break;
            }
        }
        let body = got.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| got.len() - p - 4);
        let _ = conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n{body}").as_bytes());
        body
    });
    let addr = format!("{ADDR_B}:{PORT}").parse().expect("addr");
    in_netns(&pair.a, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect");
        let head = format!("POST /upload HTTP/1.1\r\nHost: fine.example\r\nContent-Length: {BODY}\r\n\r\n");
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&vec![b'x'; BODY]).expect("body");
        let mut answer = [0u8; 128];
        let _ = s.read(&mut answer);
    });
    assert_eq!(server.join().expect("server"), BODY, "the whole body arrived");
    let h = stream_stats(&d);
    let packets = h["packets"].as_u64().unwrap_or(u64::MAX);
    eprintln!("offload: the hook saw {packets} packets");
    assert!(packets < 60, "about 730 segments of 1448 bytes, but the hook saw {packets}: {h}");
    assert_eq!((h["stream"]["decided"].as_u64(), h["errors"].as_u64()), (Some(1), Some(0)), "{h}");
}

/// `nf.conntrack()` reads the packet's entry over ctnetlink (the queue gives no conntrack ids on
/// this kernel) and `nf.conntrack_delete()` removes it; `nf.connid()` stays the derived id, one
/// per connection (not the entry's).
#[test]
fn conntrack_entries_from_scripts() {
    let Some(pair) = NetPair::new("conntrack_entries_from_scripts") else { return };
    let d = Daemon::start_in(Some(&pair.b), &[]);
    d.ctl_ok(&["create", "ct", "--instructions", "100000", "--memory", "262144"]);
    let code = "seen = {} \
        function filter(frame, payload) \
          local ct = nf.conntrack() \
          if ct then \
            seen[#seen + 1] = table.concat({tostring(payload), ct.state, tostring(ct.id > 0 and nf.connid() ~= nil), \
              tostring(ct.timeout > 0), ct.mark}, ',') \
            if tostring(payload) == 'delete me' then seen[#seen + 1] = tostring(nf.conntrack_delete()) end \
          end \
        end \
        function __receive_callback(pid) nf.netlink(pid, 0, table.concat(seen, ';')) end";
    d.execute("ct", code).expect("load");
    // A conntrack match in the rules makes the namespace track connections.
    let rules = d.ctl_ok(&[
        "hook",
        "add",
        "--queue",
        "0",
        "--state",
        "ct",
        "--function",
        "filter",
        "--mode",
        "target",
        "--tcp-payload",
        "--rule",
        "-p tcp --dport 8080 -m conntrack --ctstate NEW,ESTABLISHED",
    ]);
    for rule in rules.lines().filter_map(|l| l.strip_prefix("iptables ")) {
        pair.iptables(rule);
    }
    let listener = pair.tcp_listener(PORT);
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < "hellodelete me".len() {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    });
    send_in_parts(&pair, &[b"hello", b"delete me"]);
    let _ = server.join();
    assert_eq!(
        d.ctl_ok(&["send", "ct", "?"]),
        "ct: hello,ESTABLISHED,true,true,0;delete me,ESTABLISHED,true,true,0;true\n"
    );
}

/// Tricks from a hostile review, crafted: a RST outside the window (the server ignores it) does
/// not end the connection for the filter; data on a SYN (dropped by a server without Fast Open)
/// is not read; a new SYN on the same ports after a drop stays dropped.
#[test]
fn rst_out_of_window_syn_data_and_port_reuse_do_not_fool_the_filter() {
    let Some((pair, d, _)) =
        setup("rst_out_of_window_syn_data_and_port_reuse_do_not_fool_the_filter", &[], RECORDING, &[])
    else {
        return;
    };
    const ACK: u8 = 0x10;
    const RST: u8 = 0x04;
    let isn = 1000u32;
    send_raw(
        &pair,
        vec![
            segment(40002, isn, 0x02, b"GET /syn-data HTTP/1.1\r\n\r\n"),
            segment(40002, isn + 1, ACK, b"GET / HTTP/1.1\r\nHo"),
            segment(40002, isn + 3_000_000, RST, b""),
            segment(40002, isn + 19, ACK, b"st: blocked.example\r\n\r\n"),
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.ctl_ok(&["send", "web", "?"]), "web: 2|GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n\n");
    let h = stream_stats(&d);
    assert_eq!(h["verdicts"]["drop"], 2, "the held first part and the rest: {h}");
    // The SYN went on without its data (accept with the bare segment), the RST with "continue".
    assert_eq!(
        (h["verdicts"]["accept"].as_u64(), h["verdicts"]["repeat"].as_u64()),
        (Some(1), Some(1)),
        "{h}"
    );
    // The same ports again, with another ISN: a new connection, which inherits the drop (a
    // dropped client must not get a fresh look by starting over on the same ports).
    send_raw(
        &pair,
        vec![segment(40002, 7000, 0x02, b""), segment(40002, 7001, ACK, b"GET /again HTTP/1.1\r\n\r\n")],
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.ctl_ok(&["send", "web", "?"]), "web: 2|GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n\n");
    assert_eq!(stream_stats(&d)["verdicts"]["drop"], 4, "the new SYN and its data too");
}

/// A stream that reaches the depth with no decision gets the on-error verdict: a sender must not
/// pad what the filter looks for past what it reads.
#[test]
fn the_depth_reached_undecided_is_a_bound() {
    let Some((pair, d, _)) = setup(
        "the_depth_reached_undecided_is_a_bound",
        &[],
        RECORDING,
        &["--on-error", "drop", "--stream-depth", "32"],
    ) else {
        return;
    };
    const ACK: u8 = 0x10;
    send_raw(
        &pair,
        vec![
            segment(40003, 500, 0x02, b""),
            segment(40003, 501, ACK, b"GET / HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaa\r\n"),
            segment(40003, 547, ACK, b"Host: blocked.example\r\n\r\n"),
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.ctl_ok(&["send", "web", "?"]), "web: 1|GET / HTTP/1.1\r\nX-Pad: aaaaaaaaa\n");
    let h = stream_stats(&d);
    assert_eq!(h["verdicts"]["drop"], 2, "{h}");
    assert_eq!(h["stream"]["broken"], 1, "{h}");
}

/// A segment with a wrong checksum (which the server's stack would drop) is dropped unread: a
/// sender must not show the filter bytes the server never gets.
#[test]
fn a_segment_with_a_wrong_checksum_is_not_read() {
    let Some((pair, d, _)) = setup("a_segment_with_a_wrong_checksum_is_not_read", &[], RECORDING, &[]) else {
        return;
    };
    const ACK: u8 = 0x10;
    let mut decoy = segment(40004, 801, ACK, b"GET /decoy HTTP/1.1\r\n\r\n");
    decoy[16] ^= 0xff; // the TCP checksum
    send_raw(
        &pair,
        vec![segment(40004, 800, 0x02, b""), decoy, segment(40004, 801, ACK, b"GET /real HTTP/1.1\r\n\r\n")],
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.ctl_ok(&["send", "web", "?"]), "web: 1|GET /real HTTP/1.1\r\n\r\n\n");
    let h = stream_stats(&d);
    assert_eq!((h["not_given"].as_u64(), h["verdicts"]["drop"].as_u64()), (Some(1), Some(2)), "{h}");
}
