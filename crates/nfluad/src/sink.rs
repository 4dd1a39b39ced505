//! How states reach the outside: `nf.netlink` as DATA messages on the
//! daemon's own Netlink socket, `nf.reply` as raw IP packets.
//!
//! A receiver that stops reading fills its socket buffer, and the kernel then
//! refuses further messages to it (EAGAIN on our non-blocking socket). For
//! unicast between user sockets the kernel does not flag the receiver with
//! ENOBUFS, so it would never learn what it missed. The sink remembers each
//! receiver's losses and, before anything else reaches that receiver, sends it
//! an NLMSG_ERROR with ENOBUFS stating how many messages were dropped.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nflua_engine::{NetlinkSink, SinkStats};
use nflua_netlink::NetlinkSocket;
use nflua_proto::consts::NLMSG_HDRLEN;
use nflua_proto::{encode_data, encode_error, errno, Header, MsgFlags, MsgType};

use crate::inject::Injector;

/// Receivers whose losses are remembered one by one. Past this, losses are
/// only counted: a script sending to many ports that never read must not
/// grow the daemon's memory without bound.
const MAX_TRACKED_PORTS: usize = 1024;

thread_local! {
    /// Encoding buffer of `nf.netlink` messages, one per thread that runs Lua
    /// (server loop, queue workers, timers): no allocation per message.
    static SEND_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub struct SocketSink {
    pub sock: Arc<NetlinkSocket>,
    pub injector: Injector,
    losses: Losses,
    conntrack: ConntrackLink,
}

/// Messages lost per receiver, waiting to be reported to it.
#[derive(Default)]
struct Losses {
    by_port: Mutex<HashMap<u32, u64>>,
    /// Entries in `by_port`, readable without the lock so that sends to
    /// healthy receivers (the common case) never take it.
    pending: AtomicUsize,
    dropped: AtomicU64,
    /// Losses of receivers past [`MAX_TRACKED_PORTS`]: counted, never reported.
    untracked: AtomicU64,
    notices: AtomicU64,
}

impl Losses {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, u64>> {
        // Only counters live here: a panic cannot leave them inconsistent.
        self.by_port.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sync_pending(&self, map: &HashMap<u32, u64>) {
        self.pending.store(map.len(), Ordering::Release);
    }

    fn any_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }
}

impl SocketSink {
    pub fn new(sock: Arc<NetlinkSocket>, injector: Injector) -> SocketSink {
        SocketSink { sock, injector, losses: Losses::default(), conntrack: ConntrackLink::default() }
    }

    /// True while some receiver has losses it was not told about yet; the
    /// server then wakes up periodically to call [`Self::flush_loss_notices`].
    pub fn loss_notices_pending(&self) -> bool {
        self.losses.any_pending()
    }

    /// Tries to tell every receiver with unreported losses about them, so a
    /// receiver learns of its loss once it drains its buffer even if nothing
    /// else is sent to it. Receivers still full keep their count for later.
    pub fn flush_loss_notices(&self) {
        if !self.losses.any_pending() {
            return;
        }
        let mut map = self.losses.lock();
        map.retain(|&port, &mut lost| match self.send_notice(port, lost) {
            Ok(()) => false,
            Err(e) if is_gone(&e) => false,
            Err(_) => true,
        });
        self.losses.sync_pending(&map);
    }

    /// Reports `port`'s earlier losses before a new message goes to it, so
    /// the receiver sees the gap where it happened. Fails, and counts the new
    /// message as lost too, when the receiver is still full.
    fn report_before_send(&self, port: u32) -> io::Result<()> {
        if !self.losses.any_pending() {
            return Ok(());
        }
        let mut map = self.losses.lock();
        let Some(&lost) = map.get(&port) else {
            return Ok(());
        };
        let result = match self.send_notice(port, lost) {
            Ok(()) => {
                map.remove(&port);
                Ok(())
            }
            // The message that follows fails the same way and says so.
            Err(e) if is_gone(&e) => {
                map.remove(&port);
                Ok(())
            }
            Err(e) => {
                if is_full(&e) {
                    self.losses.dropped.fetch_add(1, Ordering::Relaxed);
                    map.insert(port, lost.saturating_add(1));
                }
                Err(e)
            }
        };
        self.losses.sync_pending(&map);
        result
    }

    /// Books a failed DATA send to `port`.
    fn record_failure(&self, port: u32, err: &io::Error) {
        if is_full(err) {
            self.losses.dropped.fetch_add(1, Ordering::Relaxed);
            if port != 0 {
                self.remember_loss(port);
            }
        } else if is_gone(err) && self.losses.any_pending() {
            let mut map = self.losses.lock();
            map.remove(&port);
            self.losses.sync_pending(&map);
        }
    }

    fn remember_loss(&self, port: u32) {
        let mut map = self.losses.lock();
        if map.len() < MAX_TRACKED_PORTS || map.contains_key(&port) {
            let lost = map.entry(port).or_insert(0);
            *lost = lost.saturating_add(1);
            self.losses.sync_pending(&map);
        } else if self.losses.untracked.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                port,
                tracked = MAX_TRACKED_PORTS,
                "too many receivers with lost messages: further losses are only counted"
            );
        }
    }

    /// Sends one encoded DATA message. The socket never waits: a receiver
    /// that stopped reading gives EAGAIN here (reported to Lua, and booked
    /// for the receiver) instead of stalling the daemon.
    fn send_encoded(&self, buf: &[u8], port: u32, groups: u32) -> io::Result<()> {
        if let Err(e) = self.sock.send_to_nowait(buf, port, groups) {
            self.record_failure(port, &e);
            return Err(e);
        }
        Ok(())
    }

    /// Sends `port` an NLMSG_ERROR with ENOBUFS saying `lost` messages were
    /// dropped. The echoed "request" is a DATA header from us with seq 0:
    /// the lost messages were DATA we sent, not a request of the receiver.
    fn send_notice(&self, port: u32, lost: u64) -> io::Result<()> {
        let us = self.sock.port();
        let header = Header {
            len: NLMSG_HDRLEN as u32,
            ty: MsgType::Data.as_u16(),
            flags: MsgFlags::REQUEST.bits(),
            seq: 0,
            pid: us,
        };
        let mut buf = Vec::with_capacity(128);
        encode_error(&mut buf, errno::ENOBUFS, &header, &loss_text(lost), us);
        self.sock.send_to_nowait(&buf, port, 0)?;
        self.losses.notices.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(port, lost, "told a receiver about the messages it lost");
        Ok(())
    }
}

impl NetlinkSink for SocketSink {
    fn send_data(&self, state: &str, seq: u32, port: u32, groups: u32, payload: &[u8]) -> io::Result<usize> {
        let us = self.sock.port();
        if port == us {
            // The daemon would take it as a request from itself: a state could make the daemon
            // call its own callback, which sends again, forever.
            return Err(io::Error::other(format!("port {us:#x} is nfluad's own")));
        }
        if port != 0 {
            self.report_before_send(port)?;
        }
        SEND_BUF.with_borrow_mut(|buf| {
            buf.clear();
            encode_data(buf, seq, self.sock.port(), state, payload);
            self.send_encoded(buf, port, groups)
        })?;
        Ok(payload.len())
    }

    fn send_packet(&self, ip_packet: &[u8]) -> io::Result<()> {
        self.injector.send(ip_packet)
    }

    fn conntrack_lookup(&self, ip_packet: &[u8]) -> Result<Option<nflua_engine::ConntrackInfo>, String> {
        let tuple = conntrack_tuple(ip_packet)?;
        let entry = self.conntrack.with(|ct| ct.lookup(&tuple))?;
        Ok(entry.map(|e| nflua_engine::ConntrackInfo {
            id: e.id,
            status: e.status,
            mark: e.mark,
            timeout: e.timeout,
            tcp_state: e.tcp_state,
            original: e.original,
            reply: e.reply,
        }))
    }

    fn conntrack_delete(&self, ip_packet: &[u8]) -> Result<bool, String> {
        let tuple = conntrack_tuple(ip_packet)?;
        self.conntrack.with(|ct| ct.delete(&tuple))
    }
    fn stats(&self) -> SinkStats {
        SinkStats {
            dropped: self.losses.dropped.load(Ordering::Relaxed),
            loss_notices: self.losses.notices.load(Ordering::Relaxed),
        }
    }
}

/// The ctnetlink socket, opened when a script first asks (`nf.conntrack`, `nf.connid` without
/// kernel ids), shared by the queue workers.
#[derive(Default)]
pub struct ConntrackLink(std::sync::Mutex<Option<nflua_nfqueue::Conntrack>>);

impl ConntrackLink {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut nflua_nfqueue::Conntrack) -> Result<T, nflua_nfqueue::QueueError>,
    ) -> Result<T, String> {
        let mut link = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if link.is_none() {
            let opened =
                nflua_nfqueue::Conntrack::open().map_err(|e| format!("ctnetlink is not available: {e}"))?;
            *link = Some(opened);
        }
        match link.as_mut() {
            Some(ct) => f(ct).map_err(|e| e.to_string()),
            None => Err("ctnetlink is not available".into()),
        }
    }
}

/// The conntrack tuple of an IP packet (TCP or UDP).
fn conntrack_tuple(ip_packet: &[u8]) -> Result<nflua_nfqueue::ConntrackTuple, String> {
    let s = nflua_packet::summarize(ip_packet).map_err(|e| e.to_string())?;
    match (s.src_port, s.dst_port) {
        (Some(src_port), Some(dst_port)) if matches!(s.protocol, 6 | 17) => {
            Ok(nflua_nfqueue::ConntrackTuple {
                src: s.src,
                dst: s.dst,
                protocol: s.protocol,
                src_port,
                dst_port,
            })
        }
        _ => Err("only TCP and UDP packets have conntrack entries looked up".into()),
    }
}

/// The text of a loss notice; clients show it as the error message and may
/// read the count from its first word.
fn loss_text(lost: u64) -> String {
    let (noun, verb) = if lost == 1 { ("message", "was") } else { ("messages", "were") };
    format!("{lost} {noun} from nfluad {verb} dropped: receive buffer full")
}

/// The receiver's buffer is full.
fn is_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS))
}

/// Nobody is bound to the port any more.
fn is_gone(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ECONNREFUSED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflua_netlink::Port;
    use nflua_proto::{messages, Reply};

    fn sink() -> SocketSink {
        let sock = NetlinkSocket::bind(Port::Auto, 0).unwrap();
        sock.set_nonblocking(true).unwrap();
        SocketSink::new(Arc::new(sock), Injector::default())
    }

    fn receiver() -> NetlinkSocket {
        let r = NetlinkSocket::bind(Port::Auto, 0).unwrap();
        r.set_recv_buffer(4096).unwrap();
        r
    }

    /// What a receiver read: the payload length of a DATA message, or the
    /// errno and text of an error.
    type Read = Result<usize, (i32, String)>;

    /// Reads every datagram queued on `r`.
    fn drain(r: &NetlinkSocket) -> Vec<Read> {
        let mut buf = vec![0u8; 8192];
        let mut out = Vec::new();
        while let Ok(info) = r.recv(&mut buf, true) {
            let msg = messages(&buf[..info.len]).next().unwrap().unwrap();
            out.push(match Reply::decode(&msg).unwrap() {
                Reply::Data { payload, .. } => Ok(payload.len()),
                Reply::Error(e) => Err((e.errno, e.message.unwrap_or_default().to_owned())),
                other => panic!("unexpected {other:?}"),
            });
        }
        out
    }

    /// Messages lost according to the notices among `reads`.
    fn noticed(reads: &[Read]) -> u64 {
        reads
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|(errno, text)| {
                assert_eq!(*errno, libc::ENOBUFS, "{text}");
                assert!(
                    text.ends_with(" from nfluad were dropped: receive buffer full")
                        || text == "1 message from nfluad was dropped: receive buffer full",
                    "{text}"
                );
                text.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum()
    }

    /// Sends until the receiver is full; returns how many were accepted.
    fn fill(s: &SocketSink, port: u32, payload: &[u8]) -> usize {
        (0..1000).take_while(|_| s.send_data("st", 0, port, 0, payload).is_ok()).count()
    }

    #[test]
    fn a_full_receiver_is_told_before_its_next_message() {
        let s = sink();
        let r = receiver();
        let payload = [7u8; 1000];
        let fitted = fill(&s, r.port(), &payload);
        assert!(fitted > 0 && fitted < 1000);
        for _ in 0..4 {
            let e = s.send_data("st", 0, r.port(), 0, &payload).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        }
        // The one that showed the buffer full, then four more. (A notice,
        // smaller than the DATA refused, may still have squeezed in.)
        assert_eq!(s.stats().dropped, 5);
        let mut reads = drain(&r);
        assert_eq!(reads.iter().filter(|r| **r == Ok(1000)).count(), fitted);
        s.send_data("st", 0, r.port(), 0, b"after").unwrap();
        reads.extend(drain(&r));
        assert_eq!(reads.last(), Some(&Ok(5)));
        assert!(reads[reads.len() - 2].is_err(), "the notice comes right before: {reads:?}");
        assert_eq!(noticed(&reads), 5);
        let notices = reads.iter().filter(|r| r.is_err()).count() as u64;
        assert_eq!(s.stats(), SinkStats { dropped: 5, loss_notices: notices });
        assert!(!s.loss_notices_pending());
    }

    #[test]
    fn flushing_reports_losses_once_the_receiver_has_room() {
        let s = sink();
        let r = receiver();
        // Empty DATA messages take as much room as a notice: none fits now.
        let fitted = fill(&s, r.port(), &[]);
        s.flush_loss_notices();
        assert!(s.loss_notices_pending(), "still full: the count must be kept");
        assert_eq!(s.stats(), SinkStats { dropped: 1, loss_notices: 0 });
        let mut buf = [0u8; 256];
        r.recv(&mut buf, true).expect("a queued message");
        s.flush_loss_notices();
        assert!(!s.loss_notices_pending());
        let reads = drain(&r);
        assert_eq!(reads.len(), fitted);
        assert_eq!(
            reads.last().unwrap().as_ref().unwrap_err().1,
            "1 message from nfluad was dropped: receive buffer full"
        );
        assert_eq!(s.stats(), SinkStats { dropped: 1, loss_notices: 1 });
    }

    #[test]
    fn the_daemons_own_port_is_refused() {
        let s = sink();
        let e = s.send_data("st", 0, s.sock.port(), 0, b"ping").unwrap_err();
        assert_eq!(e.to_string(), format!("port {:#x} is nfluad's own", s.sock.port()));
        assert_eq!(s.stats(), SinkStats::default());
    }

    #[test]
    fn a_vanished_receiver_is_forgotten() {
        let s = sink();
        let r = receiver();
        let port = r.port();
        fill(&s, port, &[]);
        drop(r);
        let e = s.send_data("st", 0, port, 0, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
        assert!(!s.loss_notices_pending());
        assert_eq!(s.stats(), SinkStats { dropped: 1, loss_notices: 0 });
    }
}
