//! The data socket: DATA messages to a state's `__receive_callback`, and
//! messages states send with `nf.netlink`.

use std::os::fd::{AsRawFd, RawFd};

use nflua_proto::consts::DATA_MAX;
use nflua_proto::{encode_data, errno, messages, name, Reply};

use crate::config::ClientConfig;
use crate::error::{strerror, ClientError};
use crate::link::{DaemonLink, Wait};
use crate::socket::Port;

/// One received DATA message: `len` bytes were copied to the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMessage {
    pub len: usize,
    /// Name of the state that sent it.
    pub state: String,
}

#[derive(Debug)]
pub struct DataSocket {
    link: DaemonLink,
    seq: u32,
    /// Reused for every message sent.
    send_buf: Vec<u8>,
}

impl DataSocket {
    pub fn open(config: ClientConfig, port: Port) -> Result<DataSocket, ClientError> {
        Ok(DataSocket { link: DaemonLink::open(config, port)?, seq: 0, send_buf: Vec::new() })
    }

    pub fn port(&self) -> Result<u32, ClientError> {
        Ok(self.link.socket()?.port())
    }

    pub fn fd(&self) -> Result<RawFd, ClientError> {
        Ok(self.link.socket()?.as_raw_fd())
    }

    pub fn close(&mut self) {
        self.link.close();
    }

    pub fn is_closed(&self) -> bool {
        self.link.is_closed()
    }

    pub fn set_nonblocking(&mut self, on: bool) -> Result<(), ClientError> {
        self.link.set_nonblocking(on)
    }

    /// Sets the kernel receive buffer of this socket.
    pub fn set_recv_buffer(&self, bytes: usize) -> Result<(), ClientError> {
        self.link.socket()?.set_recv_buffer(bytes).map_err(ClientError::Io)
    }

    /// Sends `payload` to the `__receive_callback` of `state`. Not
    /// acknowledged; a delivery failure comes back at the next `receive`.
    pub fn send(&mut self, state: &str, payload: &[u8]) -> Result<(), ClientError> {
        name::check_state_name(state).map_err(ClientError::StateName)?;
        if payload.len() > DATA_MAX {
            return Err(ClientError::DataTooLarge(payload.len()));
        }
        self.seq = self.seq.wrapping_add(1);
        let port = self.port()?;
        self.send_buf.clear();
        encode_data(&mut self.send_buf, self.seq, port, state, payload);
        self.link.send(&self.send_buf)
    }

    /// Receives one message into `out` (which must hold `DATA_MAX` bytes to be
    /// sure to fit any message). `Ok(None)`: non-blocking and nothing there.
    /// [`ClientError::Overflow`]: messages to this socket were dropped while
    /// its buffer was full; the socket stays usable and later ones arrive.
    pub fn receive(&mut self, out: &mut [u8]) -> Result<Option<DataMessage>, ClientError> {
        self.receive_one(out, Wait::Mode)
    }

    fn receive_one(&mut self, out: &mut [u8], wait: Wait) -> Result<Option<DataMessage>, ClientError> {
        let Some(len) = self.link.recv_from_daemon(wait)? else {
            return Ok(None);
        };
        let datagram = &self.link.buf[..len];
        let Some(msg) = messages(datagram).next() else {
            return Err(ClientError::Failed("empty datagram".into()));
        };
        let msg = msg.map_err(|e| ClientError::Failed(format!("malformed message: {e}")))?;
        match Reply::decode(&msg).map_err(|e| ClientError::Failed(format!("malformed message: {e}")))? {
            Reply::Data { state, payload } => {
                if payload.len() > out.len() {
                    return Err(ClientError::InvalidArgument(format!(
                        "buffer of {} bytes is too small for a {}-byte message",
                        out.len(),
                        payload.len()
                    )));
                }
                out[..payload.len()].copy_from_slice(payload);
                Ok(Some(DataMessage { len: payload.len(), state: state.to_owned() }))
            }
            // The daemon's notice that messages to us were dropped: the same
            // error as the kernel's own overflow report.
            Reply::Error(e) if e.errno == errno::ENOBUFS => {
                Err(ClientError::Overflow { message: e.message.map(str::to_owned) })
            }
            Reply::Error(e) => {
                let message = e.message.map(str::to_owned).unwrap_or_else(|| strerror(e.errno));
                Err(ClientError::Daemon { errno: e.errno, message })
            }
            other => Err(ClientError::Failed(format!("unexpected message on a data socket: {other:?}"))),
        }
    }

    /// Waits until a datagram can be read, for at most `timeout_ms`
    /// (negative: forever); false on timeout.
    pub fn wait_readable(&self, timeout_ms: i32) -> Result<bool, ClientError> {
        self.link.wait(timeout_ms)
    }

    /// Blocks for at most `timeout_ms` (negative: forever) for one message.
    pub fn receive_timeout(&mut self, out: &mut [u8], timeout_ms: i32) -> Result<DataMessage, ClientError> {
        self.receive_one(out, Wait::Upto(timeout_ms))?.ok_or(ClientError::TimedOut)
    }
}
