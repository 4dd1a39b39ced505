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
//! Bytes are copied out before any Lua value is made, so no Lua code (e.g. a `__gc` finalizer run
//! by an allocation) ever runs while a buffer lock is held.

use std::sync::Arc;

use mlua::{
    AnyUserData, Error as LuaError, FromLua, Lua, MetaMethod, Result as LuaResult, Table, UserData,
    UserDataFields, UserDataMethods, Value,
};

use crate::buffer::Data;
use crate::error::{DataError, FieldError};
use crate::layout::{self, Endian, Field, FieldKind, FieldValue, Layout};

/// The largest buffer `data.new` creates from Lua, in bytes (64 MiB). Buffers live outside the Lua
/// allocator, so this bounds what a script can take without the state's memory limit noticing.
pub const MAX_NEW_LEN: usize = 64 << 20;

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
    /// The `Data` inside a Lua value (a clone sharing its memory, with its layout), or `None` if
    /// the value is not a data object.
    pub fn from_lua_value(value: &Value) -> Option<Data> {
        match value {
            Value::UserData(ud) => ud.borrow::<Data>().ok().map(|d| Data::clone(&d)),
            _ => None,
        }
    }
}

impl FromLua for Data {
    fn from_lua(value: Value, _: &Lua) -> LuaResult<Data> {
        Data::from_lua_value(&value).ok_or_else(|| LuaError::FromLuaConversionError {
            from: value.type_name(),
            to: "data".to_owned(),
            message: Some("expected a data object".to_owned()),
        })
    }
}

impl UserData for Data {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_meta_field(MetaMethod::Type, "data");
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("segment", |_, this, (offset, len): (Value, Value)| segment(this, &offset, &len));
        methods.add_function("layout", |_, (ud, spec): (AnyUserData, Value)| {
            apply_layout(&ud, &spec)?;
            Ok(ud)
        });
        methods.add_meta_method(MetaMethod::Index, |lua, this, key: Value| index(lua, this, &key));
        methods.add_meta_method(MetaMethod::NewIndex, |_, this, (key, value): (Value, Value)| {
            new_index(this, &key, &value)
        });
        methods.add_meta_method(MetaMethod::Len, |_, this, ()| this.with_bytes(<[u8]>::len).map_err(lua_err));
        methods.add_meta_method(MetaMethod::ToString, |lua, this, ()| {
            let bytes = this.to_vec().map_err(lua_err)?;
            lua.create_string(bytes)
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
fn new_index(this: &Data, key: &Value, value: &Value) -> LuaResult<()> {
    if !this.is_valid() {
        return Err(lua_err(DataError::Invalidated));
    }
    if let Value::String(name) = key {
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

/// `d:layout(spec)`: applies a layout table or a `data.layout` object to the view.
fn apply_layout(ud: &AnyUserData, spec: &Value) -> LuaResult<()> {
    if !ud.is::<Data>() {
        return Err(bad_argument("layout", 1, "data expected".to_owned()));
    }
    if !ud.borrow::<Data>()?.is_valid() {
        return Err(lua_err(DataError::Invalidated));
    }
    let layout = match spec {
        Value::Table(t) => Arc::new(parse_layout(t)?),
        Value::UserData(l) if l.is::<LayoutObject>() => Arc::clone(&l.borrow::<LayoutObject>()?.0),
        other => return Err(bad_argument("layout", 2, format!("table expected, got {}", type_name(other)))),
    };
    ud.borrow_mut::<Data>()?.set_layout(Some(layout));
    Ok(())
}

/// A layout table `{name = {offset, length [, endian | "string"]}, ...}`; entries may also be
/// written `{offset = o, length = l, endian = e}` (LuaData's second form).
fn parse_layout(table: &Table) -> LuaResult<Layout> {
    let mut layout = Layout::new();
    for pair in table.pairs::<Value, Value>() {
        let (key, entry) = pair?;
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

/// `data.new(size | string | table)`.
fn new(_: &Lua, arg: Value) -> LuaResult<Data> {
    let check_len = |size: usize| {
        if size > MAX_NEW_LEN {
            Err(lua_err(DataError::TooLarge { size, limit: MAX_NEW_LEN }))
        } else {
            Ok(size)
        }
    };
    match &arg {
        Value::String(s) => {
            let bytes = s.as_bytes();
            check_len(bytes.len())?;
            Ok(Data::from_bytes(&bytes))
        }
        Value::Table(t) => {
            let len = check_len(t.raw_len())?;
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
            Ok(Data::from_vec(bytes))
        }
        Value::Integer(_) | Value::Number(_) => {
            let size = to_integer(&arg).ok_or_else(|| {
                bad_argument("new", 1, format!("size must be an integer, got {}", describe(&arg)))
            })?;
            let size = usize::try_from(size)
                .map_err(|_| bad_argument("new", 1, format!("size must not be negative, got {size}")))?;
            Data::try_with_size(check_len(size)?).map_err(lua_err)
        }
        other => {
            Err(bad_argument("new", 1, format!("number, string or table expected, got {}", type_name(other))))
        }
    }
}

/// The `data` module table: `new`, `layout`, `isdata`.
pub fn open(lua: &Lua) -> LuaResult<Table> {
    let module = lua.create_table()?;
    module.set("new", lua.create_function(new)?)?;
    module.set(
        "layout",
        lua.create_function(|_, spec: Value| match &spec {
            Value::Table(t) => Ok(LayoutObject(Arc::new(parse_layout(t)?))),
            other => Err(bad_argument("layout", 1, format!("table expected, got {}", type_name(other)))),
        })?,
    )?;
    module.set(
        "isdata",
        lua.create_function(|_, x: Value| Ok(matches!(&x, Value::UserData(ud) if ud.is::<Data>())))?,
    )?;
    Ok(module)
}
