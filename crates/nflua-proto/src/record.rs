//! State records: what CREATE carries and LIST answers with.
//!
//! ```text
//!  legacy (72):   name[64] | maxalloc u32 | curralloc u32
//!  extended (80): name[64] | maxalloc u32 | curralloc u32 | maxruns u32 | flags u32
//! ```

use crate::consts::{STATE_NAME_MAX, STATE_RECORD_EXT_LEN, STATE_RECORD_LEGACY_LEN};
use crate::error::DecodeError;
use crate::name::{emit_name, state_name};
use crate::wire::{get_u32, put_u32};

bitflags::bitflags! {
    /// Per-state options; the seed's flags string maps one letter to one bit.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct StateFlags: u32 {
        /// `d`: the state gets the `debug` library.
        const DEBUG = 0x1;
    }
}

impl StateFlags {
    /// Parses the seed's flags string (`"d"`); any other letter is an error
    /// naming it.
    pub fn from_letters(letters: &str) -> Result<StateFlags, char> {
        let mut flags = StateFlags::empty();
        for c in letters.chars() {
            match c {
                'd' => flags |= StateFlags::DEBUG,
                other => return Err(other),
            }
        }
        Ok(flags)
    }

    /// The flags string as LIST shows it in Lua.
    pub fn to_letters(self) -> String {
        let mut s = String::new();
        if self.contains(StateFlags::DEBUG) {
            s.push('d');
        }
        s
    }
}

/// Which of the two record layouts is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    Legacy,
    Extended,
}

impl RecordFormat {
    pub fn record_len(self) -> usize {
        match self {
            RecordFormat::Legacy => STATE_RECORD_LEGACY_LEN,
            RecordFormat::Extended => STATE_RECORD_EXT_LEN,
        }
    }

    /// The format a payload of `len` bytes holds, if either.
    pub fn from_len(len: usize) -> Option<RecordFormat> {
        match len {
            STATE_RECORD_LEGACY_LEN => Some(RecordFormat::Legacy),
            STATE_RECORD_EXT_LEN => Some(RecordFormat::Extended),
            _ => None,
        }
    }
}

/// One state record. `max_runs` and `flags` are `None` when it came in the
/// legacy layout, which does not carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    pub name: String,
    pub max_alloc: u32,
    pub cur_alloc: u32,
    pub max_runs: Option<u32>,
    pub flags: Option<StateFlags>,
}

impl StateRecord {
    /// Decodes one record of exactly 72 or 80 bytes.
    pub fn parse(buf: &[u8]) -> Result<StateRecord, DecodeError> {
        let format = RecordFormat::from_len(buf.len()).ok_or(DecodeError::BadPayloadSize {
            ty: "state record",
            expected: "72 or 80 bytes",
            got: buf.len(),
        })?;
        let name = state_name(&buf[..STATE_NAME_MAX]).map_err(DecodeError::StateName)?.to_owned();
        let max_alloc = get_u32(buf, 64);
        let cur_alloc = get_u32(buf, 68);
        let (max_runs, flags) = match format {
            RecordFormat::Legacy => (None, None),
            RecordFormat::Extended => {
                let raw = get_u32(buf, 76);
                let flags = StateFlags::from_bits(raw).ok_or(DecodeError::UnknownStateFlags(raw))?;
                (Some(get_u32(buf, 72)), Some(flags))
            }
        };
        Ok(StateRecord { name, max_alloc, cur_alloc, max_runs, flags })
    }

    /// Appends the record in `format`; missing extended fields are zero.
    pub fn emit(&self, format: RecordFormat, out: &mut Vec<u8>) {
        emit_name(out, &self.name, STATE_NAME_MAX);
        put_u32(out, self.max_alloc);
        put_u32(out, self.cur_alloc);
        if format == RecordFormat::Extended {
            put_u32(out, self.max_runs.unwrap_or(0));
            put_u32(out, self.flags.unwrap_or_default().bits());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> StateRecord {
        StateRecord {
            name: "fw".into(),
            max_alloc: 65536,
            cur_alloc: 1234,
            max_runs: Some(1000),
            flags: Some(StateFlags::DEBUG),
        }
    }

    #[test]
    fn extended_layout() {
        let mut out = Vec::new();
        rec().emit(RecordFormat::Extended, &mut out);
        assert_eq!(out.len(), 80);
        assert_eq!(&out[0..3], b"fw\0"); // name[64]
        assert_eq!(&out[64..68], &65536u32.to_ne_bytes()); // maxalloc
        assert_eq!(&out[68..72], &1234u32.to_ne_bytes()); // curralloc
        assert_eq!(&out[72..76], &1000u32.to_ne_bytes()); // maxruns
        assert_eq!(&out[76..80], &1u32.to_ne_bytes()); // flags: d
        assert_eq!(StateRecord::parse(&out), Ok(rec()));
    }

    #[test]
    fn legacy_layout_drops_extended_fields() {
        let mut out = Vec::new();
        rec().emit(RecordFormat::Legacy, &mut out);
        assert_eq!(out.len(), 72);
        let back = StateRecord::parse(&out).unwrap();
        assert_eq!(back.max_runs, None);
        assert_eq!(back.flags, None);
        assert_eq!(back.cur_alloc, 1234);
    }

    #[test]
    fn unknown_flags_and_sizes_are_errors() {
        let mut out = Vec::new();
        rec().emit(RecordFormat::Extended, &mut out);
        out[76..80].copy_from_slice(&6u32.to_ne_bytes());
        assert_eq!(StateRecord::parse(&out), Err(DecodeError::UnknownStateFlags(6)));
        assert!(matches!(StateRecord::parse(&out[..70]), Err(DecodeError::BadPayloadSize { got: 70, .. })));
    }

    #[test]
    fn flag_letters() {
        assert_eq!(StateFlags::from_letters("d"), Ok(StateFlags::DEBUG));
        assert_eq!(StateFlags::from_letters(""), Ok(StateFlags::empty()));
        assert_eq!(StateFlags::from_letters("dx"), Err('x'));
        assert_eq!(StateFlags::DEBUG.to_letters(), "d");
    }
}
