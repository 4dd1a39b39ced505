//! A safe `NETLINK_USERSOCK` socket with credentials passing: the transport
//! under both client sockets and the daemon's server socket.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use std::time::Duration;

use crate::sys::{self, RecvInfo};
use crate::NETLINK_USERSOCK;

/// Counts automatic ports handed out in this process (SPEC §3).
static AUTO_PORTS: AtomicU32 = AtomicU32::new(0);

/// How many automatic port ids to try before giving up on `EADDRINUSE`.
const AUTO_PORT_TRIES: u32 = 0x8000;

/// Where a socket binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// A port id in `[1, 2^31)`.
    Explicit(u32),
    /// `(1 << 31) | (n << 16) | (pid & 0xFFFF)`, `n` counting sockets of the
    /// process, so automatic ports never clash with explicit ones.
    Auto,
}

/// Parses a port id in decimal or `0x` hex (`--port`, `NFLUA_PORT`).
pub fn parse_port(text: &str) -> Option<u32> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

impl Port {
    /// Checks an explicit port the way SPEC §3 demands.
    pub fn explicit(port: i64) -> Option<Port> {
        (1..(1i64 << 31)).contains(&port).then_some(Port::Explicit(port as u32))
    }
}

/// A bound `NETLINK_USERSOCK` socket with `SO_PASSCRED` on.
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
    port: u32,
}

impl NetlinkSocket {
    /// Opens and binds a socket. Multicast `groups` are joined at bind time.
    pub fn bind(port: Port, groups: u32) -> io::Result<NetlinkSocket> {
        let fd = sys::socket(NETLINK_USERSOCK)?;
        sys::set_int_option(&fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
        let port = match port {
            Port::Explicit(p) => {
                sys::bind(&fd, p, groups)?;
                p
            }
            Port::Auto => bind_auto(&fd, groups)?,
        };
        Ok(NetlinkSocket { fd, port })
    }

    /// The port id this socket is bound to.
    pub fn port(&self) -> u32 {
        self.port
    }

    pub fn send_to(&self, buf: &[u8], port: u32, groups: u32) -> io::Result<usize> {
        sys::send_to(&self.fd, buf, port, groups)
    }

    /// Sends without ever waiting, whatever the descriptor's mode: a full
    /// receiver gives `WouldBlock`.
    pub fn send_to_nowait(&self, buf: &[u8], port: u32, groups: u32) -> io::Result<usize> {
        sys::send_to_flags(&self.fd, buf, port, groups, libc::MSG_DONTWAIT)
    }

    /// Bounds blocking receives (zero: no bound); see [`sys::set_recv_timeout`].
    pub fn set_recv_timeout(&self, timeout: Duration) -> io::Result<()> {
        sys::set_recv_timeout(&self.fd, timeout)
    }

    /// Receives one datagram; `dontwait` returns `WouldBlock` instead of waiting.
    pub fn recv(&self, buf: &mut [u8], dontwait: bool) -> io::Result<RecvInfo> {
        sys::recv(&self.fd, buf, dontwait)
    }

    /// Waits for a datagram for at most `timeout` (`None`: forever); false when none came (or
    /// a signal came first).
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        sys::wait_readable(&self.fd, timeout)
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        sys::set_nonblocking(&self.fd, on)
    }

    /// Sets the receive buffer, past `rmem_max` when privileged (`SO_RCVBUFFORCE`).
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        let bytes = bytes.min(i32::MAX as usize / 2) as i32;
        sys::set_int_option(&self.fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
            .or_else(|_| sys::set_int_option(&self.fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes))
    }

    /// Sets the send buffer, past `wmem_max` when privileged.
    pub fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        let bytes = bytes.min(i32::MAX as usize / 2) as i32;
        sys::set_int_option(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, bytes)
            .or_else(|_| sys::set_int_option(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes))
    }

    /// Current receive buffer size as the kernel reports it.
    pub fn recv_buffer(&self) -> io::Result<usize> {
        Ok(sys::get_int_option(&self.fd, libc::SOL_SOCKET, libc::SO_RCVBUF)? as usize)
    }

    /// Asks the kernel not to report receive-buffer overruns (`NETLINK_NO_ENOBUFS`).
    /// Off by default: we want overflow reported, never silent.
    pub fn set_no_enobufs(&self, on: bool) -> io::Result<()> {
        const NETLINK_NO_ENOBUFS: i32 = 5;
        sys::set_int_option(&self.fd, libc::SOL_NETLINK, NETLINK_NO_ENOBUFS, on as i32)
    }
}

fn bind_auto(fd: &OwnedFd, groups: u32) -> io::Result<u32> {
    let pid = sys::process_id() & 0xFFFF;
    let mut last = io::Error::from(io::ErrorKind::AddrInUse);
    for _ in 0..AUTO_PORT_TRIES {
        let n = AUTO_PORTS.fetch_add(1, Ordering::Relaxed) & 0x7FFF;
        let port = (1u32 << 31) | (n << 16) | pid;
        match sys::bind(fd, port, groups) {
            Ok(()) => return sys::local_port(fd),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

impl AsFd for NetlinkSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetlinkSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    sys::effective_uid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_in_decimal_and_hex() {
        assert_eq!(parse_port("0x6E666C75"), Some(0x6E66_6C75));
        assert_eq!(parse_port(" 42 "), Some(42));
        assert_eq!(parse_port("x"), None);
    }

    #[test]
    fn explicit_port_range() {
        assert_eq!(Port::explicit(0), None);
        assert_eq!(Port::explicit(1), Some(Port::Explicit(1)));
        assert_eq!(Port::explicit((1 << 31) - 1), Some(Port::Explicit(0x7FFF_FFFF)));
        assert_eq!(Port::explicit(1 << 31), None);
        assert_eq!(Port::explicit(-5), None);
    }

    #[test]
    fn auto_ports_have_bit_31_and_the_pid() {
        let a = NetlinkSocket::bind(Port::Auto, 0).unwrap();
        let b = NetlinkSocket::bind(Port::Auto, 0).unwrap();
        assert_ne!(a.port(), b.port());
        for s in [&a, &b] {
            assert_eq!(s.port() >> 31, 1);
            assert_eq!(s.port() & 0xFFFF, std::process::id() & 0xFFFF);
        }
    }

    #[test]
    fn datagrams_carry_sender_credentials() {
        let a = NetlinkSocket::bind(Port::Auto, 0).unwrap();
        let b = NetlinkSocket::bind(Port::Auto, 0).unwrap();
        a.send_to(b"hi", b.port(), 0).unwrap();
        let mut buf = [0u8; 16];
        let info = b.recv(&mut buf, false).unwrap();
        assert_eq!(&buf[..info.len], b"hi");
        assert_eq!(info.src_port, a.port());
        let creds = info.creds.expect("SO_PASSCRED gives credentials");
        assert_eq!(creds.uid, effective_uid());
        assert_eq!(creds.pid as u32, std::process::id());
    }

    #[test]
    fn sending_to_an_unbound_port_is_refused() {
        let a = NetlinkSocket::bind(Port::Auto, 0).unwrap();
        let err = a.send_to(b"x", 0x7FFF_FF01, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    }
}
