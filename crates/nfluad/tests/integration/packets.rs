//! Real packets through real NFQUEUE: two namespaces joined by veth, the
//! daemon and the iptables rules in the receiving one (see `netns`). These
//! need root; they skip loudly without it unless NFLUA_REQUIRE_PRIV=1.

use std::io::{Read, Write};
use std::time::Duration;

use crate::netns::{udp_exchange, NetPair, ADDR_B, GUARD, MATCHED};
use crate::util::{text, Daemon};

/// A pair of namespaces with nfluad serving in `b`.
fn setup(test: &str) -> Option<(NetPair, Daemon)> {
    let pair = NetPair::new(test)?;
    let d = Daemon::start_in(Some(&pair.b), &[]);
    Some((pair, d))
}

/// State `fw` with `code`, hooked on queue 0 with extra `hook add` arguments.
fn hook(d: &Daemon, code: &str, args: &[&str]) -> String {
    d.ctl_ok(&["create", "fw", "--instructions", "100000", "--memory", "262144"]);
    d.execute("fw", code).expect("load filter");
    let mut all = vec!["hook", "add", "--queue", "0", "--state", "fw", "--function", "filter"];
    all.extend_from_slice(args);
    d.ctl_ok(&all)
}

/// Lua helper prepended to filters: the UDP payload of `packet` (IPv4, no options) as a string.
const UDP_TEXT: &str = "local function udp_text(p) return tostring(p:segment(28)) end\n";

#[test]
fn match_mode_marks_and_the_mark_rule_acts() {
    let Some((pair, d)) = setup("match_mode_marks_and_the_mark_rule_acts") else { return };
    let rules = hook(
        &d,
        &format!("{UDP_TEXT} function filter(frame, packet) return udp_text(packet):find('^bad') ~= nil end"),
        &[],
    );
    assert!(rules.contains("--queue-bypass"), "{rules}");
    assert!(rules.contains("-m mark --mark 0x20000000/0x20000000 -j DROP"), "{rules}");
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {MATCHED} -j DROP"));
    let (tx, rx) = (pair.udp_sender(0), pair.udp_listener(9000));
    assert_eq!(udp_exchange(&tx, &rx, &["good1", "bad1", "good2", "bad2"]), vec!["good1", "good2"]);
    let stats: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["stats", "--json"])).unwrap();
    let hook = &stats["hooks"][0];
    assert_eq!(hook["packets"], 4, "{hook}");
    assert_eq!(hook["verdicts"]["repeat"], 4, "{hook}");
    assert!(hook["lua_seconds_p99"].as_f64().is_some_and(|s| s > 0.0), "{hook}");
    // The frame holds a 14-byte Ethernet header with the IPv4 ethertype before the packet.
    d.execute("fw", "function filter(frame, packet) return not (frame[13] == 8 and frame[14] == 0 and frame[15] == 0x45) end").unwrap();
    assert_eq!(udp_exchange(&tx, &rx, &["framed"]), vec!["framed"]);
}

#[test]
fn target_mode_verdicts_and_continue() {
    let Some((pair, d)) = setup("target_mode_verdicts_and_continue") else { return };
    let code =
        format!("{UDP_TEXT} function filter(frame, packet) return (udp_text(packet):match('^(%a+)')) end");
    hook(&d, &code, &["--mode", "target"]);
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    // Only packets that continue reach this rule.
    pair.iptables("-A INPUT -p udp --dport 9000 -j DROP");
    let (tx, rx) = (pair.udp_sender(0), pair.udp_listener(9000));
    let got =
        udp_exchange(&tx, &rx, &["accept one", "drop two", "continue three", "accept four", "stop five"]);
    assert_eq!(got, vec!["accept one", "accept four", "stop five"]);
}

#[test]
fn tcp_payload_mode_sees_only_payloads() {
    let Some((pair, d)) = setup("tcp_payload_mode_sees_only_payloads") else { return };
    hook(
        &d,
        "function filter(frame, payload) return tostring(payload):find('bad', 1, true) ~= nil end",
        &["--tcp-payload"],
    );
    pair.iptables(&format!("-A INPUT -p tcp --dport 9100 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    pair.iptables(&format!("-A INPUT -p tcp --dport 9100 {MATCHED} -j DROP"));
    let listener = pair.tcp_listener(9100);
    // The handshake (empty payloads) is not given to Lua and passes as no match.
    let mut client = pair.tcp_connect(9100);
    let (mut server, _) = listener.accept().expect("accept");
    server.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    client.write_all(b"good data").unwrap();
    let mut buf = [0u8; 64];
    let n = server.read(&mut buf).expect("good data arrives");
    assert_eq!(&buf[..n], b"good data");
    client.write_all(b"some bad data").unwrap();
    assert!(server.read(&mut buf).is_err(), "a segment whose payload matched must be dropped");
}

#[test]
fn nf_reply_answers_curl_with_a_block_page() {
    let Some((pair, d)) = setup("nf_reply_answers_curl_with_a_block_page") else { return };
    let code = r#"
        local page = "HTTP/1.1 403 Forbidden\r\nContent-Length: 8\r\nConnection: close\r\n\r\nblocked\n"
        function filter(frame, payload)
          if tostring(payload):find("Host: blocked.example", 1, true) then
            nf.reply("tcp", page)
            return "drop"
          end
        end"#;
    hook(&d, code, &["--mode", "target", "--tcp-payload"]);
    pair.iptables(&format!("-A INPUT -p tcp --dport 8080 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    let listener = pair.tcp_listener(8080);
    let server = std::thread::spawn(move || {
        // Accept and hold the connection; the request never reaches us.
        let conn = listener.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let url = format!("http://{ADDR_B}:8080/");
    let out = pair.exec_a(&["curl", "-s", "-m", "5", "-H", "Host: blocked.example", &url]);
    assert_eq!(text(&out.stdout), "blocked\n", "curl stderr: {}", text(&out.stderr));
    server.join().unwrap();
}

#[test]
fn nf_reply_over_ipv6_and_udp() {
    let Some((pair, d)) = setup("nf_reply_over_ipv6_and_udp") else { return };
    hook(
        &d,
        "function filter(frame, packet) nf.reply('udp', 'pong') return 'drop' end",
        &["--mode", "target"],
    );
    pair.ip6tables(&format!("-A INPUT -p udp --dport 9300 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    let tx = crate::netns::in_netns(&pair.a, || std::net::UdpSocket::bind("[2001:db8::1]:0").expect("bind6"));
    tx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    tx.send_to(b"ping", "[2001:db8::2]:9300").expect("send6");
    let mut buf = [0u8; 64];
    let (n, from) = tx.recv_from(&mut buf).expect("the UDP reply arrives");
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(from.to_string(), "[2001:db8::2]:9300");
}

#[test]
fn packet_send_replaces_the_payload() {
    let Some((pair, d)) = setup("packet_send_replaces_the_payload") else { return };
    let code =
        "function filter(frame, packet) local p = nf.getpacket() p:send('REPLACED!') return 'stolen' end";
    hook(&d, code, &["--mode", "target"]);
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    let (tx, rx) = (pair.udp_sender(0), pair.udp_listener(9000));
    assert_eq!(udp_exchange(&tx, &rx, &["original"]), vec!["REPLACED!"]);
}

#[test]
fn connid_is_per_connection() {
    let Some((pair, d)) = setup("connid_is_per_connection") else { return };
    let listener = d.data();
    let port = listener.port().unwrap();
    let code = format!(
        "{UDP_TEXT} function filter(frame, packet) nf.netlink({port}, 0, udp_text(packet) .. '=' .. tostring(nf.connid())) return false end"
    );
    hook(&d, &code, &[]);
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 -m conntrack --ctstate NEW,ESTABLISHED {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    let rx = pair.udp_listener(9000);
    let (one, two) = (pair.udp_sender(40001), pair.udp_sender(40002));
    let _ = udp_exchange(&one, &rx, &["a1", "a2"]);
    let _ = udp_exchange(&two, &rx, &["b1"]);
    let mut listener = listener;
    let mut buf = vec![0u8; 4096];
    let mut ids = std::collections::HashMap::new();
    for _ in 0..3 {
        let m = listener.receive_timeout(&mut buf, 3000).expect("connid report");
        let line = String::from_utf8_lossy(&buf[..m.len]).into_owned();
        let (k, v) = line.split_once('=').expect("k=v");
        ids.insert(k.to_owned(), v.to_owned());
    }
    assert_ne!(ids["a1"], "nil", "{ids:?}");
    assert_eq!(ids["a1"], ids["a2"], "{ids:?}");
    assert_ne!(ids["a1"], ids["b1"], "{ids:?}");
}

#[test]
fn hotdrop_drops_without_a_mark_rule() {
    let Some((pair, d)) = setup("hotdrop_drops_without_a_mark_rule") else { return };
    hook(&d, &format!("{UDP_TEXT} function filter(f, p) if udp_text(p) == 'hot' then nf.hotdrop(true) end return false end"), &[]);
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    let (tx, rx) = (pair.udp_sender(0), pair.udp_listener(9000));
    assert_eq!(udp_exchange(&tx, &rx, &["cold", "hot", "warm"]), vec!["cold", "warm"]);
}

#[test]
fn lua_failures_give_the_on_error_verdict() {
    let Some((pair, d)) = setup("lua_failures_give_the_on_error_verdict") else { return };
    let code = format!(
        "{UDP_TEXT} function filter(f, p) local t = udp_text(p) if t == 'err' then error('boom') elseif t == 'loop' then while true do end end return false end"
    );
    hook(&d, &code, &[]);
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    let (tx, rx) = (pair.udp_sender(0), pair.udp_listener(9000));
    // Default on-error: continue (fail-open) — traffic keeps flowing.
    assert_eq!(udp_exchange(&tx, &rx, &["err", "loop", "fine"]), vec!["err", "loop", "fine"]);
    d.ctl_ok(&["hook", "del", "0"]);
    d.ctl_ok(&["hook", "add", "--queue", "0", "--state", "fw", "--function", "filter", "--on-error", "drop"]);
    assert_eq!(udp_exchange(&tx, &rx, &["err", "loop", "fine"]), vec!["fine"]);
    // A missing function is a failure too.
    d.ctl_ok(&["hook", "del", "0"]);
    d.ctl_ok(&["hook", "add", "--queue", "0", "--state", "fw", "--function", "nosuch", "--on-error", "drop"]);
    assert!(udp_exchange(&tx, &rx, &["x"]).is_empty());
}

#[test]
fn two_queues_in_a_balance_range() {
    let Some((pair, d)) = setup("two_queues_in_a_balance_range") else { return };
    d.ctl_ok(&["create", "fw"]);
    d.execute("fw", "function filter() return false end").unwrap();
    d.ctl_ok(&["hook", "add", "--queue", "0:1", "--state", "fw", "--function", "filter"]);
    pair.iptables(&format!(
        "-A INPUT -p udp --dport 9000 {GUARD} -j NFQUEUE --queue-balance 0:1 --queue-bypass"
    ));
    let rx = pair.udp_listener(9000);
    // The kernel spreads a balance range by addresses (not ports): use 16 sources.
    let mut arrived = 0;
    for host in 100..116 {
        let addr = format!("192.0.2.{host}");
        pair.add_addr_a(&addr);
        let tx = pair.udp_sender_from(&addr, 0);
        arrived += udp_exchange(&tx, &rx, &["x"]).len();
    }
    assert_eq!(arrived, 16);
    d.ctl_ok(&["hook", "del", "1"]);
    // Removing a hook does not wait for its workers: they stop within their poll interval.
    crate::util::wait_for("both workers to stop", Duration::from_secs(5), || {
        d.log_text().matches("queue worker stopped").count() >= 2
    });
    let log = d.log_text();
    for q in ["queue=0", "queue=1"] {
        let line = log.lines().find(|l| l.contains("queue worker stopped") && l.contains(q)).expect(q);
        assert!(!line.contains("handled=0"), "worker {q} saw no packets: {line}");
    }
}

#[test]
fn traffic_flows_when_the_daemon_dies() {
    let Some((pair, d)) = setup("traffic_flows_when_the_daemon_dies") else { return };
    hook(&d, "function filter() return false end", &[]);
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    let (tx, rx) = (pair.udp_sender(0), pair.udp_listener(9000));
    assert_eq!(udp_exchange(&tx, &rx, &["before"]), vec!["before"]);
    drop(d); // SIGKILL: no clean unbind
    assert_eq!(udp_exchange(&tx, &rx, &["after"]), vec!["after"]);
}

#[test]
fn hooks_pin_their_state_and_are_listed() {
    let Some((_pair, d)) = setup("hooks_pin_their_state_and_are_listed") else { return };
    hook(&d, "function filter() return false end", &["--mode", "target", "--on-error", "drop"]);
    let out = d.ctl(&["destroy", "fw"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "nfluactl: state 'fw' is used by a packet hook");
    let json: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["hook", "list", "--json"])).unwrap();
    assert_eq!(json[0]["state"], "fw");
    assert_eq!(json[0]["mode"], "target");
    assert_eq!(json[0]["on_error"], "drop");
    let out = d.ctl(&["hook", "add", "--queue", "0", "--state", "fw", "--function", "filter"]);
    assert_eq!(text(&out.stderr).trim(), "nfluactl: queue 0 is already used by the hook of state 'fw'");
    let out = d.ctl(&["hook", "add", "--queue", "5", "--state", "ghost", "--function", "filter"]);
    assert_eq!(text(&out.stderr).trim(), "nfluactl: state 'ghost' not found");
    d.ctl_ok(&["hook", "del", "0"]);
    d.ctl_ok(&["destroy", "fw"]);
    let out = d.ctl(&["hook", "del", "0"]);
    assert_eq!(text(&out.stderr).trim(), "nfluactl: no hook on queue 0");
}

fn example(path: &str) -> String {
    let full = format!("{}/../../examples/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The blocklist example loaded into state `blocklist` and hooked on queue 0;
/// returns the rules nfluactl printed.
fn load_blocklist(d: &Daemon, extra: &[&str]) -> String {
    d.ctl_ok(&["create", "blocklist", "--instructions", "100000", "--memory", "262144"]);
    d.execute("blocklist", &example("http-blocklist/filter.lua")).unwrap();
    let mut args = vec!["hook", "add", "--queue", "0", "--state", "blocklist", "--function", "filter"];
    args.extend_from_slice(&["--mode", "target", "--tcp-payload"]);
    args.extend_from_slice(extra);
    d.ctl_ok(&args)
}

#[test]
fn example_http_blocklist() {
    let Some((pair, d)) = setup("example_http_blocklist") else { return };
    let rules = load_blocklist(&d, &["--rule", "-p tcp --dport 8080"]);
    // Add exactly the iptables rules nfluactl printed (accounting rule, then the queue rule).
    let printed: Vec<&str> = rules.lines().filter_map(|l| l.strip_prefix("iptables ")).collect();
    assert!(printed.iter().any(|r| r.contains("-j NFQUEUE")), "{rules}");
    for rule in printed {
        pair.iptables(rule);
    }
    assert_eq!(d.ctl_ok(&["send", "blocklist", "add blocked.example"]), "blocklist: blocked.example\n");

    let listener = pair.tcp_listener(8080);
    let server = std::thread::spawn(move || {
        // A real server for allowed requests.
        for _ in 0..2 {
            let Ok((mut conn, _)) = listener.accept() else { return };
            conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 1024];
            if conn.read(&mut buf).unwrap_or(0) > 0 {
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n");
            }
        }
    });
    let url = format!("http://{ADDR_B}:8080/");
    let allowed = pair.exec_a(&["curl", "-s", "-m", "5", "-H", "Host: fine.example", &url]);
    assert_eq!(text(&allowed.stdout), "hello\n", "{}", text(&allowed.stderr));
    let blocked = pair.exec_a(&["curl", "-s", "-m", "5", "-H", "Host: blocked.example", &url]);
    assert_eq!(text(&blocked.stdout), "blocked by nflua: blocked.example\n", "{}", text(&blocked.stderr));
    drop(server);
}

#[test]
fn example_rate_limit() {
    let Some((pair, d)) = setup("example_rate_limit") else { return };
    d.ctl_ok(&["create", "ratelimit", "--instructions", "100000", "--memory", "262144"]);
    d.execute("ratelimit", "limit = 5; window_ms = 1500").unwrap();
    d.execute("ratelimit", &example("rate-limit/filter.lua")).unwrap();
    d.ctl_ok(&["hook", "add", "--queue", "0", "--state", "ratelimit", "--function", "filter"]);
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {MATCHED} -j DROP"));
    let (tx, rx) = (pair.udp_sender(0), pair.udp_listener(9000));
    let burst: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
    let burst: Vec<&str> = burst.iter().map(String::as_str).collect();
    let got = udp_exchange(&tx, &rx, &burst);
    assert!(got.len() <= 5 && got.len() >= 3, "a burst of 12 must be cut near the limit of 5: {got:?}");
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(udp_exchange(&tx, &rx, &["later"]), vec!["later"], "a new window lets traffic through");
}

/// A DNS query for `name` (header + one question), as a resolver sends it.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[test]
fn example_dns_logger() {
    let Some((pair, d)) = setup("example_dns_logger") else { return };
    let lib = format!("{}/../nflua-lua/target/lua", env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::path::Path::new(&format!("{lib}/nflua.so")).exists(),
        "{lib}/nflua.so is missing: build the Lua module first (tests/lua/run.sh or scripts/test.sh)"
    );
    let collector_port = crate::util::private_port() & 0x7FFF_FFFF;
    let script = format!("{}/../../examples/dns-logger/collector.lua", env!("CARGO_MANIFEST_DIR"));
    let mut collector = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.b,
            "timeout",
            "20",
            "lua5.4",
            &script,
            &collector_port.to_string(),
            "2",
        ])
        .env("LUA_CPATH", format!("{lib}/?.so;;"))
        .env("NFLUA_PORT", d.port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("collector");
    let mut stderr = std::io::BufReader::new(collector.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.contains("listening"), "{line}");

    d.ctl_ok(&["create", "dns"]);
    d.execute("dns", &format!("collector = {collector_port}")).unwrap();
    d.execute("dns", &example("dns-logger/filter.lua")).unwrap();
    d.ctl_ok(&["hook", "add", "--queue", "0", "--state", "dns", "--function", "filter"]);
    pair.iptables(&format!("-A INPUT -p udp --dport 53 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    let (tx, rx) = (pair.udp_sender(0), pair.udp_listener(53));
    for name in ["example.com", "www.nflua.test"] {
        tx.send_to(&dns_query(name), (ADDR_B, 53)).unwrap();
        let mut buf = [0u8; 512];
        rx.recv(&mut buf).expect("the query itself is not disturbed");
    }
    let out = collector.wait_with_output().expect("collector output");
    assert_eq!(text(&out.stdout), "dns: example.com\ndns: www.nflua.test\n");
}

#[test]
fn nf_reply_over_tcp_and_ipv6() {
    let Some((pair, d)) = setup("nf_reply_over_tcp_and_ipv6") else { return };
    load_blocklist(&d, &[]);
    pair.ip6tables(&format!("-A INPUT -p tcp --dport 8080 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    d.ctl_ok(&["send", "blocklist", "add v6.example"]);
    let listener =
        crate::netns::in_netns(&pair.b, || std::net::TcpListener::bind("[2001:db8::2]:8080").expect("bind6"));
    let server = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let out =
        pair.exec_a(&["curl", "-s", "-g", "-m", "5", "-H", "Host: v6.example", "http://[2001:db8::2]:8080/"]);
    assert_eq!(text(&out.stdout), "blocked by nflua: v6.example\n", "{}", text(&out.stderr));
    server.join().unwrap();
}
