//! What the daemon remembers per client port between datagrams: a script
//! being reassembled, or a failed request whose remaining fragments must be
//! dropped quietly.
//!
//! Userspace gets no notice when a client's socket closes, so entries are
//! bounded two ways: an entry idle longer than the fragment timeout is
//! dropped, and at most [`MAX_CLIENTS`] entries exist (the oldest goes).
//! Entries with nothing pending are removed at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nflua_proto::ExecuteReassembler;

/// Clients with a request in flight at once; each holds at most one script
/// (≤ 59968 bytes), so this bounds reassembly memory to about 15 MiB.
pub const MAX_CLIENTS: usize = 256;

#[derive(Debug, Default)]
pub struct Client {
    pub reassembler: ExecuteReassembler,
    /// Fragments of this request seq are dropped without reply: the request
    /// already failed and its sender got one error for it.
    pub discard_seq: Option<u32>,
    last_seen: Option<Instant>,
}

impl Client {
    fn is_idle(&self) -> bool {
        !self.reassembler.is_pending() && self.discard_seq.is_none()
    }
}

#[derive(Debug, Default)]
pub struct Clients {
    by_port: HashMap<u32, Client>,
}

impl Clients {
    /// The entry of `port`, created if needed, stamped with `now`.
    pub fn get(&mut self, port: u32, now: Instant) -> &mut Client {
        if !self.by_port.contains_key(&port) && self.by_port.len() >= MAX_CLIENTS {
            self.evict_oldest();
        }
        let client = self.by_port.entry(port).or_default();
        client.last_seen = Some(now);
        client
    }

    /// Forgets `port` if it holds nothing.
    pub fn release(&mut self, port: u32) {
        if self.by_port.get(&port).is_some_and(Client::is_idle) {
            self.by_port.remove(&port);
        }
    }

    /// Forgets `port` whatever it holds (its socket is gone).
    pub fn forget(&mut self, port: u32) {
        self.by_port.remove(&port);
    }

    /// Drops entries idle for longer than `timeout`; returns how many.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> usize {
        let before = self.by_port.len();
        self.by_port.retain(|_, c| c.last_seen.is_some_and(|t| now.duration_since(t) < timeout));
        before - self.by_port.len()
    }

    pub fn len(&self) -> usize {
        self.by_port.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_port.is_empty()
    }

    /// Bytes held for scripts being reassembled.
    pub fn pending_bytes(&self) -> usize {
        self.by_port.values().map(|c| c.reassembler.pending_bytes()).sum()
    }

    fn evict_oldest(&mut self) {
        if let Some(port) = self.by_port.iter().min_by_key(|(_, c)| c.last_seen).map(|(p, _)| *p) {
            tracing::warn!(port, "too many clients with requests in flight; dropping the oldest");
            self.by_port.remove(&port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_entries_go_and_bounds_hold() {
        let mut c = Clients::default();
        let t0 = Instant::now();
        c.get(1, t0).discard_seq = Some(3);
        c.get(2, t0);
        c.release(2);
        assert_eq!(c.len(), 1);
        assert_eq!(c.expire(t0 + Duration::from_secs(31), Duration::from_secs(30)), 1);
        assert!(c.is_empty());
        for p in 0..(MAX_CLIENTS as u32 + 10) {
            c.get(p, t0 + Duration::from_millis(p as u64)).discard_seq = Some(1);
        }
        assert_eq!(c.len(), MAX_CLIENTS);
    }
}
