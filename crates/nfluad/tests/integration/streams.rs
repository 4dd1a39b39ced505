//! Stream hooks with real TCP between two namespaces: requests split across segments, held
//! packets, connection verdicts, the hold timeout. Need root; skip loudly without it unless
//! NFLUA_REQUIRE_PRIV=1.

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
    let pair = NetPair::new(test)?;
    let d = Daemon::start_in(Some(&pair.b), args);
    d.ctl_ok(&["create", "web", "--instructions", "1000000", "--memory", "1048576"]);
    d.execute("web", code).expect("load filter");
    let mut hook = vec!["hook", "add", "--queue", "0", "--state", "web", "--function", "filter"];
    hook.extend_from_slice(&["--mode", "target", "--stream", "--rule", "-p tcp --dport 8080"]);
    hook.extend_from_slice(extra);
    let rules = d.ctl_ok(&hook);
    for rule in rules.lines().filter_map(|l| l.strip_prefix("iptables ")) {
        pair.iptables(rule);
    }
    Some((pair, d, rules))
}

/// A server in `b` answering each request (read until the blank line) with `hello`.
fn serve(pair: &NetPair, connections: usize) -> std::thread::JoinHandle<usize> {
    let listener = pair.tcp_listener(PORT);
    std::thread::spawn(move || {
        let mut served = 0;
        for _ in 0..connections {
            let Ok((mut conn, _)) = listener.accept() else { break };
            conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let mut seen = Vec::new();
            let mut buf = [0u8; 2048];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                served += 1;
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n");
            }
        }
        served
    })
}

/// Sends `parts` from `a` as separate segments (no Nagle, a pause between them) and returns
/// what came back until the server closed or 3 s passed.
fn send_in_parts(pair: &NetPair, parts: &'static [&'static [u8]]) -> String {
    let addr = format!("{ADDR_B}:{PORT}").parse().expect("addr");
    in_netns(&pair.a, move || {
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
    assert!(h["verdicts"]["drop"].as_u64() >= Some(2), "both segments of the blocked request dropped: {h}");
}

/// A connection that never completes what the function waits for: its held packets get the
/// hook's on-error verdict (here drop) after the hold timeout, and the figures say so.
#[test]
fn an_unfinished_request_times_out_with_the_error_verdict() {
    let code = "function filter(frame, stream) \
                  if tostring(stream):find('\\r\\n\\r\\n', 1, true) then return 'accept' end \
                end";
    let Some((pair, d, _)) = setup(
        "an_unfinished_request_times_out_with_the_error_verdict",
        &["--stream-timeout-ms", "500"],
        code,
        &["--on-error", "drop"],
    ) else {
        return;
    };
    let server = serve(&pair, 1);
    let started = Instant::now();
    let answer = send_in_parts(&pair, &[b"GET / HTTP/1.1\r\nHost: never.example\r\n"]);
    assert_eq!(answer, "", "nothing reached the server, nothing came back");
    assert!(started.elapsed() >= Duration::from_millis(500));
    let h = stream_stats(&d);
    assert_eq!(h["stream"]["timed_out"], 1, "{h}");
    assert_eq!(h["stream"]["held"], 0, "{h}");
    assert_eq!(server.join().expect("server"), 0);
}
