//! `--state-dir`: states, executed chunks and hooks survive a crash; a
//! damaged manifest stops the daemon before it serves anything, while a state
//! that no longer restores costs that state alone; a change answered "not
//! journaled" is truly absent after a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::{NetPair, ADDR_B, GUARD, MATCHED};
use crate::util::{ask, bin, private_port, run_with_stdin, text, Daemon};

/// A directory removed when the test ends.
#[derive(Debug)]
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

/// The states `nfluactl list --json` reports as failed, with their reasons.
fn failed_in_list(d: &Daemon) -> Vec<(String, String)> {
    let list: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["list", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["reason"].as_str().unwrap().to_owned()))
        .collect()
}

fn seconds_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn a_state_that_no_longer_replays_fails_alone() {
    let Some(pair) = NetPair::new("journal_replay_fails_alone") else { return };
    let dir = StateDir::new("replay-alone");
    let d = Daemon::start_in(Some(&pair.b), &["--state-dir", dir.arg()]);
    d.ctl_ok(&["create", "fw", "--instructions", "100000"]);
    d.execute("fw", "function filter() return false end answer = 'fw'").unwrap();
    d.ctl_ok(&["hook", "add", "--queue", "3", "--state", "fw", "--function", "filter"]);
    // Replays only until T: after a restart past T, its chunk raises.
    let deadline = seconds_now() + 2;
    d.create("clock");
    d.execute("clock", &format!("assert(nf.time() < {deadline}, 'too late') function filter() end")).unwrap();
    d.ctl_ok(&["hook", "add", "--queue", "5", "--state", "clock", "--function", "filter"]);
    let port = d.port;
    d.kill();
    while seconds_now() <= deadline {
        std::thread::sleep(Duration::from_millis(100));
    }

    let d = Daemon::start_on(Some(&pair.b), port, &["--state-dir", dir.arg()]);
    // Every other state and hook came back, and works.
    assert_eq!(d.state_names(), ["fw"]);
    let hooks = d.ctl_ok(&["hook", "list"]);
    assert!(hooks.contains("fw") && !hooks.contains("clock"), "{hooks}");
    d.execute("fw", "assert(answer == 'fw')").unwrap();
    // The failed one is reported: log at ERROR, list, stats (with its hook).
    let log = d.log_text();
    let error = log.lines().find(|l| l.contains("ERROR") && l.contains("state not restored")).unwrap_or("");
    assert!(error.contains("clock") && error.contains("too late"), "{log}");
    assert!(log
        .lines()
        .any(|l| l.contains("ERROR") && l.contains("hook not restored") && l.contains("clock")));
    let failed = failed_in_list(&d);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "clock");
    assert!(failed[0].1.contains("replaying chunk") && failed[0].1.contains("too late"), "{failed:?}");
    let table = d.ctl_ok(&["list"]);
    assert!(
        table.lines().any(|l| l.starts_with("clock") && l.contains("failed: replaying chunk")),
        "{table}"
    );
    let stats: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["failed_states"][0]["name"], "clock", "{stats}");
    assert_eq!(stats["failed_states"][0]["hooks"][0], "queues 5:5 function filter", "{stats}");
    let one = d.ctl_ok(&["stats", "clock"]);
    assert!(one.contains("FAILED STATE") && one.contains("hook not restored: queues 5:5"), "{one}");

    // Its name stays taken, and its entries stay as they are through later changes.
    let out = d.ctl(&["create", "clock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("failed to restore from the journal"), "{}", text(&out.stderr));
    d.execute("fw", "answer = 'fw again'").unwrap();
    // Its hook is not served, so there is none to delete.
    assert_eq!(d.ctl(&["hook", "del", "5"]).status.code(), Some(1));
    let manifest = std::fs::read_to_string(dir.0.join("journal")).unwrap();
    assert!(manifest.contains("\"clock\""), "{manifest}");
    d.kill();
    let d = Daemon::start_on(Some(&pair.b), port, &["--state-dir", dir.arg()]);
    assert_eq!(failed_in_list(&d).len(), 1, "still failed, still kept");
    d.execute("fw", "assert(answer == 'fw again')").unwrap();

    // Destroying it discards the entries; the name is free again.
    d.ctl_ok(&["destroy", "clock"]);
    assert!(failed_in_list(&d).is_empty());
    d.create("clock");
    d.kill();
    let d = Daemon::start_on(Some(&pair.b), port, &["--state-dir", dir.arg()]);
    let mut names = d.state_names();
    names.sort();
    assert_eq!(names, ["clock", "fw"]);
    assert!(failed_in_list(&d).is_empty());
}

#[test]
fn a_damaged_chunk_file_costs_its_state_only() {
    let dir = StateDir::new("chunk-alone");
    let d = Daemon::start_with(&["--state-dir", dir.arg()]);
    d.create("a");
    d.execute("a", "x = 1").unwrap();
    d.create("b");
    d.execute("b", COUNTER).unwrap();
    let port = d.port;
    d.kill();
    let chunk_of_a = dir.0.join("chunks").join(format!("{:010}.lua", 0));
    std::fs::write(&chunk_of_a, "x = 2").unwrap();

    let d = Daemon::start_on(None, port, &["--state-dir", dir.arg()]);
    assert_eq!(d.state_names(), ["b"]);
    assert_eq!(ask(&d, "b"), "n=1 limit=0");
    let failed = failed_in_list(&d);
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].1.contains("chunk 0 of state \"a\"") && failed[0].1.contains("was damaged"),
        "{failed:?}"
    );
    // Kept for inspection: the damaged file is still there.
    assert_eq!(std::fs::read_to_string(&chunk_of_a).unwrap(), "x = 2");
    d.kill();

    std::fs::remove_file(&chunk_of_a).unwrap();
    let d = Daemon::start_on(None, port, &["--state-dir", dir.arg()]);
    assert_eq!(d.state_names(), ["b"]);
    let failed = failed_in_list(&d);
    assert!(failed[0].1.contains("No such file"), "{failed:?}");
}

#[test]
fn temporary_files_are_removed_on_start() {
    let dir = StateDir::new("tmp-files");
    let d = Daemon::start_with(&["--state-dir", dir.arg()]);
    d.create("a");
    let port = d.port;
    d.kill();
    let left = [dir.0.join("journal.tmp"), dir.0.join("chunks").join("0000000009.lua.tmp")];
    for f in &left {
        std::fs::write(f, "interrupted").unwrap();
    }
    let d = Daemon::start_on(None, port, &["--state-dir", dir.arg()]);
    assert_eq!(d.state_names(), ["a"]);
    for f in &left {
        assert!(!f.exists(), "{} is still there", f.display());
    }
    assert!(d.log_text().contains("removed temporary files"), "{}", d.log_text());
}

/// A mount namespace of its own with a small tmpfs at `dir`, held by a
/// sleeping process; daemons enter it with nsenter, and the test reaches the
/// tmpfs through `/proc/<holder>/root`. Nothing is mounted where others see it.
struct FullDisk {
    holder: std::process::Child,
    dir: PathBuf,
}

impl FullDisk {
    fn new(dir: &Path) -> FullDisk {
        std::fs::create_dir_all(dir).unwrap();
        let script = format!(
            "mount -t tmpfs -o size=256k nflua-test {} && echo ready && exec sleep 600",
            dir.display()
        );
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut ready = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "mounting the tmpfs failed");
        FullDisk { dir: PathBuf::from(format!("/proc/{}/root{}", holder.id(), dir.display())), holder }
    }

    fn enter(&self) -> Vec<String> {
        vec!["nsenter".into(), "-t".into(), self.holder.id().to_string(), "-m".into()]
    }

    /// Fills the tmpfs to the last byte.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..1]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.join("filler")).unwrap();
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[test]
fn not_journaled_means_absent_after_a_restart() {
    if !crate::util::have_root("not_journaled_means_absent_after_a_restart") {
        return;
    }
    let dir = StateDir::new("full");
    let disk = FullDisk::new(&dir.0);
    let enter = disk.enter();
    let enter: Vec<&str> = enter.iter().map(String::as_str).collect();
    let port = private_port();
    let d = Daemon::start_wrapped(&enter, port, &["--state-dir", dir.arg()]);
    d.create("a");
    d.execute("a", COUNTER).unwrap();

    disk.fill();
    let err = d.execute("a", "n = 100").unwrap_err().to_string();
    assert!(err.contains("applied, but not journaled (lost on restart)"), "{err}");
    let out = d.ctl(&["create", "lost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("lost: applied, but not journaled"), "{}", text(&out.stderr));
    // Both took effect in the running daemon.
    assert_eq!(ask(&d, "a"), "n=100 limit=0");
    assert!(d.state_names().contains(&"lost".to_owned()));

    // With room again, a later change is journaled — and carries neither along.
    disk.free();
    d.execute("a", "limit = 7").unwrap();
    let left: Vec<_> = std::fs::read_dir(&disk.dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")), "{left:?}");
    d.kill();

    let d = Daemon::start_wrapped(&enter, port, &["--state-dir", dir.arg()]);
    assert_eq!(d.state_names(), ["a"], "the state answered 'not journaled' is absent");
    assert_eq!(ask(&d, "a"), "n=1 limit=7", "the chunk answered 'not journaled' is absent");
}
