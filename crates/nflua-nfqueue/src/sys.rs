//! Every system call of the crate: a `NETLINK_NETFILTER` socket, its options, `poll`,
//! `recvmmsg` (through [`RecvSlots`], set up once) and `sendmsg`. Each function is a thin,
//! typed, safe wrapper.
//!
//! # Safety
//!
//! All `unsafe` of the crate is in this module. Each block passes the C library pointers to
//! Rust memory that is alive and borrowed for the whole call (`&`/`&mut` slices, locals, or
//! the heap arrays a [`RecvSlots`] owns and points into), with lengths taken from the same
//! objects, and the structures handed over (`sockaddr_nl`, `pollfd`, `iovec`, `msghdr`,
//! `mmsghdr`) are plain C data for which all-zero bytes are a
//! valid value. The kernel writes only within the lengths given. File descriptors come from an
//! `OwnedFd` (or a borrow of one) and so are open for the duration of each call; the only raw
//! descriptor taken over is the one `socket()` just returned.

#![allow(unsafe_code)] // talks to C: see the Safety notes

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Most datagrams one `recvmmsg` call reads.
pub(crate) const MAX_RECV_SLOTS: usize = 64;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER)` followed by
/// `bind` to a port the kernel picks. Non-blocking because waits go through [`poll_readable`]
/// with a timeout; a queue's socket is made blocking ([`set_blocking`]) to wait in `recvmmsg`.
pub(crate) fn netfilter_socket() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; a non-negative return is a fresh descriptor that we alone own.
    let fd = unsafe {
        let raw = cvt(libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_NETFILTER,
        ))?;
        OwnedFd::from_raw_fd(raw)
    };
    // SAFETY: sockaddr_nl is plain data; zero is "port chosen by the kernel, no groups".
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a live local of the size passed.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn getsockopt_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; the kernel writes at most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(fd.as_raw_fd(), level, name, (&mut value as *mut libc::c_int).cast(), &mut len)
    })?;
    Ok(value)
}

/// Sets the receive buffer: `SO_RCVBUFFORCE` (beyond `net.core.rmem_max`, needs
/// CAP_NET_ADMIN, which a queue reader has anyway), falling back to `SO_RCVBUF` when refused.
/// Returns the size the kernel actually uses (it doubles the request for bookkeeping).
pub(crate) fn set_recv_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX / 2);
    if let Err(e) = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value) {
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, value)?;
    }
    let got = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
    Ok(usize::try_from(got).unwrap_or(0))
}

/// `NETLINK_CAP_ACK`: error replies carry only the header of the failed request, not all of
/// it, so a rejected 64 KiB payload verdict does not come back as a 64 KiB error.
pub(crate) fn set_cap_ack(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1)
}

/// `poll` for readability (or a pending socket error such as ENOBUFS) for at most `timeout`,
/// rounded up to whole milliseconds so short waits do not become busy loops. `Ok(false)` on
/// timeout and on EINTR, so a signal lets the caller look at its shutdown flag.
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(libc::c_int::MAX as u128) as libc::c_int;
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd, count 1.
    match cvt(unsafe { libc::poll(&mut pfd, 1, ms) }) {
        Ok(n) => Ok(n > 0 && pfd.revents != 0),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends one datagram, gathered from `parts`, to the kernel (port 0). Several Netlink messages
/// may share the datagram; the kernel processes them in order.
pub(crate) fn send_to_kernel(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<usize> {
    // SAFETY: plain data; zero is the kernel's address (port 0, no groups).
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 4];
    let count = parts.len().min(iov.len());
    for (slot, part) in iov.iter_mut().zip(parts) {
        // The kernel only reads through iov_base here; the cast to *mut is what iovec requires.
        *slot = libc::iovec { iov_base: part.as_ptr() as *mut libc::c_void, iov_len: part.len() };
    }
    // SAFETY: plain data; every pointer field is set below.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = count as _;
    loop {
        // SAFETY: `msg` points at `addr` and `iov`, which point at the borrowed `parts`; all
        // outlive the call.
        let ret = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) };
        if ret >= 0 {
            return Ok(ret as usize);
        }
        let e = io::Error::last_os_error();
        // A signal before anything was sent: nothing happened, so just send again.
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// What `recvmmsg` reported about one datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Received {
    pub len: usize,
    /// MSG_TRUNC: the datagram was longer than its slot and was cut.
    pub truncated: bool,
    /// Sent by the kernel (port 0) rather than by another process.
    pub from_kernel: bool,
}

/// Receive slots set up once for `recvmmsg`: one buffer cut into `slots` slots of `slot_size`
/// bytes, with the `mmsghdr`/`iovec`/address arrays already pointing at them. A queue reads
/// several times per packet at low rates (the tries before it waits), and building and
/// zeroing the 64-entry arrays for every call was a visible share of its CPU there (perf,
/// 10k packets/s: `memset` and the per-call set-up 5 % of the worker thread).
///
/// Everything the arrays point at is on the heap and owned by this value, so moving it does
/// not move what the pointers refer to.
pub(crate) struct RecvSlots {
    buf: Box<[u8]>,
    slot_size: usize,
    slots: usize,
    addrs: Box<[libc::sockaddr_nl]>,
    iov: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers in `iov` and `msgs` point only into `buf`, `addrs` and `iov` of the
// same value, which it owns exclusively; nothing is shared with another thread.
unsafe impl Send for RecvSlots {}

impl RecvSlots {
    /// `slots` (at most [`MAX_RECV_SLOTS`]) slots of `slot_size` bytes, allocated once.
    pub fn new(slots: usize, slot_size: usize) -> RecvSlots {
        let slots = slots.clamp(1, MAX_RECV_SLOTS);
        let slot_size = slot_size.max(1);
        // SAFETY (all three): plain C data, valid when zeroed; the pointers are set below.
        let zero_addr = || unsafe { mem::zeroed::<libc::sockaddr_nl>() };
        let zero_iov = || unsafe { mem::zeroed::<libc::iovec>() };
        let zero_msg = || unsafe { mem::zeroed::<libc::mmsghdr>() };
        let mut this = RecvSlots {
            buf: vec![0u8; slots * slot_size].into_boxed_slice(),
            slot_size,
            slots,
            addrs: (0..slots).map(|_| zero_addr()).collect(),
            iov: (0..slots).map(|_| zero_iov()).collect(),
            msgs: (0..slots).map(|_| zero_msg()).collect(),
        };
        for (i, chunk) in this.buf.chunks_exact_mut(slot_size).enumerate() {
            this.iov[i] = libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: chunk.len() };
        }
        for i in 0..slots {
            let hdr = &mut this.msgs[i].msg_hdr;
            hdr.msg_name = (&mut this.addrs[i] as *mut libc::sockaddr_nl).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            hdr.msg_iov = &mut this.iov[i];
            hdr.msg_iovlen = 1;
        }
        this
    }

    #[cfg(test)]
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Bytes of all slots together.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The first `len` bytes of slot `index` (as much of them as the slot holds).
    pub fn slot(&self, index: usize, len: usize) -> &[u8] {
        let start = index * self.slot_size;
        &self.buf[start..start + len.min(self.slot_size)]
    }

    /// One `recvmmsg` into the slots, at most `out.len()` datagrams. Without `wait`
    /// (`MSG_DONTWAIT`) it returns 0 at once when nothing is ready; with `wait`
    /// (`MSG_WAITFORONE`, for a blocking socket) it waits for the first datagram up to the
    /// socket's receive timeout (`SO_RCVTIMEO`, see [`set_recv_timeout`]) and takes what else
    /// is ready. 0 also on timeout and on a signal. `out[..n]` describes what arrived.
    pub fn recv(&mut self, fd: BorrowedFd<'_>, out: &mut [Received], wait: bool) -> io::Result<usize> {
        let slots = out.len().min(self.slots);
        if slots == 0 {
            return Ok(0);
        }
        let flags = if wait { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT };
        // SAFETY: `msgs[..slots]` point at `addrs`, `iov` and disjoint slots of `buf`, all owned
        // by `self`, which is exclusively borrowed for the call; a null timeout means none
        // beyond the socket's own.
        let ret = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                slots as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        let n = ret as usize;
        for ((info, m), addr) in out.iter_mut().zip(self.msgs.iter_mut()).zip(self.addrs.iter()).take(n) {
            let namelen = m.msg_hdr.msg_namelen as usize;
            *info = Received {
                len: (m.msg_len as usize).min(self.slot_size),
                truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                from_kernel: namelen >= mem::size_of::<libc::sockaddr_nl>() && addr.nl_pid == 0,
            };
            // The kernel wrote back the address length and flags: restore the inputs.
            m.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
        }
        Ok(n)
    }
}

/// Clears `O_NONBLOCK`, so a receive without `MSG_DONTWAIT` can wait (bounded by
/// [`set_recv_timeout`]) instead of needing a `poll` first.
pub(crate) fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no pointers.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: no pointers.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) }).map(drop)
}

/// `SO_RCVTIMEO`: the longest a waiting receive blocks. Zero would mean "forever" to the
/// kernel, so it is raised to one microsecond.
pub(crate) fn set_recv_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let timeout = timeout.max(Duration::from_micros(1));
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a live timeval and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Whether this process has CAP_NET_ADMIN in its effective set (read from `/proc/self/status`).
/// Used to tell apart the two meanings of EPERM when binding a queue: "not allowed at all" and
/// "the queue belongs to another socket".
pub(crate) fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}
