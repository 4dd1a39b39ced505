//! Stream-hook benchmark (bench/stream.sh creates the namespaces): short HTTP connections per
//! second through nfluad's stream hook running the shipped HTTP blocklist, and the throughput of
//! one accepted (offloaded) upload, each against the kernel path without a queue, measured in
//! turn in the same run.
//!
//! ```text
//! nflua-bench-stream --ns-a NAME --ns-b NAME [--seconds S] [--rounds N] [--clients K]
//! ```
//!
//! Servers run in `b` (192.0.2.2), clients in `a`, on threads that joined the namespaces. The
//! nfluad path gets exactly the iptables rules `hook add --stream` prints (connmark offload
//! included); between paths the INPUT chain of `b` is flushed and nfluad stopped.

#![allow(unsafe_code)] // libc calls (sockets, signals, namespaces, CPU clocks)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const ADDR_B: &str = "192.0.2.2";
const HTTP_PORT: u16 = 8080;
const BULK_PORT: u16 = 8081;
const DAEMON_PORT: &str = "0x6e666c62";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: fine.example\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n";

struct Args {
    ns_a: String,
    ns_b: String,
    seconds: f64,
    rounds: usize,
    clients: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { ns_a: String::new(), ns_b: String::new(), seconds: 2.0, rounds: 3, clients: 4 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ns-a" => a.ns_a = value,
            "--ns-b" => a.ns_b = value,
            "--seconds" => a.seconds = value.parse().context("--seconds")?,
            "--rounds" => a.rounds = value.parse().context("--rounds")?,
            "--clients" => a.clients = value.parse().context("--clients")?,
            other => bail!("unknown option {other}"),
        }
    }
    anyhow::ensure!(!a.ns_a.is_empty() && !a.ns_b.is_empty(), "--ns-a and --ns-b are required");
    Ok(a)
}

/// Runs `f` on a thread that joined namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on a namespace file held open; it changes only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable directory")?;
    Ok(dir.join(name))
}

fn run_in(ns: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(["netns", "exec", ns, program]).args(args).output()?;
    if !out.status.success() {
        bail!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Servers in `b`: HTTP (answer each request head, close) and bulk (count bytes to EOF).
fn start_servers(ns_b: &str, stop: Arc<AtomicBool>, received: Arc<AtomicU64>) {
    let stop_http = Arc::clone(&stop);
    in_netns(ns_b, move || {
        let listener = TcpListener::bind((ADDR_B, HTTP_PORT)).expect("bind http");
        listener.set_nonblocking(true).expect("nonblocking");
        while !stop_http.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    std::thread::spawn(move || {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut seen = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = conn.write_all(RESPONSE);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    });
    in_netns(ns_b, move || {
        let listener = TcpListener::bind((ADDR_B, BULK_PORT)).expect("bind bulk");
        listener.set_nonblocking(true).expect("nonblocking");
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let received = Arc::clone(&received);
                    std::thread::spawn(move || {
                        let _ = conn.set_nonblocking(false);
                        let mut buf = vec![0u8; 1 << 16];
                        while let Ok(n) = conn.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            received.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
}

/// Short connections from `clients` threads in `a` for `seconds`: connections completed per second.
fn connections_per_second(ns_a: &str, clients: usize, seconds: f64) -> f64 {
    let addr: SocketAddr = format!("{ADDR_B}:{HTTP_PORT}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let done: u64 = (0..clients)
        .map(|_| {
            in_netns(ns_a, move || {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    if s.write_all(REQUEST).is_err() {
                        continue;
                    }
                    let mut answer = Vec::new();
                    if s.read_to_end(&mut answer).is_ok() && answer.ends_with(b"hello\n") {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap_or(0))
        .sum();
    done as f64 / started.elapsed().as_secs_f64()
}

/// One upload from `a` for `seconds`, after an HTTP request head (so the stream hook decides
/// it at once): bytes per second the server received.
fn bulk(ns_a: &str, seconds: f64, received: &AtomicU64) -> f64 {
    let before = received.load(Ordering::Relaxed);
    let addr: SocketAddr = format!("{ADDR_B}:{BULK_PORT}").parse().expect("addr");
    let started = Instant::now();
    in_netns(ns_a, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect bulk");
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: fine.example\r\n\r\n").expect("head");
        let chunk = vec![b'x'; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        while Instant::now() < deadline {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
    })
    .join()
    .expect("bulk client");
    // The last bytes land just after the writer returns.
    std::thread::sleep(Duration::from_millis(100));
    (received.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64()
}

/// nfluad in `b` with the HTTP blocklist as a stream hook on both ports, its printed rules added.
fn start_nfluad(ns_b: &str) -> anyhow::Result<Child> {
    let daemon = Command::new("ip")
        .args(["netns", "exec", ns_b])
        .arg(sibling("nfluad")?)
        .args(["--port", DAEMON_PORT, "--log", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .context("start nfluad")?;
    let ctl = sibling("nfluactl")?;
    let ctl = ctl.to_str().context("path")?.to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while run_in(ns_b, &ctl, &["--port", DAEMON_PORT, "list"]).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nfluad did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let filter = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/http-blocklist/filter.lua");
    run_in(
        ns_b,
        &ctl,
        &["--port", DAEMON_PORT, "create", "web", "--instructions", "200000", "--memory", "1048576"],
    )?;
    run_in(ns_b, &ctl, &["--port", DAEMON_PORT, "execute", "web", filter])?;
    run_in(ns_b, &ctl, &["--port", DAEMON_PORT, "send", "web", "add blocked.example"])?;
    let rule = format!("-p tcp -m multiport --dports {HTTP_PORT},{BULK_PORT}");
    let printed = run_in(
        ns_b,
        &ctl,
        &[
            "--port",
            DAEMON_PORT,
            "hook",
            "add",
            "--queue",
            "0",
            "--state",
            "web",
            "--function",
            "filter",
            "--mode",
            "target",
            "--stream",
            "--rule",
            &rule,
        ],
    )?;
    for line in printed.lines().filter_map(|l| l.strip_prefix("iptables ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        run_in(ns_b, "iptables", &words)?;
    }
    Ok(daemon)
}

fn stop_nfluad(ns_b: &str, mut daemon: Child) -> anyhow::Result<()> {
    run_in(ns_b, "iptables", &["-F", "INPUT"])?;
    // SAFETY: a signal to our own child, which has not been reaped yet.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    start_servers(&a.ns_b, Arc::clone(&stop), Arc::clone(&received));
    std::thread::sleep(Duration::from_millis(200));
    let (mut cps_kernel, mut cps_stream, mut bulk_kernel, mut bulk_stream) = (vec![], vec![], vec![], vec![]);
    for round in 1..=a.rounds {
        eprintln!("round {round}/{}: kernel path", a.rounds);
        cps_kernel.push(connections_per_second(&a.ns_a, a.clients, a.seconds));
        bulk_kernel.push(bulk(&a.ns_a, a.seconds, &received));
        eprintln!("round {round}/{}: nfluad stream hook (http-blocklist, offload rules)", a.rounds);
        let daemon = start_nfluad(&a.ns_b)?;
        cps_stream.push(connections_per_second(&a.ns_a, a.clients, a.seconds));
        bulk_stream.push(bulk(&a.ns_a, a.seconds, &received));
        stop_nfluad(&a.ns_b, daemon)?;
    }
    stop.store(true, Ordering::Relaxed);
    let (ck, cs, bk, bs) = (median(cps_kernel), median(cps_stream), median(bulk_kernel), median(bulk_stream));
    println!();
    println!(
        "== stream hooks: medians of {} rounds of {} s, {} client threads; kernel path = no queue",
        a.rounds, a.seconds, a.clients
    );
    println!("{:<44} {:>14} {:>14} {:>7}", "", "kernel path", "stream hook", "ratio");
    println!("{:<44} {:>14.0} {:>14.0} {:>7.2}", "short HTTP connections per second", ck, cs, cs / ck);
    let verdict = if bs / bk >= 0.9 { "met" } else { "MISSED" };
    println!(
        "{:<44} {:>12.0}MB {:>12.0}MB {:>7.2}   target >= 0.9: {verdict}",
        "accepted upload, offloaded (MB/s)",
        bk / 1e6,
        bs / 1e6,
        bs / bk
    );
    Ok(())
}
