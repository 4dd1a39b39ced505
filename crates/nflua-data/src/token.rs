//! The views a hook or callback call hands to its function, as light userdata ("tokens")
//! instead of objects on the Lua heap.
//!
//! A call's views (a hook's `frame` and `packet`, a receive callback's buffer) used to be two
//! fresh 80-byte userdata per call. Small as they were, they were the only thing a typical
//! filter allocated, so every few thousand packets they drove a collection that walked the
//! whole state (library tables, the script's own tables): a quarter of the instructions of a
//! hook reading two bytes (callgrind), and more of its time in the daemon, where that walk
//! meets cold caches.
//!
//! A token is a number: which lent memory (its slot), which of the call's two views, and the
//! generation of the fill it was made for. What the view covers (offset, length, layout) is in
//! a [`Record`] beside the memory, rewritten for each call; making a token allocates nothing, and
//! a token needs no collection. It stays a faithful view: a token of an earlier call names
//! another generation than its record's, so it is dead ("data buffer is no longer valid")
//! wherever a script stashed it, exactly as a stashed userdata view.
//!
//! Light userdata share one metatable per Lua state (Lua keeps it per type), so the views'
//! metatable becomes every light userdata's in a state that lends tokens. The other light
//! userdata a script can hold (`json.null`, `debug.upvalueid`'s answers) are never tokens —
//! a token's lowest bit is set, and those are null or aligned addresses — and the views'
//! metamethods answer them as Lua does a light userdata without metatable (see `lua/lent.rs`).
//!
//! Bits, lowest first: 1 (the mark), 12 of slot, 1 of view, 50 of generation. Fifty bits of
//! generation: a memory's generation moves twice per call, so a token stashed by a script and
//! touched exactly 2^49 calls later (17 years of a million calls a second) would read that
//! call's view; any other stale token is dead.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use crate::layout::Layout;
use crate::view::ViewCell;

const SLOT_BITS: u32 = 12;
const GENERATION_SHIFT: u32 = 1 + SLOT_BITS + 1;
const GENERATION_MASK: u64 = (1 << (64 - GENERATION_SHIFT)) - 1;

/// The slots a token can name: a state's first 4096 lent memories (the engine lends two).
pub(crate) const MAX_SLOTS: usize = 1 << SLOT_BITS;

/// The views one call hands out at most.
pub(crate) const VIEWS_PER_CALL: usize = 2;

/// A generation no memory reaches (it would take 2^64 fills): a stale token's cell.
const DEAD: u64 = u64::MAX;

// Tokens are pointers: a narrower pointer would leave too few bits of generation.
const _: () = assert!(usize::BITS == 64);

/// The token of view `view` (0 or 1) of slot `slot` at `generation`; `None` for a slot beyond
/// [`MAX_SLOTS`] or a view beyond [`VIEWS_PER_CALL`].
pub(crate) fn encode(slot: usize, view: usize, generation: u64) -> Option<usize> {
    if slot >= MAX_SLOTS || view >= VIEWS_PER_CALL {
        return None;
    }
    let bits = 1 | (slot as u64) << 1 | (view as u64) << (1 + SLOT_BITS) | generation << GENERATION_SHIFT;
    usize::try_from(bits).ok()
}

/// What a token names: slot, view, and the low bits of the generation. `None` for a light
/// userdata that is not a token.
pub(crate) fn decode(token: usize) -> Option<(usize, usize, u64)> {
    let bits = token as u64;
    if bits & 1 == 0 {
        return None;
    }
    let slot = ((bits >> 1) & (MAX_SLOTS as u64 - 1)) as usize;
    let view = ((bits >> (1 + SLOT_BITS)) & 1) as usize;
    Some((slot, view, bits >> GENERATION_SHIFT))
}

/// What the tokens of one lent memory cover in the current call: one record per view, shared
/// by the `LentBuffer` (which writes them before each call) and the state's list of lent
/// memories (where the views' metamethods read them). Atomics, so the state stays `Send`; only
/// the thread running the state touches them.
#[derive(Debug, Default)]
pub(crate) struct Records([Record; VIEWS_PER_CALL]);

impl Records {
    /// Points view `view` at `offset..offset + len` of the fill `generation`, without a layout.
    pub(crate) fn set(&self, view: usize, generation: u64, offset: u32, len: u32) {
        if let Some(record) = self.0.get(view) {
            record.set(generation, offset, len);
        }
    }

    /// The cell a token of this memory (slot `slot`) stands for: its record's range if the
    /// token is of the record's fill, a dead cell otherwise.
    pub(crate) fn cell(&self, slot: usize, view: usize, generation: u64) -> Option<ViewCell> {
        let record = self.0.get(view)?;
        let current = record.generation.load(Relaxed);
        if current & GENERATION_MASK == generation & GENERATION_MASK {
            ViewCell::new(
                slot,
                current,
                record.offset.load(Relaxed) as usize,
                record.len.load(Relaxed) as usize,
            )
        } else {
            ViewCell::new(slot, DEAD, 0, 0)
        }
    }

    /// The layout given to view `view` of the fill `generation` (`d:layout(...)`), if any.
    pub(crate) fn layout(&self, view: usize, generation: u64) -> Option<Arc<Layout>> {
        let record = self.0.get(view)?;
        if !record.has_layout.load(Relaxed) || record.generation.load(Relaxed) != generation {
            return None;
        }
        record.layout.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Gives view `view` of the fill `generation` a layout; false if the token is stale.
    pub(crate) fn set_layout(&self, view: usize, generation: u64, layout: Arc<Layout>) -> bool {
        let Some(record) = self.0.get(view) else { return false };
        if record.generation.load(Relaxed) != generation {
            return false;
        }
        *record.layout.lock().unwrap_or_else(PoisonError::into_inner) = Some(layout);
        record.has_layout.store(true, Relaxed);
        true
    }
}

#[derive(Debug, Default)]
struct Record {
    generation: AtomicU64,
    offset: AtomicU32,
    len: AtomicU32,
    /// Whether `layout` holds one (so a call without layouts takes no lock).
    has_layout: AtomicBool,
    layout: Mutex<Option<Arc<Layout>>>,
}

impl Record {
    fn set(&self, generation: u64, offset: u32, len: u32) {
        self.generation.store(generation, Relaxed);
        self.offset.store(offset, Relaxed);
        self.len.store(len, Relaxed);
        if self.has_layout.swap(false, Relaxed) {
            // The previous call's layout goes (dropped here, outside any Lua call).
            let old = self.layout.lock().unwrap_or_else(PoisonError::into_inner).take();
            drop(old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_never_aligned() {
        for (slot, view, generation) in [(0, 0, 1), (1, 1, 2), (MAX_SLOTS - 1, 1, GENERATION_MASK)] {
            let token = encode(slot, view, generation).expect("fits");
            assert_eq!(token & 1, 1);
            assert_eq!(decode(token), Some((slot, view, generation)));
        }
        assert_eq!(encode(MAX_SLOTS, 0, 1), None);
        assert_eq!(encode(0, VIEWS_PER_CALL, 1), None);
        // json.null and every aligned address (debug.upvalueid) are not tokens.
        assert_eq!(decode(0), None);
        assert_eq!(decode(0x5555_0000_1230), None);
    }

    #[test]
    fn a_token_of_an_earlier_fill_is_dead() {
        let records = Records::default();
        records.set(1, 7, 14, 50);
        let live = records.cell(3, 1, 7).expect("cell");
        assert_eq!((live.slot(), live.generation(), live.offset(), live.len()), (3, 7, 14, 50));
        let stale = records.cell(3, 1, 5).expect("cell");
        assert_eq!(stale.generation(), DEAD);
        assert!(records.cell(3, 2, 7).is_none());
    }

    #[test]
    fn layouts_last_one_fill() {
        let records = Records::default();
        records.set(0, 3, 0, 10);
        let layout = Arc::new(Layout::default());
        assert!(records.set_layout(0, 3, Arc::clone(&layout)));
        assert!(records.layout(0, 3).is_some());
        assert!(!records.set_layout(0, 2, Arc::clone(&layout)), "a stale token gets no layout");
        records.set(0, 5, 0, 10);
        assert!(records.layout(0, 5).is_none(), "the next call's views start without one");
        assert_eq!(Arc::strong_count(&layout), 1, "the old layout was dropped");
    }
}
