//! Layouts from Lua tables (`data.layout{...}`, `d:layout{...}`) and the layout object.

use super::*;

/// `d:layout(spec)` on a plain object: applies a layout table or a `data.layout` object to it.
pub(super) fn apply_layout(lua: &Lua, ud: &AnyUserData, spec: &Value) -> LuaResult<()> {
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
pub(super) fn layout_arg(lua: &Lua, spec: &Value) -> LuaResult<Arc<Layout>> {
    match spec {
        Value::Table(t) => Ok(Arc::new(parse_layout(lua, t)?)),
        Value::UserData(l) if l.is::<LayoutObject>() => Ok(Arc::clone(&l.borrow::<LayoutObject>()?.0)),
        other => Err(bad_argument("layout", 2, format!("table expected, got {}", type_name(other)))),
    }
}

/// `d:layout(spec)` for any data object `this` (the views' method); returns `this`. A view keeps
/// its layout as a layout object in its user value: the `data.layout` object given, or a new one.
pub(super) fn any_layout(lua: &Lua, this: Value, spec: &Value) -> LuaResult<Value> {
    match (data_object(lua, &this)?, &this) {
        (Some((_, Kind::Plain)), Value::UserData(ud)) => apply_layout(lua, ud, spec)?,
        (Some((data, Kind::View(slot))), view) => {
            if !data.is_valid() {
                return Err(lua_err(DataError::Invalidated));
            }
            let set = match view {
                Value::UserData(ud) => {
                    let object = match spec {
                        Value::UserData(l) if l.is::<LayoutObject>() => l.clone(),
                        other => lua.create_userdata(LayoutObject(layout_arg(lua, other)?))?,
                    };
                    view::set_layout(lua, ud, &object)?
                }
                // A token: the layout goes in its record, for this call.
                Value::LightUserData(token) => {
                    let layout = layout_arg(lua, spec)?;
                    let (generation, _, _) = data.parts();
                    let view = token::decode(token.0 as usize).map(|(_, view, _)| view);
                    let lent = lua.app_data_ref::<LentMemories>();
                    let records = lent.as_ref().and_then(|lent| lent.records(slot));
                    records
                        .zip(view)
                        .is_some_and(|(records, view)| records.set_layout(view, generation, layout))
                }
                _ => false,
            };
            if !set {
                return Err(bad_argument("layout", 1, "data expected".to_owned()));
            }
        }
        _ => return Err(bad_argument("layout", 1, "data expected".to_owned())),
    }
    Ok(this)
}

/// A layout table `{name = {offset, length [, endian | "string"]}, ...}`; entries may also be
/// written `{offset = o, length = l, endian = e}` (LuaData's second form).
pub(super) fn parse_layout(lua: &Lua, table: &Table) -> LuaResult<Layout> {
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

pub(super) fn parse_field(entry: &Value) -> LuaResult<Result<Field, FieldError>> {
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
pub(super) struct LayoutObject(pub(super) Arc<Layout>);

impl UserData for LayoutObject {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_meta_field(MetaMethod::Type, "data.layout");
    }
}
