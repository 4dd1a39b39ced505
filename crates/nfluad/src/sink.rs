//! `nf.netlink` as the engine sees it: a DATA message from a state, sent on
//! the daemon's own socket.

use std::io;
use std::sync::Arc;

use nflua_client::socket::NetlinkSocket;
use nflua_engine::NetlinkSink;
use nflua_proto::encode_data;

pub struct SocketSink {
    pub sock: Arc<NetlinkSocket>,
}

impl NetlinkSink for SocketSink {
    fn send_data(
        &self,
        state: &str,
        seq: u32,
        port: u32,
        groups: u32,
        payload: &[u8],
    ) -> io::Result<usize> {
        let mut buf = Vec::with_capacity(16 + 68 + payload.len() + 3);
        encode_data(&mut buf, seq, self.sock.port(), state, payload);
        // The socket is non-blocking: a receiver that stopped reading gives
        // EAGAIN here (reported to Lua) instead of stalling the daemon.
        self.sock.send_to(&buf, port, groups)?;
        Ok(payload.len())
    }
}
