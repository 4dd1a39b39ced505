//! The `data` module table and `data.new`.

use super::*;

/// `data.new(size | string | table)`. The bytes are reserved with the state's meter (refused:
/// "not enough memory") before the work of filling them is charged.
pub(super) fn new(lua: &Lua, arg: Value) -> LuaResult<Data> {
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
            Value::UserData(ud) if ud.is::<Data>() => Ok(true),
            other => view::is_view(lua, other),
        })?,
    )?;
    Ok(module)
}
