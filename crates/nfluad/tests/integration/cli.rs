//! nfluactl against a real daemon.

use crate::util::{text, Daemon};

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
