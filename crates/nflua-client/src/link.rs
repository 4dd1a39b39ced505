//! The path to one daemon: a bound socket plus the checks every datagram
//! from the daemon passes (right port, trusted credentials).

use std::io;
use std::time::{Duration, Instant};

use nflua_proto::consts::PAYLOAD_MAX;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::socket::{NetlinkSocket, Port};

/// Large enough for any single datagram the daemon sends (LIST fragments and
/// errors stay within a page; the slack catches peers that do not).
const RECV_BUFFER: usize = 4 * PAYLOAD_MAX;

/// How long a receive may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// As the socket's mode says: forever when blocking, not at all when not.
    Mode,
    /// At most this many milliseconds (0: not at all; negative: forever), whatever the mode.
    Upto(i32),
}

#[derive(Debug)]
pub(crate) struct DaemonLink {
    sock: Option<NetlinkSocket>,
    pub(crate) config: ClientConfig,
    pub(crate) buf: Vec<u8>,
    nonblocking: bool,
    /// The socket's `SO_RCVTIMEO` as last set (zero: none), so it is set only
    /// when it changes rather than once per receive.
    recv_timeout: Duration,
}

impl DaemonLink {
    pub(crate) fn open(config: ClientConfig, port: Port) -> Result<DaemonLink, ClientError> {
        let sock = NetlinkSocket::bind(port, 0).map_err(ClientError::Io)?;
        Ok(DaemonLink {
            sock: Some(sock),
            config,
            buf: vec![0; RECV_BUFFER],
            nonblocking: false,
            recv_timeout: Duration::ZERO,
        })
    }

    pub(crate) fn socket(&self) -> Result<&NetlinkSocket, ClientError> {
        self.sock.as_ref().ok_or(ClientError::Closed)
    }

    pub(crate) fn set_nonblocking(&mut self, on: bool) -> Result<(), ClientError> {
        self.socket()?.set_nonblocking(on).map_err(ClientError::Io)?;
        self.nonblocking = on;
        Ok(())
    }

    fn set_recv_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        if self.recv_timeout != timeout {
            self.socket()?.set_recv_timeout(timeout).map_err(ClientError::Io)?;
            self.recv_timeout = timeout;
        }
        Ok(())
    }

    pub(crate) fn close(&mut self) {
        self.sock = None;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sock.is_none()
    }

    pub(crate) fn send(&self, datagram: &[u8]) -> Result<(), ClientError> {
        let port = self.config.daemon_port;
        self.socket()?.send_to(datagram, port, 0).map_err(|e| ClientError::from_io(e, port))?;
        Ok(())
    }

    /// Whether the daemon's port is still bound, asked through this socket, so in the socket's
    /// own network namespace whichever thread asks: an `NLMSG_NOOP` (which the daemon never
    /// answers) is refused with `ECONNREFUSED` when nothing holds the port. `None` when the
    /// send failed otherwise.
    pub(crate) fn daemon_bound(&self) -> Option<bool> {
        let port = self.config.daemon_port;
        let sock = self.socket().ok()?;
        let mut noop = [0u8; 16];
        noop[0..4].copy_from_slice(&16u32.to_ne_bytes());
        noop[4..6].copy_from_slice(&1u16.to_ne_bytes()); // NLMSG_NOOP
        noop[12..16].copy_from_slice(&sock.port().to_ne_bytes());
        match sock.send_to_nowait(&noop, port, 0) {
            Ok(_) => Some(true),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Some(false),
            // Its receive buffer is full: it is there.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) => Some(true),
            Err(_) => None,
        }
    }

    /// Reads datagrams until one comes from the daemon's port with trusted
    /// credentials; others are dropped. Returns its length in `self.buf`, or
    /// `None` when nothing came within what `wait` allows.
    ///
    /// A bounded wait on a blocking socket blocks in `recv` with a receive
    /// timeout instead of polling first: one system call per reply, which is
    /// what a request/reply round trip costs between two plain sockets.
    pub(crate) fn recv_from_daemon(&mut self, wait: Wait) -> Result<Option<usize>, ClientError> {
        match wait {
            Wait::Mode => {
                self.set_recv_timeout(Duration::ZERO)?;
                self.recv_trusted(self.nonblocking, None)
            }
            // Forever on a blocking socket: what its mode does anyway.
            Wait::Upto(ms) if ms < 0 && !self.nonblocking => self.recv_from_daemon(Wait::Mode),
            Wait::Upto(ms) if self.nonblocking => {
                // Keep the caller's non-blocking mode: poll, then read without waiting.
                let deadline = (ms >= 0).then(|| Instant::now() + Duration::from_millis(ms as u64));
                loop {
                    let left = deadline.map_or(-1, remaining_ms);
                    if left == 0 || !self.wait(left)? {
                        return Ok(None);
                    }
                    if let Some(len) = self.recv_trusted(true, None)? {
                        return Ok(Some(len));
                    }
                }
            }
            Wait::Upto(0) => self.recv_trusted(true, None),
            Wait::Upto(ms) => {
                let full = Duration::from_millis(ms as u64);
                self.recv_trusted(false, Some((full, Instant::now() + full)))
            }
        }
    }

    /// The receive loop. With a bound the socket is blocking and `recv` waits
    /// at most the full timeout the first time — the same value call after
    /// call, so the option is not set again — and the time left after a
    /// datagram that was not for us.
    fn recv_trusted(
        &mut self,
        dontwait: bool,
        bound: Option<(Duration, Instant)>,
    ) -> Result<Option<usize>, ClientError> {
        let port = self.config.daemon_port;
        let mut first = true;
        loop {
            if let Some((full, deadline)) = bound {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                self.set_recv_timeout(if first { full } else { left })?;
                first = false;
            }
            let sock = self.sock.as_ref().ok_or(ClientError::Closed)?;
            let info = match sock.recv(&mut self.buf, dontwait) {
                Ok(info) => info,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ClientError::from_io(e, port)),
            };
            let trusted = info.creds.is_some_and(|c| self.config.trusts(c.uid));
            if info.src_port != port || !trusted {
                continue;
            }
            if info.truncated {
                return Err(ClientError::Failed(format!("datagram larger than {} bytes", self.buf.len())));
            }
            return Ok(Some(info.len));
        }
    }

    /// Waits until the socket is readable, at most `timeout_ms` (negative: forever, the
    /// seed's convention); false on timeout or when a signal came first.
    pub(crate) fn wait(&self, timeout_ms: i32) -> Result<bool, ClientError> {
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        self.socket()?.wait_readable(timeout).map_err(ClientError::Io)
    }
}

fn remaining_ms(deadline: Instant) -> i32 {
    let left = deadline.saturating_duration_since(Instant::now());
    i32::try_from(left.as_millis()).unwrap_or(i32::MAX)
}
