//! The LuaData byte buffer: a `data` object shared by Lua and Rust, with segments (views over the
//! same memory) and bit-field layouts, plus the `data` Lua module table.
//!
//! Used by the engine (buffers handed to packet and netlink callbacks, invalidated when the
//! callback returns: borrowed views of a [`LentBuffer`], Lua objects without finalizer made
//! without any Rust allocation) and by the client Lua module loaded by the stock `lua5.4`
//! interpreter.
//!
//! Never: touches memory outside a view, panics on any Lua input, runs Lua code while a buffer
//! lock is held, or keeps working after its memory is invalidated.
//!
//! Modules: [`buffer`] (shared memory, views, generations, invalidation), [`layout`] (pure
//! bit-field read/write), `lua` (the plain userdata, the borrowed views of a [`LentBuffer`], the
//! module table), [`meter`] (the host's accounting of buffer bytes and of work, for memory and
//! instruction limits), `raising` (functions whose errors are plain strings at the caller's
//! position, as C library functions'), `view` (the raw Lua C API behind borrowed views);
//! `raising` and `view` hold the crate's only `unsafe`; [`error`].
//!
//! Dependencies: `mlua` with only `lua54`, because the final artifact picks the linkage (the
//! daemon vendors Lua, the cdylib links against the interpreter); everything here is `Send +
//! Sync`, so it also works under the engine's `send` feature. Borrowed views use its raw C API
//! (`ffi`, `Lua::exec_raw`) and, as a fast path only, its doc-hidden `FromLua::from_stack`.
//! `thiserror` for [`DataError`].
#![warn(missing_docs)]

pub mod buffer;
pub mod error;
pub mod layout;
mod lua;
pub mod meter;
mod raising;
mod token;
mod view;

pub use buffer::Data;
pub use error::{DataError, FieldError};
pub use layout::{Endian, Field, FieldKind, Layout};
pub use lua::{open, view_caller, LentBuffer, LentViews, MAX_NEW_LEN};
pub use meter::{set_meter, Meter, NO_MEMORY};
