//! Netlink attributes (NLA): reading them in place and appending them to a message.
//!
//! ```text
//!  0        2        4                 4+len-4   align4(len)
//! +--------+--------+-----------------+---------+
//! | len    | type   | payload         | padding |
//! | u16 ne | u16 ne | len - 4 bytes   | 0..=3   |
//! +--------+--------+-----------------+---------+
//! ```
//!
//! `len` counts the header and the payload, not the padding. The two top bits of `type` are
//! flags (nested, network byte order) and are masked off here. The attribute header is in host
//! byte order; the numbers inside nfnetlink_queue payloads are big endian.

use crate::consts::{NLA_HDRLEN, NLA_TYPE_MASK};

/// Rounds up to the 4-byte alignment of Netlink headers and attributes.
pub(crate) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// One attribute, borrowed from the message it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attr<'a> {
    /// The attribute type with the nested / byte-order flags masked off.
    pub kind: u16,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The payload as a big-endian u32 (`nla_get_be32`); `None` when it is shorter than 4 bytes.
    pub fn be_u32(&self) -> Option<u32> {
        let bytes = self.payload.get(..4)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// The attributes nested in this one's payload.
    pub fn nested(&self) -> AttrIter<'a> {
        AttrIter::new(self.payload)
    }
}

/// Why an attribute could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrError {
    /// The length field is smaller than the attribute header.
    TooShort { offset: usize, len: u16 },
    /// The length field runs past the end of the enclosing buffer.
    PastEnd { offset: usize, len: u16, available: usize },
}

/// Walks the attributes of a buffer; stops for good after the first error.
///
/// Up to three trailing bytes that cannot hold an attribute header are ignored, as the kernel's
/// `nla_parse` does.
#[derive(Debug, Clone)]
pub(crate) struct AttrIter<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> AttrIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        AttrIter { rest: bytes, offset: 0 }
    }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Result<Attr<'a>, AttrError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.rest[0], self.rest[1]]);
        let kind = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        let offset = self.offset;
        let total = usize::from(len);
        if total < NLA_HDRLEN {
            self.rest = &[];
            return Some(Err(AttrError::TooShort { offset, len }));
        }
        if total > self.rest.len() {
            let available = self.rest.len();
            self.rest = &[];
            return Some(Err(AttrError::PastEnd { offset, len, available }));
        }
        let payload = &self.rest[NLA_HDRLEN..total];
        // The last attribute may lack its padding; never step past the end.
        let step = align4(total).min(self.rest.len());
        self.rest = &self.rest[step..];
        self.offset += step;
        Some(Ok(Attr { kind, payload }))
    }
}

/// Appends an attribute header announcing `payload_len` bytes; the caller appends the payload
/// and then [`pad`]s.
pub(crate) fn put_header(buf: &mut Vec<u8>, kind: u16, payload_len: u16) {
    let len = payload_len + NLA_HDRLEN as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
}

/// Appends zero bytes up to the next 4-byte boundary.
pub(crate) fn pad(buf: &mut Vec<u8>) {
    let padded = align4(buf.len());
    buf.resize(padded, 0);
}

/// Appends a whole attribute. `payload` must be shorter than 65532 bytes; the callers only pass
/// fixed-size structs here (big payloads go through [`put_header`]).
pub(crate) fn put(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    debug_assert!(payload.len() <= usize::from(u16::MAX) - NLA_HDRLEN);
    put_header(buf, kind, payload.len() as u16);
    buf.extend_from_slice(payload);
    pad(buf);
}

/// Appends an attribute holding a big-endian u32 (`nla_put_be32`).
pub(crate) fn put_be_u32(buf: &mut Vec<u8>, kind: u16, value: u32) {
    put(buf, kind, &value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr_bytes(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        put(&mut buf, kind, payload);
        buf
    }

    #[test]
    fn put_pads_to_four_bytes_and_len_excludes_padding() {
        let buf = attr_bytes(7, &[0xAA, 0xBB, 0xCC, 0xDD, 0xEE]);
        let mut expected = Vec::new();
        expected.extend_from_slice(&9u16.to_ne_bytes()); // len: 4 header + 5 payload
        expected.extend_from_slice(&7u16.to_ne_bytes()); // type
        expected.extend_from_slice(&[0xAA, 0xBB, 0xCC, 0xDD, 0xEE]); // payload
        expected.extend_from_slice(&[0, 0, 0]); // padding to 12
        assert_eq!(buf, expected);
    }

    #[test]
    fn be_u32_is_big_endian() {
        let buf = attr_bytes(3, &[0x12, 0x34, 0x56, 0x78]);
        let attr = AttrIter::new(&buf).next().unwrap().unwrap();
        assert_eq!(attr.kind, 3);
        assert_eq!(attr.be_u32(), Some(0x1234_5678));
    }

    #[test]
    fn short_payload_has_no_u32() {
        let buf = attr_bytes(3, &[1, 2]);
        let attr = AttrIter::new(&buf).next().unwrap().unwrap();
        assert_eq!(attr.be_u32(), None);
    }

    #[test]
    fn iterates_several_and_masks_flags() {
        let mut buf = attr_bytes(1, &[1]);
        buf.extend(attr_bytes(2 | crate::consts::NLA_F_NESTED, &[]));
        buf.extend(attr_bytes(3, &[1, 2, 3, 4]));
        let kinds: Vec<u16> = AttrIter::new(&buf).map(|a| a.unwrap().kind).collect();
        assert_eq!(kinds, [1, 2, 3]);
    }

    #[test]
    fn last_attribute_without_padding_is_accepted() {
        let mut buf = attr_bytes(1, &[9]);
        buf.truncate(5); // header + 1 payload byte, padding cut off
        let attrs: Vec<_> = AttrIter::new(&buf).collect();
        assert_eq!(attrs, [Ok(Attr { kind: 1, payload: &[9] })]);
    }

    #[test]
    fn length_below_header_is_an_error_and_stops() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&2u16.to_ne_bytes()); // len 2 < 4
        buf.extend_from_slice(&1u16.to_ne_bytes());
        buf.extend(attr_bytes(3, &[0; 4]));
        let attrs: Vec<_> = AttrIter::new(&buf).collect();
        assert_eq!(attrs, [Err(AttrError::TooShort { offset: 0, len: 2 })]);
    }

    #[test]
    fn length_past_end_is_an_error() {
        let mut buf = attr_bytes(1, &[0; 8]);
        buf.truncate(10);
        let attrs: Vec<_> = AttrIter::new(&buf).collect();
        assert_eq!(attrs, [Err(AttrError::PastEnd { offset: 0, len: 12, available: 10 })]);
    }

    #[test]
    fn trailing_bytes_shorter_than_a_header_are_ignored() {
        let mut buf = attr_bytes(1, &[0; 4]);
        buf.extend_from_slice(&[0, 0]);
        assert_eq!(AttrIter::new(&buf).count(), 1);
    }
}
