//! What the standard library's C functions cost: each one whose work grows with its arguments
//! charges that work to the running entry's instruction budget before it does it (the cost model
//! is in the crate doc).
//!
//! # How
//!
//! [`install`] replaces each such function, in its library table, by a C closure ([`wrapper`])
//! holding the stock function and the [`Rule`] that prices a call. The wrapper computes the cost
//! from the arguments without raising or running Lua code (a wrong argument costs nothing; the
//! stock function then refuses it), charges it with [`limits::charge_raw`] and calls the stock
//! function.
//!
//! The stock function is called with `lua_pcall` (except where the arguments leave it nothing to
//! refuse: `string.byte`, `sub` and `char` with well-typed arguments, `table.insert(t, v)` on a
//! plain table; see [`Rule`]), because called from C it would word its own
//! errors differently: `luaL_argerror` finds no name ("bad argument #1 to '?'") and `luaL_error`
//! no position (a C caller has no line). A message handler ([`mark_own_error`]) notes when an
//! error was raised by the stock function itself, and the wrapper raises it again as the stock
//! function would have from the wrapper's place: argument errors through `luaL_argerror` (name,
//! `self` adjustment and position exactly as Lua computes them for the wrapper, which sits where
//! the stock function sat), other `luaL_error` messages with the caller's position prepended.
//! Runtime errors the VM raises inside C ("attempt to compare ...", "C stack overflow") carry no
//! position in stock Lua either and are left alone; errors from Lua code the stock function calls
//! (comparators, metamethods, `__tostring`) and memory errors pass through untouched.
//!
//! Known differences from stock Lua: an error raised by Lua code that a wrapped function calls
//! (a `table.sort` comparator, an `__index` metamethod met by `table.concat`) keeps its message,
//! but its traceback starts at the wrapped function, since the wrapper catches and re-raises it;
//! and each wrapped call uses two C stack levels instead of one (of the 200 Lua allows).
//! Table functions whose range defaults to `#t` read the length themselves; for a table with a
//! `__len` metamethod, `table.concat` and `table.unpack` pass the length on to the stock function
//! explicitly (so `__len` runs once, as in stock Lua), while `table.insert`, `table.remove` and
//! `table.sort` cannot, and run it twice.
//!
//! # Safety
//!
//! Every function here is a raw `lua_CFunction` or runs inside one; they hold no value with a
//! destructor across any call that may raise (charges, `luaL_*` checks, calls into Lua), so a
//! longjmp over them leaks nothing.

#![allow(unsafe_code)] // talks to C: see the Safety notes

use std::cell::Cell;
use std::os::raw::{c_char, c_int, c_void};

use mlua::{ffi, Lua};

use crate::limits::{charge_raw, charge_raw_at};
use crate::traceback::PRELUDE_NAME;

/// Prices one call from the arguments on the stack. Must not raise (except through
/// [`charge_raw`] or a length metamethod, see [`length`]) and must leave the stack as it found
/// it, unless it fills in defaults on purpose.
type Price = unsafe fn(*mut ffi::lua_State) -> u64;

/// Whether the stock function, given these arguments, cannot raise an error of its own (only a
/// memory error, or one from Lua code it runs, both of which pass through untouched anyway).
type CannotRaise = unsafe fn(*mut ffi::lua_State) -> bool;

/// How a wrapped function is charged: before the call, and optionally after it, from its
/// results (for work whose size is only known then and is bounded by memory already held).
/// With `plain`, arguments it accepts let the wrapper call the stock function without the
/// protected call and message handler: the hot string functions of packet filters save about
/// half of the wrapper's cost that way.
struct Rule {
    before: Price,
    after: Option<Price>,
    plain: Option<CannotRaise>,
}

const fn rule(before: Price) -> Rule {
    Rule { before, after: None, plain: None }
}

static REP: Rule = rule(rep);
static BYTE: Rule = Rule { plain: Some(string_and_integers), ..rule(byte) };
static SUB: Rule = Rule { plain: Some(string_and_position), ..rule(sub) };
static CHAR: Rule = Rule { plain: Some(bytes_only), ..rule(arg_count) };
static ARG_COUNT: Rule = rule(arg_count);
static FIRST_LENGTH: Rule = rule(first_length);
static FORMAT: Rule = rule(format);
static PACK: Rule = rule(pack);
static UNPACK_BYTES: Rule = rule(unpack_bytes);
static DUMP: Rule = Rule { before: free, after: Some(result_length), plain: None };
static UTF8_RANGE_FROM_I: Rule = rule(utf8_codepoint);
static UTF8_LEN: Rule = rule(utf8_len);
static UTF8_OFFSET: Rule = rule(utf8_offset);
static LOAD: Rule = rule(load);
static COLLECT: Rule = rule(collectgarbage);
static STRING_ARGS: Rule = rule(string_args);
static CONCAT: Rule = rule(concat);
static UNPACK: Rule = rule(unpack);
static MOVE: Rule = rule(table_move);
static INSERT: Rule = Rule { plain: Some(append_to_plain_table), ..rule(insert) };
static REMOVE: Rule = rule(remove);
static SORT: Rule = rule(sort);

/// The wrapped functions: library table (`None`: the globals), name, rule.
const WRAPPED: &[(Option<&str>, &str, &Rule)] = &[
    (Some("string"), "rep", &REP),
    (Some("string"), "byte", &BYTE),
    (Some("string"), "sub", &SUB),
    (Some("string"), "char", &CHAR),
    (Some("string"), "upper", &FIRST_LENGTH),
    (Some("string"), "lower", &FIRST_LENGTH),
    (Some("string"), "reverse", &FIRST_LENGTH),
    (Some("string"), "format", &FORMAT),
    (Some("string"), "pack", &PACK),
    (Some("string"), "unpack", &UNPACK_BYTES),
    (Some("string"), "packsize", &FIRST_LENGTH),
    (Some("string"), "dump", &DUMP),
    (Some("utf8"), "char", &ARG_COUNT),
    (Some("utf8"), "codepoint", &UTF8_RANGE_FROM_I),
    (Some("utf8"), "len", &UTF8_LEN),
    (Some("utf8"), "offset", &UTF8_OFFSET),
    (Some("utf8"), "codes", &FIRST_LENGTH),
    (Some("table"), "concat", &CONCAT),
    (Some("table"), "unpack", &UNPACK),
    (Some("table"), "pack", &ARG_COUNT),
    (Some("table"), "move", &MOVE),
    (Some("table"), "insert", &INSERT),
    (Some("table"), "remove", &REMOVE),
    (Some("table"), "sort", &SORT),
    (None, "select", &ARG_COUNT),
    (None, "tonumber", &FIRST_LENGTH),
    (None, "load", &LOAD),
    (None, "collectgarbage", &COLLECT),
    (None, "warn", &STRING_ARGS),
];

/// Replaces the functions of [`WRAPPED`] in their tables by charging wrappers. Call once, before
/// anything captures one of them (the sandbox's prelude captures `load` and `select`).
pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    // SAFETY: `exec_raw` runs this in protected mode on the main thread with room for a few
    // values; the closures hold static rules only.
    unsafe {
        lua.exec_raw::<()>((), |l| {
            for (library, name, rule) in WRAPPED {
                match library {
                    Some(library) => {
                        let library = std::ffi::CString::new(*library).unwrap_or_default();
                        ffi::lua_getglobal(l, library.as_ptr());
                    }
                    None => {
                        ffi::lua_pushglobaltable(l);
                    }
                }
                if ffi::lua_type(l, -1) != ffi::LUA_TTABLE {
                    ffi::lua_pop(l, 1);
                    continue;
                }
                let name = std::ffi::CString::new(*name).unwrap_or_default();
                if ffi::lua_getfield(l, -1, name.as_ptr()) != ffi::LUA_TFUNCTION {
                    ffi::lua_pop(l, 2);
                    continue;
                }
                ffi::lua_pushlightuserdata(l, *rule as *const Rule as *mut c_void);
                ffi::lua_pushcclosure(l, wrapper, 2);
                ffi::lua_setfield(l, -2, name.as_ptr());
                ffi::lua_pop(l, 1);
            }
        })
    }
}

thread_local! {
    /// Set by [`mark_own_error`] when the stock function called by the innermost wrapper raised
    /// an error itself; read and cleared by that wrapper as soon as its `lua_pcall` returns.
    static OWN_ERROR: Cell<bool> = const { Cell::new(false) };
}

/// Upvalue 1: the stock function; upvalue 2: its [`Rule`].
unsafe extern "C-unwind" fn wrapper(l: *mut ffi::lua_State) -> c_int {
    unsafe {
        let rule = &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(2)) as *const Rule);
        let cost = (rule.before)(l);
        if cost > 0 {
            charge_raw(l, cost);
        }
        let nargs = ffi::lua_gettop(l);
        if rule.after.is_none() && rule.plain.is_some_and(|cannot_raise| cannot_raise(l)) {
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
            ffi::lua_rotate(l, 1, 1);
            ffi::lua_callk(l, nargs, ffi::LUA_MULTRET, 0, None);
            return ffi::lua_gettop(l);
        }
        ffi::lua_pushcfunction(l, mark_own_error);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_rotate(l, 1, 2);
        let status = ffi::lua_pcall(l, nargs, ffi::LUA_MULTRET, 1);
        let own = OWN_ERROR.with(|own| own.replace(false));
        if status == ffi::LUA_OK {
            if let Some(after) = rule.after {
                let cost = after(l);
                if cost > 0 {
                    charge_raw(l, cost);
                }
            }
            return ffi::lua_gettop(l) - 1;
        }
        if status == ffi::LUA_ERRRUN && own && ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
            reword(l);
        }
        ffi::lua_error(l)
    }
}

/// Message handler of the wrapper's `lua_pcall`: notes whether the error was raised by the stock
/// function itself (level 1 is the function that raised, level 2 the wrapper that called it).
unsafe extern "C-unwind" fn mark_own_error(l: *mut ffi::lua_State) -> c_int {
    unsafe {
        let mut raiser: ffi::lua_Debug = std::mem::zeroed();
        let mut caller: ffi::lua_Debug = std::mem::zeroed();
        if ffi::lua_getstack(l, 1, &mut raiser) != 0 && ffi::lua_getstack(l, 2, &mut caller) != 0 {
            ffi::lua_getinfo(l, c"f".as_ptr(), &mut raiser);
            ffi::lua_getinfo(l, c"f".as_ptr(), &mut caller);
            // A C closure whose first upvalue is the function that raised: the wrapper.
            if ffi::lua_iscfunction(l, -1) != 0 && !ffi::lua_getupvalue(l, -1, 1).is_null() {
                if ffi::lua_rawequal(l, -1, -3) != 0 {
                    OWN_ERROR.with(|own| own.set(true));
                }
                ffi::lua_pop(l, 1);
            }
            ffi::lua_pop(l, 2);
        }
        1
    }
}

/// Raises the stock function's own error message (on top of the stack) as it would have read
/// had the stock function been called from the wrapper's caller.
unsafe fn reword(l: *mut ffi::lua_State) -> ! {
    unsafe {
        let mut len = 0;
        let text = ffi::lua_tolstring(l, -1, &mut len);
        let message = std::slice::from_raw_parts(text.cast::<u8>(), len);
        if let Some((arg, extra)) = argument_error(message) {
            // The explanation, NUL-terminated, lives on the stack while `luaL_argerror` formats it.
            ffi::lua_pushlstring(l, extra.as_ptr().cast::<c_char>(), extra.len());
            let extra = ffi::lua_tostring(l, -1);
            ffi::luaL_argerror(l, arg, extra);
        }
        if !raised_by_the_vm(message) {
            ffi::luaL_where(l, 1);
            ffi::lua_rotate(l, -2, 1);
            ffi::lua_concat(l, 2);
        }
        ffi::lua_error(l)
    }
}

/// "bad argument #K to 'NAME' (EXPLANATION)" → (K, EXPLANATION).
fn argument_error(message: &[u8]) -> Option<(c_int, &[u8])> {
    let rest = message.strip_prefix(b"bad argument #")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let arg: c_int = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b" to '")?;
    let open = rest.windows(3).position(|w| w == b"' (")?;
    let explanation = rest[open + 3..].strip_suffix(b")")?;
    Some((arg, explanation))
}

/// Messages `luaG_runerror` raises inside a C function, which carry no position in stock Lua.
fn raised_by_the_vm(message: &[u8]) -> bool {
    message.starts_with(b"attempt to ") || message == b"stack overflow" || message == b"C stack overflow"
}

// ---------------------------------------------------------------------------------------------
// Reading arguments without raising.

/// Length of argument `idx` if it is a string (numbers, which the stock functions convert, are
/// short).
unsafe fn string_length(l: *mut ffi::lua_State, idx: c_int) -> u64 {
    unsafe {
        if ffi::lua_type(l, idx) == ffi::LUA_TSTRING {
            ffi::lua_rawlen(l, idx) as u64
        } else {
            0
        }
    }
}

/// Argument `idx` as an integer the way `luaL_optinteger` reads it; `default` when absent or
/// nil, `None` when the stock function would refuse it.
unsafe fn integer(l: *mut ffi::lua_State, idx: c_int, default: i64) -> Option<i64> {
    unsafe {
        if ffi::lua_type(l, idx) <= ffi::LUA_TNIL {
            return Some(default);
        }
        let mut ok = 0;
        let n = ffi::lua_tointegerx(l, idx, &mut ok);
        (ok != 0).then_some(n)
    }
}

/// `#t` for argument `idx` as the table functions see it: the raw length, or what `__len`
/// answers (which runs it, and raises what it raises). `None` when it is neither a table nor has
/// a `__len`.
unsafe fn length(l: *mut ffi::lua_State, idx: c_int) -> Option<i64> {
    unsafe {
        if ffi::luaL_getmetafield(l, idx, c"__len".as_ptr()) != ffi::LUA_TNIL {
            ffi::lua_pop(l, 1);
            return Some(ffi::luaL_len(l, idx));
        }
        if ffi::lua_type(l, idx) == ffi::LUA_TTABLE {
            return Some(ffi::lua_rawlen(l, idx) as i64);
        }
        None
    }
}

/// Whether `#t` of argument `idx` runs a metamethod.
unsafe fn has_len_metamethod(l: *mut ffi::lua_State, idx: c_int) -> bool {
    unsafe {
        if ffi::luaL_getmetafield(l, idx, c"__len".as_ptr()) != ffi::LUA_TNIL {
            ffi::lua_pop(l, 1);
            return true;
        }
        false
    }
}

/// Number of elements in `first..=last` (0 when empty).
fn span(first: i64, last: i64) -> u64 {
    if first > last {
        0
    } else {
        (last as i128 - first as i128 + 1).min(u64::MAX as i128) as u64
    }
}

/// lstrlib's `posrelatI`: a start position in `1..`.
fn start_position(pos: i64, len: u64) -> i64 {
    let len = len.min(i64::MAX as u64) as i64;
    if pos > 0 {
        pos
    } else if pos == 0 || pos < -len {
        1
    } else {
        len + pos + 1
    }
}

/// lstrlib's `getendpos`: an end position in `0..=len`.
fn end_position(pos: i64, len: u64) -> i64 {
    let len = len.min(i64::MAX as u64) as i64;
    if pos > len {
        len
    } else if pos >= 0 {
        pos
    } else if pos < -len {
        0
    } else {
        len + pos + 1
    }
}

/// lutf8lib's `u_posrelat`.
fn utf8_position(pos: i64, len: u64) -> i64 {
    let len = len.min(i64::MAX as u64) as i64;
    if pos >= 0 {
        pos
    } else if pos.unsigned_abs() > len as u64 {
        0
    } else {
        len + pos + 1
    }
}

// ---------------------------------------------------------------------------------------------
// Prices.

unsafe fn free(_: *mut ffi::lua_State) -> u64 {
    0
}

/// One per argument: `string.char`, `utf8.char`, `table.pack`, `select` (whose arguments the call
/// copies).
unsafe fn arg_count(l: *mut ffi::lua_State) -> u64 {
    unsafe { ffi::lua_gettop(l) as u64 }
}

/// The first argument's bytes: `upper`, `lower`, `reverse`, `packsize`, `utf8.codes` (the loop
/// scans the whole string), `tonumber`.
unsafe fn first_length(l: *mut ffi::lua_State) -> u64 {
    unsafe { string_length(l, 1) }
}

/// The bytes of every string argument: `warn`.
unsafe fn string_args(l: *mut ffi::lua_State) -> u64 {
    unsafe { (1..=ffi::lua_gettop(l)).map(|i| string_length(l, i)).fold(0, u64::saturating_add) }
}

/// `string.rep(s, n, sep)`: one per copy (it loops `n` times even for an empty `s`) plus the
/// bytes produced.
unsafe fn rep(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let Some(n) = integer(l, 2, 0) else { return 0 };
        if n <= 0 {
            return 0;
        }
        let n = n as u64;
        let piece = string_length(l, 1).saturating_add(string_length(l, 3));
        if piece > 0 && piece > i64::MAX as u64 / n {
            // Refused at once with "resulting string too large".
            return 0;
        }
        n.saturating_add(n.saturating_mul(piece))
    }
}

/// `string.byte(s, i, j)`: the bytes returned.
unsafe fn byte(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let len = string_length(l, 1);
        let Some(i) = integer(l, 2, 1) else { return 0 };
        let first = start_position(i, len);
        let Some(j) = integer(l, 3, first) else { return 0 };
        span(first, end_position(j, len))
    }
}

/// `string.sub(s, i, j)`: the bytes copied.
unsafe fn sub(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let len = string_length(l, 1);
        let (Some(i), Some(j)) = (integer(l, 2, 1), integer(l, 3, -1)) else { return 0 };
        span(start_position(i, len), end_position(j, len))
    }
}

/// `string.format(fmt, ...)`: the format's bytes plus those of every string argument (each is
/// copied, or escaped by `%q`, once), plus one per argument.
unsafe fn format(l: *mut ffi::lua_State) -> u64 {
    unsafe { string_args(l).saturating_add(ffi::lua_gettop(l) as u64) }
}

/// Upper bound of the bytes `string.pack` writes: no option writes more than 16 bytes or its
/// own size number (`c1000`, `i16`, `!8`), plus the strings packed.
unsafe fn pack(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TSTRING {
            return 0;
        }
        let mut len = 0;
        let format = ffi::lua_tolstring(l, 1, &mut len);
        let format = std::slice::from_raw_parts(format.cast::<u8>(), len);
        let mut sizes = 0u64;
        let mut number = 0u64;
        for &b in format {
            if b.is_ascii_digit() {
                number = number.saturating_mul(10).saturating_add(u64::from(b - b'0'));
            } else {
                sizes = sizes.saturating_add(number);
                number = 0;
            }
        }
        sizes = sizes.saturating_add(number);
        let strings = (2..=ffi::lua_gettop(l)).map(|i| string_length(l, i)).fold(0, u64::saturating_add);
        (len as u64).saturating_mul(16).saturating_add(sizes).saturating_add(strings)
    }
}

/// `string.unpack(fmt, s, pos)`: 16 per format byte (values made) plus the bytes of `s` (none is
/// read twice).
unsafe fn unpack_bytes(l: *mut ffi::lua_State) -> u64 {
    unsafe { string_length(l, 1).saturating_mul(16).saturating_add(string_length(l, 2)) }
}

/// After `string.dump`: the bytes it produced (bounded by the size of a function already held).
unsafe fn result_length(l: *mut ffi::lua_State) -> u64 {
    unsafe { string_length(l, -1) }
}

/// `utf8.codepoint(s, i, j)`: the bytes decoded.
unsafe fn utf8_codepoint(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let len = string_length(l, 1);
        let Some(i) = integer(l, 2, 1) else { return 0 };
        let first = utf8_position(i, len);
        let Some(j) = integer(l, 3, first) else { return 0 };
        span(first, utf8_position(j, len))
    }
}

/// `utf8.len(s, i, j)`: the bytes scanned.
unsafe fn utf8_len(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let len = string_length(l, 1);
        let (Some(i), Some(j)) = (integer(l, 2, 1), integer(l, 3, -1)) else { return 0 };
        span(utf8_position(i, len), utf8_position(j, len))
    }
}

/// `utf8.offset(s, n, i)`: the bytes between `i` and the end it walks toward.
unsafe fn utf8_offset(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let len = string_length(l, 1);
        let Some(n) = integer(l, 2, 0) else { return 0 };
        let default = if n >= 0 { 1 } else { len.min(i64::MAX as u64 - 1) as i64 + 1 };
        let Some(i) = integer(l, 3, default) else { return 0 };
        let i = utf8_position(i, len).max(0) as u64;
        if n > 0 {
            len.saturating_sub(i).saturating_add(1)
        } else {
            i
        }
    }
}

/// `load(chunk)`: the bytes compiled. A reader function is replaced by [`charged_reader`], which
/// charges each piece as it hands it over.
unsafe fn load(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        match ffi::lua_type(l, 1) {
            ffi::LUA_TSTRING => {
                // Charged here to name the script's position: scripts reach this through the
                // prelude's `load`, whose own line would otherwise be level 1.
                charge_raw_at(l, ffi::lua_rawlen(l, 1) as u64, script_level(l));
                0
            }
            ffi::LUA_TFUNCTION => {
                ffi::lua_pushvalue(l, 1);
                ffi::lua_pushcclosure(l, charged_reader, 1);
                ffi::lua_replace(l, 1);
                0
            }
            _ => 0,
        }
    }
}

/// The stack level of the script that called a function reached through the prelude: 2 when the
/// caller (level 1) is the prelude, else 1.
unsafe fn script_level(l: *mut ffi::lua_State) -> c_int {
    unsafe {
        let mut caller: ffi::lua_Debug = std::mem::zeroed();
        if ffi::lua_getstack(l, 1, &mut caller) != 0 && ffi::lua_getinfo(l, c"S".as_ptr(), &mut caller) != 0 {
            let source = std::ffi::CStr::from_ptr(caller.short_src.as_ptr());
            if source.to_bytes() == PRELUDE_NAME.as_bytes() {
                return 2;
            }
        }
        1
    }
}

/// Calls the script's reader (upvalue 1) and charges the bytes of the piece it returns.
unsafe extern "C-unwind" fn charged_reader(l: *mut ffi::lua_State) -> c_int {
    unsafe {
        ffi::lua_settop(l, 0);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        ffi::lua_call(l, 0, 1);
        let cost = string_length(l, 1);
        if cost > 0 {
            charge_raw(l, cost);
        }
        1
    }
}

/// Heap bytes per instruction charged for a collection: marking and sweeping touch every object,
/// and the smallest objects (strings, tables) take 16 to 56 bytes.
const HEAP_BYTES_PER_INSTRUCTION: u64 = 16;

/// `collectgarbage("collect")` and `("step")`: the heap they may walk.
unsafe fn collectgarbage(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let walks = match ffi::lua_type(l, 1) {
            ffi::LUA_TNONE | ffi::LUA_TNIL => true,
            ffi::LUA_TSTRING => {
                let mut len = 0;
                let option = ffi::lua_tolstring(l, 1, &mut len);
                let option = std::slice::from_raw_parts(option.cast::<u8>(), len);
                option == b"collect" || option == b"step"
            }
            _ => false,
        };
        if !walks {
            return 0;
        }
        let kib = ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0).max(0) as u64;
        kib * 1024 / HEAP_BYTES_PER_INSTRUCTION
    }
}

/// `table.concat(t, sep, i, j)`: one per element plus the separators' bytes, charged first; then
/// the bytes of the elements (read raw; an element that only a metamethod supplies is priced at
/// nothing, its metamethod is Lua code and counted).
unsafe fn concat(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let Some((first, last)) = table_range(l, 3, 4, false) else { return 0 };
        let count = span(first, last);
        let separator = string_length(l, 2);
        charge_raw(l, count.saturating_add(count.saturating_sub(1).saturating_mul(separator)));
        if ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
            return 0;
        }
        let mut bytes = 0u64;
        for i in first..=last {
            if ffi::lua_rawgeti(l, 1, i) == ffi::LUA_TSTRING {
                bytes = bytes.saturating_add(ffi::lua_rawlen(l, -1) as u64);
            }
            ffi::lua_pop(l, 1);
        }
        bytes
    }
}

/// `table.unpack(t, i, j)`: the values returned.
unsafe fn unpack(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let values = table_range(l, 2, 3, true).map_or(0, |(first, last)| span(first, last));
        // More than a stack holds is refused at once with "too many results to unpack".
        if values > MAX_STACK {
            return 0;
        }
        values
    }
}

/// `LUAI_MAXSTACK`: no call returns more values.
const MAX_STACK: u64 = 1_000_000;

/// The range `i..=j` of `table.concat`/`table.unpack` (arguments `first` and `last`), `j`
/// defaulting to `#t`. With `pass_length`, a length a metamethod computed is passed on to the
/// stock function as an explicit `j`, so the metamethod runs once (`table.unpack` reads `#t`
/// only when `j` is absent; `table.concat` always reads it).
unsafe fn table_range(
    l: *mut ffi::lua_State,
    first: c_int,
    last: c_int,
    pass_length: bool,
) -> Option<(i64, i64)> {
    unsafe {
        let i = integer(l, first, 1)?;
        let j = if ffi::lua_type(l, last) <= ffi::LUA_TNIL {
            let metamethod = has_len_metamethod(l, 1);
            let n = length(l, 1)?;
            if metamethod && pass_length {
                if ffi::lua_gettop(l) < last {
                    ffi::lua_settop(l, last);
                }
                ffi::lua_pushinteger(l, n);
                ffi::lua_replace(l, last);
            }
            n
        } else {
            integer(l, last, 0)?
        };
        Some((i, j))
    }
}

/// `table.move(a1, f, e, t)`: the elements moved.
unsafe fn table_move(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let (Some(f), Some(e), Some(t)) = (integer(l, 2, 0), integer(l, 3, 0), integer(l, 4, 0)) else {
            return 0;
        };
        // ltablib's checks, which refuse these ranges before moving anything.
        if e < f || !(f > 0 || e < i64::MAX.wrapping_add(f)) || t > i64::MAX - (e - f) {
            return 0;
        }
        span(f, e)
    }
}

/// `table.insert(t, pos, v)`: the elements shifted up (appending is free).
unsafe fn insert(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        if ffi::lua_gettop(l) != 3 {
            return 0;
        }
        let Some(pos) = integer(l, 2, 0) else { return 0 };
        length(l, 1).map_or(0, |n| span(pos, n))
    }
}

/// `string.byte(s [, i [, j]])`: a string shorter than `INT_MAX` (the slice limit of `byte`) and
/// integer positions: nothing left for the stock function to refuse.
unsafe fn string_and_integers(l: *mut ffi::lua_State) -> bool {
    unsafe {
        let n = ffi::lua_gettop(l);
        n <= 3
            && ffi::lua_type(l, 1) == ffi::LUA_TSTRING
            && ffi::lua_rawlen(l, 1) < c_int::MAX as usize
            && (2..=n).all(|i| ffi::lua_isinteger(l, i) != 0)
    }
}

/// `string.sub(s, i [, j])`: as [`string_and_integers`], `i` given.
unsafe fn string_and_position(l: *mut ffi::lua_State) -> bool {
    unsafe { ffi::lua_gettop(l) >= 2 && string_and_integers(l) }
}

/// `string.char(...)`: integer codes 0 to 255 only.
unsafe fn bytes_only(l: *mut ffi::lua_State) -> bool {
    unsafe {
        (1..=ffi::lua_gettop(l)).all(|i| {
            let mut is_integer = 0;
            let code = ffi::lua_tointegerx(l, i, &mut is_integer);
            is_integer != 0 && ffi::lua_type(l, i) == ffi::LUA_TNUMBER && (0..=255).contains(&code)
        })
    }
}

/// `table.insert(t, v)` on a table without a metatable: the append cannot fail but for memory.
unsafe fn append_to_plain_table(l: *mut ffi::lua_State) -> bool {
    unsafe {
        if ffi::lua_gettop(l) != 2 || ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
            return false;
        }
        if ffi::lua_getmetatable(l, 1) != 0 {
            ffi::lua_pop(l, 1);
            return false;
        }
        true
    }
}

/// `table.remove(t, pos)`: the elements shifted down.
unsafe fn remove(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let Some(n) = length(l, 1) else { return 0 };
        integer(l, 2, n).map_or(0, |pos| span(pos, n))
    }
}

/// `table.sort(t)`: n·⌈log2 n⌉ comparisons and moves (a comparator's own instructions count
/// besides).
unsafe fn sort(l: *mut ffi::lua_State) -> u64 {
    unsafe {
        let Some(n) = length(l, 1) else { return 0 };
        if n < 2 {
            return 0;
        }
        let n = n as u64;
        let log = u64::from(64 - (n - 1).leading_zeros());
        n.saturating_mul(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_errors_are_parsed() {
        assert_eq!(
            argument_error(b"bad argument #2 to '?' (number expected, got no value)"),
            Some((2, &b"number expected, got no value"[..]))
        );
        assert_eq!(argument_error(b"bad argument #1 to 'x' (a (b) c)"), Some((1, &b"a (b) c"[..])));
        assert_eq!(argument_error(b"resulting string too large"), None);
    }

    #[test]
    fn positions_follow_lstrlib() {
        assert_eq!(start_position(-3, 10), 8);
        assert_eq!(start_position(0, 10), 1);
        assert_eq!(start_position(-30, 10), 1);
        assert_eq!(end_position(30, 10), 10);
        assert_eq!(end_position(-30, 10), 0);
        assert_eq!(span(start_position(1, 10), end_position(-1, 10)), 10);
        assert_eq!(span(5, 4), 0);
        assert_eq!(span(i64::MIN, i64::MAX), u64::MAX);
    }
}
