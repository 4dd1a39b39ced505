//! Rust client for `nfluad`: control sockets (create, destroy, list,
//! execute) and data sockets (send to `__receive_callback`, receive what
//! states send with `nf.netlink`), over real `NETLINK_USERSOCK` sockets.
//!
//! Used by `nfluactl` and the Lua module; the daemon serves on the same
//! transport (`nflua-netlink`'s [`socket::NetlinkSocket`]) without this crate. Sockets follow the seed's model
//! literally: `fd()` works in poll loops, `port()` is the Netlink port id,
//! and a control socket walks ready → waiting → receiving → ready.
//!
//! Never trusts a datagram that does not come from the daemon's port with the
//! credentials of a trusted uid, and never blocks in a call documented as
//! non-blocking. The socket itself and its system calls are `nflua-netlink`'s.
//!
//! The blocking helpers (`create`, `execute`, `list`, ...) say what is known
//! when no answer comes: [`ClientError::NoAnswer`] after the timeout (the
//! request may still complete), or [`ClientError::DaemonGone`] as soon as
//! the daemon's port is no longer bound (asked after each 250 ms of silence
//! with an `NLMSG_NOOP` sent through the client's own socket, which the
//! kernel refuses when nothing holds the port — so in the socket's network
//! namespace, whichever thread waits; `presence`, read from
//! `/proc/net/netlink`, when that send fails otherwise).
//!
//! Dependencies: `nflua-proto` (the wire format), `libc` (the socket calls,
//! `SCM_CREDENTIALS`; `netlink-sys` does not expose ancillary data), and
//! `thiserror`.

mod config;
mod control;
mod data;
mod error;
mod link;
mod presence;

/// The transport, from `nflua-netlink` (shared with the daemon).
pub mod socket {
    pub use nflua_netlink::{effective_uid, Credentials, NetlinkSocket, Port, RecvInfo};
}

pub use config::{parse_port, ClientConfig, DAEMON_UID_ENV};
pub use control::{ControlSocket, CreateRequest, Response, SocketState, StateInfo};
pub use data::{DataMessage, DataSocket};
pub use error::{strerror, ClientError};
pub use nflua_proto::hook::{DEFAULT_EVAL_MARK, DEFAULT_MATCH_MARK, DEFAULT_STREAM_DEPTH, MAX_STREAM_DEPTH};
pub use nflua_proto::{
    consts, BundleChunk, HookMode, HookSpec, OnError, Overflow, RecordFormat, StateFlags, StateRecord,
    Verdict,
};
pub use presence::usersock_port_bound;
pub use socket::Port;
