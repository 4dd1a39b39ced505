//! How states reach the outside: `nf.netlink` as DATA messages on the
//! daemon's own Netlink socket, `nf.reply` as raw IP packets.

use std::io;
use std::sync::Arc;

use nflua_client::socket::NetlinkSocket;
use nflua_engine::NetlinkSink;
use nflua_proto::encode_data;

use crate::inject::Injector;

pub struct SocketSink {
    pub sock: Arc<NetlinkSocket>,
    pub injector: Injector,
}

impl NetlinkSink for SocketSink {
    fn send_data(&self, state: &str, seq: u32, port: u32, groups: u32, payload: &[u8]) -> io::Result<usize> {
        let mut buf = Vec::with_capacity(16 + 68 + payload.len() + 3);
        encode_data(&mut buf, seq, self.sock.port(), state, payload);
        // The socket is non-blocking: a receiver that stopped reading gives
        // EAGAIN here (reported to Lua) instead of stalling the daemon.
        self.sock.send_to(&buf, port, groups)?;
        Ok(payload.len())
    }

    fn send_packet(&self, ip_packet: &[u8]) -> io::Result<()> {
        self.injector.send(ip_packet)
    }
}
