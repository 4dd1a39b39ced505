//! One direction of a connection: the bytes in order from the start, the bytes held beyond a
//! hole, and where the stream ends.

use std::collections::BTreeMap;

/// TCP sequence space: a segment whose start is more than this far after the stream's start is
/// taken as lying before it (sequence numbers wrap).
const HALF_SPACE: u32 = 1 << 31;

/// One direction's stream.
#[derive(Debug, Clone, Default)]
pub struct Half {
    /// Sequence number of the stream's first byte, once known.
    start: Option<u32>,
    /// Whether `start` came from a SYN (then a later SYN does not move it).
    from_syn: bool,
    /// The stream's first bytes, in order (at most the depth).
    data: Vec<u8>,
    /// Bytes in order so far, kept or not (past the depth they are only counted).
    contiguous: u64,
    /// Segments beyond a hole, by offset from the start; they do not overlap each other.
    ahead: BTreeMap<u64, Vec<u8>>,
    ahead_bytes: usize,
    /// Offset of the byte after the last one, from a FIN.
    fin_at: Option<u64>,
    /// Out-of-order bytes passed the bound: the stream cannot be read in order any more.
    pub gap: bool,
    /// A segment was not stored because the table's memory bound was reached.
    pub over_memory: bool,
    /// A segment brought other bytes than those already seen at the same place. Which copy
    /// the receiver keeps depends on its stack (Linux replaces an out-of-order segment that a
    /// later one covers), so the stream the filter read may not be what the server reads.
    pub conflict: bool,
    /// The depth in force (set at every placement), for `finished`.
    depth_seen: usize,
    /// The bytes were dropped ([`Half::release`]): nothing is kept or held any more.
    released: bool,
}

/// What placing a segment did to the bytes kept and held (for the table's total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Placed {
    /// New bytes in order.
    pub grew: u64,
    /// Change of the bytes kept plus held.
    pub stored: isize,
}

/// The bounds that apply while placing one segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    pub depth: usize,
    pub max_ahead: usize,
    /// Bytes the table may still take (taken and given back as bytes are stored and freed).
    pub free: usize,
}

impl Half {
    /// The stream's first bytes, in order.
    pub fn stream(&self) -> &[u8] {
        &self.data
    }

    /// Bytes in order so far beyond what is kept.
    pub fn past_depth(&self) -> u64 {
        self.contiguous.saturating_sub(self.data.len() as u64)
    }

    /// Bytes in order so far.
    pub fn contiguous(&self) -> u64 {
        self.contiguous
    }

    /// Bytes held beyond a hole.
    pub fn held_ahead(&self) -> usize {
        self.ahead_bytes
    }

    /// Whether the direction is over: a FIN was seen and every byte before it is in (past the
    /// depth, where bytes are not kept, the FIN alone ends it).
    pub fn finished(&self) -> bool {
        self.fin_at
            .is_some_and(|fin| self.contiguous >= fin || self.released || self.data.len() >= self.depth_seen)
    }

    /// The sequence number of the next byte expected in order, once the start is known.
    pub(crate) fn expected_seq(&self) -> Option<u32> {
        self.start.map(|start| start.wrapping_add(self.contiguous as u32))
    }

    /// The sequence number of the first byte, when a SYN gave it.
    pub(crate) fn syn_start(&self) -> Option<u32> {
        self.start.filter(|_| self.from_syn)
    }

    /// Drops the kept and held bytes (the stream is no longer needed); counting goes on.
    pub(crate) fn release(&mut self) {
        self.data = Vec::new();
        self.ahead.clear();
        self.ahead_bytes = 0;
        self.released = true;
    }

    /// Bytes this direction keeps and holds.
    pub(crate) fn stored(&self) -> usize {
        self.data.len() + self.ahead_bytes
    }

    /// Places a segment: `seq`, SYN and FIN flags, payload.
    pub(crate) fn place(
        &mut self,
        seq: u32,
        syn: bool,
        fin: bool,
        payload: &[u8],
        room: &mut Room,
    ) -> Placed {
        let before = self.stored();
        self.depth_seen = room.depth.max(1);
        let first_data_seq = if syn { seq.wrapping_add(1) } else { seq };
        // Data on a SYN is kept by a receiver only with TCP Fast Open, which needs a cookie it
        // handed out before; without it the receiver drops it and the sender sends it again
        // after the handshake. So it is not read here: a receiver that kept it leaves a hole
        // that never fills, and the connection ends at the hold timeout.
        let payload = if syn { &[][..] } else { payload };
        match self.start {
            None => {
                self.start = Some(first_data_seq);
                self.from_syn = syn;
            }
            // A SYN seen after the first data segment (reordered) moves the start back once,
            // if the data seen so far lies after it.
            Some(start) if syn && !self.from_syn && self.contiguous == 0 && self.ahead.is_empty() => {
                if start.wrapping_sub(first_data_seq) < HALF_SPACE {
                    self.start = Some(first_data_seq);
                }
                self.from_syn = true;
            }
            Some(_) => {}
        }
        let start = self.start.unwrap_or(first_data_seq);
        let offset = first_data_seq.wrapping_sub(start);
        // Offsets "before" the start (in sequence space) are negative.
        let offset = if offset >= HALF_SPACE { -i64::from(offset.wrapping_neg()) } else { i64::from(offset) };
        let end = offset + payload.len() as i64;
        if fin && end >= 0 && self.fin_at.is_none() {
            self.fin_at = Some(end as u64);
        }
        let grew = self.take_bytes(offset, payload, room);
        let after = self.stored();
        Placed { grew, stored: after as isize - before as isize }
    }

    /// Places `payload` at `offset` (may be negative: the part before the start is cut).
    fn take_bytes(&mut self, offset: i64, payload: &[u8], room: &mut Room) -> u64 {
        let (mut offset, mut payload) = (offset, payload);
        if offset < 0 {
            let cut = usize::try_from(-offset).unwrap_or(usize::MAX).min(payload.len());
            payload = payload.get(cut..).unwrap_or_default();
            offset = 0;
        }
        if payload.is_empty() {
            return 0;
        }
        let offset = offset as u64;
        let end = offset + payload.len() as u64;
        self.check_overlap(offset, payload);
        if end <= self.contiguous {
            return 0; // all of it already in: the first copy stays
        }
        if offset > self.contiguous {
            self.hold(offset, payload, room);
            return 0;
        }
        // In order from `contiguous`: new bytes up to the next held segment (held bytes came
        // first and win), then the held run, then new bytes again, until the segment's end.
        let before = self.contiguous;
        while self.contiguous < end {
            let next_held = self.ahead.first_key_value().map_or(end, |(at, _)| *at);
            let stop = end.min(next_held.max(self.contiguous));
            if stop > self.contiguous {
                let from = (self.contiguous - offset) as usize;
                let fresh = payload.get(from..(stop - offset) as usize).unwrap_or_default();
                self.append(fresh, room);
            }
            let reached = self.contiguous;
            self.drain_ahead(room);
            if self.contiguous == reached && stop >= end {
                break;
            }
        }
        self.contiguous - before
    }

    /// Marks a conflict when `payload` at `offset` differs from bytes already kept or held
    /// where they overlap (a retransmission of the same bytes is fine).
    fn check_overlap(&mut self, offset: u64, payload: &[u8]) {
        let end = offset + payload.len() as u64;
        // Kept in order (only the kept part can be compared).
        let kept_end = (self.data.len() as u64).min(end);
        if offset < kept_end {
            let ours = self.data.get(offset as usize..kept_end as usize).unwrap_or_default();
            let theirs = payload.get(..(kept_end - offset) as usize).unwrap_or_default();
            if ours != theirs {
                self.conflict = true;
            }
        }
        // Held beyond a hole.
        for (&at, bytes) in self.ahead.range(..end) {
            let held_end = at + bytes.len() as u64;
            let (from, to) = (at.max(offset), held_end.min(end));
            if from < to {
                let ours = bytes.get((from - at) as usize..(to - at) as usize).unwrap_or_default();
                let theirs =
                    payload.get((from - offset) as usize..(to - offset) as usize).unwrap_or_default();
                if ours != theirs {
                    self.conflict = true;
                }
            }
        }
    }

    /// Appends bytes that continue the stream in order: kept up to the depth and the table's
    /// room, counted beyond. Held bytes they cover are dropped (those were a later copy).
    fn append(&mut self, bytes: &[u8], room: &mut Room) {
        // Kept only while everything before was kept too: the kept bytes stay one run.
        let keep = if !self.released && self.contiguous == self.data.len() as u64 {
            room.depth.saturating_sub(self.data.len()).min(bytes.len())
        } else {
            0
        };
        let kept = keep.min(room.free);
        if kept < keep {
            self.over_memory = true;
        }
        self.data.extend_from_slice(bytes.get(..kept).unwrap_or_default());
        room.free -= kept;
        self.contiguous += bytes.len() as u64;
    }

    /// Moves held segments that now continue the stream into it, trimming what overlaps.
    fn drain_ahead(&mut self, room: &mut Room) {
        while let Some((&offset, _)) = self.ahead.first_key_value() {
            if offset > self.contiguous {
                break;
            }
            let Some(bytes) = self.ahead.remove(&offset) else { break };
            self.ahead_bytes -= bytes.len();
            room.free = room.free.saturating_add(bytes.len());
            let end = offset + bytes.len() as u64;
            if end > self.contiguous {
                let fresh = bytes.get((self.contiguous - offset) as usize..).unwrap_or_default();
                self.append(fresh, room);
            }
        }
    }

    /// Holds bytes beyond a hole, keeping earlier held copies (first wins), within the bounds.
    fn hold(&mut self, offset: u64, payload: &[u8], room: &mut Room) {
        if self.released {
            return;
        }
        let end = offset + payload.len() as u64;
        // Past the depth nothing needs holding: it would only be counted once in order.
        let depth_end = (room.depth as u64).max(self.data.len() as u64);
        let end = end.min(depth_end.max(offset));
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        let mut cursor = offset;
        for (&at, bytes) in self.ahead.range(..end) {
            let stop = at + bytes.len() as u64;
            if stop <= cursor {
                continue;
            }
            if at > cursor {
                pieces.push((cursor, at.min(end)));
            }
            cursor = cursor.max(stop);
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            pieces.push((cursor, end));
        }
        for (from, to) in pieces {
            let len = (to - from) as usize;
            if self.ahead_bytes + len > room.max_ahead {
                self.gap = true;
                return;
            }
            if len > room.free {
                self.over_memory = true;
                return;
            }
            let slice = payload.get((from - offset) as usize..(to - offset) as usize).unwrap_or_default();
            self.ahead.insert(from, slice.to_vec());
            self.ahead_bytes += len;
            room.free -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ISN: u32 = 0xffff_fff0; // wraps within the first bytes

    fn room() -> Room {
        Room { depth: 1 << 20, max_ahead: 1 << 20, free: usize::MAX }
    }

    fn half_after_syn() -> Half {
        let mut h = Half::default();
        h.place(ISN, true, false, b"", &mut room());
        h
    }

    fn at(offset: u32) -> u32 {
        ISN.wrapping_add(1).wrapping_add(offset)
    }

    #[test]
    fn in_order_out_of_order_and_retransmitted() {
        let mut h = half_after_syn();
        assert_eq!(h.place(at(0), false, false, b"GET / HT", &mut room()).grew, 8);
        assert_eq!(h.place(at(16), false, false, b"\r\nHost: x", &mut room()).grew, 0, "held beyond a hole");
        assert_eq!(h.held_ahead(), 9);
        assert_eq!(h.place(at(0), false, false, b"XXXX", &mut room()).grew, 0, "retransmission");
        assert_eq!(h.place(at(8), false, false, b"TP/1.1", &mut room()).grew, 6);
        assert_eq!(h.stream(), b"GET / HTTP/1.1");
        // The hole [14, 16) fills with a segment overlapping the held one: first copy wins.
        assert_eq!(h.place(at(14), false, false, b"\r\n**********", &mut room()).grew, 12);
        assert_eq!(h.stream(), b"GET / HTTP/1.1\r\n\r\nHost: x*");
        assert_eq!(h.held_ahead(), 0);
    }

    #[test]
    fn fin_ends_the_direction_once_its_bytes_are_in() {
        let mut h = half_after_syn();
        h.place(at(3), false, true, b"def", &mut room());
        assert!(!h.finished(), "bytes before the FIN are missing");
        h.place(at(0), false, false, b"abc", &mut room());
        assert!(h.finished());
        assert_eq!(h.stream(), b"abcdef");
    }

    #[test]
    fn a_direction_picked_up_mid_stream_starts_at_its_first_segment() {
        let mut h = Half::default();
        h.place(1000, false, false, b"world", &mut room());
        h.place(995, false, false, b"hello", &mut room());
        assert_eq!(h.stream(), b"world", "bytes before the start are ignored");
    }

    #[test]
    fn depth_keeps_the_first_bytes_and_counts_the_rest() {
        let mut h = half_after_syn();
        let mut r = Room { depth: 4, ..room() };
        h.place(at(0), false, false, b"abcdef", &mut r);
        h.place(at(6), false, false, b"gh", &mut r);
        assert_eq!((h.stream(), h.past_depth(), h.contiguous()), (&b"abcd"[..], 4, 8));
    }

    #[test]
    fn too_much_out_of_order_is_a_gap() {
        let mut h = half_after_syn();
        let mut r = Room { max_ahead: 10, ..room() };
        h.place(at(100), false, false, &[1; 8], &mut r);
        assert!(!h.gap);
        h.place(at(200), false, false, &[1; 8], &mut r);
        assert!(h.gap, "16 bytes held would pass the bound of 10");
        assert_eq!(h.held_ahead(), 8);
    }

    #[test]
    fn the_memory_bound_stops_storing() {
        let mut h = half_after_syn();
        let mut r = Room { free: 5, ..room() };
        h.place(at(0), false, false, b"abcdefgh", &mut r);
        assert!(h.over_memory);
        assert_eq!((h.stream(), r.free), (&b"abcde"[..], 0));
        h.place(at(8), false, false, b"ij", &mut r);
        assert_eq!(h.stream(), b"abcde", "nothing kept after a byte that was not");
    }

    proptest! {
        /// Any cutting, reordering and duplication (duplicates with other bytes) of a stream
        /// gives, for every byte, the first copy that arrived; the stream is whole once every
        /// byte came.
        #[test]
        fn first_copy_of_every_byte_wins(
            original in proptest::collection::vec(any::<u8>(), 1..300),
            cuts in proptest::collection::vec((0usize..300, 1usize..40, any::<bool>()), 1..60),
        ) {
            let len = original.len();
            // Segments: each (start, length, altered) from the cuts, then one full pass in order
            // so that every byte arrives at least once.
            let mut segments: Vec<(usize, Vec<u8>)> = cuts
                .iter()
                .map(|&(start, n, altered)| {
                    let start = start % len;
                    let end = (start + n).min(len);
                    let bytes = original[start..end].iter().map(|b| if altered { b ^ 0x5a } else { *b }).collect();
                    (start, bytes)
                })
                .collect();
            segments.extend(original.chunks(7).enumerate().map(|(i, c)| (i * 7, c.to_vec())));
            let mut model: Vec<Option<u8>> = vec![None; len];
            let mut h = half_after_syn();
            for (start, bytes) in &segments {
                h.place(at(*start as u32), false, false, bytes, &mut room());
                for (i, b) in bytes.iter().enumerate() {
                    model[start + i].get_or_insert(*b);
                }
            }
            let expected: Vec<u8> = model.iter().map(|b| b.unwrap()).collect();
            prop_assert_eq!(h.stream(), &expected[..]);
            prop_assert_eq!(h.held_ahead(), 0);
        }

        #[test]
        fn never_panics(segments in proptest::collection::vec((any::<u32>(), any::<bool>(), any::<bool>(), 0usize..50), 0..40)) {
            let mut h = Half::default();
            let mut r = Room { depth: 64, max_ahead: 32, free: 100 };
            for (seq, syn, fin, n) in segments {
                h.place(seq, syn, fin, &vec![7; n], &mut r);
                prop_assert!(h.stream().len() <= 64 && h.held_ahead() <= 32);
            }
        }
    }
}
