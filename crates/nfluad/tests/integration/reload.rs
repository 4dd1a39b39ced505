//! `nfluactl reload STATE FILE...`: new code in place of the old in one step, or nothing
//! changed and the error shown; journaled as one unit; under traffic, every packet decided by
//! one version or the next, none lost.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::{in_netns, NetPair, ADDR_B};
use crate::util::{ask, text, Daemon};

const PORT: u16 = 9000;

/// Files in a fresh directory, removed when dropped.
struct Files(PathBuf);

impl Files {
    fn new(test: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("nflua-reload-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Files(dir)
    }

    fn write(&self, name: &str, code: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, code).expect("write");
        path.display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Version `v` of a filter: answers "v<v> <globals it can see>" over the data channel.
fn version(v: u32) -> String {
    format!(
        "version = {v}
         function filter(frame, packet) return 'accept' end
         function __receive_callback(pid) nf.netlink(pid, 0, 'v' .. version .. ' ' .. tostring(extra)) end"
    )
}

/// A reload swaps in the new files' code (globals of the old are gone), keeps the state's
/// limits, and a restart with `--state-dir` replays the new code alone; a failing file
/// changes nothing, and its error is shown with exit status 1.
#[test]
fn reload_replaces_the_code_or_changes_nothing() {
    let files = Files::new("replace");
    let state_dir = files.0.join("state");
    let dir = state_dir.to_str().unwrap().to_owned();
    let d = Daemon::start_with(&["--state-dir", &dir]);
    d.ctl_ok(&["create", "fw", "--instructions", "50000", "--memory", "131072"]);
    d.execute("fw", &version(1)).unwrap();
    d.execute("fw", "extra = 'old'").unwrap();
    assert_eq!(ask(&d, "fw"), "v1 old");

    let v2 = files.write("v2.lua", &version(2));
    let more = files.write("more.lua", "extra = 'new ' .. version");
    assert_eq!(d.ctl_ok(&["reload", "fw", &v2, &more]), "");
    assert_eq!(ask(&d, "fw"), "v2 new 2");
    let list: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["list", "--json"])).unwrap();
    assert_eq!(
        (list[0]["maxruns"].as_u64(), list[0]["maxalloc"].as_u64()),
        (Some(50000), Some(131072)),
        "{list}"
    );

    let broken = files.write("broken.lua", "extra = 'half' error('not this one')");
    let out = d.ctl(&["reload", "fw", &v2, &broken]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("nfluactl: ") && err.contains("broken.lua:1: not this one"), "{err}");
    assert_eq!(ask(&d, "fw"), "v2 new 2", "a failed reload changes nothing");
    let out = d.ctl(&["reload", "ghost", &v2]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));

    let port = d.port;
    d.kill();
    let d = Daemon::start_on(None, port, &["--state-dir", &dir]);
    assert_eq!(ask(&d, "fw"), "v2 new 2", "the journal replays the reloaded code alone");
}

/// UDP at about 20k packets/s through a target hook while the code is reloaded 20 times: the
/// sink gets every packet, the hook counted each one, no Lua error, and the last version runs.
#[test]
fn reloads_under_traffic_lose_nothing() {
    let Some(pair) = NetPair::new("reloads_under_traffic_lose_nothing") else { return };
    let _quiet = crate::util::exclusive();
    let files = Files::new("traffic");
    let d = Daemon::start_in(Some(&pair.b), &[]);
    d.ctl_ok(&["create", "fw", "--instructions", "1000000", "--memory", "262144"]);
    d.execute("fw", &version(0)).unwrap();
    let rules = d.add_udp_target_hook("accept");
    for line in rules.lines().filter(|l| l.starts_with("iptables ")) {
        pair.iptables(line.trim_start_matches("iptables "));
    }
    let rx = pair.udp_listener(PORT);
    crate::util::force_recv_buffer(&rx, 64 << 20);
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sink = {
        let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
        rx.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut quiet_since = None::<Instant>;
            loop {
                match rx.recv(&mut buf) {
                    Ok(_) => {
                        received.fetch_add(1, Ordering::Relaxed);
                        quiet_since = None;
                    }
                    Err(_) if stop.load(Ordering::Relaxed) => {
                        // Done once the sender stopped and nothing came for 500 ms.
                        if quiet_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_millis(500)
                        {
                            break;
                        }
                    }
                    Err(_) => {}
                }
            }
        })
    };
    let sending = Arc::new(AtomicBool::new(true));
    let sent = {
        let (a, sending) = (pair.a.clone(), Arc::clone(&sending));
        std::thread::spawn(move || {
            in_netns(&a, move || {
                let tx = std::net::UdpSocket::bind(("0.0.0.0", 0)).expect("bind sender");
                let started = Instant::now();
                let mut sent = 0u64;
                // 20 packets per millisecond, for at most 20 s.
                while sending.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) {
                    let due = started.elapsed().as_micros() as u64 / 50;
                    while sent < due {
                        if tx.send_to(&sent.to_be_bytes(), (ADDR_B, PORT)).is_ok() {
                            sent += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
                sent
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    for v in 1..=20 {
        let file = files.write(&format!("v{v}.lua"), &version(v));
        d.ctl_ok(&["reload", "fw", &file]);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    sending.store(false, Ordering::Relaxed);
    let sent = sent.join().expect("sender");
    stop.store(true, Ordering::Relaxed);
    sink.join().expect("sink");
    let received = received.load(Ordering::Relaxed);
    let stats: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["stats", "--json"])).unwrap();
    let hook = &stats["hooks"][0];
    assert!(sent > 20_000, "the sender kept its pace: {sent} packets");
    assert_eq!(received, sent, "every packet reached the sink: {hook}");
    assert_eq!(hook["packets"].as_u64(), Some(sent), "the hook decided each one: {hook}");
    assert_eq!(hook["errors"].as_u64(), Some(0), "{hook}");
    assert_eq!(hook["unevaluated"].as_u64().unwrap_or(0), 0, "{hook}");
    assert_eq!(ask(&d, "fw"), "v20 nil");
}
