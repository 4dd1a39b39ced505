//! Lua 5.4's pattern matcher, written to count its work: a backtracking matcher over byte slices
//! that gives the same matches, captures and errors as the stock one (lstrlib.c), and reports
//! every [`BATCH`] steps to a [`Meter`] that may stop it.
//!
//! # Steps
//!
//! One step is one unit of matcher work:
//! - each pattern item tried at a subject position (every turn of the matching loop, so every
//!   recursion, every backtrack into an item, every single-character test of an item without a
//!   suffix);
//! - each character tested while a `*`, `+` or `-` item grows;
//! - each subject byte scanned by `%b` or compared by a back-reference `%1`-`%9`.
//!
//! A plain search ([`Matcher::find_literal`]) costs one step per byte skipped and the
//! pattern's length per place it is compared.
//!
//! The Lua functions add the bytes they copy out (captures, `gsub`'s result) with
//! [`Matcher::spend`], so a call's steps bound both its time and what it produces.
//!
//! # Shape
//!
//! The matcher holds no value with a destructor (asserted below): the Lua functions' meter
//! raises Lua errors (longjmp) from inside it, which must not skip a destructor. Malformed
//! patterns are reported as [`PatternError`]s, whose text is the stock message.
//!
//! Reading past the end of the pattern or the subject yields a zero byte, as reading the C
//! string's terminator does in the stock matcher; the stock checks that depend on it (an
//! escape or a set cut short, `%f` at the end of the subject) are written the same way.

use std::fmt;

/// Most captures one pattern may open (LUA_MAXCAPTURES).
pub(crate) const MAX_CAPTURES: usize = 32;

/// Most nested matcher calls before "pattern too complex" (MAXCCALLS in lstrlib.c).
const MAX_DEPTH: u32 = 200;

/// Steps between two reports to the meter.
pub(crate) const BATCH: u64 = 1024;

/// The escape character of patterns and replacement strings.
pub(crate) const ESCAPE: u8 = b'%';

/// Characters that make a pattern more than a plain string (`string.find` searches plainly
/// without any of them).
const SPECIALS: &[u8] = b"^$*+?.([%-";

/// Why a match could not be done; the texts are the stock library's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatternError {
    EndsWithEscape,
    MissingBracket,
    MissingBalanceArguments,
    FrontierWithoutSet,
    /// A back-reference or a capture asked for that does not exist (1-based, may be 0).
    InvalidCaptureIndex(i32),
    InvalidPatternCapture,
    TooManyCaptures,
    TooComplex,
    UnfinishedCapture,
    /// The meter refused more steps (the engine's meter raises instead).
    #[cfg_attr(not(test), allow(dead_code))]
    Stopped,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::EndsWithEscape => f.write_str("malformed pattern (ends with '%')"),
            PatternError::MissingBracket => f.write_str("malformed pattern (missing ']')"),
            PatternError::MissingBalanceArguments => {
                f.write_str("malformed pattern (missing arguments to '%b')")
            }
            PatternError::FrontierWithoutSet => f.write_str("missing '[' after '%f' in pattern"),
            PatternError::InvalidCaptureIndex(n) => write!(f, "invalid capture index %{n}"),
            PatternError::InvalidPatternCapture => f.write_str("invalid pattern capture"),
            PatternError::TooManyCaptures => f.write_str("too many captures"),
            PatternError::TooComplex => f.write_str("pattern too complex"),
            PatternError::UnfinishedCapture => f.write_str("unfinished capture"),
            PatternError::Stopped => f.write_str("matcher stopped"),
        }
    }
}

impl std::error::Error for PatternError {}

/// Receives the matcher's steps in batches; an error stops the match.
pub(crate) trait Meter {
    fn charge(&mut self, steps: u64) -> Result<(), PatternError>;
}

/// A capture's length while the match runs: a byte count, or one of these markers.
const UNFINISHED: isize = -1;
const POSITION: isize = -2;

#[derive(Debug, Clone, Copy)]
struct Capture {
    start: usize,
    len: isize,
}

/// One capture of a finished match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Captured {
    /// Bytes `start..start + len` of the subject.
    Bytes { start: usize, len: usize },
    /// A position capture `()`: the 1-based position.
    Position(usize),
}

pub(crate) type Step<T> = Result<T, PatternError>;

/// Matches one pattern against one subject, as many times as asked.
pub(crate) struct Matcher<'a, M: Meter> {
    src: &'a [u8],
    pat: &'a [u8],
    depth: u32,
    level: usize,
    captures: [Capture; MAX_CAPTURES],
    /// Steps done and not yet charged.
    unpaid: u64,
    meter: M,
}

/// Whether a pattern has none of the special characters.
pub(crate) fn is_plain(pattern: &[u8]) -> bool {
    !pattern.iter().any(|c| SPECIALS.contains(c))
}

/// Whether `c` is in class `class` (the letter after `%`), in the C locale as Lua sees it;
/// any other character after `%` stands for itself.
fn in_class(c: u8, class: u8) -> bool {
    let found = match class.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        // C's isspace also takes the vertical tab, which Rust's ASCII whitespace does not.
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return class == c,
    };
    found == class.is_ascii_lowercase()
}

impl<'a, M: Meter> Matcher<'a, M> {
    /// A matcher of `pattern` (without its `^` anchor, which the callers handle) in `subject`.
    pub(crate) fn new(subject: &'a [u8], pattern: &'a [u8], meter: M) -> Self {
        Matcher {
            src: subject,
            pat: pattern,
            depth: MAX_DEPTH,
            level: 0,
            captures: [Capture { start: 0, len: 0 }; MAX_CAPTURES],
            unpaid: 0,
            meter,
        }
    }

    pub(crate) fn subject(&self) -> &'a [u8] {
        self.src
    }

    /// Counts `steps` of work, reporting to the meter once a batch is full.
    #[inline]
    pub(crate) fn spend(&mut self, steps: u64) -> Step<()> {
        self.unpaid += steps;
        if self.unpaid >= BATCH {
            let due = std::mem::take(&mut self.unpaid);
            self.meter.charge(due)?;
        }
        Ok(())
    }

    /// Reports the steps not yet charged (at the end of a call).
    pub(crate) fn settle(&mut self) -> Step<()> {
        let due = std::mem::take(&mut self.unpaid);
        if due > 0 {
            self.meter.charge(due)?;
        }
        Ok(())
    }

    /// Whether the pattern matches at subject position `start`; the end of the match if so.
    /// Forgets the captures of the previous attempt.
    pub(crate) fn match_at(&mut self, start: usize) -> Step<Option<usize>> {
        self.depth = MAX_DEPTH;
        self.level = 0;
        self.matches(start, 0)
    }

    /// Captures the pattern opened (0 when it has none; a match then has its whole text as
    /// its only capture).
    pub(crate) fn level(&self) -> usize {
        self.level
    }

    /// Capture `i` (0-based) of the last match; with no captures in the pattern, capture 0 is
    /// `whole`, the matched range.
    pub(crate) fn capture(&self, i: usize, whole: (usize, usize)) -> Step<Captured> {
        if i >= self.level {
            if i != 0 {
                return Err(PatternError::InvalidCaptureIndex(capture_number(i)));
            }
            return Ok(Captured::Bytes { start: whole.0, len: whole.1 - whole.0 });
        }
        let capture = self.captures[i];
        match capture.len {
            UNFINISHED => Err(PatternError::UnfinishedCapture),
            POSITION => Ok(Captured::Position(capture.start + 1)),
            len => Ok(Captured::Bytes { start: capture.start, len: len.unsigned_abs() }),
        }
    }

    #[inline]
    fn pat_at(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    #[inline]
    fn src_at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// Where the single-character class starting at `p` ends.
    fn class_end(&self, p: usize) -> Step<usize> {
        let end = self.pat.len();
        let first = self.pat_at(p);
        let mut p = p + 1;
        match first {
            ESCAPE => {
                if p >= end {
                    return Err(PatternError::EndsWithEscape);
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.pat_at(p) == b'^' {
                    p += 1;
                }
                // The first character (even `]`) belongs to the set; an escape takes the
                // character after it along.
                loop {
                    if p >= end {
                        return Err(PatternError::MissingBracket);
                    }
                    let c = self.pat[p];
                    p += 1;
                    if c == ESCAPE && p < end {
                        p += 1;
                    }
                    if self.pat_at(p) == b']' {
                        return Ok(p + 1);
                    }
                }
            }
            _ => Ok(p),
        }
    }

    /// Whether `c` is in the set `[...]` that opens at `p` and closes at `close`.
    fn in_set(&self, c: u8, p: usize, close: usize) -> bool {
        let mut p = p;
        let mut wanted = true;
        if self.pat_at(p + 1) == b'^' {
            wanted = false;
            p += 1;
        }
        p += 1;
        while p < close {
            let item = self.pat[p];
            if item == ESCAPE {
                p += 1;
                if in_class(c, self.pat_at(p)) {
                    return wanted;
                }
            } else if self.pat_at(p + 1) == b'-' && p + 2 < close {
                if item <= c && c <= self.pat[p + 2] {
                    return wanted;
                }
                p += 2;
            } else if item == c {
                return wanted;
            }
            p += 1;
        }
        !wanted
    }

    /// Whether the subject character at `s` matches the class `p..ep`.
    #[inline]
    fn single(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else { return false };
        match self.pat[p] {
            b'.' => true,
            ESCAPE => in_class(c, self.pat_at(p + 1)),
            b'[' => self.in_set(c, p, ep - 1),
            literal => literal == c,
        }
    }

    fn matches(&mut self, s: usize, p: usize) -> Step<Option<usize>> {
        if self.depth == 0 {
            return Err(PatternError::TooComplex);
        }
        self.depth -= 1;
        let found = self.match_items(s, p)?;
        self.depth += 1;
        Ok(found)
    }

    /// The matching loop: items that need no backtracking continue the loop (the stock
    /// matcher's tail calls), the others recurse.
    fn match_items(&mut self, mut s: usize, mut p: usize) -> Step<Option<usize>> {
        let end = self.pat.len();
        loop {
            self.spend(1)?;
            if p == end {
                return Ok(Some(s));
            }
            match self.pat[p] {
                b'(' => {
                    return if self.pat_at(p + 1) == b')' {
                        self.open_capture(s, p + 2, POSITION)
                    } else {
                        self.open_capture(s, p + 1, UNFINISHED)
                    };
                }
                b')' => return self.close_capture(s, p + 1),
                b'$' if p + 1 == end => return Ok((s == self.src.len()).then_some(s)),
                ESCAPE if self.pat_at(p + 1) == b'b' => match self.balance(s, p + 2)? {
                    Some(after) => {
                        s = after;
                        p += 4;
                        continue;
                    }
                    None => return Ok(None),
                },
                ESCAPE if self.pat_at(p + 1) == b'f' => {
                    p += 2;
                    if self.pat_at(p) != b'[' {
                        return Err(PatternError::FrontierWithoutSet);
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src_at(s - 1) };
                    if !self.in_set(previous, p, ep - 1) && self.in_set(self.src_at(s), p, ep - 1) {
                        p = ep;
                        continue;
                    }
                    return Ok(None);
                }
                ESCAPE if self.pat_at(p + 1).is_ascii_digit() => {
                    match self.back_reference(s, self.pat_at(p + 1))? {
                        Some(after) => {
                            s = after;
                            p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = self.pat_at(ep);
                    if !self.single(s, p, ep) {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            p = ep + 1;
                            continue;
                        }
                        return Ok(None);
                    }
                    match suffix {
                        b'?' => {
                            if let Some(found) = self.matches(s + 1, ep + 1)? {
                                return Ok(Some(found));
                            }
                            p = ep + 1;
                        }
                        b'+' => return self.longest(s + 1, p, ep),
                        b'*' => return self.longest(s, p, ep),
                        b'-' => return self.shortest(s, p, ep),
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    /// `x*` (and the rest of `x+`): as many as match, then fewer until the rest matches.
    fn longest(&mut self, s: usize, p: usize, ep: usize) -> Step<Option<usize>> {
        let mut count = 0;
        while self.single(s + count, p, ep) {
            count += 1;
        }
        self.spend(count as u64 + 1)?;
        loop {
            if let Some(found) = self.matches(s + count, ep + 1)? {
                return Ok(Some(found));
            }
            if count == 0 {
                return Ok(None);
            }
            count -= 1;
        }
    }

    /// `x-`: as few as let the rest match.
    fn shortest(&mut self, mut s: usize, p: usize, ep: usize) -> Step<Option<usize>> {
        loop {
            if let Some(found) = self.matches(s, ep + 1)? {
                return Ok(Some(found));
            }
            self.spend(1)?;
            if !self.single(s, p, ep) {
                return Ok(None);
            }
            s += 1;
        }
    }

    fn open_capture(&mut self, s: usize, p: usize, len: isize) -> Step<Option<usize>> {
        let level = self.level;
        if level >= MAX_CAPTURES {
            return Err(PatternError::TooManyCaptures);
        }
        self.captures[level] = Capture { start: s, len };
        self.level = level + 1;
        let found = self.matches(s, p)?;
        if found.is_none() {
            self.level -= 1;
        }
        Ok(found)
    }

    fn close_capture(&mut self, s: usize, p: usize) -> Step<Option<usize>> {
        let Some(open) = (0..self.level).rev().find(|&i| self.captures[i].len == UNFINISHED) else {
            return Err(PatternError::InvalidPatternCapture);
        };
        // Subject positions fit an isize: they index a slice.
        self.captures[open].len = (s - self.captures[open].start) as isize;
        let found = self.matches(s, p)?;
        if found.is_none() {
            self.captures[open].len = UNFINISHED;
        }
        Ok(found)
    }

    /// `%bxy` at `s` (`p` points at `x`): the end of the balanced run, if one starts here.
    fn balance(&mut self, s: usize, p: usize) -> Step<Option<usize>> {
        if p + 1 >= self.pat.len() {
            return Err(PatternError::MissingBalanceArguments);
        }
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        if self.src_at(s) != open {
            return Ok(None);
        }
        let mut depth = 1u64;
        let mut i = s + 1;
        let mut found = None;
        while i < self.src.len() {
            let c = self.src[i];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    found = Some(i + 1);
                    break;
                }
            } else if c == open {
                depth += 1;
            }
            i += 1;
        }
        self.spend((i - s) as u64)?;
        Ok(found)
    }

    /// `%1`-`%9` (and the invalid `%0`): the same bytes as the capture again.
    fn back_reference(&mut self, s: usize, digit: u8) -> Step<Option<usize>> {
        let index = i32::from(digit) - i32::from(b'1');
        let capture = usize::try_from(index)
            .ok()
            .filter(|&i| i < self.level && self.captures[i].len != UNFINISHED)
            .map(|i| self.captures[i]);
        let Some(capture) = capture else {
            return Err(PatternError::InvalidCaptureIndex(index + 1));
        };
        // A position capture has no text; the stock matcher's length check fails it.
        let Ok(len) = usize::try_from(capture.len) else { return Ok(None) };
        self.spend(len as u64)?;
        let rest = &self.src[s.min(self.src.len())..];
        if rest.len() >= len && rest[..len] == self.src[capture.start..capture.start + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }
    /// Where the pattern, taken as plain bytes, first occurs in the subject at or after `from`
    /// (an empty pattern occurs right there). Costs one step per byte skipped looking for the
    /// pattern's first byte and the pattern's length per place where that byte is found, so a
    /// long, almost-matching pattern is paid for as it is compared, not after.
    pub(crate) fn find_literal(&mut self, from: usize) -> Step<Option<usize>> {
        let (haystack, needle) = (self.src, self.pat);
        let Some((&first, rest)) = needle.split_first() else { return Ok(Some(from)) };
        if from > haystack.len() || needle.len() > haystack.len() - from {
            return Ok(None);
        }
        let last_start = haystack.len() - needle.len();
        let mut at = from;
        while at <= last_start {
            let Some(offset) = haystack[at..=last_start].iter().position(|&c| c == first) else {
                self.spend((last_start + 1 - at) as u64)?;
                break;
            };
            at += offset;
            self.spend(offset as u64 + needle.len() as u64)?;
            if haystack[at + 1..at + needle.len()] == *rest {
                return Ok(Some(at));
            }
            at += 1;
        }
        Ok(None)
    }
}

/// The 1-based number of capture `i` as error messages show it.
fn capture_number(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX - 1) + 1
}

// The Lua functions' meter raises Lua errors (longjmp) from inside the matcher.
const _: () = assert!(!std::mem::needs_drop::<Matcher<'static, Free>>());

/// A meter that never stops the matcher.
pub(crate) struct Free;

impl Meter for Free {
    fn charge(&mut self, _: u64) -> Result<(), PatternError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        charged: u64,
        limit: u64,
    }

    impl Meter for &mut Counting {
        fn charge(&mut self, steps: u64) -> Result<(), PatternError> {
            self.charged += steps;
            if self.charged > self.limit {
                return Err(PatternError::Stopped);
            }
            Ok(())
        }
    }

    fn find(subject: &str, pattern: &str) -> Step<Option<(usize, usize)>> {
        let mut m = Matcher::new(subject.as_bytes(), pattern.as_bytes(), Free);
        for start in 0..=subject.len() {
            if let Some(end) = m.match_at(start)? {
                return Ok(Some((start, end)));
            }
        }
        Ok(None)
    }

    #[test]
    fn classes_follow_the_c_locale() {
        assert!(in_class(0x0b, b's'));
        assert!(!in_class(0x0b, b'S'));
        assert!(in_class(b'_', b'p'));
        assert!(!in_class(0xe9, b'a'));
        assert!(in_class(0xe9, b'A'));
        assert!(in_class(b'q', b'q'));
        assert!(in_class(0, b'z'));
    }

    #[test]
    fn basic_matches() {
        assert_eq!(find("hello world", "o w"), Ok(Some((4, 7))));
        assert_eq!(find("hello", "l+"), Ok(Some((2, 4))));
        assert_eq!(find("hello", "x*$"), Ok(Some((5, 5))));
        assert_eq!(find("f(a(b)c)", "%b()"), Ok(Some((1, 8))));
        assert_eq!(find("THE (quick) fox", "%f[%a]%a+"), Ok(Some((0, 3))));
        assert_eq!(find("abab", "(ab)%1"), Ok(Some((0, 4))));
        assert_eq!(find("a", "%"), Err(PatternError::EndsWithEscape));
        assert_eq!(find("a", "[a"), Err(PatternError::MissingBracket));
        assert_eq!(find("a", "a)"), Err(PatternError::InvalidPatternCapture));
        assert_eq!(find("a", "%f"), Err(PatternError::FrontierWithoutSet));
        assert_eq!(find("a", "%b"), Err(PatternError::MissingBalanceArguments));
        assert_eq!(find("a", "(a)%2"), Err(PatternError::InvalidCaptureIndex(2)));
    }

    #[test]
    fn plain_search() {
        let literal = |subject: &[u8], needle: &[u8], from: usize| {
            Matcher::new(subject, needle, Free).find_literal(from)
        };
        assert_eq!(literal(b"abcabd", b"abd", 0), Ok(Some(3)));
        assert_eq!(literal(b"abcabd", b"abd", 4), Ok(None));
        assert_eq!(literal(b"abc", b"", 2), Ok(Some(2)));
        assert_eq!(literal(b"abc", b"abcd", 0), Ok(None));
        assert_eq!(literal(b"abc", b"c", 2), Ok(Some(2)));
        // 'a' x 3000 searched for 'a' x 1000 then 'b': every place costs the pattern's length.
        let subject = vec![b'a'; 3000];
        let mut needle = vec![b'a'; 1000];
        needle.push(b'b');
        let mut meter = Counting { charged: 0, limit: 100_000 };
        let outcome = Matcher::new(&subject, &needle, &mut meter).find_literal(0);
        assert_eq!(outcome, Err(PatternError::Stopped));
        assert!(meter.charged > 100_000 && meter.charged < 100_000 + 2 * BATCH + 1001, "{}", meter.charged);
    }

    #[test]
    fn steps_are_charged_in_batches_and_stop_the_match() {
        let subject = "a".repeat(400);
        let mut meter = Counting { charged: 0, limit: 100_000 };
        let mut m = Matcher::new(subject.as_bytes(), b".-.-.-.-b", &mut meter);
        let mut outcome = Ok(None);
        for start in 0..=subject.len() {
            outcome = m.match_at(start);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(PatternError::Stopped));
        // Stopped at the first batch past the limit.
        assert!(meter.charged > 100_000 && meter.charged <= 100_000 + BATCH, "{}", meter.charged);
    }
}
