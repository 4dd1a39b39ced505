//! The head of an HTTP/1.x request (RFC 9112 §2-5): request line and header fields, through
//! the empty line that ends them. The body is not read.
//!
//! Lines end in CRLF or a bare LF (as servers accept). What cannot be a request fails as soon
//! as the bytes show it — a method with a character no token has, a request line without an
//! HTTP version, a header line without a colon — so a filter learns at the first segment that a
//! connection on port 80 speaks something else. Obsolete line folding is refused (RFC 9112
//! §5.2 lets a server do so), and so is a head longer than [`MAX_HEAD`].

use crate::{DissectError, Result};

/// The longest request head read (request line and headers), in bytes.
pub const MAX_HEAD: usize = 65536;
/// The longest method.
const MAX_METHOD: usize = 32;

/// A request head, borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a [u8],
    /// As sent: origin form (`/path?query`), absolute form, authority form or `*`.
    pub target: &'a [u8],
    /// `HTTP/1.0`, `HTTP/1.1`.
    pub version: &'a [u8],
    /// The header lines (checked: each is `name: value`).
    fields: &'a [u8],
    /// Bytes through the empty line ending the head.
    pub head_len: usize,
}

impl<'a> Request<'a> {
    /// The target's path: up to `?` or `#` (origin form; other forms are returned whole).
    pub fn path(&self) -> &'a [u8] {
        let end = self.target.iter().position(|b| matches!(b, b'?' | b'#')).unwrap_or(self.target.len());
        self.target.get(..end).unwrap_or_default()
    }

    /// What follows `?` in the target, up to `#`.
    pub fn query(&self) -> Option<&'a [u8]> {
        let start = self.target.iter().position(|b| *b == b'?')? + 1;
        let rest = self.target.get(start..)?;
        let end = rest.iter().position(|b| *b == b'#').unwrap_or(rest.len());
        rest.get(..end)
    }

    /// `(name, value)` of each header field in order, the value without surrounding spaces.
    pub fn headers(&self) -> Headers<'a> {
        Headers(self.fields)
    }

    /// The first field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }
}

/// Header fields as `(name, value)`.
#[derive(Debug, Clone)]
pub struct Headers<'a>(&'a [u8]);

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (line, rest) = split_line(self.0)?;
        self.0 = rest;
        let colon = line.iter().position(|b| *b == b':')?;
        let name = line.get(..colon)?;
        let value = trim(line.get(colon + 1..)?);
        Some((name, value))
    }
}

/// Reads the request head at the start of `input`.
pub fn request(input: &[u8]) -> Result<Request<'_>> {
    let (line, mut rest) = match split_line(input) {
        Some(split) => split,
        None => {
            check_request_line_start(input)?;
            return Err(too_long_or_more(input.len()));
        }
    };
    let (method, target, version) = request_line(line)?;
    let fields_start = input.len() - rest.len();
    loop {
        match split_line(rest) {
            None => {
                // An unfinished header line must still be able to become one.
                check_field_start(rest)?;
                return Err(too_long_or_more(input.len()));
            }
            Some((line, after)) => {
                if line.is_empty() {
                    let head_len = input.len() - after.len();
                    if head_len > MAX_HEAD {
                        return Err(DissectError::Malformed("request head too long"));
                    }
                    let fields_end = input.len() - rest.len();
                    let fields = input.get(fields_start..fields_end).unwrap_or_default();
                    return Ok(Request { method, target, version, fields, head_len });
                }
                check_field(line)?;
                rest = after;
            }
        }
    }
}

fn too_long_or_more(seen: usize) -> DissectError {
    if seen > MAX_HEAD {
        DissectError::Malformed("request head too long")
    } else {
        DissectError::NeedMore
    }
}

/// The first line of `bytes` without its CRLF or LF, and what follows it.
fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let lf = bytes.iter().position(|b| *b == b'\n')?;
    let line = bytes.get(..lf)?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, bytes.get(lf + 1..)?))
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn request_line(line: &[u8]) -> Result<(&[u8], &[u8], &[u8])> {
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DissectError::Malformed("request line is not METHOD TARGET VERSION"));
    };
    check_method(method)?;
    if method.is_empty() {
        return Err(DissectError::Malformed("empty method"));
    }
    if target.is_empty() || !target.iter().all(|b| b.is_ascii_graphic()) {
        return Err(DissectError::Malformed("request target empty or not visible ASCII"));
    }
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Ok((method, target, version))
        }
        _ => Err(DissectError::Malformed("no HTTP/x.y version")),
    }
}

fn check_method(method: &[u8]) -> Result<()> {
    if method.len() > MAX_METHOD || !method.iter().all(|b| is_token(*b)) {
        return Err(DissectError::Malformed("method is not a token"));
    }
    Ok(())
}

/// The part of a request line seen so far could still become one.
fn check_request_line_start(partial: &[u8]) -> Result<()> {
    let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
    let mut parts = partial.splitn(2, |b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    check_method(method)?;
    if let Some(rest) = parts.next() {
        if method.is_empty() {
            return Err(DissectError::Malformed("empty method"));
        }
        if !rest.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(DissectError::Malformed("request target empty or not visible ASCII"));
        }
    }
    Ok(())
}

fn check_field(line: &[u8]) -> Result<()> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(DissectError::Malformed("obsolete line folding"));
    }
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return Err(DissectError::Malformed("header line without a colon"));
    };
    let name = line.get(..colon).unwrap_or_default();
    if name.is_empty() || !name.iter().all(|b| is_token(*b)) {
        return Err(DissectError::Malformed("header name is not a token"));
    }
    let value = line.get(colon + 1..).unwrap_or_default();
    if value.iter().any(|b| matches!(b, 0 | b'\r')) {
        return Err(DissectError::Malformed("header value with NUL or CR"));
    }
    Ok(())
}

fn check_field_start(partial: &[u8]) -> Result<()> {
    let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
    if matches!(partial.first(), Some(b' ' | b'\t')) {
        return Err(DissectError::Malformed("obsolete line folding"));
    }
    let name_end = partial.iter().position(|b| *b == b':').unwrap_or(partial.len());
    if !partial.get(..name_end).unwrap_or_default().iter().all(|b| is_token(*b)) {
        return Err(DissectError::Malformed("header name is not a token"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET /index.html?q=1#top HTTP/1.1\r\nHost: blocked.example\r\nUser-Agent:  curl/8 \r\nX-Empty:\r\n\r\nbody";

    #[test]
    fn a_whole_head() {
        let r = request(GET).unwrap();
        assert_eq!(
            (r.method, r.target, r.version),
            (&b"GET"[..], &b"/index.html?q=1#top"[..], &b"HTTP/1.1"[..])
        );
        assert_eq!((r.path(), r.query()), (&b"/index.html"[..], Some(&b"q=1"[..])));
        assert_eq!(r.header("host"), Some(&b"blocked.example"[..]));
        assert_eq!(r.header("USER-AGENT"), Some(&b"curl/8"[..]));
        assert_eq!(r.header("x-empty"), Some(&b""[..]));
        assert_eq!(r.headers().count(), 3);
        assert_eq!(r.head_len, GET.len() - 4);
    }

    #[test]
    fn every_prefix_needs_more() {
        let head = &GET[..GET.len() - 4];
        for cut in 0..head.len() {
            assert_eq!(request(&head[..cut]), Err(DissectError::NeedMore), "cut {cut}");
        }
    }

    #[test]
    fn bare_lf_and_http_1_0() {
        let r = request(b"POST * HTTP/1.0\nA: b\n\n").unwrap();
        assert_eq!((r.method, r.path(), r.header("a")), (&b"POST"[..], &b"*"[..], Some(&b"b"[..])));
    }

    #[test]
    fn other_protocols_fail_early() {
        let m = |s: &'static str| Err(DissectError::Malformed(s));
        assert_eq!(request(&[22, 3, 1, 2, 0]), m("method is not a token"));
        assert_eq!(request(b"SSH-2.0-OpenSSH_9.6\r\n"), m("request line is not METHOD TARGET VERSION"));
        assert_eq!(request(b"GET / FTP/1.0\r\n"), m("no HTTP/x.y version"));
        assert_eq!(request(b" GET"), m("empty method"));
        assert_eq!(request(b"GET / HTTP/1.1\r\nHost blocked\r\n\r\n"), m("header line without a colon"));
        assert_eq!(request(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), m("obsolete line folding"));
        assert_eq!(request(b"GET / HTTP/1.1\r\nBad Name"), m("header name is not a token"));
        assert_eq!(request(b"GET / HTTP/1.1\r\nA: \0\r\n\r\n"), m("header value with NUL or CR"));
    }

    #[test]
    fn heads_are_bounded() {
        let mut long = b"GET / HTTP/1.1\r\n".to_vec();
        while long.len() <= MAX_HEAD {
            long.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(request(&long), Err(DissectError::Malformed("request head too long")));
        long.extend_from_slice(b"\r\n");
        assert_eq!(request(&long), Err(DissectError::Malformed("request head too long")));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(r) = request(&bytes) {
                let _ = (r.path(), r.query(), r.headers().count(), r.header("host"));
            }
        }

    }
}
