//! nfluactl against a real daemon.

#![allow(unsafe_code)] // libc calls the tests need (sockets, signals, namespaces)

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{bin, run_with_stdin, text, Daemon};

#[test]
fn create_execute_list_destroy() {
    let d = Daemon::start();
    let out = d.ctl(&["create", "web", "--instructions", "5000", "--memory", "131072", "--debug"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.ctl(&["execute", "web", "-e", "counter = 1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = d.ctl(&["list"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web") && l.contains("131072") && l.contains("5000") && l.ends_with('d')),
        "{table}"
    );

    let out = d.ctl(&["list", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["name"], "web");
    assert_eq!(json[0]["maxruns"], 5000);
    assert_eq!(json[0]["flags"], "d");

    assert!(d.ctl(&["destroy", "web"]).status.success());
    let out = d.ctl(&["list", "--json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), serde_json::json!([]));
}

#[test]
fn errors_show_the_daemon_text_and_fail() {
    let d = Daemon::start();
    assert!(d.ctl(&["create", "dup"]).status.success());
    let out = d.ctl(&["create", "dup"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "nfluactl: state 'dup' already exists");
    let out = d.ctl(&["execute", "dup", "-e", "syntax error here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("syntax error"), "{}", text(&out.stderr));
    let out = d.ctl(&["create", "small", "--memory", "1000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("below the minimum"), "{}", text(&out.stderr));
}

#[test]
fn execute_from_a_file_and_stdin() {
    let d = Daemon::start();
    assert!(d.ctl(&["create", "st"]).status.success());
    let file = std::env::temp_dir().join(format!("nflua-cli-{}.lua", d.port));
    std::fs::write(&file, "from_file = 7\nerror('line two')\n").unwrap();
    let out = d.ctl(&["execute", "st", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:2: line two", file.display())), "{err}");
    std::fs::remove_file(&file).unwrap();
    let out = d.ctl_stdin(&["execute", "st", "-"], Some(b"assert(from_file == 7)"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn send_and_receive() {
    let d = Daemon::start();
    assert!(d.ctl(&["create", "echo"]).status.success());
    let code = "function __receive_callback(pid, b) nf.netlink(pid, 0, 'got ' .. tostring(b)) end";
    assert!(d.ctl(&["execute", "echo", "-e", code]).status.success());
    let out = d.ctl(&["send", "echo", "ping"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "echo: got ping\n");

    let out = d.ctl(&["send", "ghost", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "nfluactl: state 'ghost' not found");

    // receive on a fixed port while a state sends to it
    let port = crate::util::private_port();
    let mut listener = std::process::Command::new(crate::util::bin("nfluactl"))
        .args([
            "--port",
            &d.port.to_string(),
            "receive",
            "--pid",
            &port.to_string(),
            "--timeout",
            "5000",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::util::wait_for("the listener to bind", std::time::Duration::from_secs(5), || {
        d.execute("echo", &format!("nf.netlink({port}, 0, 'hi there')")).is_ok()
    });
    let out = {
        let _ = listener.wait();
        let mut s = String::new();
        use std::io::Read;
        listener.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["state"], "echo");
    assert_eq!(json["text"], "hi there");
}

#[test]
fn completions_are_generated() {
    let d = Daemon::start();
    let out = d.ctl(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("nfluactl"));
}

/// A chunk that keeps the daemon busy for `ms` milliseconds of wall time,
/// then sets `applied`.
fn busy_chunk(ms: u32) -> String {
    format!(
        "local function now() local s, ms = nf.time() return s * 1000 + ms end \
         local t0 = now() repeat until now() - t0 >= {ms} applied = true"
    )
}

#[test]
fn a_timed_out_request_is_said_to_be_maybe_applied() {
    let d = Daemon::start();
    d.ctl_ok(&["create", "slow", "--instructions", "4000000000"]);
    let started = Instant::now();
    let out = d.ctl(&["--reply-timeout", "200", "execute", "slow", "-e", &busy_chunk(500)]);
    let waited = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), "nfluactl: no answer within 200 ms; the request may still complete");
    assert!(waited < Duration::from_millis(450), "gave up after {waited:?}");
    // And it did complete: the message was true.
    d.ctl_ok(&["execute", "slow", "-e", "assert(applied)"]);
}

#[test]
fn a_daemon_that_dies_mid_request_is_told_from_a_slow_one() {
    let d = Daemon::start();
    d.ctl_ok(&["create", "slow", "--instructions", "4000000000"]);
    let port = d.port.to_string();
    let chunk = busy_chunk(900);
    let client = std::thread::spawn(move || {
        let started = Instant::now();
        let out = run_with_stdin(
            Command::new(bin("nfluactl")).args(["--port", &port, "execute", "slow", "-e", &chunk]),
            None,
        );
        (out, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let killed_at = Instant::now();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(d.pid() as i32, libc::SIGKILL) };
    let (out, took) = client.join().unwrap();
    let after_kill = killed_at.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("nfluad on port {} went away before answering", d.port)), "{err}");
    // Noticed at the next presence check (every 250 ms), not after the 10 s timeout.
    eprintln!("nfluactl reported the dead daemon {after_kill:?} after the kill ({took:?} in all)");
    assert!(after_kill < Duration::from_millis(800), "noticed {after_kill:?} after the kill");

    // Sending to a port nobody holds any more is refused at once.
    let out = d.ctl(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not running"), "{}", text(&out.stderr));
}

#[test]
fn daemon_errors_exit_1_local_errors_exit_2() {
    let d = Daemon::start();
    for args in [&["destroy", "ghost"][..], &["stats", "ghost"], &["execute", "ghost", "-e", "x = 1"]] {
        let out = d.ctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
    }
    let out = d.ctl(&["execute", "ghost"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn nfluad_refuses_ports_in_the_automatic_range() {
    for port in ["0x80000000", "2147483649", "0xffffffff"] {
        let out = run_with_stdin(Command::new(bin("nfluad")).args(["--port", port]), None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{port}: {err}");
        assert!(err.contains("bit 31 set") && err.contains("automatic client range"), "{port}: {err}");
    }
}
