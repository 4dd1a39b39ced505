//! `nfluactl repl STATE` driven through a pseudo-terminal, as a person at a keyboard would:
//! expressions print their values, statements print nothing, a function typed over several
//! lines is completed, errors show their text, the up arrow brings back the last chunk, and the
//! state keeps what the prompt defined (seen through `execute`).

#![allow(unsafe_code)] // libc calls the tests need (sockets, signals, namespaces)

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, Daemon};

/// A program on the slave side of a new pseudo-terminal; we hold the master.
struct Terminal {
    master: File,
    child: Child,
    /// Everything the program wrote, escape sequences removed.
    seen: String,
}

impl Terminal {
    fn spawn(cmd: &mut Command) -> Terminal {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two descriptors we then own; the other arguments may be null.
        let rc = unsafe {
            libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: fresh descriptors from openpty, owned here only.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let child = cmd
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("spawn on the terminal");
        // SAFETY: plain fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Terminal { master: File::from(master), child, seen: String::new() }
    }

    /// Reads until the output seen so far contains `text` (at most 10 s).
    fn expect(&mut self, text: &str) {
        let started = Instant::now();
        while !self.seen.contains(text) {
            assert!(started.elapsed() < Duration::from_secs(10), "no {text:?} in {:?}", self.seen);
            let mut buf = [0u8; 4096];
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => self.seen.push_str(&strip_escapes(&String::from_utf8_lossy(&buf[..n]))),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Types `keys` (a line ends with "\r", as the Enter key sends it).
    fn type_keys(&mut self, keys: &str) {
        self.seen.clear();
        self.master.write_all(keys.as_bytes()).expect("type");
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text without terminal control sequences (ESC [ ... letter) and carriage returns.
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() || c == '~' {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn a_prompt_into_a_state_through_a_terminal() {
    let d = Daemon::start();
    d.create("web");
    d.execute("web", "base = 40").unwrap();
    let home = std::env::temp_dir().join(format!("nflua-repl-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("home");
    let mut term =
        Terminal::spawn(Command::new(bin("nfluactl")).env("HOME", &home).env("TERM", "xterm").args([
            "--port",
            &d.port.to_string(),
            "repl",
            "web",
        ]));
    term.expect("ctrl-D leaves");
    term.expect("> ");
    term.type_keys("base + 2\r");
    term.expect("\n42\n");
    term.type_keys("x = 10\r");
    term.expect("> ");
    term.type_keys("x * 2, 'a', nil\r");
    term.expect("20\ta\tnil\n");
    // A function over three lines: the prompt asks for more until it is complete.
    term.type_keys("function add(a)\r");
    term.expect(">> ");
    term.type_keys("return a + x\r");
    term.expect(">> ");
    term.type_keys("end\r");
    term.expect("> ");
    term.type_keys("add(5)\r");
    term.expect("\n15\n");
    term.type_keys("error('boom')\r");
    term.expect("stdin:1: boom");
    term.type_keys("while true do end\r");
    term.expect("instruction limit exceeded");
    // The up arrow brings back the last chunk but one (history), Enter runs it again.
    term.type_keys("\u{1b}[A\u{1b}[A\r");
    term.expect("stdin:1: boom");
    // ctrl-D at an empty prompt leaves.
    term.type_keys("\u{4}");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = term.child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "repl did not leave on ctrl-D");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // What the prompt defined lives in the state.
    d.execute("web", "assert(add(1) == 11 and x == 10)").unwrap();
    let history = std::fs::read_to_string(home.join(".nfluactl_history")).unwrap_or_default();
    assert!(history.contains("base + 2"), "{history}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_prompt_into_a_missing_state_says_so() {
    let d = Daemon::start();
    let out = d.ctl(&["repl", "ghost"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(crate::util::text(&out.stderr).trim(), "nfluactl: state 'ghost' not found");
}
