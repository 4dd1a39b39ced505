//! `nfluactl stats` and `nfluad --metrics` (read with a real HTTP client).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{run_with_stdin, text, wait_for, Daemon};

#[test]
fn stats_count_calls_errors_and_memory() {
    let d = Daemon::start();
    d.ctl_ok(&["create", "st", "--memory", "100000"]);
    d.ctl_ok(&["create", "other"]);
    d.execute("st", "function __receive_callback() error('no') end").unwrap();
    assert!(d.execute("st", "for i = 1, 5000 do end error('x')").is_err());
    let json: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["stats", "--json"])).unwrap();
    let st = json["states"].as_array().unwrap().iter().find(|s| s["name"] == "st").unwrap().clone();
    assert_eq!(st["calls"], 2);
    assert_eq!(st["errors"], 1);
    assert_eq!(st["memory_limit"], 100000);
    let current = st["memory_current"].as_u64().unwrap();
    assert!(current > 0 && current <= st["memory_peak"].as_u64().unwrap(), "{st}");
    assert!(st["instructions"].as_u64().unwrap() > 0, "{st}");
    assert!(st["lock_waits"].is_u64(), "{st}");

    let table = d.ctl_ok(&["stats", "st"]);
    assert!(table.starts_with("STATE"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("st ")), "{table}");
    assert!(!table.contains("other"), "{table}");
    let out = d.ctl(&["stats", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "nfluactl: state 'ghost' not found");
}

/// The address `--metrics 127.0.0.1:0` ended up on, read from the log.
fn metrics_addr(d: &Daemon) -> String {
    let mut addr = String::new();
    wait_for("the metrics address in the log", Duration::from_secs(5), || {
        let log = d.log_text();
        match log.lines().find(|l| l.contains("metrics served")).and_then(|l| l.split("bound=").nth(1)) {
            Some(a) => {
                addr = a.split_whitespace().next().unwrap_or_default().to_owned();
                true
            }
            None => false,
        }
    });
    addr
}

#[test]
fn metrics_over_http() {
    let d = Daemon::start_with(&["--metrics", "127.0.0.1:0"]);
    d.ctl_ok(&["create", "web", "--memory", "70000"]);
    let addr = metrics_addr(&d);
    let out = run_with_stdin(
        std::process::Command::new("curl").args(["-s", "-m", "5", &format!("http://{addr}/metrics")]),
        None,
    );
    let body = text(&out.stdout);
    assert!(body.contains("# TYPE nflua_state_memory_bytes gauge"), "{body}");
    assert!(body.contains("nflua_state_memory_limit_bytes{state=\"web\"} 70000"), "{body}");
    assert!(body.contains("nflua_state_calls_total{state=\"web\"} 0"), "{body}");
    let out = run_with_stdin(
        std::process::Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "5",
            &format!("http://{addr}/nope"),
        ]),
        None,
    );
    assert_eq!(text(&out.stdout), "404");
}

/// One scrape with curl: its time in ms and the body.
fn scrape(addr: &str) -> (u128, String) {
    let started = Instant::now();
    let out = run_with_stdin(
        std::process::Command::new("curl").args(["-s", "-f", "-m", "5", &format!("http://{addr}/metrics")]),
        None,
    );
    let ms = started.elapsed().as_millis();
    assert!(out.status.success(), "scrape failed after {ms} ms: {}", text(&out.stderr));
    (ms, text(&out.stdout))
}

#[test]
fn a_slow_client_never_blocks_scrapes() {
    let d = Daemon::start_with(&["--metrics", "127.0.0.1:0"]);
    d.ctl_ok(&["create", "web", "--memory", "70000"]);
    let addr = metrics_addr(&d);
    // A client that dribbles its request, one byte every 1.5 s, and one
    // that connects and sends nothing: both hold connections throughout.
    let mut slow = TcpStream::connect(&addr).expect("slow client connects");
    let _idle = TcpStream::connect(&addr).expect("idle client connects");
    slow.write_all(b"G").expect("first byte");
    let mut times = Vec::new();
    for (i, byte) in b"ET ".iter().enumerate() {
        std::thread::sleep(Duration::from_millis(1500));
        // Past the header timeout the daemon may have hung up on it: the
        // point is only that it held the connection while the scrapes ran.
        let _ = slow.write_all(&[*byte]);
        let (ms, body) = scrape(&addr);
        assert!(body.contains("nflua_state_memory_limit_bytes{state=\"web\"} 70000"), "scrape {i}: {body}");
        times.push(ms);
    }
    eprintln!("scrapes beside a slow and an idle client took {times:?} ms");
    // curl's own start-up is most of it; the daemon answers in a few ms.
    assert!(times.iter().all(|&ms| ms < 500), "scrapes took {times:?} ms");
    // The slow client was never answered with metrics; the server closed it
    // once its header time was up (5 s), without waiting for it further.
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(!text(&rest).contains("nflua_state"), "{}", text(&rest));
    assert!(started.elapsed() < Duration::from_secs(8), "slow client held for {:?}", started.elapsed());
}
