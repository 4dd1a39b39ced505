//! `nfluactl test`: filters run over capture files with no daemon, no root, no network, on
//! captures these tests write themselves (pcap and pcapng, raw IP and Ethernet), and one
//! recorded with tcpdump from real traffic in a namespace (that one needs root).

#![allow(unsafe_code)] // libc calls the tests need (sockets, signals, namespaces)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::netns::{NetPair, ADDR_B};
use crate::util::{bin, text};

const CLIENT: [u8; 4] = [192, 0, 2, 1];
const SERVER: [u8; 4] = [192, 0, 2, 2];
/// 2023-11-14 22:13:20 UTC: capture times are checked against it.
const T0: u32 = 1_700_000_000;

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nflua-offline-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 =
        bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet around `l4` (protocol `proto`), the L4 checksum at `l4_checksum` filled in.
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, mut l4: Vec<u8>, l4_checksum: usize) -> Vec<u8> {
    let mut pseudo = [&src[..], &dst[..], &[0, proto], &(l4.len() as u16).to_be_bytes()].concat();
    pseudo.extend_from_slice(&l4);
    let sum = checksum(&pseudo);
    l4[l4_checksum..l4_checksum + 2].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&l4);
    ip
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    ipv4(src, dst, 17, l4, 6)
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

/// A TCP segment of the connection between CLIENT:`port` and SERVER:80, from the client when
/// `to_server`.
fn tcp(port: u16, to_server: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (src, sport, dst, dport) =
        if to_server { (CLIENT, port, SERVER, 80) } else { (SERVER, 80, CLIENT, port) };
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&0u32.to_be_bytes());
    l4.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    ipv4(src, dst, 6, l4, 16)
}

/// A classic pcap file (microsecond timestamps) of raw IP packets, `(seconds after T0,
/// microseconds, packet)`.
fn write_pcap(path: &Path, packets: &[(u32, u32, Vec<u8>)]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 101] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    for (secs, micros, p) in packets {
        for v in [T0 + secs, *micros, p.len() as u32, p.len() as u32] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(p);
    }
    std::fs::write(path, f).expect("write pcap");
}

/// A pcapng file of Ethernet frames with nanosecond timestamps (`if_tsresol` 9).
fn write_pcapng(path: &Path, frames: &[(u64, Vec<u8>)]) {
    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = (12 + body.len()) as u32;
        [&kind.to_le_bytes()[..], &len.to_le_bytes(), &body, &len.to_le_bytes()].concat()
    }
    let mut f = block(0x0A0D_0D0A, &[&0x1A2B_3C4Du32.to_le_bytes()[..], &[1, 0, 0, 0], &[0xff; 8]].concat());
    // Interface: Ethernet, no snap length; option if_tsresol (9) = 9, end of options.
    let idb = [
        &1u16.to_le_bytes()[..],
        &[0, 0],
        &0u32.to_le_bytes(),
        &9u16.to_le_bytes(),
        &1u16.to_le_bytes(),
        &[9, 0, 0, 0],
        &[0, 0, 0, 0],
    ]
    .concat();
    f.extend(block(1, &idb));
    for (nanos, frame) in frames {
        let mut epb = Vec::new();
        for v in [0u32, (nanos >> 32) as u32, *nanos as u32, frame.len() as u32, frame.len() as u32] {
            epb.extend_from_slice(&v.to_le_bytes());
        }
        epb.extend_from_slice(frame);
        f.extend(block(6, &epb));
    }
    std::fs::write(path, f).expect("write pcapng");
}

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    [&[0xff; 6][..], &[2, 0, 0, 0, 0, 1], &ethertype.to_be_bytes(), payload].concat()
}

/// `nfluactl test --pcap PCAP --script S... ARGS` (ARGS split on spaces).
fn offline(pcap: &Path, scripts: &[&str], args: &str) -> Output {
    let mut cmd = Command::new(bin("nfluactl"));
    cmd.arg("test").arg("--pcap").arg(pcap);
    for script in scripts {
        cmd.args(["--script", script]);
    }
    cmd.args(args.split_whitespace()).output().expect("nfluactl test")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "nfluactl test failed: {}{}", text(&out.stdout), text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

fn script(dir: &Path, name: &str, code: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, code).expect("write script");
    path.display().to_string()
}

/// Verdicts counted by name, what each packet got, and time as the capture says: `nf.time()`
/// is the packet's timestamp and a timer made at load fires between the packets its deadline
/// falls between, at its deadline.
#[test]
fn a_target_filter_over_a_pcap_sees_capture_time_and_fires_timers_on_it() {
    let dir = scratch("time");
    let pcap = dir.join("udp.pcap");
    let packets: Vec<(u32, u32, Vec<u8>)> =
        [(0, 250_000, "ok"), (2, 0, "bad"), (5, 0, "ok"), (9, 500_000, "report")]
            .iter()
            .map(|&(s, us, p)| (s, us, udp(CLIENT, 4000, SERVER, 9000, p.as_bytes())))
            .collect();
    write_pcap(&pcap, &packets);
    let filter = script(
        &dir,
        "filter.lua",
        "local seen = {}
         local s, ms = nf.time() loaded = s .. '.' .. ms
         timer.create(3000, function() local s, ms = nf.time() fired = s .. '.' .. ms end)
         function f(frame, packet)
           local s, ms = nf.time()
           seen[#seen + 1] = s .. '.' .. ms
           local payload = tostring(packet:segment(28))
           if payload == 'bad' then return 'drop' end
           if payload == 'report' then
             error('loaded ' .. loaded .. ' fired ' .. tostring(fired) .. ' seen ' .. table.concat(seen, ' '))
           end
           return 'accept'
         end",
    );
    let report = json_of(&offline(&pcap, &[&filter], "--function f --mode target --json"));
    assert_eq!(report["packets"], 4, "{report}");
    assert_eq!(report["verdicts"], serde_json::json!({"accept": 2, "drop": 1, "error": 1}), "{report}");
    assert_eq!((report["errors"].as_u64(), report["timers"]["run"].as_u64()), (Some(1), Some(1)), "{report}");
    let per_packet = report["per_packet"].as_array().expect("per_packet");
    let verdicts: Vec<&str> = per_packet.iter().map(|p| p["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["accept", "drop", "accept", "error"]);
    assert_eq!(per_packet[1]["time"].as_f64(), Some(1.75), "time since the first packet");
    assert_eq!(per_packet[0]["summary"], "192.0.2.1:4000 > 192.0.2.2:9000 UDP len 2");
    // The script loaded at the first packet's time; the 3 s timer fired at its deadline, before
    // the packet at +5 s.
    let detail = per_packet[3]["detail"].as_str().unwrap();
    let expected = format!(
        "loaded {T0}.250 fired {}.250 seen {T0}.250 {}.0 {}.0 {}.500",
        T0 + 3,
        T0 + 2,
        T0 + 5,
        T0 + 9
    );
    assert!(detail.contains(&expected), "{detail}\nwanted: {expected}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--expect` fails the run (exit 1) naming the count that differs; a script that does not
/// load stops it before any packet (exit 2, the Lua error shown); the text output has a line
/// per packet and a summary.
#[test]
fn expectations_and_script_errors_set_the_exit_status() {
    let dir = scratch("expect");
    let pcap = dir.join("udp.pcap");
    write_pcap(
        &pcap,
        &[(0, 0, udp(CLIENT, 4000, SERVER, 53, b"x")), (1, 0, udp(CLIENT, 4001, SERVER, 53, b"y"))],
    );
    let filter = script(&dir, "filter.lua", "function f() return 'drop' end");
    let out = offline(&pcap, &[&filter], "--function f --mode target --expect drop=2 --expect errors=0");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].contains("192.0.2.1:4000 > 192.0.2.2:53 UDP len 1") && lines[0].ends_with("drop"),
        "{lines:?}"
    );
    assert!(lines[2].starts_with("2 packets: drop 2; errors 0;"), "{lines:?}");

    let out = offline(&pcap, &[&filter], "--function f --mode target --expect accept=2");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "nfluactl: expectations not met: accept: expected 2, got 0");

    let broken = script(&dir, "broken.lua", "function f( return end");
    let out = offline(&pcap, &[&filter, &broken], "--function f");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("broken.lua:1:") && err.contains("near 'return'"), "{err}");
    assert!(out.stdout.is_empty(), "no packet ran: {}", text(&out.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A match hook on the TCP payload: packets without payload are not given to Lua (nomatch,
/// as the daemon), `nf.reply` packets are counted per packet and written with `--write-pcap`.
#[test]
fn match_mode_on_tcp_payload_records_replies() {
    let dir = scratch("reply");
    let pcap = dir.join("tcp.pcap");
    write_pcap(
        &pcap,
        &[
            (0, 0, tcp(40000, true, 100, SYN, b"")),
            (0, 10, tcp(40000, true, 101, PSH_ACK, b"hello")),
            (0, 20, tcp(40000, true, 106, PSH_ACK, b"evil stuff")),
        ],
    );
    let filter = script(
        &dir,
        "filter.lua",
        "function f(frame, payload)
           if tostring(payload):find('evil', 1, true) then nf.reply('tcp', 'no') return true end
           return false
         end",
    );
    let out_pcap = dir.join("sent.pcap");
    let report = json_of(&offline(
        &pcap,
        &[&filter],
        &format!("--function f --tcp-payload --write-pcap {} --json", out_pcap.display()),
    ));
    assert_eq!(report["verdicts"], serde_json::json!({"match": 1, "nomatch": 2}), "{report}");
    let first = &report["per_packet"][0];
    assert_eq!(first["detail"], "not given to Lua: no TCP payload (--tcp-payload)", "{report}");
    assert_eq!((report["per_packet"][2]["replies"].as_u64(), report["sent"].as_u64()), (Some(1), Some(1)));
    // The written capture: pcap, nanosecond magic, raw IP; the reply goes from the server's
    // port 80 back to the client's 40000 and carries "no".
    let written = std::fs::read(&out_pcap).expect("written pcap");
    assert_eq!(&written[..4], &0xa1b2_3c4du32.to_ne_bytes());
    assert_eq!(u32::from_ne_bytes(written[20..24].try_into().unwrap()), 101);
    let reply = &written[24 + 16..];
    assert_eq!((&reply[12..16], &reply[16..20]), (&SERVER[..], &CLIENT[..]));
    assert_eq!(
        (u16::from_be_bytes([reply[20], reply[21]]), u16::from_be_bytes([reply[22], reply[23]])),
        (80, 40000)
    );
    assert!(reply.ends_with(b"no"), "{reply:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `packet:send` re-emits the packet with a new payload: counted as sent, written with
/// `--write-pcap` (lengths and checksums fixed), and "stolen" reads as the daemon treats it,
/// the rewritten packet accepted.
#[test]
fn packet_send_is_recorded_with_its_new_bytes() {
    let dir = scratch("send");
    let pcap = dir.join("udp.pcap");
    write_pcap(&pcap, &[(0, 0, udp(CLIENT, 4000, SERVER, 53, b"original"))]);
    let filter = script(&dir, "filter.lua", "function f() nf.getpacket():send('XY') return 'stolen' end");
    let out_pcap = dir.join("sent.pcap");
    let report = json_of(&offline(
        &pcap,
        &[&filter],
        &format!("--function f --mode target --write-pcap {} --json", out_pcap.display()),
    ));
    assert_eq!(report["verdicts"], serde_json::json!({"accept": 1}), "{report}");
    assert_eq!(
        (report["sent"].as_u64(), report["per_packet"][0]["rewritten"].as_bool()),
        (Some(1), Some(true))
    );
    let written = std::fs::read(&out_pcap).expect("written pcap");
    let sent = &written[24 + 16..];
    assert_eq!(sent, &udp(CLIENT, 4000, SERVER, 53, b"XY")[..], "the packet as it would leave");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--stream` with the shipped HTTP blocklist: a Host header split across two segments, and
/// the same request with its segments out of order, are read whole; every data packet of a
/// blocked connection gets "drop" (the first one held until the second came), an allowed
/// connection's get "accept", handshake packets "continue".
#[test]
fn stream_mode_reads_split_and_reordered_requests() {
    let dir = scratch("stream");
    let pcap = dir.join("http.pcap");
    let (first, second): (&[u8], &[u8]) = (b"GET / HTTP/1.1\r\nHost: blo", b"cked.example\r\n\r\n");
    let allowed: &[u8] = b"GET / HTTP/1.1\r\nHost: allowed.example\r\n\r\n";
    let isn = 1000;
    let start = isn + 1;
    let mut packets = vec![
        (0, 0, tcp(40001, true, isn, SYN, b"")),
        (0, 100, tcp(40001, false, 5000, SYN | ACK, b"")),
        (0, 200, tcp(40001, true, start, PSH_ACK, first)),
        (0, 300, tcp(40001, true, start + first.len() as u32, PSH_ACK, second)),
        (1, 0, tcp(40002, true, isn, SYN, b"")),
        (1, 100, tcp(40002, true, start, PSH_ACK, allowed)),
        (2, 0, tcp(40003, true, isn, SYN, b"")),
        // The second part first: held beyond the hole, then the hole fills.
        (2, 100, tcp(40003, true, start + first.len() as u32, PSH_ACK, second)),
        (2, 200, tcp(40003, true, start, PSH_ACK, first)),
    ];
    packets.sort_by_key(|p| (p.0, p.1));
    write_pcap(&pcap, &packets);
    let example = format!("{}/../../examples/http-blocklist/filter.lua", env!("CARGO_MANIFEST_DIR"));
    let add = script(&dir, "add.lua", "__receive_callback(0, 'add blocked.example')");
    let report =
        json_of(&offline(&pcap, &[&example, &add], "--function filter --mode target --stream --json"));
    let verdicts: Vec<&str> =
        report["per_packet"].as_array().unwrap().iter().map(|p| p["verdict"].as_str().unwrap()).collect();
    assert_eq!(
        verdicts,
        ["continue", "continue", "drop", "drop", "continue", "accept", "continue", "drop", "drop"],
        "{report}"
    );
    // One block page per blocked connection, sent when its request was complete.
    assert_eq!(report["sent"], 2, "{report}");
    assert_eq!(report["per_packet"][3]["replies"], 1, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// pcapng with Ethernet frames and nanosecond timestamps: the frame Lua gets starts with the
/// Ethernet header the daemon would build (sender's MAC, IPv4 ethertype); an ARP frame is
/// skipped, with the reason.
#[test]
fn pcapng_ethernet_frames_and_nanosecond_time() {
    let dir = scratch("pcapng");
    let pcap = dir.join("eth.pcapng");
    let nanos = u64::from(T0) * 1_000_000_000 + 123_456_789;
    write_pcapng(
        &pcap,
        &[
            (nanos, ethernet(0x0806, &[0, 1, 8, 0, 6, 4, 0, 1])),
            (nanos + 1_000_000_000, ethernet(0x0800, &udp(CLIENT, 5000, SERVER, 53, b"q"))),
        ],
    );
    let filter = script(
        &dir,
        "filter.lua",
        "function f(frame, packet)
           local s, ms = nf.time()
           error(string.format('%d.%03d mac %02x:%02x type %02x%02x first %02x', s, ms,
             frame[7], frame[12], frame[13], frame[14], packet[1]))
         end",
    );
    let report = json_of(&offline(&pcap, &[&filter], "--function f --json"));
    assert_eq!(report["verdicts"], serde_json::json!({"error": 1, "skipped": 1}), "{report}");
    assert_eq!(report["per_packet"][0]["detail"], "not IP (ethertype 0x0806)");
    let detail = report["per_packet"][1]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("{}.123 mac 02:01 type 0800 first 45", T0 + 1)), "{detail}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The daemon's limits hold offline: `--instructions` stops a loop at its figure, `--memory`
/// a growing table; the next packet runs normally.
#[test]
fn limits_apply_to_offline_calls() {
    let dir = scratch("limits");
    let pcap = dir.join("udp.pcap");
    write_pcap(
        &pcap,
        &[
            (0, 0, udp(CLIENT, 1, SERVER, 2, b"loop")),
            (0, 1, udp(CLIENT, 1, SERVER, 2, b"grow")),
            (0, 2, udp(CLIENT, 1, SERVER, 2, b"fine")),
        ],
    );
    let filter = script(
        &dir,
        "filter.lua",
        "function f(frame, packet)
           local p = tostring(packet:segment(28))
           if p == 'loop' then while true do end end
           if p == 'grow' then local t = {} for i = 1, 1e7 do t[i] = i end end
           return 'accept'
         end",
    );
    let report = json_of(&offline(
        &pcap,
        &[&filter],
        "--function f --mode target --instructions 20000 --memory 65536 --json",
    ));
    let p = &report["per_packet"];
    assert!(p[0]["detail"].as_str().unwrap().contains("instruction limit exceeded"), "{report}");
    assert!(p[1]["detail"].as_str().unwrap().contains("not enough memory"), "{report}");
    assert_eq!((p[2]["verdict"].as_str(), report["errors"].as_u64()), (Some("accept"), Some(2)), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A capture recorded by tcpdump on the receiving side of a veth pair, of real UDP traffic
/// between two namespaces, replays offline with the verdicts the filter gives each payload.
#[test]
fn a_capture_recorded_in_a_namespace_replays_offline() {
    let Some(pair) = NetPair::new("a_capture_recorded_in_a_namespace_replays_offline") else { return };
    let dir = scratch("recorded");
    let pcap = dir.join("recorded.pcap");
    let mut tcpdump = Command::new("ip")
        .args(["netns", "exec", &pair.b, "tcpdump", "-i", &pair.dev_b, "--immediate-mode", "-U", "-n", "-w"])
        .arg(&pcap)
        .args(["udp", "port", "9000"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump (apt-get install tcpdump)");
    // tcpdump says "listening on" once its capture is open.
    let mut stderr = tcpdump.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        assert!(started.elapsed() < Duration::from_secs(10), "tcpdump did not start: {}", text(&seen));
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut stderr, &mut buf).expect("tcpdump stderr");
        assert!(n > 0, "tcpdump exited: {}", text(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let listener = pair.udp_listener(9000);
    let sender = pair.udp_sender(7000);
    let payloads = ["ok", "bad", "ok", "ok", "bad", "ok"];
    for p in payloads {
        sender.send_to(p.as_bytes(), (ADDR_B, 9000)).expect("send");
        let mut buf = [0u8; 16];
        listener.recv(&mut buf).expect("the packet arrives");
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(tcpdump.id() as libc::pid_t, libc::SIGINT) };
    let _ = tcpdump.wait();
    let filter = script(
        &dir,
        "filter.lua",
        "function f(frame, packet)
           if tostring(packet:segment(28)) == 'bad' then return 'drop' end
           return 'accept'
         end",
    );
    let out = offline(
        &pcap,
        &[&filter],
        "--function f --mode target --expect accept=4 --expect drop=2 --expect errors=0",
    );
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("192.0.2.1:7000 > 192.0.2.2:9000 UDP len 3"), "{}", text(&out.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}
