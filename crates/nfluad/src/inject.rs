//! Raw IP sockets for packets states send (`nf.reply`): the reply is a
//! complete IP packet, routed like any locally generated one.
//!
//! # Safety
//! The only `unsafe` is the socket and `sendto` calls below; each passes
//! pointers to locals or to the caller's slice, for the lengths stated.

#![allow(unsafe_code)] // talks to C: see the Safety notes

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// Lazily opened raw sockets (they need CAP_NET_RAW; a daemon that never
/// replies never opens them).
#[derive(Default)]
pub struct Injector {
    v4: OnceLock<io::Result<OwnedFd>>,
    v6: OnceLock<io::Result<OwnedFd>>,
}

fn raw_socket(family: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, libc::IPPROTO_RAW)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn socket(cell: &OnceLock<io::Result<OwnedFd>>, family: i32) -> io::Result<i32> {
    match cell.get_or_init(|| raw_socket(family)) {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(e) => Err(io::Error::new(e.kind(), format!("raw socket: {e}"))),
    }
}

impl Injector {
    /// Sends a complete IPv4 or IPv6 packet (IPPROTO_RAW implies the header
    /// is included, for both families).
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let version = packet.first().map(|b| b >> 4);
        let n = match version {
            Some(4) if packet.len() >= 20 => {
                let fd = socket(&self.v4, libc::AF_INET)?;
                // SAFETY: sockaddr_in is plain old data.
                let mut addr: libc::sockaddr_in = unsafe { zeroed() };
                addr.sin_family = libc::AF_INET as libc::sa_family_t;
                addr.sin_addr.s_addr = u32::from_ne_bytes([packet[16], packet[17], packet[18], packet[19]]);
                // SAFETY: packet and addr live across the call, lengths match.
                unsafe {
                    libc::sendto(
                        fd,
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&addr as *const libc::sockaddr_in).cast(),
                        size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                }
            }
            Some(6) if packet.len() >= 40 => {
                let fd = socket(&self.v6, libc::AF_INET6)?;
                // SAFETY: sockaddr_in6 is plain old data.
                let mut addr: libc::sockaddr_in6 = unsafe { zeroed() };
                addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                addr.sin6_addr.s6_addr.copy_from_slice(&packet[24..40]);
                // SAFETY: as above.
                unsafe {
                    libc::sendto(
                        fd,
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&addr as *const libc::sockaddr_in6).cast(),
                        size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                }
            }
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not an IPv4 or IPv6 packet")),
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
