//! Two network namespaces joined by a veth pair, made by a test and deleted
//! by name when it ends: the only place packet tests send traffic.
//!
//! Namespace `a` (192.0.2.1, 2001:db8::1) sends; namespace `b` (192.0.2.2,
//! 2001:db8::2) receives and runs nfluad and the iptables rules.

#![allow(unsafe_code)] // libc calls the tests need (sockets, signals, namespaces)

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::util::text;

/// The rule guard of a match hook: packets nflua has not evaluated yet go to the queue.
pub const GUARD: &str = "-m mark ! --mark 0x10000000/0x10000000";
/// Packets a match hook matched (the default MATCH mark).
pub const MATCHED: &str = "-m mark --mark 0x20000000/0x20000000";

pub const ADDR_A: &str = "192.0.2.1";
pub const ADDR_B: &str = "192.0.2.2";
pub const ADDR6_A: &str = "2001:db8::1";
pub const ADDR6_B: &str = "2001:db8::2";

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct NetPair {
    pub a: String,
    pub b: String,
    /// The veth end in `a`.
    dev_a: String,
    /// The veth end in `b`.
    pub dev_b: String,
}

fn run(cmd: &[&str]) -> Output {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out.stderr));
    out
}

impl NetPair {
    /// Creates the pair, or returns `None` (after saying so) without root.
    pub fn new(test: &str) -> Option<NetPair> {
        if !crate::util::have_root(test) {
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}", std::process::id() % 100_000, n);
        let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
        let pair = NetPair {
            a: format!("nflua-{tag}-a"),
            b: format!("nflua-{tag}-b"),
            dev_a: va.clone(),
            dev_b: vb.clone(),
        };
        run(&["ip", "netns", "add", &pair.a]);
        run(&["ip", "netns", "add", &pair.b]);
        run(&[
            "ip", "link", "add", &va, "netns", &pair.a, "type", "veth", "peer", "name", &vb, "netns", &pair.b,
        ]);
        for (ns, dev, v4, v6) in [(&pair.a, &va, ADDR_A, ADDR6_A), (&pair.b, &vb, ADDR_B, ADDR6_B)] {
            run(&["ip", "-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            run(&["ip", "-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        Some(pair)
    }

    /// Appends an iptables rule in `b` (words as one string, split on spaces).
    pub fn iptables(&self, rule: &str) {
        let mut cmd = vec!["ip", "netns", "exec", &self.b, "iptables"];
        cmd.extend(rule.split_whitespace());
        run(&cmd);
    }

    pub fn ip6tables(&self, rule: &str) {
        let mut cmd = vec!["ip", "netns", "exec", &self.b, "ip6tables"];
        cmd.extend(rule.split_whitespace());
        run(&cmd);
    }

    /// Makes `a` send every TCP segment as its own packet (no GSO super-packets, which NFQUEUE
    /// would deliver whole): what a sender on a path without offloads puts on the wire.
    pub fn segment_in_a(&self) {
        run(&["ip", "-n", &self.a, "link", "set", &self.dev_a, "gso_max_segs", "1"]);
    }

    /// A command run in namespace `b` (which must succeed).
    pub fn run_b(&self, cmd: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.b];
        all.extend_from_slice(cmd);
        run(&all)
    }

    /// A command run in namespace `a`.
    pub fn exec_a(&self, cmd: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.a]).args(cmd).output().expect("ip netns exec")
    }

    /// A command run in namespace `b`.
    pub fn exec_b(&self, cmd: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.b]).args(cmd).output().expect("ip netns exec")
    }

    /// A UDP socket bound in `b` on `port` (IPv4), with a receive timeout.
    pub fn udp_listener(&self, port: u16) -> UdpSocket {
        let s = in_netns(&self.b, move || UdpSocket::bind((ADDR_B, port)).expect("bind udp"));
        s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        s
    }

    /// A UDP socket in `a` bound to `src_port` (0: any).
    pub fn udp_sender(&self, src_port: u16) -> UdpSocket {
        self.udp_sender_from(ADDR_A, src_port)
    }

    /// A UDP socket in `a` bound to `addr` (added with [`NetPair::add_addr_a`]).
    pub fn udp_sender_from(&self, addr: &str, src_port: u16) -> UdpSocket {
        let addr = addr.to_owned();
        in_netns(&self.a, move || UdpSocket::bind((addr.as_str(), src_port)).expect("bind udp sender"))
    }

    /// Gives `a` one more IPv4 address on the same subnet.
    pub fn add_addr_a(&self, addr: &str) {
        run(&["ip", "-n", &self.a, "addr", "add", &format!("{addr}/24"), "dev", &self.dev_a]);
    }

    pub fn tcp_listener(&self, port: u16) -> TcpListener {
        in_netns(&self.b, move || TcpListener::bind((ADDR_B, port)).expect("bind tcp"))
    }

    pub fn tcp_connect(&self, port: u16) -> TcpStream {
        let addr: SocketAddr = format!("{ADDR_B}:{port}").parse().expect("addr");
        let s = in_netns(&self.a, move || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect")
        });
        s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        s
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth end, and with it the peer.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a thread that joined network namespace `ns`; sockets made
/// there keep that namespace wherever they are used afterwards.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on a namespace file we hold open; it affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

/// Sends each payload once and returns those that arrived, in order.
pub fn udp_exchange(from: &UdpSocket, to: &UdpSocket, payloads: &[&str]) -> Vec<String> {
    let dst = to.local_addr().expect("addr");
    for p in payloads {
        from.send_to(p.as_bytes(), dst).expect("send");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    // Bounded: one datagram per payload at most, each read waits 500 ms.
    for _ in 0..payloads.len() {
        match to.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    got
}
