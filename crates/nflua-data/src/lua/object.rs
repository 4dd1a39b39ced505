//! `UserData for Data` and what both kinds of objects share: indexing, assignment, segments,
//! the methods, `tostring`.

use super::*;

/// The `segment` and `layout` methods, for objects of both kinds.
pub(super) fn method_functions(lua: &Lua) -> LuaResult<(Function, Function)> {
    let segment_fn = raising::function(lua, |lua, (this, offset, len): (Value, Value, Value)| {
        any_segment(lua, &this, &offset, &len)
    })?;
    let layout_fn = raising::function(lua, |lua, (this, spec): (Value, Value)| any_layout(lua, this, &spec))?;
    Ok((segment_fn, layout_fn))
}

/// The method `key` names, if it names one.
pub(super) fn method(key: &Value, segment_fn: &Function, layout_fn: &Function) -> Option<Value> {
    let Value::String(name) = key else { return None };
    match &*name.as_bytes() {
        b"segment" => Some(Value::Function(segment_fn.clone())),
        b"layout" => Some(Value::Function(layout_fn.clone())),
        _ => None,
    }
}

/// `tostring(d)`: the view's bytes as a Lua string, the copy charged.
pub(super) fn to_string(lua: &Lua, this: &Data) -> LuaResult<LuaString> {
    meter::charge(lua, this.len())?;
    let bytes = this.to_vec().map_err(lua_err)?;
    lua.create_string(bytes)
}

/// The `Data` of a view given to one of its metamethods.
pub(super) fn this_view(lua: &Lua, view: MaybeView) -> LuaResult<Data> {
    match view {
        MaybeView::View(view) => view_data(lua, view),
        MaybeView::Foreign(_) | MaybeView::Other => None,
    }
    .ok_or_else(|| LuaError::runtime("expected a data object"))
}

/// The `Data` of a plain object given to one of its metamethods.
pub(super) fn this_plain(this: &Value) -> LuaResult<Data> {
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
pub(super) fn index(lua: &Lua, this: &Data, key: &Value) -> LuaResult<Value> {
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
pub(super) fn new_index(lua: &Lua, this: &Data, key: &Value, value: &Value) -> LuaResult<()> {
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

pub(super) fn set_field(this: &Data, name: &[u8], value: &Value) -> Result<(), DataError> {
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
pub(super) fn segment(this: &Data, offset: &Value, len: &Value) -> LuaResult<Option<Data>> {
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
pub(super) fn any_segment(lua: &Lua, this: &Value, offset: &Value, len: &Value) -> LuaResult<Value> {
    let Some((data, kind)) = data_object(lua, this)? else {
        return Err(bad_argument("segment", 1, format!("data expected, got {}", type_name(this))));
    };
    match segment(&data, offset, len)? {
        Some(seg) => make_object(lua, kind, seg),
        None => Ok(Value::Nil),
    }
}
