//! Checked big-endian reads over a byte slice. Running out of bytes answers the error the
//! reader was made with: [`DissectError::NeedMore`] at the top level of a message whose end is
//! still to come, `Malformed` inside a part whose length was given (a lie about a length is not
//! a reason to wait).

use crate::DissectError;

#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    short: DissectError,
}

impl<'a> Reader<'a> {
    /// A reader whose shortfalls mean "need more".
    pub(crate) fn open(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0, short: DissectError::NeedMore }
    }

    /// A reader of a part whose length was given: a shortfall is malformed, with `reason`.
    pub(crate) fn part(bytes: &'a [u8], reason: &'static str) -> Reader<'a> {
        Reader { bytes, pos: 0, short: DissectError::Malformed(reason) }
    }

    /// Everything the reader reads, from its start.
    pub(crate) fn all(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn take(&mut self, n: usize) -> crate::Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(self.short)?;
        let bytes = self.bytes.get(self.pos..end).ok_or(self.short)?;
        self.pos = end;
        Ok(bytes)
    }

    pub(crate) fn u8(&mut self) -> crate::Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> crate::Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u24(&mut self) -> crate::Result<u32> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    pub(crate) fn u32(&mut self) -> crate::Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn array<const N: usize>(&mut self) -> crate::Result<[u8; N]> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| self.short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_shortfalls() {
        let mut r = Reader::open(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0203));
        assert_eq!(r.u24(), Ok(0x040506));
        assert_eq!(r.u8(), Err(DissectError::NeedMore));
        let mut p = Reader::part(&[1], "short part");
        assert_eq!(p.u16(), Err(DissectError::Malformed("short part")));
        assert_eq!(p.take(usize::MAX), Err(DissectError::Malformed("short part")));
        assert_eq!(p.u8(), Ok(1), "a failed read consumes nothing");
    }
}
