//! DNS messages (RFC 1035 §4): header, questions and resource records, with compressed names.
//!
//! The whole message is checked once — every name (pointers must point backwards, so no loop
//! is possible; at most [`MAX_NAME`] bytes), every record's length — and then read through
//! iterators that cannot fail. A message that ends early needs more (over TCP it may still be
//! arriving); one that cannot be DNS is malformed.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::reader::Reader;
use crate::{DissectError, Result};

/// The longest name in wire form (RFC 1035 §2.3.4); its dotted text is at most 253 bytes.
pub const MAX_NAME: usize = 255;
const HEADER_LEN: usize = 12;
/// Record types given a decoded `data`.
pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_MX: u16 = 15;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;

/// A message, borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    bytes: &'a [u8],
    pub id: u16,
    /// QR, opcode, AA, TC, RD, RA, Z, RCODE as sent.
    pub flags: u16,
    pub counts: [u16; 4],
    /// Where the records of each section start: answers, authority, additional.
    sections: [usize; 3],
    /// Bytes the message took (the rest of the input is not read).
    pub len: usize,
}

/// A question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question<'a> {
    pub name: Name<'a>,
    pub kind: u16,
    pub class: u16,
}

/// A resource record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub name: Name<'a>,
    pub kind: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: &'a [u8],
    rdata_at: usize,
    message: &'a [u8],
}

/// What a record holds, for the types read out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data<'a> {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// NS, CNAME, PTR.
    Name(Name<'a>),
    Mx {
        preference: u16,
        exchange: Name<'a>,
    },
    /// TXT: the character-strings joined (no separator).
    Txt(&'a [u8]),
    /// Any other type, or a record of a known type whose data does not fit it.
    Other(&'a [u8]),
}

/// A name in a message (checked), read with [`Name::write_dotted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name<'a> {
    message: &'a [u8],
    at: usize,
}

impl Name<'_> {
    /// Writes the name as dotted text (`www.example.com`; the root is `.`), bytes as they are;
    /// returns its length.
    pub fn write_dotted(&self, out: &mut [u8; MAX_NAME]) -> usize {
        let mut len = 0;
        let _ = walk(self.message, self.at, |label| {
            if len > 0 {
                push(out, &mut len, b".");
            }
            push(out, &mut len, label);
        });
        if len == 0 {
            push(out, &mut len, b".");
        }
        len
    }
}

fn push(out: &mut [u8; MAX_NAME], len: &mut usize, bytes: &[u8]) {
    for b in bytes {
        if let Some(slot) = out.get_mut(*len) {
            *slot = *b;
            *len += 1;
        }
    }
}

impl<'a> Message<'a> {
    pub fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }

    pub fn rcode(&self) -> u8 {
        (self.flags & 0xf) as u8
    }

    pub fn questions(&self) -> impl Iterator<Item = Question<'a>> + 'a {
        let message = self.bytes;
        let mut r = Reader::part(message, "question");
        let _ = r.take(HEADER_LEN);
        (0..self.counts[0]).map_while(move |_| {
            let at = r.pos();
            skip_name(&mut r).ok()?;
            Some(Question { name: Name { message, at }, kind: r.u16().ok()?, class: r.u16().ok()? })
        })
    }

    /// The records of section 0 (answers), 1 (authority) or 2 (additional).
    pub fn records(&self, section: usize) -> impl Iterator<Item = Record<'a>> + 'a {
        let message = self.bytes;
        let start = self.sections.get(section).copied().unwrap_or(message.len());
        let count = self.counts.get(section + 1).copied().unwrap_or(0);
        let mut r = Reader::part(message, "record");
        let _ = r.take(start);
        (0..count).map_while(move |_| read_record(&mut r, message).ok())
    }
}

impl<'a> Record<'a> {
    /// The record's data decoded for A, AAAA, NS, CNAME, PTR, MX and TXT.
    pub fn data(&self) -> Data<'a> {
        let name_at = |offset: usize| {
            let at = self.rdata_at + offset;
            let mut r = Reader::part(self.message, "name");
            r.take(at).ok()?;
            skip_name(&mut r).ok()?;
            // The name must lie within the record's data.
            (r.pos() <= self.rdata_at + self.rdata.len()).then_some(Name { message: self.message, at })
        };
        let other = Data::Other(self.rdata);
        match (self.kind, self.rdata) {
            (TYPE_A, &[a, b, c, d]) => Data::A(Ipv4Addr::new(a, b, c, d)),
            (TYPE_AAAA, bytes) if bytes.len() == 16 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(bytes);
                Data::Aaaa(Ipv6Addr::from(octets))
            }
            (TYPE_NS | TYPE_CNAME | TYPE_PTR, _) => name_at(0).map_or(other, Data::Name),
            (TYPE_MX, &[hi, lo, ..]) => name_at(2)
                .map_or(other, |exchange| Data::Mx { preference: u16::from_be_bytes([hi, lo]), exchange }),
            (TYPE_TXT, bytes) => Data::Txt(bytes),
            _ => other,
        }
    }

    /// For TXT records: the character-strings, each without its length byte.
    pub fn txt_strings(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader::part(self.rdata, "TXT");
        std::iter::from_fn(move || {
            let len = r.u8().ok()?;
            r.take(usize::from(len)).ok()
        })
    }
}

/// Reads the DNS message at the start of `input`.
pub fn message(input: &[u8]) -> Result<Message<'_>> {
    let mut r = Reader::open(input);
    let id = r.u16()?;
    let flags = r.u16()?;
    let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
    for _ in 0..counts[0] {
        skip_name(&mut r)?;
        r.u16()?;
        r.u16()?;
    }
    let mut sections = [0; 3];
    for (section, count) in sections.iter_mut().zip(&counts[1..]) {
        *section = r.pos();
        for _ in 0..*count {
            read_record(&mut r, input)?;
        }
    }
    Ok(Message { bytes: input.get(..r.pos()).unwrap_or_default(), id, flags, counts, sections, len: r.pos() })
}

fn read_record<'a>(r: &mut Reader<'a>, message: &'a [u8]) -> Result<Record<'a>> {
    let at = r.pos();
    skip_name(r)?;
    let kind = r.u16()?;
    let class = r.u16()?;
    let ttl = r.u32()?;
    let len = usize::from(r.u16()?);
    let rdata_at = r.pos();
    let rdata = r.take(len)?;
    Ok(Record { name: Name { message, at }, kind, class, ttl, rdata, rdata_at, message })
}

/// Moves `r` past the name at its position, checking the whole name (pointers included).
fn skip_name(r: &mut Reader<'_>) -> Result<()> {
    let start = r.pos();
    // The name's bytes up to its end or first pointer, in this reader.
    loop {
        let len = r.u8()?;
        match len {
            0 => break,
            1..=63 => {
                r.take(usize::from(len))?;
            }
            0xc0..=0xff => {
                r.u8()?;
                break;
            }
            _ => return Err(DissectError::Malformed("DNS label type not supported")),
        }
    }
    // Now the full name, following pointers, in the whole message seen so far.
    walk(r_bytes(r), start, |_| {})
}

/// The bytes a reader reads (the message so far).
fn r_bytes<'a>(r: &Reader<'a>) -> &'a [u8] {
    r.all()
}

/// Calls `label` for each label of the name at `at`, following pointers. Pointers must point
/// before the label that holds them, so every jump goes backwards and the walk ends.
fn walk(message: &[u8], at: usize, mut label: impl FnMut(&[u8])) -> Result<()> {
    let mut pos = at;
    let mut wire_len = 1;
    loop {
        let len = *message.get(pos).ok_or(DissectError::NeedMore)?;
        match len {
            0 => return Ok(()),
            1..=63 => {
                let bytes = message.get(pos + 1..pos + 1 + usize::from(len)).ok_or(DissectError::NeedMore)?;
                wire_len += 1 + usize::from(len);
                if wire_len > MAX_NAME {
                    return Err(DissectError::Malformed("DNS name longer than 255 bytes"));
                }
                label(bytes);
                pos += 1 + usize::from(len);
            }
            0xc0..=0xff => {
                let low = *message.get(pos + 1).ok_or(DissectError::NeedMore)?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                if target >= pos {
                    return Err(DissectError::Malformed("DNS name pointer does not point backwards"));
                }
                pos = target;
            }
            _ => return Err(DissectError::Malformed("DNS label type not supported")),
        }
    }
}

/// Builders of DNS messages, for tests here and in other crates.
pub mod build {
    /// A query for `name` of `kind` (class IN), id 0x1234, recursion desired.
    pub fn query(name: &str, kind: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&encode_name(name));
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    /// The wire form of `name` (no compression).
    pub fn encode_name(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn dotted(name: Name<'_>) -> String {
        let mut out = [0u8; MAX_NAME];
        let len = name.write_dotted(&mut out);
        String::from_utf8_lossy(&out[..len]).into_owned()
    }

    /// A response to `www.example.com A` with a CNAME to `example.com` (compressed) and an A.
    fn response() -> Vec<u8> {
        let mut m = query("www.example.com", TYPE_A);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 2; // two answers
                  // www.example.com CNAME -> pointer to "example.com" at offset 16.
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0x0e, 0x10, 0, 2, 0xc0, 16]);
        // example.com A 192.0.2.7
        m.extend_from_slice(&[0xc0, 16, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        m
    }

    #[test]
    fn a_query() {
        let q = query("blocked.example", TYPE_AAAA);
        let m = message(&q).unwrap();
        assert_eq!((m.id, m.is_response(), m.opcode(), m.len), (0x1234, false, 0, q.len()));
        let questions: Vec<_> = m.questions().collect();
        assert_eq!(questions.len(), 1);
        assert_eq!((dotted(questions[0].name), questions[0].kind), ("blocked.example".into(), TYPE_AAAA));
    }

    #[test]
    fn a_response_with_compression() {
        let r = response();
        let m = message(&r).unwrap();
        assert_eq!((m.is_response(), m.rcode()), (true, 0));
        let answers: Vec<_> = m.records(0).collect();
        assert_eq!(answers.len(), 2);
        assert_eq!(dotted(answers[0].name), "www.example.com");
        assert_eq!(answers[0].ttl, 3600);
        match answers[0].data() {
            Data::Name(n) => assert_eq!(dotted(n), "example.com"),
            other => panic!("{other:?}"),
        }
        assert_eq!(answers[1].data(), Data::A(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(m.records(1).count() + m.records(2).count(), 0);
    }

    #[test]
    fn every_prefix_needs_more() {
        let r = response();
        for cut in 0..r.len() {
            assert_eq!(message(&r[..cut]), Err(DissectError::NeedMore), "cut {cut}");
        }
    }

    #[test]
    fn loops_and_long_names_are_malformed() {
        let mut looped = query("a", TYPE_A);
        looped.truncate(12);
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(
            message(&looped),
            Err(DissectError::Malformed("DNS name pointer does not point backwards"))
        );
        let long = (0..5).map(|_| "a".repeat(63)).collect::<Vec<_>>().join(".");
        assert_eq!(
            message(&query(&long, TYPE_A)),
            Err(DissectError::Malformed("DNS name longer than 255 bytes"))
        );
        let mut extended = query("a", TYPE_A);
        extended[12] = 0x41;
        assert_eq!(message(&extended), Err(DissectError::Malformed("DNS label type not supported")));
    }

    #[test]
    fn the_root_name() {
        let m = query("", TYPE_A);
        let parsed = message(&m).unwrap();
        assert_eq!(dotted(parsed.questions().next().unwrap().name), ".");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(m) = message(&bytes) {
                let mut out = [0u8; MAX_NAME];
                for q in m.questions() { q.name.write_dotted(&mut out); }
                for s in 0..3 {
                    for rec in m.records(s) {
                        rec.name.write_dotted(&mut out);
                        if let Data::Name(n) | Data::Mx { exchange: n, .. } = rec.data() { n.write_dotted(&mut out); }
                        let _ = rec.txt_strings().count();
                    }
                }
            }
        }

        #[test]
        fn damaged_responses_never_panic(flip in 0usize..80, value in proptest::num::u8::ANY, cut in 0usize..80) {
            let mut r = response();
            if let Some(b) = r.get_mut(flip) { *b = value; }
            r.truncate(cut.max(1));
            let _ = message(&r);
        }
    }
}
