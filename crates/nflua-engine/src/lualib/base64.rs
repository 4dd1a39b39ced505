//! `base64.encode(s)` → string, `base64.decode(s)` → string, or `nil, message` when `s` is not
//! valid base64. Standard alphabet with padding (RFC 4648 §4).
//!
//! Decoding returns `nil, message` rather than raising because its input usually comes from
//! outside the script (a message, a packet): bad input is an expected outcome, not a bug.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mlua::{LuaString, Table, Value};

use super::Lib;
use crate::limits::charge;

pub(crate) fn open(lib: &Lib) -> mlua::Result<Table> {
    let module = lib.lua.create_table_with_capacity(0, 2)?;
    let encode = lib.function(|lua, s: LuaString| {
        // The bytes produced.
        charge(lua, (s.as_bytes().len() as u64).div_ceil(3) * 4)?;
        lua.create_string(STANDARD.encode(s.as_bytes()))
    })?;
    let decode = lib.function(|lua, s: LuaString| {
        // The bytes scanned.
        charge(lua, s.as_bytes().len() as u64)?;
        match STANDARD.decode(s.as_bytes()) {
            Ok(bytes) => Ok((Value::String(lua.create_string(bytes)?), Value::Nil)),
            Err(e) => Ok((Value::Nil, Value::String(lua.create_string(format!("base64.decode: {e}"))?))),
        }
    })?;
    module.raw_set("encode", encode)?;
    module.raw_set("decode", decode)?;
    Ok(module)
}

#[cfg(test)]
mod tests {
    use crate::state::tests::eval;

    #[test]
    fn round_trip_and_bad_input() {
        let got = eval(
            "local b = require 'base64' \
             assert(b.encode('') == '' and b.decode('') == '') \
             local bad, err = b.decode('Zm9v!') \
             return b.encode('foob') .. ' ' .. b.decode('Zm9vYmFy') .. ' ' .. tostring(bad) .. ' ' .. err",
        );
        assert!(got.starts_with("Zm9vYg== foobar nil base64.decode: "), "{got}");
    }
}
