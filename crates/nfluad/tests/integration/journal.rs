//! `--state-dir`: states, executed chunks and hooks survive a crash, and a
//! damaged journal stops the daemon before it serves anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nflua_client::consts::DATA_MAX;

use crate::netns::{NetPair, ADDR_B, GUARD, MATCHED};
use crate::util::{bin, private_port, run_with_stdin, text, Daemon};

/// A directory removed when the test ends.
struct StateDir(PathBuf);

impl StateDir {
    fn new(test: &str) -> StateDir {
        let dir = std::env::temp_dir().join(format!("nflua-state-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir(dir)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp dir")
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asks the state `st` (whose callback answers with `answer()`) for its answer.
fn ask(d: &Daemon, st: &str) -> String {
    let mut s = d.data();
    s.send(st, b"?").expect("send");
    let mut buf = vec![0u8; DATA_MAX];
    let m = s.receive_timeout(&mut buf, 5000).expect("answer");
    String::from_utf8_lossy(&buf[..m.len]).into_owned()
}

const COUNTER: &str = "n = 1
function __receive_callback(pid, b) nf.netlink(pid, 0, answer()) end
function answer() return string.format('n=%d limit=%d', n, limit or 0) end";

#[test]
fn states_and_chunks_come_back_after_sigkill() {
    let dir = StateDir::new("sigkill");
    let d = Daemon::start_with(&["--state-dir", dir.arg()]);
    d.ctl_ok(&["create", "counter", "--instructions", "50000", "--memory", "131072", "--debug"]);
    d.create("gone");
    d.create("plain");
    d.execute("counter", COUNTER).unwrap();
    d.execute("counter", "n = n + 10").unwrap();
    // Raised after changing n: replayed, and its change with it.
    assert!(d.execute("counter", "n = n * 2 error('half done')").is_err());
    // Never ran: nothing to replay.
    assert!(d.execute("counter", "n = = 3").is_err());
    d.execute("gone", "x = 1").unwrap();
    d.ctl_ok(&["destroy", "gone"]);
    assert_eq!(ask(&d, "counter"), "n=22 limit=0");
    let port = d.port;
    d.kill();

    let d = Daemon::start_on(None, port, &["--state-dir", dir.arg()]);
    let mut names = d.state_names();
    names.sort();
    assert_eq!(names, ["counter", "plain"]);
    let list = d.ctl_ok(&["list", "--json"]);
    let states: serde_json::Value = serde_json::from_str(&list).unwrap();
    let counter = states.as_array().unwrap().iter().find(|s| s["name"] == "counter").unwrap();
    assert_eq!(counter["maxalloc"], 131072, "{counter}");
    assert_eq!(counter["maxruns"], 50000, "{counter}");
    assert_eq!(ask(&d, "counter"), "n=22 limit=0");
    assert!(d.log_text().contains("journal restored"), "{}", d.log_text());
    // Changes after the restart are journaled on top.
    d.execute("counter", "limit = 5").unwrap();
    d.kill();
    let d = Daemon::start_on(None, port, &["--state-dir", dir.arg()]);
    assert_eq!(ask(&d, "counter"), "n=22 limit=5");
}

/// Starts nfluad on `dir` expecting it to refuse; returns its stderr.
fn refused_start(dir: &Path) -> String {
    let port = private_port();
    let out = run_with_stdin(
        Command::new(bin("nfluad")).args(["--port", &port.to_string(), "--state-dir"]).arg(dir),
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    // Nothing was served, not even for a moment: the port is still free.
    let again =
        run_with_stdin(Command::new(bin("nfluactl")).args(["--port", &port.to_string(), "list"]), None);
    assert!(text(&again.stderr).contains("not running"), "{}", text(&again.stderr));
    err
}

#[test]
fn a_damaged_journal_is_refused_with_a_clear_error() {
    let dir = StateDir::new("damaged");
    let d = Daemon::start_with(&["--state-dir", dir.arg()]);
    d.create("a");
    d.execute("a", "x = 1").unwrap();
    d.kill();
    let manifest = dir.0.join("journal");
    let good = std::fs::read(&manifest).unwrap();

    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    std::fs::write(&manifest, &bad).unwrap();
    let err = refused_start(&dir.0);
    assert!(err.contains("is corrupt: checksum mismatch"), "{err}");
    assert!(err.contains("nothing was restored"), "{err}");

    std::fs::write(&manifest, &good).unwrap();
    let chunk = std::fs::read_dir(dir.0.join("chunks")).unwrap().flatten().next().unwrap().path();
    std::fs::write(&chunk, "x = 2").unwrap();
    let err = refused_start(&dir.0);
    assert!(err.contains("chunk 0 of state \"a\"") && err.contains("was damaged"), "{err}");
}

#[test]
fn a_chunk_that_no_longer_replays_stops_the_start() {
    let dir = StateDir::new("replay");
    let d = Daemon::start_with(&["--state-dir", dir.arg()]);
    d.create("a");
    d.execute("a", "ok = true").unwrap();
    d.kill();
    // As if the chunk had succeeded when executed and raises now (a script that
    // depended on something outside, say): rewrite it with matching checksums.
    let manifest = dir.0.join("journal");
    let text_ = std::fs::read_to_string(&manifest).unwrap();
    let (header, body) = text_.split_once('\n').unwrap();
    let mut json: serde_json::Value = serde_json::from_str(body).unwrap();
    let chunk = &mut json["states"][0]["chunks"][0];
    let raising = b"error('not any more')";
    std::fs::write(dir.0.join("chunks").join(format!("{:010}.lua", chunk["id"].as_u64().unwrap())), raising)
        .unwrap();
    chunk["len"] = raising.len().into();
    chunk["crc32"] = crc32fast::hash(raising).into();
    let body = serde_json::to_string_pretty(&json).unwrap();
    let magic = header.rsplit_once(' ').unwrap().0;
    std::fs::write(&manifest, format!("{magic} {:08x}\n{body}", crc32fast::hash(body.as_bytes()))).unwrap();
    let err = refused_start(&dir.0);
    assert!(err.contains("replaying chunk 0") && err.contains("not any more"), "{err}");
}

#[test]
fn hooks_come_back_and_traffic_flows_through_the_outage() {
    let Some(pair) = NetPair::new("journal_hooks_outage") else { return };
    let dir = StateDir::new("outage");
    let d = Daemon::start_in(Some(&pair.b), &["--state-dir", dir.arg()]);
    d.ctl_ok(&["create", "fw", "--instructions", "100000", "--memory", "262144"]);
    d.execute(
        "fw",
        "function filter(frame, packet) return tostring(packet:segment(28)):find('^bad') ~= nil end",
    )
    .unwrap();
    d.ctl_ok(&["hook", "add", "--queue", "0", "--state", "fw", "--function", "filter"]);
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {GUARD} -j NFQUEUE --queue-num 0 --queue-bypass"));
    pair.iptables(&format!("-A INPUT -p udp --dport 9000 {MATCHED} -j DROP"));
    let (tx, rx) = (pair.udp_sender(0), pair.udp_listener(9000));
    rx.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let target = format!("{ADDR_B}:9000");
    let exchange = |payload: &str| -> Option<String> {
        tx.send_to(payload.as_bytes(), &target).expect("send");
        let mut buf = [0u8; 64];
        rx.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    assert_eq!(exchange("good").as_deref(), Some("good"));
    assert_eq!(exchange("bad").as_deref(), None);

    // Traffic keeps going while the daemon dies and comes back.
    let port = d.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (tx, stop, target) = (pair.udp_sender(0), stop.clone(), target.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let _ = tx.send_to(b"flow", &target);
                sent += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    d.kill();
    // Queue bypass: with nobody bound to the queue, packets are accepted.
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut during = 0;
    while during < 20 && Instant::now() < deadline {
        if rx.recv(&mut buf).is_ok() {
            during += 1;
        }
    }
    assert_eq!(during, 20, "traffic must flow while the daemon is down");
    let d = Daemon::start_on(Some(&pair.b), port, &["--state-dir", dir.arg()]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(sender.join().unwrap() > 0);
    while rx.recv(&mut buf).is_ok() {} // drain the flow

    let hooks = d.ctl_ok(&["hook", "list"]);
    assert!(hooks.contains("fw") && hooks.contains("filter"), "{hooks}");
    assert_eq!(d.state_names(), ["fw"]);
    // The restored filter acts again on live traffic.
    assert_eq!(exchange("good again").as_deref(), Some("good again"));
    assert_eq!(exchange("bad again").as_deref(), None);
}
