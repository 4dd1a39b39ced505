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
//! # Two kinds of data objects
//!
//! `data.new` and Rust's `IntoLua` make *plain* objects: mlua userdata owning a [`Data`] (an
//! `Arc` to the memory). mlua gives every userdata a `__gc` finalizer, and finalizers are costly
//! for objects made by the million: Lua runs them in a separate step of the collector and frees
//! the block only in the cycle after, so a hook call that handed two buffers to its function paid
//! two Rust allocations, two Lua allocations, two finalizer calls and most of an extra
//! collection.
//!
//! [`LentBuffer`] makes *borrowed views* instead, for the buffers of callbacks and hooks: a bare
//! 80-byte userdata holding only numbers (a slot naming the memory, the memory's generation,
//! offset, length) and, as user value, its layout object, with a metatable without `__gc` (the
//! raw C API side is `view.rs`). The memory is one buffer per use site, reused from call to call
//! and registered with the Lua state (in its app data) for the state's whole life, so a view never
//! outlives its memory. [`LentBuffer::refill`] copies the next call's bytes in without allocating
//! and bumps the memory's generation, which kills every view of the previous fill, as
//! [`Data::invalidate`] does for plain objects. A collection frees dead views in its sweep, like
//! strings. [`view_caller`] makes the views inside the call they are for, so a hook call costs two
//! small Lua allocations and no Rust one.
//!
//! A view behaves exactly as a plain object: its metamethods turn it into a temporary `Data` (the
//! memory, the view's generation and range, its layout) and call the same functions as plain
//! objects' methods, with the same messages; `data.isdata`, [`Data::from_lua_value`] and
//! `FromLua for Data` accept both kinds; segments of a view are views (of the same fill),
//! segments of a plain object are plain. What differs is nothing a script can rely on: a view's
//! `segment` and `layout` are other function values than a plain object's, and a view's
//! metatable is another (hidden) table.

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
use crate::view::{self, MaybeView, ViewArg, ViewCell};

/// The largest buffer `data.new` creates from Lua, in bytes (64 MiB). Buffers live outside the Lua
/// allocator: a host's meter (see `meter.rs`) counts them against the state's memory limit; this
/// bounds what a script of a state without one (the stock interpreter's module) can take.
pub const MAX_NEW_LEN: usize = 64 << 20;

/// Layout entries parsed between two charges (see `meter.rs`).
const LAYOUT_CHARGE_BATCH: usize = 256;

/// Method names; they take precedence over layout fields.
const METHODS: [&str; 2] = ["segment", "layout"];

fn lua_err(err: DataError) -> LuaError {
    LuaError::external(err)
}

fn bad_argument(func: &'static str, pos: usize, message: String) -> LuaError {
    lua_err(DataError::BadArgument { func, pos, message })
}

/// A Lua number with an exact integer value (as `math.tointeger`).
fn to_integer(value: &Value) -> Option<i64> {
    match *value {
        Value::Integer(i) => Some(i),
        // -2^63 <= n < 2^63; i64::MIN is exactly -2^63 as an f64.
        Value::Number(n) if n.fract() == 0.0 && n >= i64::MIN as f64 && n < -(i64::MIN as f64) => {
            Some(n as i64)
        }
        _ => None,
    }
}

/// The Lua type name, as Lua's `type` reports it (integers are "number").
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "number",
        other => other.type_name(),
    }
}

/// A short description of a Lua value for error messages: the number itself, or the type.
fn describe(value: &Value) -> String {
    match value {
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_owned(),
    }
}

fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Data {
    /// The `Data` a Lua value stands for (a clone sharing its memory, with its layout), or `None`
    /// if the value is not a data object. Takes plain objects and borrowed views alike; `lua` must
    /// be the state the value lives in.
    pub fn from_lua_value(lua: &Lua, value: &Value) -> Option<Data> {
        match value {
            Value::UserData(ud) => data_object(lua, ud).ok().flatten().map(|(data, _)| data),
            _ => None,
        }
    }
}

impl FromLua for Data {
    fn from_lua(value: Value, lua: &Lua) -> LuaResult<Data> {
        let found = match &value {
            Value::UserData(ud) => data_object(lua, ud)?.map(|(data, _)| data),
            _ => None,
        };
        found.ok_or_else(|| LuaError::FromLuaConversionError {
            from: value.type_name(),
            to: "data".to_owned(),
            message: Some("expected a data object".to_owned()),
        })
    }
}

/// Which kind of data object a userdata is (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// A borrowed view of the lent memory in this slot.
    View(usize),
}

/// The `Data` a userdata stands for and its kind, or `None` if it is not a data object.
fn data_object(lua: &Lua, ud: &AnyUserData) -> LuaResult<Option<(Data, Kind)>> {
    if let Ok(data) = ud.borrow::<Data>() {
        return Ok(Some((Data::clone(&data), Kind::Plain)));
    }
    let Some(view) = view::inspect(lua, ud)? else {
        return Ok(None);
    };
    let slot = view.cell.slot();
    Ok(view_data(lua, view).map(|data| (data, Kind::View(slot))))
}

/// The `Data` a view stands for: its memory's slot, its generation and range, its layout. `None`
/// if the slot is not one of this state's (a view forged in a `debug` state).
fn view_data(lua: &Lua, view: ViewArg) -> Option<Data> {
    let ViewArg { cell, user_value } = view;
    // The guard is dropped at once: no app data borrow is held while Lua runs.
    let memory = lua.app_data_ref::<LentMemories>().and_then(|lent| lent.0.get(cell.slot()).cloned())?;
    let layout = match &user_value {
        Value::UserData(l) => l.borrow::<LayoutObject>().ok().map(|l| Arc::clone(&l.0)),
        _ => None,
    };
    Some(memory.view(cell.generation(), cell.offset(), cell.len(), layout))
}

/// A new data object of `kind` for `data` (a segment of an object of that kind).
fn make_object(lua: &Lua, kind: Kind, data: Data) -> LuaResult<Value> {
    match kind {
        Kind::Plain => lua.create_userdata(data).map(Value::UserData),
        Kind::View(slot) => {
            let (generation, offset, len) = data.parts();
            view::create(lua, cell(slot, generation, offset, len)?).map(Value::UserData)
        }
    }
}

/// The cell of a view, or an error for a range a view cannot hold (beyond 4 GiB).
fn cell(slot: usize, generation: u64, offset: usize, len: usize) -> LuaResult<ViewCell> {
    ViewCell::new(slot, generation, offset, len)
        .ok_or_else(|| LuaError::runtime("data view: buffer too large for a borrowed view"))
}

/// The memories lent to one Lua state, by slot; in the state's app data, which mlua drops only
/// after closing the state, so every view (even one a `__close` handler touches while the state
/// closes) finds its memory.
pub(crate) struct LentMemories(Vec<Data>);

impl LentMemories {
    /// Byte `index` (0-based) of the view `cell`: `Some(byte, or None past its end)`, `None`
    /// when the view is not valid.
    pub(crate) fn byte(&self, cell: &ViewCell, index: usize) -> Option<Option<u8>> {
        let memory = self.0.get(cell.slot())?;
        memory.byte_of(cell.generation(), cell.offset(), cell.len(), index).ok()
    }

    /// The length of the view `cell`, `None` when the view is not valid.
    pub(crate) fn len(&self, cell: &ViewCell) -> Option<usize> {
        // A read past the end checks the view's validity and reads nothing.
        self.byte(cell, usize::MAX).map(|_| cell.len())
    }
}

/// A buffer reused from call to call and handed to one Lua state as borrowed views: Lua objects
/// without finalizer or Rust value inside, which behave as `data` objects (see the module doc).
///
/// Per use: [`LentBuffer::refill`] with the bytes, [`LentBuffer::lend`] views of the returned
/// `Data` (or of its segments) to Lua, call Lua, [`LentBuffer::invalidate`]. A view then fails
/// with "data buffer is no longer valid" forever after, wherever a script stashed it, and so do
/// Rust clones of the returned `Data`. In steady state this allocates nothing in Rust; each view
/// is one small block on the Lua heap, freed by the collector's sweep.
///
/// The memory stays registered with the state until the state is closed, even if the
/// `LentBuffer` is dropped earlier; it keeps the capacity of the largest fill.
#[derive(Debug)]
pub struct LentBuffer {
    memory: Data,
    /// The memory's allocated bytes after the last fill (kept here so reading it takes no lock).
    capacity: AtomicUsize,
    slot: usize,
    /// Whether the views' metatable is known to exist in the state.
    view_type_ready: bool,
}

impl LentBuffer {
    /// A new, empty buffer whose views will live in `lua`. Use it with that state only.
    ///
    /// # Panics
    ///
    /// If `lua`'s app data is borrowed, i.e. when called from inside a Lua callback that holds an
    /// app data reference.
    pub fn new(lua: &Lua) -> LentBuffer {
        let memory = Data::with_size(0);
        let registered = lua.app_data_mut::<LentMemories>().map(|mut lent| {
            lent.0.push(memory.clone());
            lent.0.len() - 1
        });
        let slot = match registered {
            Some(slot) => slot,
            None => {
                lua.set_app_data(LentMemories(vec![memory.clone()]));
                0
            }
        };
        LentBuffer { memory, capacity: AtomicUsize::new(0), slot, view_type_ready: false }
    }

    /// Invalidates every view of the previous fill and fills the buffer with a copy of `bytes`,
    /// reusing its allocation; returns a view of all of it (no layout).
    pub fn refill(&self, bytes: &[u8]) -> Data {
        self.refill_parts(&[bytes])
    }

    /// [`LentBuffer::refill`] with the concatenation of `parts`.
    pub fn refill_parts(&self, parts: &[&[u8]]) -> Data {
        let (data, capacity) = self.memory.refill_parts(parts);
        self.capacity.store(capacity, Relaxed);
        data
    }

    /// Invalidates every view of the current fill, Lua objects and Rust clones alike; keeps the
    /// allocation for the next [`LentBuffer::refill`].
    pub fn invalidate(&self) {
        self.memory.retire();
    }

    /// Bytes the buffer holds allocated (the largest fill's, until [`LentBuffer::free`]).
    pub fn capacity(&self) -> usize {
        self.capacity.load(Relaxed)
    }

    /// Invalidates every view, as [`LentBuffer::invalidate`], and frees the allocation (the next
    /// fill makes a new one).
    pub fn free(&self) {
        self.memory.invalidate();
        self.capacity.store(0, Relaxed);
    }

    /// Borrowed views of `first` and, if given, `second` (views of this buffer, as for
    /// [`LentBuffer::lend`]), to be made inside a Lua call: calling the function [`view_caller`]
    /// returns with `(f, extra..., views)` calls `f(extra..., first_view [, second_view])`. This
    /// is the cheap way to hand views to a Lua function: no protected call and no mlua reference
    /// per view; a memory error making them is an error of that call.
    pub fn views(&mut self, lua: &Lua, first: &Data, second: Option<&Data>) -> LuaResult<LentViews> {
        let (generation, _, _) = first.parts();
        // Both of this buffer, and of the same fill: the views share one generation.
        let fits = |d: &Data| d.shares_memory_with(&self.memory) && d.parts().0 == generation;
        if !fits(first) || !second.is_none_or(fits) {
            return Err(LuaError::runtime("LentBuffer::views: not views of this buffer's fill"));
        }
        self.ready(lua)?;
        // Checked as cells: then every number fits a u32, hence an i64.
        let range = |d: &Data| {
            let (_, offset, len) = d.parts();
            cell(self.slot, generation, offset, len).map(|_| (offset as i64, len as i64))
        };
        let (offset1, len1) = range(first)?;
        let (n, (offset2, len2)) = match second {
            Some(second) => (2, range(second)?),
            None => (1, (0, 0)),
        };
        // The generation travels as a Lua integer, bit for bit.
        Ok((n, self.slot as i64, generation as i64, offset1, len1, offset2, len2))
    }

    /// Makes sure the state has the views' metatable.
    fn ready(&mut self, lua: &Lua) -> LuaResult<()> {
        if !self.view_type_ready {
            register_view_type(lua)?;
            self.view_type_ready = true;
        }
        Ok(())
    }

    /// A borrowed view of `data`, which must be a view of this buffer (from [`LentBuffer::refill`]
    /// or a segment of it), as a Lua object. Fails at the state's memory limit ("not enough
    /// memory"); the first call also makes the views' metatable, if the state has none yet.
    pub fn lend(&mut self, lua: &Lua, data: &Data) -> LuaResult<AnyUserData> {
        if !data.shares_memory_with(&self.memory) {
            return Err(LuaError::runtime("LentBuffer::lend: not a view of this buffer"));
        }
        self.ready(lua)?;
        let (generation, offset, len) = data.parts();
        view::create(lua, cell(self.slot, generation, offset, len)?)
    }
}

/// What [`LentBuffer::views`] gives, to pass last to the function of [`view_caller`]: the
/// number of views, the memory's slot and generation, and two (offset, length) pairs.
pub type LentViews = (i64, i64, i64, i64, i64, i64, i64);

/// The Lua function `caller(f, extra..., views)` that calls `f(extra..., views...)` with the
/// borrowed views [`LentBuffer::views`] describes, made inside the call. A C function: it adds
/// no VM instructions, but shows as a `[C]` frame in tracebacks below `f`. Only call it with
/// views from [`LentBuffer::views`] for this state.
pub fn view_caller(lua: &Lua) -> LuaResult<Function> {
    register_view_type(lua)?;
    view::caller(lua)
}

/// Makes the views' metatable of `lua`, unless it has one. Its functions resolve the view and call
/// the same functions as plain objects' methods.
fn register_view_type(lua: &Lua) -> LuaResult<()> {
    if view::has_metatable(lua)? {
        return Ok(());
    }
    let (segment_fn, layout_fn) = method_functions(lua)?;
    let metatable = lua.create_table_with_capacity(0, 6)?;
    let index_fn = raising::function(lua, move |lua, (this, key): (MaybeView, Value)| {
        // Methods win, and are found even on an invalidated view (calling them raises).
        if let Some(method) = method(&key, &segment_fn, &layout_fn) {
            return Ok(method);
        }
        index(lua, &this_view(lua, this)?, &key)
    })?;
    let memories = lent_memories(lua);
    metatable.raw_set("__index", view::indexer(lua, &metatable, &index_fn, memories)?)?;
    let new_index_fn = raising::function(lua, |lua, (this, key, value): (MaybeView, Value, Value)| {
        new_index(lua, &this_view(lua, this)?, &key, &value)
    })?;
    metatable.raw_set("__newindex", new_index_fn)?;
    let len_fn = raising::function(lua, |lua, this: MaybeView| {
        this_view(lua, this)?.with_bytes(<[u8]>::len).map_err(lua_err)
    })?;
    metatable.raw_set("__len", view::measurer(lua, &metatable, &len_fn, lent_memories(lua))?)?;
    let tostring_fn = raising::function(lua, |lua, this: MaybeView| to_string(lua, &this_view(lua, this)?))?;
    metatable.raw_set("__tostring", tostring_fn)?;
    metatable.raw_set(MetaMethod::Type.name(), "data")?;
    metatable.raw_set("__metatable", false)?;
    view::register_metatable(lua, &metatable)
}

/// The `segment` and `layout` methods, for objects of both kinds.
fn method_functions(lua: &Lua) -> LuaResult<(Function, Function)> {
    let segment_fn = raising::function(lua, |lua, (this, offset, len): (Value, Value, Value)| {
        any_segment(lua, &this, &offset, &len)
    })?;
    let layout_fn = raising::function(lua, |lua, (this, spec): (Value, Value)| any_layout(lua, this, &spec))?;
    Ok((segment_fn, layout_fn))
}

/// The method `key` names, if it names one.
fn method(key: &Value, segment_fn: &Function, layout_fn: &Function) -> Option<Value> {
    let Value::String(name) = key else { return None };
    match &*name.as_bytes() {
        b"segment" => Some(Value::Function(segment_fn.clone())),
        b"layout" => Some(Value::Function(layout_fn.clone())),
        _ => None,
    }
}

/// `tostring(d)`: the view's bytes as a Lua string, the copy charged.
fn to_string(lua: &Lua, this: &Data) -> LuaResult<LuaString> {
    meter::charge(lua, this.len())?;
    let bytes = this.to_vec().map_err(lua_err)?;
    lua.create_string(bytes)
}

/// The address of the state's [`LentMemories`] (made empty if the state has none yet), for the
/// views' fast `__index`. Stable: app data lives boxed until the state is closed, and only the
/// `Vec` inside changes.
fn lent_memories(lua: &Lua) -> *const LentMemories {
    if lua.app_data_ref::<LentMemories>().is_none() {
        lua.set_app_data(LentMemories(Vec::new()));
    }
    lua.app_data_ref::<LentMemories>().map_or(std::ptr::null(), |lent| std::ptr::from_ref(&*lent))
}

/// The `Data` of a view given to one of its metamethods.
fn this_view(lua: &Lua, view: MaybeView) -> LuaResult<Data> {
    view.0.and_then(|view| view_data(lua, view)).ok_or_else(|| LuaError::runtime("expected a data object"))
}

/// The `Data` of a plain object given to one of its metamethods.
fn this_plain(this: &Value) -> LuaResult<Data> {
    match this {
        Value::UserData(ud) => ud.borrow::<Data>().map(|d| Data::clone(&d)).ok(),
        _ => None,
    }
    .ok_or_else(|| LuaError::runtime("expected a data object"))
}

/// Plain objects' metamethods are fields made per Lua state with `raising::function`, so their
/// errors are plain strings like every other library function's.
impl UserData for Data {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_meta_field(MetaMethod::Type, "data");
        fields.add_meta_field_with(MetaMethod::Index.name(), |lua| {
            let (segment_fn, layout_fn) = method_functions(lua)?;
            raising::function(lua, move |lua, (this, key): (Value, Value)| {
                if let Some(method) = method(&key, &segment_fn, &layout_fn) {
                    return Ok(method);
                }
                index(lua, &this_plain(&this)?, &key)
            })
        });
        fields.add_meta_field_with(MetaMethod::NewIndex.name(), |lua| {
            raising::function(lua, |lua, (this, key, value): (Value, Value, Value)| {
                new_index(lua, &this_plain(&this)?, &key, &value)
            })
        });
        fields.add_meta_field_with(MetaMethod::Len.name(), |lua| {
            raising::function(lua, |_, this: Value| {
                this_plain(&this)?.with_bytes(<[u8]>::len).map_err(lua_err)
            })
        });
        fields.add_meta_field_with(MetaMethod::ToString.name(), |lua| {
            raising::function(lua, |lua, this: Value| to_string(lua, &this_plain(&this)?))
        });
    }
}

/// `d[key]` for keys that are not methods.
fn index(lua: &Lua, this: &Data, key: &Value) -> LuaResult<Value> {
    if let Value::String(name) = key {
        let name = name.as_bytes();
        let Some(field) = this.layout().and_then(|l| l.get(&name)).copied() else {
            this.with_bytes(|_| ()).map_err(lua_err)?;
            return Ok(Value::Nil);
        };
        if field.kind() == FieldKind::Bytes {
            meter::charge(lua, field.byte_range().len())?;
        }
        // Copy out under the lock; make Lua values after releasing it.
        enum Read {
            Int(u64),
            Str(Vec<u8>),
            Outside,
        }
        let read = this
            .with_bytes(|bytes| match layout::read_field(bytes, &field) {
                Some(FieldValue::Uint(v)) => Read::Int(v),
                Some(FieldValue::Bytes(b)) => Read::Str(b.to_vec()),
                None => Read::Outside,
            })
            .map_err(lua_err)?;
        return match read {
            // 64-bit values of 2^63 and above wrap to negative Lua integers (documented).
            Read::Int(v) => Ok(Value::Integer(v as i64)),
            Read::Str(bytes) => Ok(Value::String(lua.create_string(bytes)?)),
            Read::Outside => Ok(Value::Nil),
        };
    }
    let byte = match to_integer(key) {
        Some(i) if i >= 1 => usize::try_from(i - 1).ok().map_or(Ok(None), |offset| this.byte_at(offset)),
        _ => this.with_bytes(|_| None),
    }
    .map_err(lua_err)?;
    Ok(byte.map_or(Value::Nil, |b| Value::Integer(i64::from(b))))
}

/// `d[key] = value` for every key (methods included: they are refused here).
fn new_index(lua: &Lua, this: &Data, key: &Value, value: &Value) -> LuaResult<()> {
    if !this.is_valid() {
        return Err(lua_err(DataError::Invalidated));
    }
    if let Value::String(name) = key {
        if let Value::String(s) = value {
            // At most the string's bytes are copied in (an integer field: nothing to speak of).
            meter::charge(lua, s.as_bytes().len())?;
        }
        return set_field(this, &name.as_bytes(), value).map_err(lua_err);
    }
    let Some(index) = to_integer(key) else {
        return Err(lua_err(DataError::BadKey(type_name(key))));
    };
    let offset = index
        .checked_sub(1)
        .and_then(|o| usize::try_from(o).ok())
        .filter(|&o| o < this.len())
        .ok_or(DataError::IndexOutOfRange { index, len: this.len() })
        .map_err(lua_err)?;
    let byte = to_integer(value)
        .and_then(|v| u8::try_from(v).ok())
        .ok_or_else(|| DataError::BadByte(describe(value)))
        .map_err(lua_err)?;
    this.write_at(offset, &[byte]).map_err(lua_err)
}

fn set_field(this: &Data, name: &[u8], value: &Value) -> Result<(), DataError> {
    let field_name = || name_of(name);
    if METHODS.iter().any(|m| m.as_bytes() == name) {
        return Err(DataError::MethodAssign(field_name()));
    }
    let field = this
        .layout()
        .and_then(|l| l.get(name))
        .copied()
        .ok_or_else(|| DataError::UnknownField(field_name()))?;
    let written = match (field.kind(), value) {
        (FieldKind::Uint(endian), _) => {
            let v = to_integer(value).ok_or_else(|| DataError::BadFieldValue {
                field: field_name(),
                expected: "an integer".to_owned(),
                got: describe(value),
            })?;
            // Truncation to the width (two's complement for negatives) happens in write_uint.
            this.with_bytes_mut(|bytes| {
                layout::write_uint(bytes, field.bit_offset(), field.bit_len(), endian, v as u64)
            })?
        }
        (FieldKind::Bytes, Value::String(s)) => {
            let s = s.as_bytes();
            let range = field.byte_range();
            if s.len() != range.len() {
                return Err(DataError::BadFieldValue {
                    field: field_name(),
                    expected: format!("a string of {} bytes", range.len()),
                    got: format!("a string of {} bytes", s.len()),
                });
            }
            this.with_bytes_mut(|bytes| bytes.get_mut(range).map(|t| t.copy_from_slice(&s)))?
        }
        (FieldKind::Bytes, other) => {
            return Err(DataError::BadFieldValue {
                field: field_name(),
                expected: "a string".to_owned(),
                got: describe(other),
            })
        }
    };
    written.ok_or_else(|| DataError::FieldOutOfRange { field: field_name(), len: this.len() })
}

/// `d:segment([offset [, length]])`: nil when the range is outside the view.
fn segment(this: &Data, offset: &Value, len: &Value) -> LuaResult<Option<Data>> {
    if !this.is_valid() {
        return Err(lua_err(DataError::Invalidated));
    }
    let integer_arg = |v: &Value, pos| match v {
        Value::Nil => Ok(None),
        v => to_integer(v)
            .map(Some)
            .ok_or_else(|| bad_argument("segment", pos, format!("integer expected, got {}", describe(v)))),
    };
    let offset = integer_arg(offset, 2)?.unwrap_or(0);
    let len = integer_arg(len, 3)?;
    let Ok(offset) = usize::try_from(offset) else {
        return Ok(None);
    };
    let len = match len.map(usize::try_from) {
        None => None,
        Some(Ok(len)) => Some(len),
        Some(Err(_)) => return Ok(None),
    };
    match this.segment(offset, len) {
        Ok(seg) => Ok(Some(seg)),
        Err(DataError::OutOfRange { .. }) => Ok(None),
        Err(err) => Err(lua_err(err)),
    }
}

/// `d:segment(...)` for any data object `this` (the views' method): a segment of the same kind.
fn any_segment(lua: &Lua, this: &Value, offset: &Value, len: &Value) -> LuaResult<Value> {
    let object = match this {
        Value::UserData(ud) => data_object(lua, ud)?,
        _ => None,
    };
    let Some((data, kind)) = object else {
        return Err(bad_argument("segment", 1, format!("data expected, got {}", type_name(this))));
    };
    match segment(&data, offset, len)? {
        Some(seg) => make_object(lua, kind, seg),
        None => Ok(Value::Nil),
    }
}

/// `d:layout(spec)` on a plain object: applies a layout table or a `data.layout` object to it.
fn apply_layout(lua: &Lua, ud: &AnyUserData, spec: &Value) -> LuaResult<()> {
    if !ud.is::<Data>() {
        return Err(bad_argument("layout", 1, "data expected".to_owned()));
    }
    if !ud.borrow::<Data>()?.is_valid() {
        return Err(lua_err(DataError::Invalidated));
    }
    let layout = layout_arg(lua, spec)?;
    ud.borrow_mut::<Data>()?.set_layout(Some(layout));
    Ok(())
}

/// The layout a `d:layout(spec)` argument gives.
fn layout_arg(lua: &Lua, spec: &Value) -> LuaResult<Arc<Layout>> {
    match spec {
        Value::Table(t) => Ok(Arc::new(parse_layout(lua, t)?)),
        Value::UserData(l) if l.is::<LayoutObject>() => Ok(Arc::clone(&l.borrow::<LayoutObject>()?.0)),
        other => Err(bad_argument("layout", 2, format!("table expected, got {}", type_name(other)))),
    }
}

/// `d:layout(spec)` for any data object `this` (the views' method); returns `this`. A view keeps
/// its layout as a layout object in its user value: the `data.layout` object given, or a new one.
fn any_layout(lua: &Lua, this: Value, spec: &Value) -> LuaResult<Value> {
    let Value::UserData(ud) = &this else {
        return Err(bad_argument("layout", 1, "data expected".to_owned()));
    };
    match data_object(lua, ud)? {
        Some((_, Kind::Plain)) => apply_layout(lua, ud, spec)?,
        Some((data, Kind::View(_))) => {
            if !data.is_valid() {
                return Err(lua_err(DataError::Invalidated));
            }
            let object = match spec {
                Value::UserData(l) if l.is::<LayoutObject>() => l.clone(),
                other => lua.create_userdata(LayoutObject(layout_arg(lua, other)?))?,
            };
            if !view::set_layout(lua, ud, &object)? {
                return Err(bad_argument("layout", 1, "data expected".to_owned()));
            }
        }
        None => return Err(bad_argument("layout", 1, "data expected".to_owned())),
    }
    Ok(this)
}

/// A layout table `{name = {offset, length [, endian | "string"]}, ...}`; entries may also be
/// written `{offset = o, length = l, endian = e}` (LuaData's second form).
fn parse_layout(lua: &Lua, table: &Table) -> LuaResult<Layout> {
    let mut layout = Layout::new();
    let mut uncharged = 0;
    for pair in table.pairs::<Value, Value>() {
        let (key, entry) = pair?;
        // One unit per entry, charged in batches: a charge looks the meter up.
        uncharged += 1;
        if uncharged == LAYOUT_CHARGE_BATCH {
            meter::charge(lua, uncharged)?;
            uncharged = 0;
        }
        let Value::String(name) = &key else {
            return Err(lua_err(DataError::BadLayout { field: describe(&key), cause: FieldError::BadName }));
        };
        let name = name.as_bytes().to_vec();
        let bad = |cause| lua_err(DataError::BadLayout { field: name_of(&name), cause });
        if METHODS.iter().any(|m| m.as_bytes() == name.as_slice()) {
            return Err(bad(FieldError::Reserved));
        }
        let field = parse_field(&entry)?.map_err(bad)?;
        layout.insert(name, field);
    }
    meter::charge(lua, uncharged)?;
    Ok(layout)
}

fn parse_field(entry: &Value) -> LuaResult<Result<Field, FieldError>> {
    let Value::Table(t) = entry else {
        return Ok(Err(FieldError::NotATable(type_name(entry))));
    };
    let get = |pos: i64, name: &str| -> LuaResult<Value> {
        match t.raw_get::<Value>(pos)? {
            Value::Nil => t.raw_get::<Value>(name),
            v => Ok(v),
        }
    };
    let offset = get(1, "offset")?;
    let length = get(2, "length")?;
    let mut kind = get(3, "endian")?;
    if kind.is_nil() {
        kind = t.raw_get::<Value>("type")?;
    }
    let Some(offset) = to_integer(&offset).and_then(|o| usize::try_from(o).ok()) else {
        return Ok(Err(FieldError::BadOffset));
    };
    let Some(length) = to_integer(&length).and_then(|l| usize::try_from(l).ok()) else {
        return Ok(Err(FieldError::BadLength));
    };
    let kind = match &kind {
        Value::Nil => FieldKind::Uint(Endian::Big),
        Value::String(s) => match &*s.as_bytes() {
            b"big" | b"net" => FieldKind::Uint(Endian::Big),
            b"little" => FieldKind::Uint(Endian::Little),
            b"host" => FieldKind::Uint(Endian::HOST),
            b"string" => FieldKind::Bytes,
            other => return Ok(Err(FieldError::BadKind(name_of(other)))),
        },
        other => return Ok(Err(FieldError::BadKind(type_name(other).to_owned()))),
    };
    Ok(Field::new(offset, length, kind))
}

/// A parsed layout, made by `data.layout{...}`, to apply to many objects without re-parsing.
struct LayoutObject(Arc<Layout>);

impl UserData for LayoutObject {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_meta_field(MetaMethod::Type, "data.layout");
    }
}

/// `data.new(size | string | table)`. The bytes are reserved with the state's meter (refused:
/// "not enough memory") before the work of filling them is charged.
fn new(lua: &Lua, arg: Value) -> LuaResult<Data> {
    let check_len = |size: usize| {
        if size > MAX_NEW_LEN {
            Err(lua_err(DataError::TooLarge { size, limit: MAX_NEW_LEN }))
        } else {
            Ok(size)
        }
    };
    let prepare = |size: usize| -> LuaResult<Option<Reservation>> {
        let reservation = meter::reserve(lua, size).map_err(LuaError::runtime)?;
        meter::charge(lua, size)?;
        Ok(reservation)
    };
    match &arg {
        Value::String(s) => {
            let bytes = s.as_bytes();
            let reservation = prepare(check_len(bytes.len())?)?;
            Ok(Data::from_vec_reserved(bytes.to_vec(), reservation))
        }
        Value::Table(t) => {
            let len = check_len(t.raw_len())?;
            let reservation = prepare(len)?;
            let mut bytes = Vec::with_capacity(len);
            for i in 1..=len {
                let v: Value = t.raw_get(i)?;
                let byte = to_integer(&v).and_then(|b| u8::try_from(b).ok()).ok_or_else(|| {
                    bad_argument(
                        "new",
                        1,
                        format!("byte #{i} must be an integer from 0 to 255, got {}", describe(&v)),
                    )
                })?;
                bytes.push(byte);
            }
            Ok(Data::from_vec_reserved(bytes, reservation))
        }
        Value::Integer(_) | Value::Number(_) => {
            let size = to_integer(&arg).ok_or_else(|| {
                bad_argument("new", 1, format!("size must be an integer, got {}", describe(&arg)))
            })?;
            let size = usize::try_from(size)
                .map_err(|_| bad_argument("new", 1, format!("size must not be negative, got {size}")))?;
            let reservation = prepare(check_len(size)?)?;
            let mut bytes = Vec::new();
            bytes.try_reserve_exact(size).map_err(|_| lua_err(DataError::NoMemory { size }))?;
            bytes.resize(size, 0);
            Ok(Data::from_vec_reserved(bytes, reservation))
        }
        other => {
            Err(bad_argument("new", 1, format!("number, string or table expected, got {}", type_name(other))))
        }
    }
}

/// The `data` module table: `new`, `layout`, `isdata`.
pub fn open(lua: &Lua) -> LuaResult<Table> {
    let module = lua.create_table()?;
    module.set("new", raising::function(lua, new)?)?;
    module.set(
        "layout",
        raising::function(lua, |lua, spec: Value| match &spec {
            Value::Table(t) => Ok(LayoutObject(Arc::new(parse_layout(lua, t)?))),
            other => Err(bad_argument("layout", 1, format!("table expected, got {}", type_name(other)))),
        })?,
    )?;
    module.set(
        "isdata",
        raising::function(lua, |lua, x: Value| match &x {
            Value::UserData(ud) => Ok(ud.is::<Data>() || view::is_view(lua, ud)?),
            _ => Ok(false),
        })?,
    )?;
    Ok(module)
}
