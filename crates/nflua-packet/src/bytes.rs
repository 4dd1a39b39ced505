//! Bounds-checked big-endian reads and writes: the only way the other
//! modules touch packet bytes at a computed offset, so none of them can
//! index out of bounds.

/// The big-endian `u16` at `at`, if both bytes lie inside `buf`.
pub(crate) fn get_u16(buf: &[u8], at: usize) -> Option<u16> {
    get_array(buf, at).map(u16::from_be_bytes)
}

/// The big-endian `u32` at `at`, if all four bytes lie inside `buf`.
pub(crate) fn get_u32(buf: &[u8], at: usize) -> Option<u32> {
    get_array(buf, at).map(u32::from_be_bytes)
}

/// The `N` bytes at `at`, if they lie inside `buf`.
pub(crate) fn get_array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Writes `value` big-endian at `at`. Callers only write into buffers they
/// sized themselves; a write that would not fit is a bug, caught in debug
/// builds and skipped (never a panic) in release builds.
pub(crate) fn put_u16(buf: &mut [u8], at: usize, value: u16) {
    match buf.get_mut(at..at.saturating_add(2)) {
        Some(dst) => dst.copy_from_slice(&value.to_be_bytes()),
        None => debug_assert!(false, "put_u16 at {at} in {} bytes", buf.len()),
    }
}
