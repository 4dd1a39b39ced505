//! Every `unsafe` call of the crate: a raw `AF_NETLINK` socket, its options,
//! and `sendto`/`recvmsg` with `SCM_CREDENTIALS`.
//!
//! # Safety
//! Each function passes the kernel pointers to locals or to slices it owns for
//! the length it states, and checks the return value before reading what the
//! kernel wrote. Descriptors are owned by `OwnedFd`, so none leaks or is closed
//! twice.

#![allow(unsafe_code)] // talks to C: see the Safety notes

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Sender credentials the kernel attached to a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// What `recv` learnt about one datagram.
#[derive(Debug, Clone, Copy)]
pub struct RecvInfo {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// True when the datagram was larger than the buffer (its tail is lost).
    pub truncated: bool,
    /// Sender's port id and multicast groups.
    pub src_port: u32,
    pub src_groups: u32,
    pub creds: Option<Credentials>,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn sockaddr(port: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_pid = port;
    addr.nl_groups = groups;
    addr
}

pub fn socket(protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned right away.
    let fd = cvt(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn bind(fd: &OwnedFd, port: u32, groups: u32) -> io::Result<()> {
    let addr = sockaddr(port, groups);
    // SAFETY: addr lives across the call and the length matches its type.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// The port id the socket is bound to.
pub fn local_port(fd: &OwnedFd) -> io::Result<u32> {
    let mut addr = sockaddr(0, 0);
    let mut len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: addr/len describe a writable sockaddr_nl.
    cvt(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            &mut addr as *mut libc::sockaddr_nl as *mut libc::sockaddr,
            &mut len,
        )
    })?;
    Ok(addr.nl_pid)
}

pub fn set_int_option(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value lives across the call; length is that of a c_int.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            size_of::<i32>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `SO_RCVTIMEO`: a blocking receive gives up with `WouldBlock` after
/// `timeout` (zero: wait forever). A socket with a timeout is never restarted
/// after a signal handler, so a signal also ends the wait (`Interrupted`).
pub fn set_recv_timeout(fd: &OwnedFd, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_usec: timeout.subsec_micros().into(),
    };
    // SAFETY: tv lives across the call and the length is its size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

pub fn get_int_option(fd: &OwnedFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: value/len describe a writable c_int.
    cvt(unsafe {
        libc::getsockopt(fd.as_raw_fd(), level, name, &mut value as *mut i32 as *mut libc::c_void, &mut len)
    })?;
    Ok(value)
}

pub fn set_nonblocking(fd: &OwnedFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

pub fn send_to(fd: &OwnedFd, buf: &[u8], port: u32, groups: u32) -> io::Result<usize> {
    send_to_flags(fd, buf, port, groups, 0)
}

/// `sendto` with `flags` (e.g. `MSG_DONTWAIT`).
pub fn send_to_flags(fd: &OwnedFd, buf: &[u8], port: u32, groups: u32, flags: i32) -> io::Result<usize> {
    let addr = sockaddr(port, groups);
    // SAFETY: buf and addr live across the call, lengths match.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            flags,
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Receives one datagram. `dontwait` makes this call non-blocking whatever
/// the descriptor's mode.
pub fn recv(fd: &OwnedFd, buf: &mut [u8], dontwait: bool) -> io::Result<RecvInfo> {
    let mut addr = sockaddr(0, 0);
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // Room for one SCM_CREDENTIALS message, u64-aligned as cmsg requires.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = &mut addr as *mut libc::sockaddr_nl as *mut libc::c_void;
    msg.msg_namelen = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = size_of::<[u64; 8]>() as _;
    let flags = libc::MSG_TRUNC | if dontwait { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: every pointer in msg refers to a local or to buf, alive for the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let mut creds = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // bounded by msg_controllen; the payload is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS {
                let c = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::ucred);
                creds = Some(Credentials { pid: c.pid, uid: c.uid, gid: c.gid });
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(RecvInfo {
        len: n.min(buf.len()),
        truncated: n > buf.len() || msg.msg_flags & libc::MSG_TRUNC != 0,
        src_port: addr.nl_pid,
        src_groups: addr.nl_groups,
        creds,
    })
}

/// Waits until `fd` is readable or `timeout` passes (`None`: forever, rounded up to whole
/// milliseconds). False on timeout, and when a signal interrupted the wait (the crate's rule:
/// nothing is retried here).
pub fn wait_readable(fd: &OwnedFd, timeout: Option<std::time::Duration>) -> io::Result<bool> {
    let timeout_ms = match timeout {
        None => -1,
        Some(t) => i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
    };
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd, alive for the call.
    match cvt(unsafe { libc::poll(&mut pfd, 1, timeout_ms) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn process_id() -> u32 {
    std::process::id()
}

pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}
