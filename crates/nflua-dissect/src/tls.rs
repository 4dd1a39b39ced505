//! The TLS ClientHello, from the first bytes a client sends (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2):
//! record layer, handshake header, the hello's fields, and three extensions read out — server
//! name (SNI), ALPN and supported versions.
//!
//! The hello may span several records (a client may fragment it, and post-quantum key shares
//! make it longer than one record in practice): the handshake bytes of consecutive records are
//! joined in a scratch slice the caller lends, at least as long as the input.

use crate::reader::Reader;
use crate::{DissectError, Result};

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// A record's payload may be 2^14 bytes, plus 2048 of expansion in TLS 1.2 and earlier.
const MAX_RECORD_LEN: usize = (1 << 14) + 2048;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const NAME_TYPE_HOST: u8 = 0;

/// A ClientHello, borrowing from the scratch slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// The first record's version field (0x0301 from most clients, for compatibility).
    pub record_version: u16,
    /// The hello's own version field (0x0303 in TLS 1.3, whose real versions are in
    /// [`supported_versions`](Self::supported_versions)).
    pub legacy_version: u16,
    pub random: &'a [u8],
    pub session_id: &'a [u8],
    /// Two bytes per suite.
    pub cipher_suites: &'a [u8],
    pub compression_methods: &'a [u8],
    /// The extensions block (checked: every extension fits it exactly).
    extensions: &'a [u8],
    /// Bytes of the input the records holding the hello took, through its last byte's record.
    pub consumed: usize,
}

impl<'a> ClientHello<'a> {
    /// How many cipher suites the client offers.
    pub fn cipher_count(&self) -> usize {
        self.cipher_suites.len() / 2
    }

    /// `(type, data)` of each extension, in order.
    pub fn extensions(&self) -> Extensions<'a> {
        Extensions(Reader::part(self.extensions, "extension"))
    }

    fn extension(&self, kind: u16) -> Option<&'a [u8]> {
        self.extensions().find(|(t, _)| *t == kind).map(|(_, data)| data)
    }

    /// The first host name of the server name extension.
    pub fn server_name(&self) -> Option<&'a [u8]> {
        let data = self.extension(EXT_SERVER_NAME)?;
        server_names(data).ok()?.find(|(kind, _)| *kind == NAME_TYPE_HOST).map(|(_, name)| name)
    }

    /// The protocols the ALPN extension lists (empty without it).
    pub fn alpn(&self) -> Lengthed<'a> {
        let list = self.extension(EXT_ALPN).and_then(|data| alpn_list(data).ok()).unwrap_or_default();
        Lengthed(Reader::part(list, "ALPN"))
    }

    /// The versions the supported_versions extension lists (empty without it).
    pub fn supported_versions(&self) -> impl Iterator<Item = u16> + 'a {
        let list = self.extension(EXT_SUPPORTED_VERSIONS).and_then(|data| versions_list(data).ok());
        list.unwrap_or_default()
            .chunks_exact(2)
            .filter_map(|pair| pair.try_into().ok().map(u16::from_be_bytes))
    }
}

/// Extensions as `(type, data)`.
#[derive(Debug, Clone)]
pub struct Extensions<'a>(Reader<'a>);

impl<'a> Iterator for Extensions<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let kind = self.0.u16().ok()?;
        let len = self.0.u16().ok()?;
        Some((kind, self.0.take(usize::from(len)).ok()?))
    }
}

/// Items each preceded by a one-byte length (ALPN protocol names).
#[derive(Debug, Clone)]
pub struct Lengthed<'a>(Reader<'a>);

impl<'a> Iterator for Lengthed<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<Self::Item> {
        let len = self.0.u8().ok()?;
        self.0.take(usize::from(len)).ok()
    }
}

/// Reads the ClientHello at the start of `input` (a client's first bytes), joining handshake
/// records in `scratch`, which must hold at least `input.len()` bytes.
pub fn client_hello<'s>(input: &[u8], scratch: &'s mut [u8]) -> Result<ClientHello<'s>> {
    if scratch.len() < input.len() {
        return Err(DissectError::Malformed("scratch shorter than the input"));
    }
    let mut records = Reader::open(input);
    let mut joined = 0usize;
    let mut record_version = None;
    // The handshake message's full length (header included), once its header is in.
    let mut wanted: Option<usize> = None;
    loop {
        if let Some(wanted) = wanted.filter(|w| joined >= *w) {
            let hello = scratch.get(..wanted).ok_or(DissectError::NeedMore)?;
            let record_version = record_version.unwrap_or_default();
            return parse_hello(hello, record_version, records.pos());
        }
        let kind = records.u8()?;
        if kind != CONTENT_HANDSHAKE {
            return Err(DissectError::Malformed("not a TLS handshake record"));
        }
        // Byte by byte, so that another protocol fails on its second byte already.
        let major = records.u8()?;
        if major != 3 {
            return Err(DissectError::Malformed("not a TLS record version"));
        }
        let minor = records.u8()?;
        record_version.get_or_insert(u16::from_be_bytes([major, minor]));
        let len = usize::from(records.u16()?);
        if len == 0 || len > MAX_RECORD_LEN {
            return Err(DissectError::Malformed("TLS record length out of range"));
        }
        // Join what is there of this record, then wait for the rest if the hello needs it.
        let available = len.min(records.remaining());
        let fragment = records.take(available)?;
        let end = joined + available;
        scratch.get_mut(joined..end).ok_or(DissectError::NeedMore)?.copy_from_slice(fragment);
        joined = end;
        if wanted.is_none() && joined >= 4 {
            let mut header = Reader::open(scratch.get(..4).unwrap_or_default());
            if header.u8()? != HANDSHAKE_CLIENT_HELLO {
                return Err(DissectError::Malformed("not a ClientHello"));
            }
            wanted = Some(4 + header.u24()? as usize);
        }
        if available < len && wanted.is_none_or(|w| joined < w) {
            return Err(DissectError::NeedMore);
        }
    }
}

fn parse_hello(message: &[u8], record_version: u16, consumed: usize) -> Result<ClientHello<'_>> {
    let body = message.get(4..).unwrap_or_default();
    let mut r = Reader::part(body, "ClientHello shorter than its fields");
    let legacy_version = r.u16()?;
    let random = r.take(32)?;
    let session_len = usize::from(r.u8()?);
    if session_len > 32 {
        return Err(DissectError::Malformed("session id longer than 32 bytes"));
    }
    let session_id = r.take(session_len)?;
    let suites_len = usize::from(r.u16()?);
    if suites_len < 2 || suites_len % 2 != 0 {
        return Err(DissectError::Malformed("cipher suites length not a positive even number"));
    }
    let cipher_suites = r.take(suites_len)?;
    let compression_len = usize::from(r.u8()?);
    if compression_len == 0 {
        return Err(DissectError::Malformed("no compression methods"));
    }
    let compression_methods = r.take(compression_len)?;
    let extensions = if r.is_empty() {
        &[][..]
    } else {
        let len = usize::from(r.u16()?);
        let block = r.take(len)?;
        if !r.is_empty() {
            return Err(DissectError::Malformed("bytes after the extensions"));
        }
        block
    };
    let hello = ClientHello {
        record_version,
        legacy_version,
        random,
        session_id,
        cipher_suites,
        compression_methods,
        extensions,
        consumed,
    };
    check_extensions(extensions)?;
    Ok(hello)
}

/// Every extension fits the block exactly, and the three read out are well formed, so that the
/// accessors never meet a broken one.
fn check_extensions(block: &[u8]) -> Result<()> {
    let mut r = Reader::part(block, "extension longer than the extensions block");
    while !r.is_empty() {
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        let data = r.take(len)?;
        match kind {
            EXT_SERVER_NAME if !data.is_empty() => {
                server_names(data)?.for_each(drop);
            }
            EXT_ALPN => {
                let mut names = Reader::part(alpn_list(data)?, "ALPN name longer than its list");
                while !names.is_empty() {
                    let len = usize::from(names.u8()?);
                    if len == 0 {
                        return Err(DissectError::Malformed("empty ALPN protocol name"));
                    }
                    names.take(len)?;
                }
            }
            EXT_SUPPORTED_VERSIONS => {
                versions_list(data)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `(name type, name)` of a server name extension, checked in full.
fn server_names(data: &[u8]) -> Result<impl Iterator<Item = (u8, &[u8])>> {
    let mut r = Reader::part(data, "server name list longer than its extension");
    let len = usize::from(r.u16()?);
    let list = r.take(len)?;
    if !r.is_empty() {
        return Err(DissectError::Malformed("bytes after the server name list"));
    }
    let mut check = Reader::part(list, "server name longer than its list");
    while !check.is_empty() {
        check.u8()?;
        let len = usize::from(check.u16()?);
        if len == 0 {
            return Err(DissectError::Malformed("empty server name"));
        }
        check.take(len)?;
    }
    let mut names = Reader::part(list, "server name");
    Ok(std::iter::from_fn(move || {
        let kind = names.u8().ok()?;
        let len = names.u16().ok()?;
        Some((kind, names.take(usize::from(len)).ok()?))
    }))
}

fn alpn_list(data: &[u8]) -> Result<&[u8]> {
    let mut r = Reader::part(data, "ALPN list longer than its extension");
    let len = usize::from(r.u16()?);
    let list = r.take(len)?;
    if !r.is_empty() || list.is_empty() {
        return Err(DissectError::Malformed("ALPN extension not one non-empty list"));
    }
    Ok(list)
}

fn versions_list(data: &[u8]) -> Result<&[u8]> {
    let mut r = Reader::part(data, "supported versions longer than their extension");
    let len = usize::from(r.u8()?);
    let list = r.take(len)?;
    if !r.is_empty() || list.is_empty() || len % 2 != 0 {
        return Err(DissectError::Malformed("supported versions not one list of two-byte versions"));
    }
    Ok(list)
}

/// Builders of ClientHello bytes, for tests here and in other crates.
pub mod build {
    /// A ClientHello handshake message (header included) with these fields and extensions
    /// (`(type, data)`), TLS 1.2 legacy version, 32 random bytes, no session id, null compression.
    pub fn hello(suites: &[u16], extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for s in suites {
            body.extend_from_slice(&s.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]);
        let mut block = Vec::new();
        for (kind, data) in extensions {
            block.extend_from_slice(&kind.to_be_bytes());
            block.extend_from_slice(&(data.len() as u16).to_be_bytes());
            block.extend_from_slice(data);
        }
        body.extend_from_slice(&(block.len() as u16).to_be_bytes());
        body.extend_from_slice(&block);
        let mut message = vec![1];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        message
    }

    /// The server name extension's data for `name`.
    pub fn sni(name: &str) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name.as_bytes());
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        data
    }

    /// The ALPN extension's data for `protocols`.
    pub fn alpn(protocols: &[&str]) -> Vec<u8> {
        let mut list = Vec::new();
        for p in protocols {
            list.push(p.len() as u8);
            list.extend_from_slice(p.as_bytes());
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        data
    }

    /// `message` cut into handshake records of at most `size` payload bytes each.
    pub fn records(message: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in message.chunks(size.max(1)) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn typical() -> Vec<u8> {
        hello(
            &[0x1301, 0x1302, 0xc02f],
            &[
                (EXT_SERVER_NAME, sni("blocked.example")),
                (EXT_ALPN, alpn(&["h2", "http/1.1"])),
                (EXT_SUPPORTED_VERSIONS, vec![4, 0x03, 0x04, 0x03, 0x03]),
                (0xff01, vec![0]),
            ],
        )
    }

    /// SNI, ALPN names, supported versions, cipher count, bytes consumed.
    type Seen = (Option<Vec<u8>>, Vec<Vec<u8>>, Vec<u16>, usize, usize);

    fn parse(input: &[u8]) -> Result<Seen> {
        let mut scratch = vec![0; input.len()];
        let h = client_hello(input, &mut scratch)?;
        Ok((
            h.server_name().map(<[u8]>::to_vec),
            h.alpn().map(<[u8]>::to_vec).collect(),
            h.supported_versions().collect(),
            h.cipher_count(),
            h.consumed,
        ))
    }

    #[test]
    fn one_record() {
        let input = records(&typical(), 16384);
        let (sni, alpn, versions, ciphers, consumed) = parse(&input).unwrap();
        assert_eq!(sni.as_deref(), Some(&b"blocked.example"[..]));
        assert_eq!(alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(versions, [0x0304, 0x0303]);
        assert_eq!((ciphers, consumed), (3, input.len()));
        let mut scratch = vec![0; input.len()];
        let h = client_hello(&input, &mut scratch).unwrap();
        assert_eq!((h.record_version, h.legacy_version), (0x0301, 0x0303));
        assert_eq!(h.extensions().map(|(t, _)| t).collect::<Vec<_>>(), [0, 16, 43, 0xff01]);
    }

    #[test]
    fn every_prefix_needs_more_and_records_of_any_size_join() {
        for size in [1, 2, 5, 17, 100] {
            let input = records(&typical(), size);
            for cut in 0..input.len() {
                assert_eq!(parse(&input[..cut]), Err(DissectError::NeedMore), "size {size}, cut {cut}");
            }
            assert_eq!(parse(&input).unwrap().0.as_deref(), Some(&b"blocked.example"[..]));
        }
    }

    #[test]
    fn bytes_after_the_hello_are_not_read() {
        let mut input = records(&typical(), 16384);
        let len = input.len();
        input.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(parse(&input).unwrap().4, len);
    }

    #[test]
    fn other_protocols_fail_at_once() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(DissectError::Malformed("not a TLS handshake record")));
        assert_eq!(parse(&[22, 9]), Err(DissectError::Malformed("not a TLS record version")));
        assert_eq!(parse(&[22, 3, 1, 0, 0]), Err(DissectError::Malformed("TLS record length out of range")));
        assert_eq!(parse(&[22, 3, 1, 0, 4, 2, 0, 0, 0]), Err(DissectError::Malformed("not a ClientHello")));
    }

    #[test]
    fn broken_fields_are_malformed() {
        let mut no_suites = typical();
        no_suites[4 + 2 + 32 + 1 + 1] = 0; // suites length 0x0000
        no_suites[4 + 2 + 32 + 1] = 0;
        assert!(matches!(parse(&records(&no_suites, 16384)), Err(DissectError::Malformed(_))));
        let bad_sni = hello(&[1], &[(EXT_SERVER_NAME, vec![0, 9, 0, 0, 3, b'a'])]);
        assert_eq!(
            parse(&records(&bad_sni, 16384)),
            Err(DissectError::Malformed("server name list longer than its extension"))
        );
        let empty_alpn = hello(&[1], &[(EXT_ALPN, vec![0, 1, 0])]);
        assert_eq!(
            parse(&records(&empty_alpn, 16384)),
            Err(DissectError::Malformed("empty ALPN protocol name"))
        );
    }

    #[test]
    fn a_hello_without_extensions() {
        let bare = hello(&[0x002f], &[]);
        // Drop the empty extensions block entirely, as SSL 3 era clients do.
        let mut trimmed = bare[..bare.len() - 2].to_vec();
        let len = (trimmed.len() - 4) as u32;
        trimmed[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        let (sni, alpn, versions, ciphers, _) = parse(&records(&trimmed, 16384)).unwrap();
        assert_eq!((sni, alpn.len(), versions.len(), ciphers), (None, 0, 0, 1));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut scratch = vec![0; bytes.len()];
            if let Ok(h) = client_hello(&bytes, &mut scratch) {
                let _ = (h.server_name(), h.alpn().count(), h.supported_versions().count(), h.extensions().count());
            }
        }

        #[test]
        fn damaged_hellos_never_panic(cut in 0usize..400, flip in 0usize..400, value in proptest::num::u8::ANY) {
            let mut input = records(&typical(), 64);
            if let Some(b) = input.get_mut(flip) { *b = value; }
            input.truncate(cut.max(1));
            let _ = parse(&input);
        }
    }
}
