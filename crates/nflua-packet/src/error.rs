//! Why a packet cannot be read or crafted.

/// A packet this crate cannot read, or a packet it refuses to build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Empty, or the version nibble is neither 4 nor 6.
    #[error("not an IPv4 or IPv6 packet")]
    NotIp,
    /// A header or a length field points past the end of the bytes we have
    /// (also: a first fragment, whose L4 payload is partly elsewhere).
    #[error("truncated packet")]
    Truncated,
    /// The upper-layer protocol is not the one asked for (also: a non-first
    /// fragment, which carries no L4 header at all).
    #[error("not a {0} packet")]
    WrongProtocol(&'static str),
    /// A header whose own length field is impossible: IPv4 IHL below 5 or
    /// total length below the header, TCP data offset below 5, UDP length
    /// below 8. The name is the header's ("IPv4", "TCP", "UDP").
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The packet to build would exceed 65535 bytes.
    #[error("resulting packet of {0} bytes is too large")]
    TooLarge(usize),
}
