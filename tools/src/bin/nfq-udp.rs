//! Sends or counts UDP datagrams, for the NFQUEUE tests and benchmarks.
//!
//! ```text
//! nfq-udp send --to ADDR:PORT --count N [--size BYTES] [--interval-us US]
//! nfq-udp recv --bind ADDR:PORT [--count N] [--idle-ms MS] [--timeout-ms MS] [--dump]
//! ```
//!
//! Each datagram starts with its sequence number (u64, big endian), then `0x5A` bytes up to
//! `--size` (at least 8). `send` prints `sent N`. `recv` prints `ready` once bound, with
//! `--dump` a line `data <hex>` per datagram, and `received N` at the end; it stops after
//! `--count` datagrams, `--idle-ms` (default 1000) without one, or `--timeout-ms` (default
//! 10000) in all.

use std::net::UdpSocket;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn value(name: &str, it: &mut impl Iterator<Item = String>) -> Result<String, String> {
    it.next().ok_or_else(|| format!("{name} needs a value"))
}

fn number<T: std::str::FromStr>(name: &str, it: &mut impl Iterator<Item = String>) -> Result<T, String> {
    let v = value(name, it)?;
    v.parse().map_err(|_| format!("{name}: bad number {v:?}"))
}

fn send(mut it: impl Iterator<Item = String>) -> Result<(), String> {
    let (mut to, mut count, mut size, mut interval) = (None, 1u64, 64usize, 0u64);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--to" => to = Some(value(&flag, &mut it)?),
            "--count" => count = number(&flag, &mut it)?,
            "--size" => size = number(&flag, &mut it)?,
            "--interval-us" => interval = number(&flag, &mut it)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let to = to.ok_or("--to is required")?;
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    socket.connect(&to).map_err(|e| format!("connect {to}: {e}"))?;
    let mut datagram = vec![0x5A; size.max(8)];
    let mut sent = 0u64;
    for seq in 0..count {
        datagram[..8].copy_from_slice(&seq.to_be_bytes());
        match socket.send(&datagram) {
            Ok(_) => sent += 1,
            // A full device queue (ENOBUFS), or an earlier datagram's ICMP port unreachable
            // reported on this send: not sent; go on, the loop is bounded by `count`.
            Err(e)
                if e.raw_os_error() == Some(105)
                    || matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused
                    ) => {}
            Err(e) => return Err(format!("send: {e}")),
        }
        if interval > 0 {
            std::thread::sleep(Duration::from_micros(interval));
        }
    }
    println!("sent {sent}");
    Ok(())
}

fn recv(mut it: impl Iterator<Item = String>) -> Result<(), String> {
    let (mut bind, mut count, mut idle_ms, mut timeout_ms, mut dump) =
        (None, 0u64, 1000u64, 10_000u64, false);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--bind" => bind = Some(value(&flag, &mut it)?),
            "--count" => count = number(&flag, &mut it)?,
            "--idle-ms" => idle_ms = number(&flag, &mut it)?,
            "--timeout-ms" => timeout_ms = number(&flag, &mut it)?,
            "--dump" => dump = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let bind = bind.ok_or("--bind is required")?;
    let socket = UdpSocket::bind(&bind).map_err(|e| format!("bind {bind}: {e}"))?;
    socket.set_read_timeout(Some(Duration::from_millis(50))).map_err(|e| format!("timeout: {e}"))?;
    println!("ready");
    let start = Instant::now();
    let mut last = start;
    let mut received = 0u64;
    let mut buf = vec![0u8; 65536];
    while (count == 0 || received < count)
        && last.elapsed() < Duration::from_millis(idle_ms)
        && start.elapsed() < Duration::from_millis(timeout_ms)
    {
        match socket.recv(&mut buf) {
            Ok(n) => {
                received += 1;
                last = Instant::now();
                if dump {
                    let hex: String = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
                    println!("data {hex}");
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    println!("received {received}");
    Ok(())
}

fn main() -> ExitCode {
    let mut it = std::env::args().skip(1);
    let result = match it.next().as_deref() {
        Some("send") => send(it),
        Some("recv") => recv(it),
        _ => Err("usage: nfq-udp send|recv ...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nfq-udp: {e}");
            ExitCode::from(2)
        }
    }
}
