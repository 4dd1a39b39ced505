//! `json.encode(value)` → string, `json.decode(string)` → value (or `nil, message`), `json.null`.
//!
//! Mapping:
//! - nil and `json.null` ↔ `null`; booleans, integers, floats, strings (UTF-8 only) as themselves;
//! - a table whose keys are exactly 1..n ↔ array; a table whose keys are all strings ↔ object
//!   (members written in byte order of their names, so output is stable); an empty table is
//!   written as `{}`;
//! - `null` decodes to `json.null` (a light userdata, as lua-cjson does), so arrays keep their
//!   length and `{"a": null}` keeps its key. In a state whose hooks have run, light userdata
//!   carry the hook views' metatable (`nflua_data`'s `token.rs`); `json.null` still behaves as
//!   Lua's bare light userdata does (`tostring` gives "userdata: (nil)", indexing raises
//!   "attempt to index a userdata value"), except that `getmetatable` answers false.
//!
//! `encode` raises on what JSON cannot hold (functions, userdata, cycles, mixed or sparse keys,
//! NaN, invalid UTF-8): that is a bug in the script. `decode` returns `nil, message` on bad input,
//! which usually comes from outside and is an expected outcome. Both stop at a nesting depth of
//! [`MAX_DEPTH`], so deep input cannot exhaust the native stack.

use std::ffi::c_void;
use std::fmt::Write as _;

use mlua::{LightUserData, Lua, LuaString, Table, Value};

use super::Lib;
use crate::limits::charge;

/// Deepest nesting encoded or decoded (serde_json's own recursion limit).
pub const MAX_DEPTH: usize = 128;

pub(crate) fn open(lib: &Lib) -> mlua::Result<Table> {
    let module = lib.lua.create_table_with_capacity(0, 3)?;
    let encode = lib.function(|lua, value: Value| {
        let mut encoder = Encoder { lua, out: String::new(), path: Vec::new() };
        encoder.value(&value, 0)?;
        lua.create_string(encoder.out)
    })?;
    let decode = lib.function(|lua, text: LuaString| {
        // The bytes parsed; no value decoded is made of less than one byte of text.
        charge(lua, text.as_bytes().len() as u64)?;
        match serde_json::from_slice::<serde_json::Value>(&text.as_bytes()) {
            Ok(parsed) => Ok((to_lua(lua, &parsed)?, Value::Nil)),
            Err(e) => Ok((Value::Nil, Value::String(lua.create_string(format!("json.decode: {e}"))?))),
        }
    })?;
    module.raw_set("null", null())?;
    module.raw_set("encode", encode)?;
    module.raw_set("decode", decode)?;
    Ok(module)
}

fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn fail(message: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(format!("json.encode: {message}"))
}

struct Encoder<'a> {
    /// Where the work is charged: one instruction per table entry and per byte of every string
    /// written, plus n·⌈log2 n⌉ for sorting an object's member names.
    lua: &'a Lua,
    out: String,
    /// Tables being encoded, outermost first: meeting one again is a cycle.
    path: Vec<*const c_void>,
}

impl Encoder<'_> {
    fn value(&mut self, value: &Value, depth: usize) -> mlua::Result<()> {
        match value {
            Value::Nil => self.out.push_str("null"),
            Value::LightUserData(ud) if ud.0.is_null() => self.out.push_str("null"),
            Value::Boolean(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Integer(i) => {
                let _ = write!(self.out, "{i}");
            }
            Value::Number(n) => match serde_json::Number::from_f64(*n) {
                Some(number) => {
                    let _ = write!(self.out, "{number}");
                }
                None => return Err(fail(format_args!("cannot encode {n} (JSON has no NaN or infinity)"))),
            },
            Value::String(s) => self.string(&s.as_bytes())?,
            Value::Table(t) => self.table(t, depth)?,
            other => return Err(fail(format_args!("cannot encode a {} value", super::type_name(other)))),
        }
        Ok(())
    }

    fn string(&mut self, bytes: &[u8]) -> mlua::Result<()> {
        charge(self.lua, bytes.len() as u64)?;
        let text = std::str::from_utf8(bytes).map_err(|_| fail("string is not valid UTF-8"))?;
        let quoted = serde_json::to_string(text).map_err(fail)?;
        self.out.push_str(&quoted);
        Ok(())
    }

    fn table(&mut self, table: &Table, depth: usize) -> mlua::Result<()> {
        if depth >= MAX_DEPTH {
            return Err(fail(format_args!("nesting deeper than {MAX_DEPTH}")));
        }
        let id = table.to_pointer();
        if self.path.contains(&id) {
            return Err(fail("table cycle (a table contains itself)"));
        }
        let mut entries: Vec<(Value, Value)> = Vec::new();
        table.for_each(|k: Value, v: Value| {
            entries.push((k, v));
            Ok(())
        })?;
        let n = entries.len() as u64;
        charge(self.lua, n.saturating_add(n.saturating_mul(u64::from(u64::BITS - n.leading_zeros()))))?;
        self.path.push(id);
        let result = match classify(&entries)? {
            Shape::Array => self.array(table, entries.len(), depth),
            Shape::Object => self.object(entries, depth),
        };
        self.path.pop();
        result
    }

    fn array(&mut self, table: &Table, len: usize, depth: usize) -> mlua::Result<()> {
        self.out.push('[');
        for i in 1..=len {
            if i > 1 {
                self.out.push(',');
            }
            let item: Value = table.raw_get(i)?;
            self.value(&item, depth + 1)?;
        }
        self.out.push(']');
        Ok(())
    }

    fn object(&mut self, entries: Vec<(Value, Value)>, depth: usize) -> mlua::Result<()> {
        let mut members: Vec<(Vec<u8>, Value)> = entries
            .into_iter()
            .filter_map(|(k, v)| match k {
                Value::String(k) => Some((k.as_bytes().to_vec(), v)),
                _ => None,
            })
            .collect();
        // Names in one table are unique, so an unstable sort is deterministic.
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.out.push('{');
        for (i, (name, value)) in members.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.string(name)?;
            self.out.push(':');
            self.value(value, depth + 1)?;
        }
        self.out.push('}');
        Ok(())
    }
}

enum Shape {
    Array,
    Object,
}

fn classify(entries: &[(Value, Value)]) -> mlua::Result<Shape> {
    if entries.is_empty() {
        return Ok(Shape::Object);
    }
    let (mut integers, mut strings) = (0usize, 0usize);
    let mut max_index = 0i64;
    for (key, _) in entries {
        match key {
            Value::Integer(i) => {
                integers += 1;
                max_index = max_index.max(*i);
                if *i < 1 {
                    return Err(fail(format_args!("array index {i} is not in 1..n")));
                }
            }
            Value::String(_) => strings += 1,
            other => {
                return Err(fail(format_args!(
                    "cannot encode a table key of type {}",
                    super::type_name(other)
                )))
            }
        }
    }
    match (integers, strings) {
        (0, _) => Ok(Shape::Object),
        (n, 0) if usize::try_from(max_index).is_ok_and(|max| max == n) => Ok(Shape::Array),
        (_, 0) => Err(fail("sparse array (keys are not exactly 1..n)")),
        _ => Err(fail("table mixes array and object keys")),
    }
}

fn to_lua(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    Ok(match value {
        serde_json::Value::Null => null(),
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(items) => {
            // One per value made, besides the bytes parsed.
            charge(lua, items.len() as u64)?;
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                table.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            Value::Table(table)
        }
        serde_json::Value::Object(members) => {
            charge(lua, members.len() as u64)?;
            let table = lua.create_table_with_capacity(0, members.len())?;
            for (name, item) in members {
                table.raw_set(name.as_str(), to_lua(lua, item)?)?;
            }
            Value::Table(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::state::tests::{eval, eval_err};

    fn encode(expr: &str) -> String {
        eval(&format!("return require('json').encode({expr})"))
    }

    #[test]
    fn encodes_scalars_arrays_objects() {
        assert_eq!(encode("nil"), "null");
        assert_eq!(encode("require('json').null"), "null");
        assert_eq!(encode("true"), "true");
        assert_eq!(encode("42"), "42");
        assert_eq!(encode("1.5"), "1.5");
        assert_eq!(encode("'a\"b\\n'"), r#""a\"b\n""#);
        assert_eq!(encode("{1, 'two', {3}}"), r#"[1,"two",[3]]"#);
        assert_eq!(encode("{b = 1, a = {x = false}}"), r#"{"a":{"x":false},"b":1}"#);
        assert_eq!(encode("{}"), "{}");
    }

    #[test]
    fn refuses_what_json_cannot_hold() {
        let cases = [
            ("print", "cannot encode a function value"),
            ("{1, 2, x = 3}", "mixes array and object keys"),
            ("{[1] = 1, [3] = 3}", "sparse array"),
            ("{[true] = 1}", "table key of type boolean"),
            ("0/0", "NaN"),
            ("'\\xff'", "not valid UTF-8"),
            ("(function() local t = {} t.self = t return t end)()", "cycle"),
            ("(function() local t = {} for _ = 1, 200 do t = {t} end return t end)()", "deeper than 128"),
        ];
        for (expr, expected) in cases {
            let err = eval_err(&format!("require('json').encode({expr})"));
            assert!(err.starts_with("chunk:1: json.encode: "), "{expr}: {err}");
            assert!(err.contains(expected), "{expr}: {err}");
        }
    }

    #[test]
    fn decodes_and_round_trips() {
        let got = eval(
            r#"
            local json = require 'json'
            local v = json.decode('{"a": [1, 2.5, "x", null, true], "b": {"c": null}}')
            assert(v.a[1] == 1 and math.type(v.a[1]) == "integer")
            assert(v.a[2] == 2.5 and v.a[3] == "x" and v.a[4] == json.null and v.a[5] == true)
            assert(#v.a == 5 and v.b.c == json.null)
            local again = json.decode(json.encode(v))
            return tostring(json.encode(again) == json.encode(v))
            "#,
        );
        assert_eq!(got, "true");
    }

    #[test]
    fn bad_or_deep_input_gives_nil_and_message() {
        let got = eval("local v, err = require('json').decode('{\"a\":') return tostring(v) .. ' ' .. err");
        assert!(got.starts_with("nil json.decode: "), "{got}");
        let got = eval(
            "local v, err = require('json').decode(string.rep('[', 100000)) return tostring(v) .. ' ' .. err",
        );
        assert!(got.starts_with("nil json.decode: recursion limit"), "{got}");
    }
}
