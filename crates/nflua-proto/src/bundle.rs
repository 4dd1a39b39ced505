//! The body of a reload: several chunks in one EXECUTE request.
//!
//! An EXECUTE request whose first fragment carries [`MsgFlags::RELOAD`](crate::MsgFlags) asks
//! the daemon to build a new state with the named state's name, limits and flags, run the
//! chunks in it in order, and only if every one succeeds put it in the old one's place (our
//! addition; the original module has no reload). Its reassembled body is a bundle:
//!
//! ```text
//!  count u32 | count × ( name_len u32 | name | body_len u32 | body )
//! ```
//!
//! Numbers in host byte order like every other field of the protocol; names are chunk names
//! as EXECUTE's (not empty, no NUL, fitting its 255-byte field); the bundle fits in one EXECUTE request
//! ([`SCRIPT_MAX`](crate::consts::SCRIPT_MAX) bytes). Anything left after the last chunk, or
//! missing, is an error: a bundle is read whole or not at all.

use crate::consts::SCRIPT_NAME_MAX;
use crate::error::NameError;
use crate::name::check_name;
use crate::wire::{get_u32, put_u32};

/// Chunks one reload carries at most.
pub const MAX_BUNDLE_CHUNKS: usize = 64;

/// One chunk of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleChunk<'a> {
    pub name: &'a str,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("reload bundle: {0} chunks (1 to {MAX_BUNDLE_CHUNKS} allowed)")]
    Count(usize),
    #[error("reload bundle: chunk {index} is cut short")]
    Truncated { index: usize },
    #[error("reload bundle: chunk {index} name: {error}")]
    Name { index: usize, error: NameError },
    #[error("reload bundle: {0} bytes after the last chunk")]
    Trailing(usize),
}

/// Appends the bundle of `chunks`. The caller has checked the count and names.
pub fn encode_bundle(out: &mut Vec<u8>, chunks: &[BundleChunk<'_>]) {
    put_u32(out, chunks.len() as u32);
    for c in chunks {
        put_u32(out, c.name.len() as u32);
        out.extend_from_slice(c.name.as_bytes());
        put_u32(out, c.body.len() as u32);
        out.extend_from_slice(c.body);
    }
}

/// Checks what [`encode_bundle`] needs of `chunks`.
pub fn check_bundle(chunks: &[BundleChunk<'_>]) -> Result<(), BundleError> {
    if chunks.is_empty() || chunks.len() > MAX_BUNDLE_CHUNKS {
        return Err(BundleError::Count(chunks.len()));
    }
    for (index, c) in chunks.iter().enumerate() {
        chunk_name(c.name).map_err(|error| BundleError::Name { index, error })?;
    }
    Ok(())
}

/// Reads a bundle; every chunk is there and well named, or none is returned.
pub fn decode_bundle(bytes: &[u8]) -> Result<Vec<BundleChunk<'_>>, BundleError> {
    let mut rest = bytes;
    let count = take_u32(&mut rest).ok_or(BundleError::Truncated { index: 0 })?;
    if count == 0 || count > MAX_BUNDLE_CHUNKS {
        return Err(BundleError::Count(count));
    }
    let mut chunks = Vec::with_capacity(count);
    for index in 0..count {
        let name = take_field(&mut rest).ok_or(BundleError::Truncated { index })?;
        let name =
            std::str::from_utf8(name).map_err(|_| BundleError::Name { index, error: NameError::NotUtf8 })?;
        chunk_name(name).map_err(|error| BundleError::Name { index, error })?;
        let body = take_field(&mut rest).ok_or(BundleError::Truncated { index })?;
        chunks.push(BundleChunk { name, body });
    }
    if !rest.is_empty() {
        return Err(BundleError::Trailing(rest.len()));
    }
    Ok(chunks)
}

/// A chunk name: as EXECUTE's script name, but never empty (there is no default here).
fn chunk_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    check_name(name, SCRIPT_NAME_MAX)
}

fn take_u32(rest: &mut &[u8]) -> Option<usize> {
    let value = (rest.len() >= 4).then(|| get_u32(rest, 0) as usize)?;
    *rest = &rest[4..];
    Some(value)
}

/// A length-prefixed field.
fn take_field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take_u32(rest)?;
    let (field, after) = rest.split_at_checked(len)?;
    *rest = after;
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let chunks = [BundleChunk { name: "@a.lua", body: b"x = 1" }, BundleChunk { name: "=b", body: b"" }];
        check_bundle(&chunks).unwrap();
        let mut out = Vec::new();
        encode_bundle(&mut out, &chunks);
        assert_eq!(decode_bundle(&out).unwrap(), chunks);
    }

    #[test]
    fn bad_bundles_are_refused_whole() {
        let mut out = Vec::new();
        encode_bundle(&mut out, &[BundleChunk { name: "@a.lua", body: b"x = 1" }]);
        assert_eq!(decode_bundle(&out[..out.len() - 1]), Err(BundleError::Truncated { index: 0 }));
        let mut longer = out.clone();
        longer.push(0);
        assert_eq!(decode_bundle(&longer), Err(BundleError::Trailing(1)));
        assert_eq!(decode_bundle(&0u32.to_ne_bytes()), Err(BundleError::Count(0)));
        assert_eq!(decode_bundle(&[]), Err(BundleError::Truncated { index: 0 }));
        let mut empty_name = Vec::new();
        encode_bundle(&mut empty_name, &[BundleChunk { name: "", body: b"" }]);
        assert!(matches!(decode_bundle(&empty_name), Err(BundleError::Name { index: 0, .. })));
        assert_eq!(check_bundle(&[]), Err(BundleError::Count(0)));
    }
}
