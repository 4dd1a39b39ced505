//! Start-up, one daemon per namespace, SIGTERM.

use std::process::Command;

use crate::util::{bin, run_with_stdin, text, Daemon};

#[test]
fn sigterm_shuts_down_cleanly() {
    let d = Daemon::start();
    d.create("st");
    let (status, log) = d.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(log.contains("nfluad stopped"), "{log}");
}

#[test]
fn second_daemon_on_the_same_port_refuses_to_start() {
    let d = Daemon::start();
    let out = run_with_stdin(Command::new(bin("nfluad")).arg("--port").arg(d.port.to_string()), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("another nfluad"), "{}", text(&out.stderr));
    d.assert_serving(None);
}

#[test]
fn clients_report_a_missing_daemon() {
    let port = crate::util::private_port();
    let out = run_with_stdin(Command::new(bin("nfluactl")).args(["--port", &port.to_string(), "list"]), None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr).trim(), format!("nfluactl: nfluad is not running on port {port}"));
}
