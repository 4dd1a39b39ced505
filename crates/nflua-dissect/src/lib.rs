//! Protocol dissectors for filters: the TLS ClientHello (SNI, ALPN, versions, cipher count), the
//! HTTP/1.x request head (method, target, version, headers), and DNS messages (header,
//! questions, resource records). The engine's `dissect` module turns what they find into Lua
//! tables; stream hooks call them on the bytes a connection has sent so far.
//!
//! Each dissector takes the bytes seen so far and answers one of three things: the message, or
//! [`DissectError::NeedMore`] when the bytes are a correct beginning that stops early (a stream
//! function waits for more), or [`DissectError::Malformed`] with the reason as soon as the bytes
//! cannot begin such a message (so a filter decides at once on a connection that speaks
//! something else).
//!
//! Borrowing, not allocating: results point into the input (the TLS dissector, whose message
//! may span several records, into a scratch slice the caller lends), and lists are iterators
//! over bytes checked once up front, so iterating never fails. Nothing here allocates, does I/O
//! or panics on input: every read goes through [`reader::Reader`]'s checked accessors, and
//! property tests and a fuzz target feed the dissectors arbitrary bytes. Depends on nothing but
//! `thiserror` (the error type).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod dns;
pub mod http;
mod reader;
pub mod tls;

/// Why a dissector gave no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DissectError {
    /// The bytes are a correct beginning of a message that does not end within them.
    #[error("need more")]
    NeedMore,
    /// The bytes cannot be (the beginning of) such a message; the reason says where.
    #[error("{0}")]
    Malformed(&'static str),
}

/// Shorthand for dissector results.
pub type Result<T> = std::result::Result<T, DissectError>;
