//! UDP counting sink of the packet benchmark: `recvmmsg` batches, counts datagrams.
//!
//! ```text
//! nflua-bench-sink --bind ADDR:PORT [--idle-ms MS] [--timeout-ms MS] [--rcvbuf BYTES]
//! ```
//!
//! Prints `ready` once bound, then `received N secs S` (S = first to last datagram) after
//! `--idle-ms` (default 300) without a datagram once one arrived, or `--timeout-ms`
//! (default 10000) in all.

#![allow(unsafe_code)] // libc calls (sockets, signals, namespaces, CPU clocks)

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

const BATCH: usize = 256;
/// Datagrams are at most a 1500-byte MTU here; truncation would not matter
/// for counting anyway.
const SLOT: usize = 2048;

fn main() -> anyhow::Result<()> {
    let (mut bind, mut idle_ms, mut timeout_ms, mut rcvbuf) = (None, 300u64, 10_000u64, 32i32 << 20);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bind" => {
                bind = Some(value.parse::<SocketAddrV4>().with_context(|| format!("--bind {value}"))?)
            }
            "--idle-ms" => idle_ms = value.parse()?,
            "--timeout-ms" => timeout_ms = value.parse()?,
            "--rcvbuf" => rcvbuf = value.parse()?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    let bind = bind.context("--bind is required")?;
    let socket = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    let fd = socket.as_raw_fd();
    // A large buffer (FORCE: above rmem_max, we run as root) so that the sink's
    // own scheduling hiccups are not counted as loss of the path under test.
    // SAFETY: setsockopt with a pointer to a live i32 and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&rcvbuf as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        eprintln!("nflua-bench-sink: SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    }
    socket.set_read_timeout(Some(Duration::from_millis(50))).context("SO_RCVTIMEO")?;

    let mut bufs = vec![0u8; BATCH * SLOT];
    let mut iovs: Vec<libc::iovec> = bufs
        .chunks_mut(SLOT)
        .map(|c| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: SLOT })
        .collect();
    // SAFETY: mmsghdr is plain data; zeroed means no name and no control data.
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();

    println!("ready");
    let start = Instant::now();
    let (idle, timeout) = (Duration::from_millis(idle_ms), Duration::from_millis(timeout_ms));
    let (mut first, mut last) = (None::<Instant>, start);
    let mut received = 0u64;
    loop {
        let now = Instant::now();
        if now.duration_since(start) >= timeout || (first.is_some() && now.duration_since(last) >= idle) {
            break;
        }
        // SAFETY: `msgs` holds BATCH headers pointing into `bufs`, which outlives the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r > 0 {
            received += r as u64;
            last = Instant::now();
            first.get_or_insert(last);
        }
        if r >= 0 {
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => {}
            _ => return Err(e).context("recvmmsg"),
        }
    }
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    drop(msgs);
    drop(iovs);
    println!("received {received} secs {secs:.6}");
    Ok(())
}
