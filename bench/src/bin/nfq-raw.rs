//! `nfq-raw`: the raw NFQUEUE baseline of the packet benchmark, paths (b) and (b1). A minimal
//! accept loop on a bare `NETLINK_NETFILTER` socket, on purpose independent of our own NFQUEUE
//! crate, so that it measures the kernel interface and not our code: bind the queue (full
//! copies, GSO, no fail-open), receive with `recvmmsg` up to 32 messages per call (yielding the
//! core a few times before it blocks, see [`SPINS`]), accept.
//!
//! ```text
//! nfq-raw --queue N [--single] [--batch N] [--max-len N] [--seconds S]
//! ```
//!
//! Batched (the default): one `NFQNL_MSG_VERDICT_BATCH` per receive call, accepting every packet
//! up to the highest id received, so at most `--batch` (32) packets per verdict message.
//! `--single`: one `NFQNL_MSG_VERDICT` message (one `send`) per packet.
//! Prints `ready queue N` once bound; runs until SIGTERM or SIGINT, or `--seconds` (default 3600),
//! then prints its counts to stderr. Exit status 0, or 1 on an error.

#![allow(unsafe_code)] // libc calls (sockets, signals, namespaces, CPU clocks)

use std::io::{self, Write};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// nfnetlink subsystem of NFQUEUE, and its message types (linux/netfilter/nfnetlink_queue.h).
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_GSO: u32 = 1 << 2;
const NF_ACCEPT: u32 = 1;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
/// nlmsghdr and nfgenmsg.
const HEADERS: usize = NLMSG_HDRLEN + 4;

/// Bytes per receive slot: a whole GSO packet (64 KiB) and its headers.
const SLOT: usize = 65_536 + 1024;
const MAX_SLOTS: usize = 64;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

struct Args {
    queue: u16,
    single: bool,
    batch: usize,
    max_len: u32,
    seconds: f64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args { queue: 0, single: false, batch: 32, max_len: 4096, seconds: 3600.0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--single" {
            a.single = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--queue" => a.queue = value.parse().context("--queue")?,
            "--batch" => a.batch = value.parse().context("--batch")?,
            "--max-len" => a.max_len = value.parse().context("--max-len")?,
            "--seconds" => a.seconds = value.parse().context("--seconds")?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    anyhow::ensure!((1..=MAX_SLOTS).contains(&a.batch), "--batch: 1 to {MAX_SLOTS}");
    Ok(a)
}

/// Appends a netlink attribute, padded to 4 bytes.
fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + (4 - len % 4) % 4, 0);
}

/// Starts a message of NFQUEUE type `kind` for `queue` (header length filled in by `finish`).
fn start(buf: &mut Vec<u8>, kind: u16, flags: u16, queue: u16) {
    buf.clear();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    // Sequence number and port (0: the kernel's).
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family AF_UNSPEC, version 0, queue number big-endian.
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&queue.to_be_bytes());
}

fn finish(buf: &mut [u8]) {
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
}

fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: sends `buf` (initialised bytes we own) on our socket; the kernel is the default
    // destination of a netlink socket bound to no peer.
    let n = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Sends a config message and waits for its acknowledgement.
fn configure(fd: &OwnedFd, buf: &mut Vec<u8>, queue: u16, attrs: &[(u16, &[u8])]) -> anyhow::Result<()> {
    start(buf, NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue);
    for (kind, payload) in attrs {
        put_attr(buf, *kind, payload);
    }
    finish(buf);
    send(fd, buf).context("sending a queue config")?;
    let mut reply = [0u8; 512];
    // SAFETY: receives into our own stack buffer of that length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    anyhow::ensure!(n >= 0, "receiving the config ack: {}", io::Error::last_os_error());
    let reply = &reply[..n as usize];
    match (u16_at(reply, 4), u32_at(reply, NLMSG_HDRLEN)) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(code)) => {
            let errno = -(code as i32);
            bail!("queue {queue} config refused: {}", io::Error::from_raw_os_error(errno))
        }
        _ => bail!("queue {queue}: unexpected config reply"),
    }
}

fn open(args: &Args) -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 12) };
    anyhow::ensure!(raw >= 0, "netlink socket: {}", io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a zeroed sockaddr_nl is valid; bind copies it.
    unsafe {
        let mut addr: libc::sockaddr_nl = zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        let ret = libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len);
        anyhow::ensure!(ret == 0, "bind: {}", io::Error::last_os_error());
    }
    // A large receive buffer, as nfluad's (8 MiB): bursts wait in it instead of being dropped.
    let size: libc::c_int = 8 << 20;
    // A receive timeout, so the loop sees a stop signal within 100 ms.
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    // SAFETY: setsockopt with pointers to live values of the sizes given.
    unsafe {
        let opt = |name, value: *const libc::c_void, len: usize| {
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, name, value, len as libc::socklen_t)
        };
        opt(libc::SO_RCVBUFFORCE, (&raw const size).cast(), size_of::<libc::c_int>());
        opt(libc::SO_RCVTIMEO, (&raw const timeout).cast(), size_of::<libc::timeval>());
    }
    let mut buf = Vec::with_capacity(128);
    let q = args.queue;
    configure(&fd, &mut buf, q, &[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])])?;
    let mut params = 0xFFFFu32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_PACKET);
    let gso = NFQA_CFG_F_GSO.to_be_bytes();
    configure(
        &fd,
        &mut buf,
        q,
        &[
            (NFQA_CFG_PARAMS, &params),
            (NFQA_CFG_QUEUE_MAXLEN, &args.max_len.to_be_bytes()),
            (NFQA_CFG_MASK, &gso),
            (NFQA_CFG_FLAGS, &gso),
        ],
    )?;
    Ok(fd)
}

/// The packet id of an NFQUEUE packet message, or `None` for anything else.
fn packet_id(msg: &[u8]) -> Option<u32> {
    if u16_at(msg, 4)? != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
        return None;
    }
    let mut at = HEADERS;
    while at + 4 <= msg.len() {
        let len = usize::from(u16_at(msg, at)?);
        let kind = u16_at(msg, at + 2)? & 0x3FFF;
        if len < 4 {
            return None;
        }
        if kind == NFQA_PACKET_HDR {
            // struct nfqnl_msg_packet_hdr { be32 packet_id; be16 hw_protocol; u8 hook; }
            return Some(u32::from_be_bytes(msg.get(at + 4..at + 8)?.try_into().ok()?));
        }
        at += (len + 3) & !3;
    }
    None
}

/// Counts of one run.
#[derive(Default)]
struct Counts {
    packets: u64,
    verdict_messages: u64,
    overflows: u64,
}

/// Builds an accept verdict message of type `kind` (single or batch) for packet `id`.
fn accept_message(buf: &mut Vec<u8>, kind: u16, queue: u16, id: u32) {
    start(buf, kind, NLM_F_REQUEST, queue);
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    put_attr(buf, NFQA_VERDICT_HDR, &hdr);
    finish(buf);
}

fn accept(fd: &OwnedFd, buf: &mut Vec<u8>, kind: u16, queue: u16, id: u32) -> io::Result<()> {
    accept_message(buf, kind, queue, id);
    send(fd, buf)
}

/// Non-blocking receive attempts, with a `sched_yield` between them, before the loop blocks.
/// Blocking as soon as the queue is empty put the consumer to sleep every 8 packets (64-byte
/// runs), and every wake-up is an interrupt from the sender's core to ours, which on a VM exits
/// to the hypervisor: the sender, which runs the receive path too, lost a quarter of its rate
/// (195k packets/s against 263k with the yields; 1 sleep per 1000 packets).
const SPINS: usize = 10;

/// `recvmmsg` into `msgs` (set up by the caller): up to [`SPINS`] tries without waiting, then
/// one that waits for a message (or the 100 ms timeout) and takes what else is queued. Returns
/// what `recvmmsg` returned.
fn receive(fd: &OwnedFd, msgs: &mut [libc::mmsghdr]) -> libc::c_int {
    let mut call = |flags| {
        // SAFETY: the caller pointed `msgs` at buffers alive and exclusively borrowed for the
        // call; a null timeout means none beyond the socket's.
        unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                flags,
                ptr::null_mut(),
            )
        }
    };
    for _ in 0..SPINS {
        let n = call(libc::MSG_DONTWAIT);
        if n > 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
            return n;
        }
        // SAFETY: no arguments; at worst returns at once.
        unsafe { libc::sched_yield() };
    }
    call(libc::MSG_WAITFORONE)
}

fn run(args: &Args, fd: &OwnedFd) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let mut rx = vec![0u8; SLOT * args.batch];
    let mut out = Vec::with_capacity(64);
    // Set up once: `rx` is never resized, so the slots stay where `iov` points, and the kernel
    // only writes each message's length (and flags) back.
    // SAFETY (both): arrays of plain C data, valid when zeroed; pointers are set below.
    let mut iov: [libc::iovec; MAX_SLOTS] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; MAX_SLOTS] = unsafe { zeroed() };
    for (i, chunk) in rx.chunks_exact_mut(SLOT).enumerate() {
        iov[i] = libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: SLOT };
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    while !STOP.load(Ordering::Relaxed) && Instant::now() < deadline {
        let n = receive(fd, &mut msgs[..args.batch]);
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                // The socket buffer overflowed: those packets are lost (no fail-open here).
                Some(libc::ENOBUFS) => {
                    counts.overflows += 1;
                    continue;
                }
                _ => return Err(e).context("recvmmsg"),
            }
        }
        let mut highest = None;
        for (i, msg) in msgs.iter().take(n as usize).enumerate() {
            let datagram = &rx[i * SLOT..i * SLOT + (msg.msg_len as usize).min(SLOT)];
            // One packet message per datagram; an error message (a refused verdict) is skipped.
            let Some(id) = packet_id(datagram) else { continue };
            counts.packets += 1;
            if args.single {
                accept(fd, &mut out, NFQNL_MSG_VERDICT, args.queue, id).context("verdict")?;
                counts.verdict_messages += 1;
            } else {
                highest = Some(highest.map_or(id, |h: u32| h.max(id)));
            }
        }
        if let Some(id) = highest {
            accept(fd, &mut out, NFQNL_MSG_VERDICT_BATCH, args.queue, id).context("batch verdict")?;
            counts.verdict_messages += 1;
        }
    }
    Ok(counts)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let fd = open(&args)?;
    println!("ready queue {}", args.queue);
    io::stdout().flush()?;
    let counts = run(&args, &fd)?;
    eprintln!(
        "nfq-raw: {} packets, {} verdict messages, {} receive overflows",
        counts.packets, counts.verdict_messages, counts.overflows
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet message for queue 0 with packet id `id`, and an attribute before the header
    /// one (as the kernel may order them).
    fn packet_message(id: u32) -> Vec<u8> {
        let mut m = Vec::new();
        start(&mut m, NFQNL_MSG_PACKET, 0, 0);
        put_attr(&mut m, 9, &[1, 2, 3]); // NFQA_MARK-like, padded
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 1]);
        put_attr(&mut m, NFQA_PACKET_HDR, &hdr);
        finish(&mut m);
        m
    }

    #[test]
    fn packet_ids_are_read_past_other_attributes() {
        assert_eq!(packet_id(&packet_message(77)), Some(77));
    }

    #[test]
    fn other_and_broken_messages_have_no_id() {
        let mut verdict = Vec::new();
        start(&mut verdict, NFQNL_MSG_VERDICT, 0, 0);
        finish(&mut verdict);
        assert_eq!(packet_id(&verdict), None);
        let whole = packet_message(5);
        for cut in 0..whole.len() {
            // Never panics, and an id only when its header attribute is all there.
            let id = packet_id(&whole[..cut]);
            assert!(id.is_none() || cut >= whole.len() - 4, "cut {cut}: {id:?}");
        }
        let mut zero_len = whole.clone();
        zero_len[HEADERS..HEADERS + 2].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(packet_id(&zero_len), None);
    }

    #[test]
    fn verdict_messages_carry_length_queue_and_verdict() {
        let mut m = Vec::new();
        accept_message(&mut m, NFQNL_MSG_VERDICT_BATCH, 3, 42);
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(u16_at(&m, 4), Some((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT_BATCH));
        assert_eq!(&m[18..20], &3u16.to_be_bytes());
        assert_eq!(u16_at(&m, HEADERS + 2), Some(NFQA_VERDICT_HDR));
        assert_eq!(&m[HEADERS + 4..HEADERS + 12], &[0, 0, 0, 1, 0, 0, 0, 42]);
    }
}
