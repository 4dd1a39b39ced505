//! The Internet checksum (RFC 1071): the 16-bit one's complement of the
//! one's complement sum of the data taken as big-endian 16-bit words.

/// A running one's complement sum. Data may be added in pieces of any
/// length: a piece ending on an odd byte leaves that byte pending as the
/// high half of the next word, so pieces need not be word-aligned.
#[derive(Debug, Clone, Default)]
pub(crate) struct Checksum {
    sum: u64,
    pending: Option<u8>,
}

impl Checksum {
    pub(crate) fn new() -> Checksum {
        Checksum::default()
    }

    pub(crate) fn add(&mut self, mut bytes: &[u8]) -> &mut Checksum {
        if let Some(high) = self.pending.take() {
            match bytes.split_first() {
                Some((&low, rest)) => {
                    self.sum += u64::from(u16::from_be_bytes([high, low]));
                    bytes = rest;
                }
                None => {
                    self.pending = Some(high);
                    return self;
                }
            }
        }
        let mut words = bytes.chunks_exact(2);
        for word in &mut words {
            if let [high, low] = *word {
                self.sum += u64::from(u16::from_be_bytes([high, low]));
            }
        }
        if let [last] = *words.remainder() {
            self.pending = Some(last);
        }
        self
    }

    pub(crate) fn add_u16(&mut self, value: u16) -> &mut Checksum {
        self.add(&value.to_be_bytes())
    }

    pub(crate) fn add_u32(&mut self, value: u32) -> &mut Checksum {
        self.add(&value.to_be_bytes())
    }

    /// The folded one's complement sum; 0xFFFF over data that includes a
    /// correct checksum field.
    pub(crate) fn sum(&self) -> u16 {
        // An odd byte at the very end is padded with a zero low half.
        let mut sum = self.sum + self.pending.map_or(0, |high| u64::from(high) << 8);
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        sum as u16
    }

    /// The value to store in a checksum field that was zero while summing.
    pub(crate) fn finish(&self) -> u16 {
        !self.sum()
    }

    /// Whether data that includes its checksum field sums correctly.
    pub(crate) fn verifies(&self) -> bool {
        self.sum() == 0xFFFF
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (after folding).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Checksum::new().add(&data).sum(), 0xddf2);
        assert_eq!(Checksum::new().add(&data).finish(), 0x220d);
    }

    #[test]
    fn pieces_need_not_be_aligned() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0x42];
        let whole = Checksum::new().add(&data).sum();
        for split in 0..=data.len() {
            let (a, b) = data.split_at(split);
            assert_eq!(Checksum::new().add(a).add(b).sum(), whole, "split at {split}");
        }
        // A trailing odd byte is the high half of a zero-padded word.
        assert_eq!(Checksum::new().add(&[0x42]).sum(), 0x4200);
    }

    #[test]
    fn wikipedia_ipv4_header() {
        // The worked example of Wikipedia's "IPv4 header checksum" article:
        // 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(Checksum::new().add(&header).finish(), 0xb861);
        header[10..12].copy_from_slice(&[0xb8, 0x61]);
        assert!(Checksum::new().add(&header).verifies());
    }
}
