//! The transport under nflua's Netlink protocol, shared by the client library (`nflua-client`,
//! and through it `nfluactl` and the Lua module) and the daemon (`nfluad`), so that neither is
//! built on the other: a bound `NETLINK_USERSOCK` socket with credentials passing
//! ([`NetlinkSocket`]), the port rules of SPEC §3 ([`Port`]), and the system calls under them
//! (`sys`, where all `unsafe` is).
//!
//! One rule for signals: nothing here retries a call a signal interrupted. `recv` and the sends
//! return `ErrorKind::Interrupted`, and [`NetlinkSocket::wait_readable`] returns `false` (nothing
//! to read yet), so the caller, which knows its deadline and its stop flag, decides whether to
//! wait again. One type for time: `Duration` (`Option<Duration>` where "forever" is allowed).
//!
//! Depends on `libc` only (the socket calls and `SCM_CREDENTIALS`, which `netlink-sys` does not
//! expose).

mod socket;
mod sys;

/// `NETLINK_USERSOCK`, the protocol number of the sockets here (nflua-proto pins it to its own
/// constant by test).
pub const NETLINK_USERSOCK: i32 = 2;

pub use socket::{effective_uid, parse_port, NetlinkSocket, Port};
pub use sys::{Credentials, RecvInfo};
