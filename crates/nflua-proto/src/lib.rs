//! Wire format of the NFLua Netlink protocol: headers, requests, replies,
//! fragmenting and reassembly, byte-exact with the original kernel module.
//!
//! Depends on nothing but `thiserror` (typed errors) and `bitflags` (header
//! and state flags). Used by the Rust client, the daemon and the Lua module;
//! the [`consts`] module is the one place the protocol's numbers live.
//!
//! Never does I/O, never panics on bytes from the wire (the fuzz target in
//! `fuzz/` holds it to that), and keeps every consistency rule of EXECUTE and
//! LIST fragments in [`reassembly`], so daemon and clients check the same way.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod consts;
pub mod error;
pub mod fragment;
pub mod header;
pub mod hook;
pub mod name;
pub mod reassembly;
pub mod record;
pub mod reply;
pub mod request;
mod wire;

pub use bundle::{check_bundle, decode_bundle, encode_bundle, BundleChunk, BundleError, MAX_BUNDLE_CHUNKS};
pub use error::{errno, DecodeError, NameError, ReassemblyError};
pub use fragment::{execute_messages, reload_messages, FragmentError};
pub use header::{emit_message, messages, Header, Message, Messages, MsgFlags, MsgType};
pub use hook::{HookMode, HookSpec, HookSpecError, OnError, Overflow, Verdict};
pub use reassembly::{ExecuteReassembler, ListError, ListReassembler, Script};
pub use record::{RecordFormat, StateFlags, StateRecord};
pub use reply::{
    encode_ack, encode_error, encode_list_reply, encode_stats_reply, ErrorReply, ListFragment, Reply,
};
pub use request::{
    encode_create, encode_data, encode_destroy, encode_list, encode_stats, ExecuteFragment, Request,
    ScriptHeader,
};
