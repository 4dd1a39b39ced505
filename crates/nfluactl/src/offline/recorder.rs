//! The engine's sink in an offline run: nothing leaves the process. Packets `nf.reply` builds
//! and messages `nf.netlink` sends are kept for the report (and `--write-pcap`); conntrack is
//! not there, as on a host without ctnetlink.

use std::sync::{Mutex, PoisonError};

use nflua_engine::NetlinkSink;

#[derive(Default)]
pub struct Recorder {
    replies: Mutex<Vec<Vec<u8>>>,
    messages: Mutex<u64>,
}

impl Recorder {
    /// The packets `nf.reply` built since the last call.
    pub fn take_replies(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.replies.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `nf.netlink` messages sent so far.
    pub fn messages(&self) -> u64 {
        *self.messages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NetlinkSink for Recorder {
    fn send_data(
        &self,
        _state: &str,
        _seq: u32,
        _port: u32,
        _groups: u32,
        payload: &[u8],
    ) -> std::io::Result<usize> {
        *self.messages.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Ok(payload.len())
    }

    fn send_packet(&self, ip_packet: &[u8]) -> std::io::Result<()> {
        self.replies.lock().unwrap_or_else(PoisonError::into_inner).push(ip_packet.to_vec());
        Ok(())
    }
}
