//! Bit-field layouts: named fields over a byte view, read and written in place.
//!
//! Bits are numbered MSB 0, as LuaData and RFC diagrams do: bit 0 is the most significant bit of
//! byte 0, bit 8 the most significant bit of byte 1. A field is `length` consecutive bits from
//! `offset`:
//!
//! ```text
//!  byte:  0               1               2
//!  bit:   0 1 2 3 4 5 6 7 8 9 ...
//!               [------- field {3, 10} -------]   bits 3..13, spans bytes 0 and 1
//! ```
//!
//! * Big endian (the default, alias "net"): the first bit of the field is the most significant bit
//!   of the value.
//! * Little endian (alias "host" on little-endian machines): the field is read as above, then its
//!   bytes are reversed, so the first 8 bits are the least significant byte. Fields of 8 bits or
//!   fewer read the same either way; wider little-endian fields must be whole bytes (they may still
//!   start at any bit).
//! * Strings: whole bytes copied as they are.
//!
//! Writing keeps the bits around the field and stores the low `length` bits of the value (so the
//! value is truncated to the width, two's complement for negative numbers, as a C bit-field).
//!
//! Everything here is pure: functions take a byte slice and return `None` when the field does not
//! fit in it; they never panic.

use std::collections::HashMap;

use crate::error::FieldError;

/// Byte order of an integer field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Most significant byte first ("big", "net").
    Big,
    /// Least significant byte first ("little").
    Little,
}

impl Endian {
    /// The byte order of the machine we run on ("host").
    pub const HOST: Endian = if cfg!(target_endian = "big") { Endian::Big } else { Endian::Little };
}

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// An unsigned integer of up to 64 bits.
    Uint(Endian),
    /// Raw bytes, read and written as a Lua string.
    Bytes,
}

/// One named field of a [`Layout`]: where it is (in bits) and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    bit_offset: usize,
    bit_len: usize,
    kind: FieldKind,
}

impl Field {
    /// A checked field: `bit_len` at least 1; integers at most 64 bits; little-endian integers
    /// wider than 8 bits are whole bytes; strings start and end on byte boundaries.
    pub fn new(bit_offset: usize, bit_len: usize, kind: FieldKind) -> Result<Field, FieldError> {
        if bit_len == 0 {
            return Err(FieldError::Empty);
        }
        if bit_offset.checked_add(bit_len).is_none() {
            return Err(FieldError::Overflow);
        }
        match kind {
            FieldKind::Uint(_) if bit_len > 64 => return Err(FieldError::TooWide { bits: bit_len }),
            FieldKind::Uint(Endian::Little) if bit_len > 8 && !bit_len.is_multiple_of(8) => {
                return Err(FieldError::LittleEndianWidth { bits: bit_len })
            }
            FieldKind::Bytes if !bit_offset.is_multiple_of(8) || !bit_len.is_multiple_of(8) => {
                return Err(FieldError::UnalignedString)
            }
            _ => {}
        }
        Ok(Field { bit_offset, bit_len, kind })
    }

    /// Offset of the first bit, MSB 0.
    pub fn bit_offset(&self) -> usize {
        self.bit_offset
    }

    /// Width in bits.
    pub fn bit_len(&self) -> usize {
        self.bit_len
    }

    /// What the field holds.
    pub fn kind(&self) -> FieldKind {
        self.kind
    }

    /// The field's byte range, for [`FieldKind::Bytes`] fields (whole bytes by construction).
    pub fn byte_range(&self) -> std::ops::Range<usize> {
        let start = self.bit_offset / 8;
        start..start + self.bit_len / 8
    }
}

/// A set of named fields; applied to a `data` object with `d:layout{...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    fields: HashMap<Vec<u8>, Field>,
}

impl Layout {
    /// An empty layout.
    pub fn new() -> Layout {
        Layout::default()
    }

    /// Adds (or replaces) a field. Names are bytes because Lua strings are.
    pub fn insert(&mut self, name: impl Into<Vec<u8>>, field: Field) {
        self.fields.insert(name.into(), field);
    }

    /// The field called `name`, if any.
    pub fn get(&self, name: &[u8]) -> Option<&Field> {
        self.fields.get(name)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the layout has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// The low `bits` bits set (`bits` in 1..=64).
fn mask(bits: usize) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Reverses the `bits / 8` low bytes of `value` (`bits` a multiple of 8 in 16..=64).
fn swap_bytes(value: u64, bits: usize) -> u64 {
    value.swap_bytes() >> (64 - bits)
}

/// Where an integer field of `bit_len` bits at `bit_offset` sits: (first byte, last byte, bits
/// after the field in the last byte). `None` if it does not fit in `size` bytes or is not 1..=64
/// bits wide.
fn span(bit_offset: usize, bit_len: usize, size: usize) -> Option<(usize, usize, usize)> {
    if bit_len == 0 || bit_len > 64 {
        return None;
    }
    let end = bit_offset.checked_add(bit_len)?;
    if end > size.checked_mul(8)? {
        return None;
    }
    let tail = (8 - end % 8) % 8;
    Some((bit_offset / 8, (end - 1) / 8, tail))
}

/// The bytes `first..=last` as one big-endian number (at most 9 bytes, so it fits in 72 bits).
fn load(bytes: &[u8]) -> u128 {
    bytes.iter().fold(0u128, |acc, &b| (acc << 8) | u128::from(b))
}

/// Reads an unsigned integer field. `None` if it does not fit in `bytes`, is not 1..=64 bits
/// wide, or is a little-endian field wider than a byte that is not whole bytes.
pub fn read_uint(bytes: &[u8], bit_offset: usize, bit_len: usize, endian: Endian) -> Option<u64> {
    let (first, last, tail) = span(bit_offset, bit_len, bytes.len())?;
    let raw = (load(bytes.get(first..=last)?) >> tail) as u64 & mask(bit_len);
    match endian {
        Endian::Little if bit_len > 8 => {
            if !bit_len.is_multiple_of(8) {
                return None;
            }
            Some(swap_bytes(raw, bit_len))
        }
        _ => Some(raw),
    }
}

/// Writes the low `bit_len` bits of `value` into a field, keeping every other bit. `None` (and
/// nothing written) under the same conditions as [`read_uint`].
pub fn write_uint(
    bytes: &mut [u8],
    bit_offset: usize,
    bit_len: usize,
    endian: Endian,
    value: u64,
) -> Option<()> {
    let (first, last, tail) = span(bit_offset, bit_len, bytes.len())?;
    let mut value = value & mask(bit_len);
    if endian == Endian::Little && bit_len > 8 {
        if !bit_len.is_multiple_of(8) {
            return None;
        }
        value = swap_bytes(value, bit_len);
    }
    let window = bytes.get_mut(first..=last)?;
    let field_mask = u128::from(mask(bit_len)) << tail;
    let mut acc = (load(window) & !field_mask) | (u128::from(value) << tail);
    for byte in window.iter_mut().rev() {
        *byte = (acc & 0xff) as u8;
        acc >>= 8;
    }
    Some(())
}

/// Reads a field: its integer value or its bytes. `None` if it does not fit in `bytes`.
pub fn read_field<'a>(bytes: &'a [u8], field: &Field) -> Option<FieldValue<'a>> {
    match field.kind {
        FieldKind::Uint(endian) => {
            read_uint(bytes, field.bit_offset, field.bit_len, endian).map(FieldValue::Uint)
        }
        FieldKind::Bytes => bytes.get(field.byte_range()).map(FieldValue::Bytes),
    }
}

/// A value read from a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// An integer field.
    Uint(u64),
    /// A string field, borrowing the buffer.
    Bytes(&'a [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixture: 0xDE 0xAD 0xBE 0xEF 0x01 0x23 0x45 0x67 0x89
    //   bits:  11011110 10101101 10111110 11101111 00000001 ...
    const FIX: [u8; 9] = [0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x89];

    #[test]
    fn reads_aligned_big_endian() {
        assert_eq!(read_uint(&FIX, 0, 8, Endian::Big), Some(0xDE));
        assert_eq!(read_uint(&FIX, 8, 16, Endian::Big), Some(0xADBE));
        assert_eq!(read_uint(&FIX, 0, 32, Endian::Big), Some(0xDEAD_BEEF));
    }

    #[test]
    fn reads_single_bits_msb_first() {
        // 0xDE = 1101 1110
        let bits: Vec<u64> = (0..8).map(|i| read_uint(&FIX, i, 1, Endian::Big).unwrap_or(99)).collect();
        assert_eq!(bits, [1, 1, 0, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn reads_odd_offsets() {
        // bits 4..12: low nibble of 0xDE (0xE) then high nibble of 0xAD (0xA) -> 0xEA
        assert_eq!(read_uint(&FIX, 4, 8, Endian::Big), Some(0xEA));
        // bits 3..13 (10 bits): 0xDEAD = 11011110 10101101 -> bits 3..13 = 1111010101 = 0x3D5
        assert_eq!(read_uint(&FIX, 3, 10, Endian::Big), Some(0x3D5));
        // IPv4-like nibbles: version/ihl of 0x45
        let ip = [0x45u8];
        assert_eq!(read_uint(&ip, 0, 4, Endian::Big), Some(4));
        assert_eq!(read_uint(&ip, 4, 4, Endian::Big), Some(5));
    }

    #[test]
    fn reads_64_bits_aligned_and_unaligned() {
        assert_eq!(read_uint(&FIX, 0, 64, Endian::Big), Some(0xDEAD_BEEF_0123_4567));
        // shifted by 4 bits: spans 9 bytes
        assert_eq!(read_uint(&FIX, 4, 64, Endian::Big), Some(0xEADB_EEF0_1234_5678));
        assert_eq!(read_uint(&FIX, 8, 64, Endian::Big), Some(0xADBE_EF01_2345_6789));
        assert_eq!(read_uint(&FIX, 9, 64, Endian::Big), None);
        assert_eq!(read_uint(&FIX, 0, 64, Endian::Little), Some(0x6745_2301_EFBE_ADDE));
    }

    #[test]
    fn reads_little_endian() {
        assert_eq!(read_uint(&FIX, 0, 16, Endian::Little), Some(0xADDE));
        assert_eq!(read_uint(&FIX, 0, 32, Endian::Little), Some(0xEFBE_ADDE));
        // bytes of 8 bits or fewer are the same either way
        assert_eq!(read_uint(&FIX, 0, 8, Endian::Little), Some(0xDE));
        assert_eq!(read_uint(&FIX, 4, 4, Endian::Little), Some(0xE));
        // unaligned 16 bits from bit 4: stream bytes 0xEA, 0xDB -> little 0xDBEA
        assert_eq!(read_uint(&FIX, 4, 16, Endian::Little), Some(0xDBEA));
        // not whole bytes
        assert_eq!(read_uint(&FIX, 0, 12, Endian::Little), None);
    }

    #[test]
    fn refuses_out_of_range_and_bad_widths() {
        assert_eq!(read_uint(&FIX, 72, 1, Endian::Big), None);
        assert_eq!(read_uint(&FIX, 65, 8, Endian::Big), None);
        assert_eq!(read_uint(&FIX, 64, 8, Endian::Big), Some(0x89));
        assert_eq!(read_uint(&FIX, 0, 0, Endian::Big), None);
        assert_eq!(read_uint(&FIX, 0, 65, Endian::Big), None);
        assert_eq!(read_uint(&[], 0, 1, Endian::Big), None);
        assert_eq!(read_uint(&FIX, usize::MAX, 8, Endian::Big), None);
        let mut b = FIX;
        assert_eq!(write_uint(&mut b, 70, 8, Endian::Big, 0), None);
        assert_eq!(b, FIX, "nothing written on failure");
    }

    #[test]
    fn writes_keep_surrounding_bits() {
        let mut b = [0xFFu8, 0xFF, 0xFF];
        write_uint(&mut b, 3, 10, Endian::Big, 0).unwrap();
        // bits 3..13 cleared: 11100000 00000111 11111111
        assert_eq!(b, [0xE0, 0x07, 0xFF]);
        write_uint(&mut b, 3, 10, Endian::Big, 0x3D5).unwrap();
        assert_eq!(read_uint(&b, 3, 10, Endian::Big), Some(0x3D5));
        assert_eq!(read_uint(&b, 0, 3, Endian::Big), Some(0b111));
        assert_eq!(read_uint(&b, 13, 11, Endian::Big), Some(0x7FF));
    }

    #[test]
    fn writes_truncate_to_width() {
        let mut b = [0u8; 2];
        write_uint(&mut b, 4, 4, Endian::Big, 0x1F).unwrap();
        assert_eq!(b, [0x0F, 0x00]);
        write_uint(&mut b, 8, 8, Endian::Big, u64::MAX).unwrap(); // -1 from Lua
        assert_eq!(b, [0x0F, 0xFF]);
    }

    #[test]
    fn writes_little_endian_and_64_bits() {
        let mut b = [0u8; 9];
        write_uint(&mut b, 0, 32, Endian::Little, 0xEFBE_ADDE).unwrap();
        assert_eq!(&b[..4], &[0xDE, 0xAD, 0xBE, 0xEF]);
        let mut b = [0u8; 9];
        write_uint(&mut b, 4, 64, Endian::Big, 0xEADB_EEF0_1234_5678).unwrap();
        assert_eq!(b, [0x0E, 0xAD, 0xBE, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x80]);
        write_uint(&mut b, 4, 64, Endian::Little, 0x0123_4567_89AB_CDEF).unwrap();
        assert_eq!(read_uint(&b, 4, 64, Endian::Little), Some(0x0123_4567_89AB_CDEF));
        assert_eq!(b[0] >> 4, 0, "bits before the field kept");
        assert_eq!(b[8] & 0x0F, 0, "bits after the field kept");
    }

    #[test]
    fn round_trips_every_small_position() {
        for off in 0..16 {
            for len in 1..=33 {
                for endian in [Endian::Big, Endian::Little] {
                    if endian == Endian::Little && len > 8 && len % 8 != 0 {
                        continue;
                    }
                    let mut b = [0xA5u8; 7];
                    let v = 0x0001_2345_6789_u64 & mask(len);
                    assert_eq!(write_uint(&mut b, off, len, endian, v), Some(()));
                    assert_eq!(read_uint(&b, off, len, endian), Some(v), "{off} {len}");
                }
            }
        }
    }

    #[test]
    fn field_checks() {
        let big = FieldKind::Uint(Endian::Big);
        let little = FieldKind::Uint(Endian::Little);
        assert!(Field::new(3, 64, big).is_ok());
        assert_eq!(Field::new(0, 0, big), Err(FieldError::Empty));
        assert_eq!(Field::new(0, 65, big), Err(FieldError::TooWide { bits: 65 }));
        assert_eq!(Field::new(0, 12, little), Err(FieldError::LittleEndianWidth { bits: 12 }));
        assert!(Field::new(3, 16, little).is_ok());
        assert!(Field::new(1, 7, little).is_ok());
        assert_eq!(Field::new(4, 16, FieldKind::Bytes), Err(FieldError::UnalignedString));
        assert_eq!(Field::new(usize::MAX, 2, big), Err(FieldError::Overflow));
        let s = Field::new(16, 24, FieldKind::Bytes);
        assert_eq!(s.map(|f| f.byte_range()), Ok(2..5));
    }

    #[test]
    fn read_field_kinds() {
        let s = Field::new(8, 16, FieldKind::Bytes).unwrap();
        let n = Field::new(0, 16, FieldKind::Uint(Endian::Big)).unwrap();
        assert_eq!(read_field(&FIX, &s), Some(FieldValue::Bytes(&[0xAD, 0xBE])));
        assert_eq!(read_field(&FIX, &n), Some(FieldValue::Uint(0xDEAD)));
        assert_eq!(read_field(&FIX[..2], &s), None);
    }
}
