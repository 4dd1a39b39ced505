//! The path to one daemon: a bound socket plus the checks every datagram
//! from the daemon passes (right port, trusted credentials).

use std::io;

use nflua_proto::consts::PAYLOAD_MAX;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::socket::{NetlinkSocket, Port};

/// Large enough for any single datagram the daemon sends (LIST fragments and
/// errors stay within a page; the slack catches peers that do not).
const RECV_BUFFER: usize = 4 * PAYLOAD_MAX;

#[derive(Debug)]
pub(crate) struct DaemonLink {
    sock: Option<NetlinkSocket>,
    pub(crate) config: ClientConfig,
    pub(crate) buf: Vec<u8>,
}

impl DaemonLink {
    pub(crate) fn open(config: ClientConfig, port: Port) -> Result<DaemonLink, ClientError> {
        let sock = NetlinkSocket::bind(port, 0).map_err(ClientError::Io)?;
        Ok(DaemonLink { sock: Some(sock), config, buf: vec![0; RECV_BUFFER] })
    }

    pub(crate) fn socket(&self) -> Result<&NetlinkSocket, ClientError> {
        self.sock.as_ref().ok_or(ClientError::Closed)
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

    /// Reads datagrams until one comes from the daemon's port with trusted
    /// credentials; others are dropped. Returns its length in `self.buf`, or
    /// `None` when nothing is there and either the socket is non-blocking or
    /// `dontwait` is set (callers that poll with a timeout set it, so a
    /// dropped datagram never turns their wait into an endless block).
    pub(crate) fn recv_from_daemon(&mut self, dontwait: bool) -> Result<Option<usize>, ClientError> {
        let port = self.config.daemon_port;
        loop {
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

    /// Waits until the socket is readable; false on timeout.
    pub(crate) fn wait(&self, timeout_ms: i32) -> Result<bool, ClientError> {
        self.socket()?.wait_readable(timeout_ms).map_err(ClientError::Io)
    }
}
