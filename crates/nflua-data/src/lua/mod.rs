//! The Lua face of [`Data`]: the `data` userdata and the `data` module table.
//!
//! | Lua                         | meaning                                                          |
//! |-----------------------------|------------------------------------------------------------------|
//! | `data.new(size)`            | zero-filled buffer (`size` ≤ [`MAX_NEW_LEN`])                    |
//! | `data.new(str)`             | copy of the string's bytes                                       |
//! | `data.new{b1, b2, ...}`     | the given bytes (LuaData's original form)                        |
//! | `data.layout{...}`          | a reusable layout object for `d:layout(l)`                       |
//! | `data.isdata(x)`            | `true` for a data object (valid or not), else `false`            |
//! | `#d`, `tostring(d)`         | length in bytes; the bytes as a string                           |
//! | `d[i]`, `d[i] = b`          | byte `i`, 1-based; nil past the end; writing past it is an error |
//! | `d:segment([off [, len]])`  | view over the same memory, `off` 0-based bytes; nil if outside   |
//! | `d:layout{f = {off, len [, endian]}}` | bit fields (offsets/lengths in bits), returns `d`      |
//! | `d.f`, `d.f = v`            | field read (nil if outside the view) / write (error if outside)  |
//!
//! Decisions where LuaData leaves room:
//! * Method names win: `d.segment` / `d.layout` are always the methods, and a layout may not
//!   declare fields with those names (it is an error, rather than a field nobody can reach).
//!   Assigning to a method name is an error; assigning to an unknown name is an error.
//! * Integer fields store the low `length` bits of the value (truncation, two's complement for
//!   negatives, as LuaData and C bit-fields). A 64-bit field reads back as a Lua integer, so values
//!   of 2^63 and above show as negative.
//! * `{offset, length, "string"}` fields read and write whole bytes as a Lua string; a write must
//!   give exactly `length / 8` bytes.
//! * Segments start without a layout.
//! * Once the memory is invalidated, every access (index, assignment, `#`, `tostring`, `segment`,
//!   `layout`) raises "data buffer is no longer valid"; `data.isdata` still answers `true`.
//!
//! Every function and metamethod raises its errors as plain strings at the caller's position
//! (`raising.rs`), and counts what it allocates and the work it does with the state's meter, if
//! its host installed one (`meter.rs`, which has the cost model).
//!
//! Bytes are copied out before any Lua value is made, so no Lua code (e.g. a `__gc` finalizer run
//! by an allocation) ever runs while a buffer lock is held.
//!
//! Files: this one (conversions shared by the others), `object` (`UserData for Data`: indexing,
//! assignment, segments, methods), `lent` (borrowed views: [`LentBuffer`] and the views'
//! metatable), `layouts` (layouts from Lua tables), `module` (the module table, `data.new`).
//!
//! # Two kinds of data objects
//!
//! `data.new` and Rust's `IntoLua` make *plain* objects: mlua userdata owning a [`Data`] (an
//! `Arc` to the memory). mlua gives every userdata a `__gc` finalizer, and finalizers are costly
//! for objects made by the million: Lua runs them in a separate step of the collector and frees
//! the block only in the cycle after, so a hook call that handed two buffers to its function paid
//! two Rust allocations, two Lua allocations, two finalizer calls and most of an extra
//! collection.
//!
//! [`LentBuffer`] makes *borrowed views* instead, for the buffers of callbacks and hooks. The
//! memory is one buffer per use site, reused from call to call and registered with the Lua state
//! (in its app data) for the state's whole life, so a view never outlives its memory.
//! [`LentBuffer::refill`] copies the next call's bytes in without allocating and bumps the
//! memory's generation, which kills every view of the previous fill, as [`Data::invalidate`]
//! does for plain objects. The views a call hands to its function ([`view_caller`]) are tokens:
//! light userdata naming the memory, the view and the fill, with the range and layout in a
//! record beside the memory (`token.rs`), so a hook call allocates nothing, in Rust or in Lua.
//! Views made otherwise (`LentBuffer::lend`, segments of views) are bare 80-byte userdata
//! holding the same numbers and, as user value, their layout object, with a metatable without
//! `__gc` (the raw C API side is `view.rs`): freed by the collector's sweep, like strings.

//! A view behaves exactly as a plain object: its metamethods turn it into a temporary `Data` (the
//! memory, the view's generation and range, its layout) and call the same functions as plain
//! objects' methods, with the same messages; `data.isdata`, [`Data::from_lua_value`] and
//! `FromLua for Data` accept both kinds; segments of a view are views (of the same fill),
//! segments of a plain object are plain. What differs is nothing a script can rely on: a view's
//! `segment` and `layout` are other function values than a plain object's, and a view's
//! metatable is another (hidden) table. Tokens are light userdata, so Lua's own messages name
//! them by their type ("attempt to perform arithmetic on a userdata value", where a plain object
//! says "data value").

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use mlua::{
    AnyUserData, Error as LuaError, FromLua, Function, Lua, LuaString, MetaMethod, Result as LuaResult,
    Table, UserData, UserDataFields, Value,
};

use crate::buffer::Data;
use crate::error::{DataError, FieldError};
use crate::layout::{self, Endian, Field, FieldKind, FieldValue, Layout};
use crate::meter::{self, Reservation};
use crate::raising;
use crate::token::{self, Records};
use crate::view::{self, MaybeView, ViewArg, ViewCell, ViewLayout};

mod layouts;
mod lent;
mod module;
mod object;

use layouts::*;
pub(crate) use lent::LentMemories;
pub use lent::{view_caller, LentBuffer, LentViews};
pub use module::open;
use object::*;

/// The largest buffer `data.new` creates from Lua, in bytes (64 MiB). Buffers live outside the Lua
/// allocator: a host's meter (see `meter.rs`) counts them against the state's memory limit; this
/// bounds what a script of a state without one (the stock interpreter's module) can take.
pub const MAX_NEW_LEN: usize = 64 << 20;

/// Layout entries parsed between two charges (see `meter.rs`).
pub(super) const LAYOUT_CHARGE_BATCH: usize = 256;

/// Method names; they take precedence over layout fields.
pub(super) const METHODS: [&str; 2] = ["segment", "layout"];

pub(super) fn lua_err(err: DataError) -> LuaError {
    LuaError::external(err)
}

pub(super) fn bad_argument(func: &'static str, pos: usize, message: String) -> LuaError {
    lua_err(DataError::BadArgument { func, pos, message })
}

/// A Lua number with an exact integer value (as `math.tointeger`).
pub(super) fn to_integer(value: &Value) -> Option<i64> {
    match *value {
        Value::Integer(i) => Some(i),
        // -2^63 <= n < 2^63; i64::MIN is exactly -2^63 as an f64.
        Value::Number(n) if n.fract() == 0.0 && n >= i64::MIN as f64 && n < -(i64::MIN as f64) => {
            Some(n as i64)
        }
        _ => None,
    }
}

/// The Lua type name, as Lua's `type` reports it (integers are "number", light userdata
/// "userdata").
pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "number",
        Value::LightUserData(_) => "userdata",
        other => other.type_name(),
    }
}

/// A short description of a Lua value for error messages: the number itself, or the type.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_owned(),
    }
}

pub(super) fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Data {
    /// The `Data` a Lua value stands for (a clone sharing its memory, with its layout), or `None`
    /// if the value is not a data object. Takes plain objects and borrowed views alike; `lua` must
    /// be the state the value lives in.
    pub fn from_lua_value(lua: &Lua, value: &Value) -> Option<Data> {
        data_object(lua, value).ok().flatten().map(|(data, _)| data)
    }
}

impl FromLua for Data {
    fn from_lua(value: Value, lua: &Lua) -> LuaResult<Data> {
        data_object(lua, &value)?.map(|(data, _)| data).ok_or_else(|| LuaError::FromLuaConversionError {
            from: value.type_name(),
            to: "data".to_owned(),
            message: Some("expected a data object".to_owned()),
        })
    }
}

/// Which kind of data object a userdata is (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Plain,
    /// A borrowed view of the lent memory in this slot.
    View(usize),
}

/// The `Data` a value stands for and its kind, or `None` if it is not a data object.
pub(super) fn data_object(lua: &Lua, value: &Value) -> LuaResult<Option<(Data, Kind)>> {
    if let Value::UserData(ud) = value {
        if let Ok(data) = ud.borrow::<Data>() {
            return Ok(Some((Data::clone(&data), Kind::Plain)));
        }
    }
    let Some(view) = view::inspect(lua, value)? else {
        return Ok(None);
    };
    let slot = view.cell.slot();
    Ok(view_data(lua, view).map(|data| (data, Kind::View(slot))))
}

/// The `Data` a view stands for: its memory's slot, its generation and range, its layout. `None`
/// if the slot is not one of this state's (a view forged in a `debug` state).
pub(super) fn view_data(lua: &Lua, view: ViewArg) -> Option<Data> {
    let ViewArg { cell, layout } = view;
    let slot = cell.slot();
    // The guard is dropped at once: no app data borrow is held while Lua runs.
    let (memory, token_layout) = lua.app_data_ref::<LentMemories>().and_then(|lent| {
        let memory = lent.0.get(slot)?.memory.clone();
        let token_layout = match layout {
            ViewLayout::Token(view) => lent.records(slot).and_then(|r| r.layout(view, cell.generation())),
            ViewLayout::UserValue(_) => None,
        };
        Some((memory, token_layout))
    })?;
    let layout = match &layout {
        ViewLayout::UserValue(Value::UserData(l)) => {
            l.borrow::<LayoutObject>().ok().map(|l| Arc::clone(&l.0))
        }
        _ => token_layout,
    };
    Some(memory.view(cell.generation(), cell.offset(), cell.len(), layout))
}

/// A new data object of `kind` for `data` (a segment of an object of that kind).
pub(super) fn make_object(lua: &Lua, kind: Kind, data: Data) -> LuaResult<Value> {
    match kind {
        Kind::Plain => lua.create_userdata(data).map(Value::UserData),
        Kind::View(slot) => {
            let (generation, offset, len) = data.parts();
            view::create(lua, cell(slot, generation, offset, len)?).map(Value::UserData)
        }
    }
}

/// The cell of a view, or an error for a range a view cannot hold (beyond 4 GiB).
pub(super) fn cell(slot: usize, generation: u64, offset: usize, len: usize) -> LuaResult<ViewCell> {
    ViewCell::new(slot, generation, offset, len)
        .ok_or_else(|| LuaError::runtime("data view: buffer too large for a borrowed view"))
}
