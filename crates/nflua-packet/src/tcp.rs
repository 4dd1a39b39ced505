//! The TCP header (RFC 9293 §3.1).
//!
//! ```text
//!  0               1               2               3
//!  +-------------------------------+-------------------------------+
//!  |          Source Port          |       Destination Port        |  0
//!  +-------------------------------+-------------------------------+
//!  |                        Sequence Number                        |  4
//!  +---------------------------------------------------------------+
//!  |                     Acknowledgment Number                     |  8
//!  +-------+-------+---------------+-------------------------------+
//!  | DOff  | Rsrvd |     Flags     |            Window             | 12
//!  +-------+-------+---------------+-------------------------------+
//!  |           Checksum            |        Urgent Pointer         | 16
//!  +-------------------------------+-------------------------------+
//!  |                 Options (when DOff > 5) ...                   | 20
//! ```

use crate::bytes::{get_array, get_u16, get_u32};
use crate::error::PacketError;

pub(crate) const MIN_HEADER_LEN: usize = 20;

const SRC_PORT: usize = 0;
const DST_PORT: usize = 2;
const SEQ: usize = 4;
const ACK: usize = 8;
const DATA_OFFSET: usize = 12;
const FLAGS: usize = 13;
const WINDOW: usize = 14;
pub(crate) const CHECKSUM: usize = 16;

pub(crate) const FLAG_FIN: u8 = 0x01;
pub(crate) const FLAG_SYN: u8 = 0x02;
pub(crate) const FLAG_PSH: u8 = 0x08;
pub(crate) const FLAG_ACK: u8 = 0x10;

/// The fields of a TCP header a reply needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpHeader {
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) flags: u8,
    pub(crate) window: u16,
    /// Data offset in bytes, options included.
    pub(crate) header_len: usize,
}

/// Reads the header at the start of `segment` (header and payload).
pub(crate) fn parse(segment: &[u8]) -> Result<TcpHeader, PacketError> {
    let fixed: [u8; MIN_HEADER_LEN] = get_array(segment, 0).ok_or(PacketError::Truncated)?;
    let u16_at = |at: usize| get_u16(&fixed, at).ok_or(PacketError::Truncated);
    let u32_at = |at: usize| get_u32(&fixed, at).ok_or(PacketError::Truncated);
    let header_len = usize::from(fixed[DATA_OFFSET] >> 4) * 4;
    if header_len < MIN_HEADER_LEN {
        return Err(PacketError::Malformed("TCP"));
    }
    if header_len > segment.len() {
        return Err(PacketError::Truncated);
    }
    Ok(TcpHeader {
        src_port: u16_at(SRC_PORT)?,
        dst_port: u16_at(DST_PORT)?,
        seq: u32_at(SEQ)?,
        ack: u32_at(ACK)?,
        flags: fixed[FLAGS],
        window: u16_at(WINDOW)?,
        header_len,
    })
}

impl TcpHeader {
    /// The header of a segment answering this one, which carried
    /// `received_len` payload bytes: ports swapped; seq is this segment's
    /// ack; ack is its seq advanced past its payload, and past its SYN and
    /// FIN, which occupy one sequence number each (RFC 9293 §3.4), so the
    /// sender sees everything it sent acknowledged; PSH|ACK; no options; the
    /// window echoes the one received (we keep no receive buffer whose size
    /// we could advertise, and echoing keeps the peer's flow unchanged).
    /// The checksum is zero until sealed.
    pub(crate) fn reply(&self, received_len: usize) -> [u8; MIN_HEADER_LEN] {
        let consumed = u32::from(self.flags & FLAG_SYN != 0) + u32::from(self.flags & FLAG_FIN != 0);
        // Payloads of IP packets are below 2^32 bytes; wrapping is TCP's own.
        let ack = self.seq.wrapping_add(received_len as u32).wrapping_add(consumed);
        let mut header = [0u8; MIN_HEADER_LEN];
        header[SRC_PORT..SRC_PORT + 2].copy_from_slice(&self.dst_port.to_be_bytes());
        header[DST_PORT..DST_PORT + 2].copy_from_slice(&self.src_port.to_be_bytes());
        header[SEQ..SEQ + 4].copy_from_slice(&self.ack.to_be_bytes());
        header[ACK..ACK + 4].copy_from_slice(&ack.to_be_bytes());
        header[DATA_OFFSET] = ((MIN_HEADER_LEN / 4) as u8) << 4;
        header[FLAGS] = FLAG_PSH | FLAG_ACK;
        header[WINDOW..WINDOW + 2].copy_from_slice(&self.window.to_be_bytes());
        header
    }
}
