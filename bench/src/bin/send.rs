//! UDP traffic source of the packet benchmark: `sendmmsg` batches from one
//! connected socket per source address, optionally paced.
//!
//! ```text
//! nflua-bench-send --to ADDR:PORT --from IP[,IP...] --size BYTES --count N --seconds S
//!                  [--rate PPS] [--batch N]
//! ```
//!
//! Stops after `--count` datagrams or `--seconds`, whichever comes first. Without `--rate`
//! (or with 0) it sends as fast as the kernel takes them. Prints `sent N secs S` at the end.
//! Several source addresses exist because the kernel's `--queue-balance` hashes addresses,
//! not ports: batches rotate over the sockets so every queue gets a share.

#![allow(unsafe_code)] // libc calls (sockets, signals, namespaces, CPU clocks)

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

struct Args {
    to: SocketAddrV4,
    from: Vec<Ipv4Addr>,
    size: usize,
    count: u64,
    seconds: f64,
    rate: u64,
    batch: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut to = None;
    let mut a = Args {
        to: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        from: Vec::new(),
        size: 64,
        count: 1_000_000,
        seconds: 2.0,
        rate: 0,
        batch: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--to" => to = Some(value.parse().with_context(|| format!("--to {value}"))?),
            "--from" => {
                for ip in value.split(',') {
                    a.from.push(ip.parse().with_context(|| format!("--from {ip}"))?);
                }
            }
            "--size" => a.size = value.parse()?,
            "--count" => a.count = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--rate" => a.rate = value.parse()?,
            "--batch" => a.batch = value.parse()?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    a.to = to.context("--to is required")?;
    if a.from.is_empty() {
        a.from.push(Ipv4Addr::UNSPECIFIED);
    }
    a.batch = a.batch.clamp(1, 1024);
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Pacing sleeps are a few hundred microseconds; the default 50 µs timer
    // slack would add a systematic error to every one of them.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };

    let mut sockets = Vec::new();
    for ip in &args.from {
        let s = UdpSocket::bind(SocketAddrV4::new(*ip, 0)).with_context(|| format!("bind {ip}"))?;
        s.connect(args.to).with_context(|| format!("connect {}", args.to))?;
        sockets.push(s);
    }

    // Paced: about one batch per 200 µs, so bursts stay far below the
    // receiving backlog (netdev_max_backlog, 1000 by default).
    let batch =
        if args.rate > 0 { (args.rate / 5000).clamp(1, args.batch as u64) as usize } else { args.batch };
    let mut payload = vec![0x5Au8; args.size.max(8)];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
    // SAFETY: mmsghdr is plain data; all-zero is a valid "no name, no control" header.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch)
        .map(|_| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();

    let start = Instant::now();
    let limit = Duration::from_secs_f64(args.seconds);
    let mut sent = 0u64;
    let mut round = 0usize;
    while sent < args.count {
        let now = Instant::now();
        if now.duration_since(start) >= limit {
            break;
        }
        if args.rate > 0 {
            // Absolute schedule: a late batch is followed by one sent at once,
            // so the average rate holds without drifting.
            let due = start + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let n = batch.min((args.count - sent) as usize);
        let fd = sockets[round % sockets.len()].as_raw_fd();
        round += 1;
        // SAFETY: `msgs` holds `n` initialised headers pointing at `iov`/`payload`, which
        // outlive the call.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if r >= 0 {
            sent += r as u64;
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            // Full device queue, or an ICMP error of an earlier datagram reported
            // here: nothing sent this round; the loop is bounded by time anyway.
            Some(libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED | libc::EINTR) => {}
            _ => return Err(e).context("sendmmsg"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(msgs);
    println!("sent {sent} secs {secs:.6}");
    Ok(())
}
