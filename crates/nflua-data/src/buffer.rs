//! Shared memory and the views over it.
//!
//! ```text
//!   Data { gen: 3, offset: 0, len: 8 } ──┐
//!   Data { gen: 3, offset: 2, len: 4 } ──┼──► Arc<RwLock<Memory { generation: 3, bytes }>>
//!   Data { gen: 2, offset: 6, len: 2 } ──┘        (one allocation; the gen-2 view is dead)
//! ```
//!
//! Every view cut from a buffer (clones, segments) holds the same `Arc` and the generation of the
//! memory it was made for. A view is valid while its generation is the memory's: the bytes of a
//! generation never move or change length, so a view's `offset..offset + len`, checked when the
//! view is made, stays in bounds. [`Data::invalidate`] bumps the generation and frees the bytes
//! inside the lock: every view sees it at once, and each access checks for it under the same
//! lock. A poisoned lock is recovered (the bytes are plain bytes; no invariant can be
//! half-updated).
//!
//! The generation also lets one memory be reused without one allocation per use (see
//! `LentBuffer`): `refill` bumps the generation and copies new bytes in, keeping the
//! allocation, and `retire` bumps it without freeing. Either way every view of an earlier fill
//! fails with [`DataError::Invalidated`], exactly as after `invalidate`.
//!
//! Memory a state's meter counts (see `meter.rs`) holds its `Reservation`: freeing the bytes
//! (`invalidate`, or the last view dropped) gives them back.
//!
//! A view also carries the layout applied to it with `d:layout{...}`; the layout belongs to the
//! view, not to the memory (segments start without one, Rust clones copy it).

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::DataError;
use crate::layout::Layout;
use crate::meter::Reservation;

/// The bytes and the generation they belong to; views of another generation are dead.
#[derive(Debug)]
struct Memory {
    generation: u64,
    bytes: Vec<u8>,
    /// What the bytes hold against their state's meter, if one counts them.
    reservation: Option<Reservation>,
}

impl Memory {
    /// The bytes of the view `generation, offset, len`, if it is still valid.
    fn range(&self, generation: u64, offset: usize, len: usize) -> Result<std::ops::Range<usize>, DataError> {
        if self.generation != generation {
            return Err(DataError::Invalidated);
        }
        // In bounds for a view of this generation; checked anyway, so a view forged from bad
        // numbers fails instead of reading past the bytes.
        let end = offset.checked_add(len).filter(|&end| end <= self.bytes.len());
        end.map(|end| offset..end).ok_or(DataError::Invalidated)
    }
}

/// A view over a byte buffer shared between Lua and Rust (the Lua `data` object).
///
/// Clones share the memory: a write through one is seen by all. Once [`Data::invalidate`] has
/// been called on any view of the memory, every access through every view fails with
/// [`DataError::Invalidated`].
#[derive(Clone)]
pub struct Data {
    memory: Arc<RwLock<Memory>>,
    /// The memory's generation this view was made for.
    generation: u64,
    offset: usize,
    len: usize,
    layout: Option<Arc<Layout>>,
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("valid", &self.is_valid())
            .field("layout_fields", &self.layout.as_ref().map_or(0, |l| l.len()))
            .finish()
    }
}

impl Data {
    /// A new zero-filled buffer of `size` bytes.
    pub fn with_size(size: usize) -> Data {
        Data::from_vec(vec![0; size])
    }

    /// Like [`Data::with_size`], but reports allocation failure instead of aborting.
    pub fn try_with_size(size: usize) -> Result<Data, DataError> {
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(size).map_err(|_| DataError::NoMemory { size })?;
        bytes.resize(size, 0);
        Ok(Data::from_vec(bytes))
    }

    /// A new buffer holding a copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Data {
        Data::from_vec(bytes.to_vec())
    }

    /// A new buffer taking ownership of `bytes` (no copy).
    pub fn from_vec(bytes: Vec<u8>) -> Data {
        Data::from_vec_reserved(bytes, None)
    }

    /// [`Data::from_vec`] for bytes counted by `reservation`, given back when they are freed.
    pub(crate) fn from_vec_reserved(bytes: Vec<u8>, reservation: Option<Reservation>) -> Data {
        let len = bytes.len();
        let memory = Memory { generation: 0, bytes, reservation };
        Data { memory: Arc::new(RwLock::new(memory)), generation: 0, offset: 0, len, layout: None }
    }

    /// Length of this view in bytes (kept after invalidation).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when this view has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// False once the memory has been invalidated through any view.
    pub fn is_valid(&self) -> bool {
        self.read().generation == self.generation
    }

    fn read(&self) -> RwLockReadGuard<'_, Memory> {
        self.memory.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Memory> {
        self.memory.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// This view's range of `memory`, if the view is still valid.
    fn range(&self, memory: &Memory) -> Result<std::ops::Range<usize>, DataError> {
        memory.range(self.generation, self.offset, self.len)
    }

    /// Calls `f` with this view's bytes, without copying. `f` runs under the buffer's read lock:
    /// it must not access this memory's views mutably (that would deadlock).
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, DataError> {
        let guard = self.read();
        let range = self.range(&guard)?;
        Ok(f(&guard.bytes[range]))
    }

    /// Calls `f` with this view's bytes, mutably. `f` runs under the buffer's write lock: it
    /// must not access this memory's views at all (that would deadlock).
    pub fn with_bytes_mut<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> Result<R, DataError> {
        let mut guard = self.write();
        let range = self.range(&guard)?;
        Ok(f(&mut guard.bytes[range]))
    }

    /// A copy of this view's bytes.
    pub fn to_vec(&self) -> Result<Vec<u8>, DataError> {
        self.with_bytes(<[u8]>::to_vec)
    }

    /// The byte at `offset` (0-based within this view); `None` past the end.
    pub fn byte_at(&self, offset: usize) -> Result<Option<u8>, DataError> {
        self.with_bytes(|b| b.get(offset).copied())
    }

    /// Copies `bytes` into this view at `offset` (0-based within this view).
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<(), DataError> {
        self.with_bytes_mut(|view| {
            let size = view.len();
            let target = offset
                .checked_add(bytes.len())
                .and_then(|end| view.get_mut(offset..end))
                .ok_or(DataError::OutOfRange { offset, len: bytes.len(), size })?;
            target.copy_from_slice(bytes);
            Ok(())
        })?
    }

    /// A view over the same memory: `len` bytes (default: to the end) from `offset` (0-based
    /// within this view). The new view has no layout.
    pub fn segment(&self, offset: usize, len: Option<usize>) -> Result<Data, DataError> {
        if !self.is_valid() {
            return Err(DataError::Invalidated);
        }
        let len = match len {
            Some(len) => len,
            None => self.len.checked_sub(offset).ok_or(DataError::OutOfRange {
                offset,
                len: 0,
                size: self.len,
            })?,
        };
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.view(self.generation, self.offset + offset, len, None)),
            _ => Err(DataError::OutOfRange { offset, len, size: self.len }),
        }
    }

    /// A view of the same memory with the given generation, range (from the start of the memory)
    /// and layout. Nothing is checked here: a view that does not fit its generation's bytes is
    /// invalid on every access.
    pub(crate) fn view(
        &self,
        generation: u64,
        offset: usize,
        len: usize,
        layout: Option<Arc<Layout>>,
    ) -> Data {
        Data { memory: Arc::clone(&self.memory), generation, offset, len, layout }
    }

    /// The generation and the range from the start of the memory: what a view is made of.
    pub(crate) fn parts(&self) -> (u64, usize, usize) {
        (self.generation, self.offset, self.len)
    }

    /// Byte `index` (0-based) of the view `generation, offset, len` of this memory, without
    /// making the view: `None` past the view's end. The fast path of `view[i]` (see `view.rs`).
    pub(crate) fn byte_of(
        &self,
        generation: u64,
        offset: usize,
        len: usize,
        index: usize,
    ) -> Result<Option<u8>, DataError> {
        let memory = self.read();
        let range = memory.range(generation, offset, len)?;
        Ok(if index < len { memory.bytes.get(range.start + index).copied() } else { None })
    }

    /// Invalidates the memory for every view sharing it (clones and segments) and frees it.
    /// Idempotent.
    pub fn invalidate(&self) {
        let mut memory = self.write();
        memory.generation += 1;
        memory.bytes = Vec::new();
        // Only atomics: safe under the lock.
        memory.reservation = None;
    }

    /// Invalidates every view of the memory, as [`Data::invalidate`], but keeps the bytes'
    /// allocation for the next [`Data::refill`].
    pub(crate) fn retire(&self) {
        self.write().generation += 1;
    }

    /// Invalidates every view of the memory and fills it with a copy of `bytes`, reusing its
    /// allocation (it only grows, when `bytes` is longer than any fill before); returns a view of
    /// all of it, without a layout.
    #[cfg(test)]
    pub(crate) fn refill(&self, bytes: &[u8]) -> Data {
        self.refill_parts(&[bytes]).0
    }

    /// [`Data::refill`] with the concatenation of `parts`, copied straight in (a caller that
    /// puts a header before its bytes needs no buffer of its own to join them first); also
    /// returns the bytes the memory now has allocated (it keeps the largest fill's).
    pub(crate) fn refill_parts(&self, parts: &[&[u8]]) -> (Data, usize) {
        let mut memory = self.write();
        memory.generation += 1;
        memory.bytes.clear();
        for part in parts {
            memory.bytes.extend_from_slice(part);
        }
        let len = memory.bytes.len();
        (self.view(memory.generation, 0, len, None), memory.bytes.capacity())
    }

    /// True when both views share the same memory.
    pub fn shares_memory_with(&self, other: &Data) -> bool {
        Arc::ptr_eq(&self.memory, &other.memory)
    }

    /// The layout applied to this view, if any.
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_deref()
    }

    /// Applies `layout` to this view (replacing any previous one); `None` removes it.
    pub fn set_layout(&mut self, layout: Option<Arc<Layout>>) {
        self.layout = layout;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_buffers() {
        assert_eq!(Data::with_size(3).to_vec(), Ok(vec![0, 0, 0]));
        assert_eq!(Data::from_bytes(b"ab").to_vec(), Ok(b"ab".to_vec()));
        assert_eq!(Data::from_vec(vec![1, 2]).to_vec(), Ok(vec![1, 2]));
        assert!(Data::with_size(0).is_empty());
        assert_eq!(Data::try_with_size(4).map(|d| d.len()), Ok(4));
        assert_eq!(
            Data::try_with_size(usize::MAX).map(|d| d.len()),
            Err(DataError::NoMemory { size: usize::MAX })
        );
    }

    #[test]
    fn clones_share_memory() {
        let a = Data::with_size(4);
        let b = a.clone();
        b.write_at(1, &[7, 8]).unwrap();
        assert_eq!(a.to_vec(), Ok(vec![0, 7, 8, 0]));
        assert!(a.shares_memory_with(&b));
        assert!(!a.shares_memory_with(&Data::with_size(4)));
    }

    #[test]
    fn write_at_checks_range() {
        let d = Data::with_size(4);
        assert_eq!(d.write_at(4, &[]), Ok(()));
        assert_eq!(d.write_at(3, &[1, 2]), Err(DataError::OutOfRange { offset: 3, len: 2, size: 4 }));
        assert!(d.write_at(usize::MAX, &[1]).is_err());
        assert_eq!(d.to_vec(), Ok(vec![0; 4]));
    }

    #[test]
    fn segments_are_windows() {
        let d = Data::from_bytes(&[0, 1, 2, 3, 4, 5]);
        let s = d.segment(2, Some(3)).unwrap();
        assert_eq!(s.to_vec(), Ok(vec![2, 3, 4]));
        let t = s.segment(1, None).unwrap();
        assert_eq!(t.to_vec(), Ok(vec![3, 4]));
        t.write_at(0, &[30]).unwrap();
        assert_eq!(d.byte_at(3), Ok(Some(30)));
        assert_eq!(t.byte_at(2), Ok(None), "no reads past the view");
        assert!(t.write_at(1, &[1, 1]).is_err(), "no writes past the view");
        assert_eq!(d.byte_at(5), Ok(Some(5)));
        assert_eq!(d.segment(6, None).map(|s| s.len()), Ok(0));
        assert!(d.segment(7, None).is_err());
        assert!(d.segment(2, Some(5)).is_err());
        assert!(d.segment(usize::MAX, Some(2)).is_err());
    }

    #[test]
    fn invalidation_reaches_every_view() {
        let d = Data::from_bytes(b"abcdef");
        let s = d.segment(1, Some(2)).unwrap();
        let c = d.clone();
        s.invalidate();
        for v in [&d, &s, &c] {
            assert!(!v.is_valid());
            assert_eq!(v.to_vec(), Err(DataError::Invalidated));
            assert_eq!(v.write_at(0, b"x"), Err(DataError::Invalidated));
            assert_eq!(v.byte_at(0), Err(DataError::Invalidated));
            assert!(matches!(v.segment(0, None), Err(DataError::Invalidated)));
        }
        assert_eq!(d.len(), 6);
        d.invalidate();
    }

    #[test]
    fn refill_reuses_the_memory_and_kills_older_views() {
        let d = Data::from_bytes(b"abcdef");
        let s = d.segment(1, Some(2)).unwrap();
        let first = d.refill(b"xyz");
        assert!(first.shares_memory_with(&d));
        assert_eq!(first.to_vec(), Ok(b"xyz".to_vec()));
        for old in [&d, &s] {
            assert!(!old.is_valid());
            assert_eq!(old.to_vec(), Err(DataError::Invalidated));
            assert_eq!(old.write_at(0, b"q"), Err(DataError::Invalidated));
            assert!(matches!(old.segment(0, None), Err(DataError::Invalidated)));
        }
        let seg = first.segment(1, None).unwrap();
        seg.write_at(0, b"Y").unwrap();
        assert_eq!(first.to_vec(), Ok(b"xYz".to_vec()));
        let capacity = first.read().bytes.capacity();
        assert!(capacity >= 3);
        first.retire();
        assert_eq!(seg.byte_at(0), Err(DataError::Invalidated));
        assert_eq!(first.to_vec(), Err(DataError::Invalidated));
        let second = d.refill(b"12");
        assert_eq!(second.to_vec(), Ok(b"12".to_vec()));
        assert_eq!(second.read().bytes.capacity(), capacity, "no new allocation");
        assert_eq!(first.to_vec(), Err(DataError::Invalidated));
        // A view from numbers that do not fit is invalid, not out of bounds.
        let (generation, _, _) = second.parts();
        assert_eq!(second.view(generation, 1, 5, None).to_vec(), Err(DataError::Invalidated));
        assert_eq!(second.view(generation, usize::MAX, 2, None).to_vec(), Err(DataError::Invalidated));
        assert_eq!(second.view(generation, 1, 1, None).to_vec(), Ok(b"2".to_vec()));
        second.invalidate();
        assert_eq!(second.to_vec(), Err(DataError::Invalidated));
        assert_eq!(d.refill(b"again").to_vec(), Ok(b"again".to_vec()), "refill after invalidate");
        let (joined, capacity) = d.refill_parts(&[b"ab", b"", b"cde"]);
        assert!(capacity >= 5);
        assert_eq!(joined.to_vec(), Ok(b"abcde".to_vec()));
        let (_, offset, len) = joined.parts();
        assert_eq!((offset, len), (0, 5));
    }

    #[test]
    fn poisoned_lock_is_recovered() {
        let d = Data::from_bytes(b"ab");
        let d2 = d.clone();
        let _ = std::thread::spawn(move || {
            d2.with_bytes_mut(|_| panic!("poison")).ok();
        })
        .join();
        assert_eq!(d.to_vec(), Ok(b"ab".to_vec()));
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Data>();
    }
}
