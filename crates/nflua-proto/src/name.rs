//! NUL-padded fixed-size name fields (`char name[64]`, `char scriptname[255]`).
//!
//! Reading stops at the first NUL: old clients leave garbage after it. A field
//! with no NUL at all is an error, as is a name that is not UTF-8.

use crate::consts::STATE_NAME_MAX;
use crate::error::NameError;

/// Reads a NUL-terminated name from a fixed field. Empty names are allowed
/// here; [`state_name`] is the stricter reader for state names.
pub fn read_name(field: &[u8]) -> Result<&str, NameError> {
    let end = field.iter().position(|&b| b == 0).ok_or(NameError::NoNul { field: field.len() })?;
    std::str::from_utf8(&field[..end]).map_err(|_| NameError::NotUtf8)
}

/// Reads a state name: 1..=63 bytes of UTF-8 followed by a NUL.
pub fn state_name(field: &[u8]) -> Result<&str, NameError> {
    let name = read_name(field)?;
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    Ok(name)
}

/// Checks a state name a caller wants to send.
pub fn check_state_name(name: &str) -> Result<(), NameError> {
    check_name(name, STATE_NAME_MAX)?;
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    Ok(())
}

/// Checks that `name` fits a field of `field` bytes with its NUL and has no
/// NUL inside (which would silently cut it).
pub fn check_name(name: &str, field: usize) -> Result<(), NameError> {
    if name.len() >= field {
        return Err(NameError::TooLong { len: name.len(), max: field - 1 });
    }
    if name.as_bytes().contains(&0) {
        return Err(NameError::InnerNul);
    }
    Ok(())
}

/// Appends `name` NUL-padded to `field` bytes. The caller has checked it.
pub fn emit_name(out: &mut Vec<u8>, name: &str, field: usize) {
    let bytes = &name.as_bytes()[..name.len().min(field - 1)];
    out.extend_from_slice(bytes);
    out.resize(out.len() + field - bytes.len(), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_first_nul_ignoring_garbage() {
        let mut f = [0xAAu8; 64];
        f[..3].copy_from_slice(b"abc");
        f[3] = 0;
        assert_eq!(state_name(&f), Ok("abc"));
    }

    #[test]
    fn rejects_missing_nul_empty_and_bad_utf8() {
        assert_eq!(state_name(&[b'a'; 64]), Err(NameError::NoNul { field: 64 }));
        assert_eq!(state_name(&[0u8; 64]), Err(NameError::Empty));
        let mut f = [0u8; 64];
        f[0] = 0xFF;
        assert_eq!(state_name(&f), Err(NameError::NotUtf8));
    }

    #[test]
    fn length_limits() {
        assert!(check_state_name(&"a".repeat(63)).is_ok());
        assert_eq!(check_state_name(&"a".repeat(64)), Err(NameError::TooLong { len: 64, max: 63 }));
        assert_eq!(check_state_name(""), Err(NameError::Empty));
        assert_eq!(check_state_name("a\0b"), Err(NameError::InnerNul));
    }

    #[test]
    fn emits_padded_field() {
        let mut out = Vec::new();
        emit_name(&mut out, "st", 64);
        assert_eq!(out.len(), 64);
        assert_eq!(&out[..3], b"st\0");
    }
}
