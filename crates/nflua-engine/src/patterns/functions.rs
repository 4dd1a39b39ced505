//! `string.find`, `string.match`, `string.gmatch` and `string.gsub` as raw C functions over
//! [`Matcher`], behaving as Lua 5.4.9's: the same arguments and conversions (through the same
//! `luaL_check*` functions, so bad arguments read the same, method calls included), the same
//! results, the same errors at the caller's position.
//!
//! They charge the entry's budget as they go (see the module doc of `patterns` for the cost
//! model): the matcher reports every batch of steps to [`LuaMeter`], which calls
//! [`limits::charge_raw`]; what a call has not charged yet is charged before it returns, raises,
//! or runs Lua code (a replacement function, a table's `__index`), so an error caught by `pcall`
//! never leaves work unpaid.
//!
//! # Safety
//!
//! Lua errors are longjmps, raised here by the `luaL_*` functions, by the meter from inside the
//! matcher, and by the Lua code `gsub` calls. No frame they cross holds a value with a
//! destructor: the matcher is plain data (asserted in `matcher.rs`), the subject and pattern
//! are borrowed from Lua strings that stay on the stack (or in the `gmatch` closure's upvalues)
//! for the whole call, `gsub` builds its result in a `luaL_Buffer`, and error texts are built
//! on the Lua stack or in a fixed array.

#![allow(unsafe_code)] // talks to C: see the Safety notes

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::os::raw::{c_char, c_int};

use mlua::ffi;

use super::matcher::{is_plain, Captured, Matcher, Meter, PatternError, Step, ESCAPE};
use crate::limits;

/// Charges the matcher's steps to the running entry; raises the limit's error instead of
/// returning when they do not fit.
struct LuaMeter(*mut ffi::lua_State);

impl Meter for LuaMeter {
    fn charge(&mut self, steps: u64) -> Result<(), PatternError> {
        // SAFETY: the meter lives inside one of this module's C functions, running on thread
        // `self.0`, whose frames hold nothing with a destructor (module doc).
        unsafe { limits::charge_raw(self.0, steps) };
        Ok(())
    }
}

type LuaMatcher<'a> = Matcher<'a, LuaMeter>;

/// A short error text built without the heap.
struct Text {
    bytes: [u8; 64],
    len: usize,
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Raises `pieces`, concatenated, at the caller's position (as `luaL_error`).
unsafe fn raise(state: *mut ffi::lua_State, pieces: &[&[u8]]) -> ! {
    unsafe {
        ffi::luaL_checkstack(state, pieces.len() as c_int + 1, std::ptr::null());
        ffi::luaL_where(state, 1);
        for piece in pieces {
            ffi::lua_pushlstring(state, piece.as_ptr().cast(), piece.len());
        }
        ffi::lua_concat(state, pieces.len() as c_int + 1);
        ffi::lua_error(state)
    }
}

/// Charges what `matcher` has not charged yet, then raises `error`.
unsafe fn fail(state: *mut ffi::lua_State, matcher: &mut LuaMatcher, error: PatternError) -> ! {
    unsafe {
        let _ = matcher.settle();
        let mut text = Text { bytes: [0; 64], len: 0 };
        let _ = write!(text, "{error}");
        raise(state, &[&text.bytes[..text.len]])
    }
}

/// Unwraps a matcher result, raising its error.
#[inline]
unsafe fn check<T>(state: *mut ffi::lua_State, matcher: &mut LuaMatcher, result: Step<T>) -> T {
    unsafe {
        match result {
            Ok(value) => value,
            Err(error) => fail(state, matcher, error),
        }
    }
}

/// The bytes at `ptr` (from a Lua string, which must stay where it is while they are used).
unsafe fn bytes_of<'a>(ptr: *const c_char, len: usize) -> &'a [u8] {
    unsafe {
        if len == 0 {
            return &[];
        }
        std::slice::from_raw_parts(ptr.cast(), len)
    }
}

/// `luaL_checklstring`'s bytes (a number argument is converted in place, as the stock functions
/// do).
unsafe fn check_bytes<'a>(state: *mut ffi::lua_State, arg: c_int) -> &'a [u8] {
    unsafe {
        let mut len = 0;
        let ptr = ffi::luaL_checklstring(state, arg, &mut len);
        bytes_of(ptr, len)
    }
}

/// 0-based start for a 1-based, possibly negative `init` argument (beyond `len` when it starts
/// after the end), as lstrlib's `posrelatI` minus one.
fn start_index(init: ffi::lua_Integer, len: usize) -> usize {
    if init > 0 {
        usize::try_from(init).unwrap_or(usize::MAX) - 1
    } else if init == 0 {
        0
    } else {
        let back = usize::try_from(init.unsigned_abs()).unwrap_or(usize::MAX);
        len.saturating_sub(back)
    }
}

/// A pattern's `^` anchor, and the pattern without it.
fn strip_anchor(pattern: &[u8]) -> (bool, &[u8]) {
    match pattern.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, pattern),
    }
}

/// Pushes capture `i` of the last match (`whole` is the matched range).
unsafe fn push_capture(
    state: *mut ffi::lua_State,
    matcher: &mut LuaMatcher,
    i: usize,
    whole: (usize, usize),
) {
    unsafe {
        let captured = matcher.capture(i, whole);
        match check(state, matcher, captured) {
            Captured::Bytes { start, len } => {
                let spent = matcher.spend(len as u64);
                check(state, matcher, spent);
                let bytes = &matcher.subject()[start..start + len];
                ffi::lua_pushlstring(state, bytes.as_ptr().cast(), len);
            }
            Captured::Position(at) => ffi::lua_pushinteger(state, at as ffi::lua_Integer),
        }
    }
}

/// Pushes the captures of the last match (the whole match when the pattern has none and
/// `whole` is given); returns how many.
unsafe fn push_captures(
    state: *mut ffi::lua_State,
    matcher: &mut LuaMatcher,
    whole: Option<(usize, usize)>,
) -> c_int {
    unsafe {
        let count = if matcher.level() == 0 && whole.is_some() { 1 } else { matcher.level() };
        ffi::luaL_checkstack(state, count as c_int, c"too many captures".as_ptr());
        for i in 0..count {
            push_capture(state, matcher, i, whole.unwrap_or((0, 0)));
        }
        count as c_int
    }
}

unsafe fn settle(state: *mut ffi::lua_State, matcher: &mut LuaMatcher) {
    unsafe {
        let settled = matcher.settle();
        check(state, matcher, settled);
    }
}

pub(crate) unsafe extern "C-unwind" fn find(state: *mut ffi::lua_State) -> c_int {
    unsafe { find_or_match(state, true) }
}

pub(crate) unsafe extern "C-unwind" fn match_(state: *mut ffi::lua_State) -> c_int {
    unsafe { find_or_match(state, false) }
}

unsafe fn find_or_match(state: *mut ffi::lua_State, find: bool) -> c_int {
    unsafe {
        let subject = check_bytes(state, 1);
        let pattern = check_bytes(state, 2);
        let init = start_index(ffi::luaL_optinteger(state, 3, 1), subject.len());
        if init > subject.len() {
            ffi::lua_pushnil(state);
            return 1;
        }
        if find && (ffi::lua_toboolean(state, 4) != 0 || is_plain(pattern)) {
            let mut matcher = Matcher::new(subject, pattern, LuaMeter(state));
            let found = matcher.find_literal(init);
            let found = check(state, &mut matcher, found);
            settle(state, &mut matcher);
            if let Some(at) = found {
                ffi::lua_pushinteger(state, (at + 1) as ffi::lua_Integer);
                ffi::lua_pushinteger(state, (at + pattern.len()) as ffi::lua_Integer);
                return 2;
            }
        } else {
            let (anchored, pattern) = strip_anchor(pattern);
            let mut matcher = Matcher::new(subject, pattern, LuaMeter(state));
            let mut start = init;
            loop {
                let outcome = matcher.match_at(start);
                if let Some(end) = check(state, &mut matcher, outcome) {
                    let pushed = if find {
                        ffi::lua_pushinteger(state, (start + 1) as ffi::lua_Integer);
                        ffi::lua_pushinteger(state, end as ffi::lua_Integer);
                        push_captures(state, &mut matcher, None) + 2
                    } else {
                        push_captures(state, &mut matcher, Some((start, end)))
                    };
                    settle(state, &mut matcher);
                    return pushed;
                }
                if anchored || start >= subject.len() {
                    break;
                }
                start += 1;
            }
            settle(state, &mut matcher);
        }
        ffi::lua_pushnil(state);
        1
    }
}

/// Where a `gmatch` iterator is: in the closure's third upvalue, a userdata without metatable.
#[repr(C)]
struct GmatchState {
    /// Where the next search starts.
    next: usize,
    /// End of the last match (`usize::MAX` before the first): an empty match there is skipped.
    last_end: usize,
}

pub(crate) unsafe extern "C-unwind" fn gmatch(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let subject = check_bytes(state, 1);
        check_bytes(state, 2);
        let init = start_index(ffi::luaL_optinteger(state, 3, 1), subject.len());
        // The subject and the pattern become the iterator's upvalues, which keeps them alive.
        ffi::lua_settop(state, 2);
        let iterator =
            ffi::lua_newuserdatauv(state, std::mem::size_of::<GmatchState>(), 0).cast::<GmatchState>();
        iterator.write(GmatchState { next: init.min(subject.len() + 1), last_end: usize::MAX });
        ffi::lua_pushcclosure(state, gmatch_next, 3);
        1
    }
}

unsafe extern "C-unwind" fn gmatch_next(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let mut len = 0;
        let subject = bytes_of(ffi::lua_tolstring(state, ffi::lua_upvalueindex(1), &mut len), len);
        let pattern = bytes_of(ffi::lua_tolstring(state, ffi::lua_upvalueindex(2), &mut len), len);
        let iterator = ffi::lua_touserdata(state, ffi::lua_upvalueindex(3)).cast::<GmatchState>();
        let mut matcher = Matcher::new(subject, pattern, LuaMeter(state));
        let mut start = (*iterator).next;
        while start <= subject.len() {
            let outcome = matcher.match_at(start);
            match check(state, &mut matcher, outcome) {
                Some(end) if end != (*iterator).last_end => {
                    (*iterator).next = end;
                    (*iterator).last_end = end;
                    let pushed = push_captures(state, &mut matcher, Some((start, end)));
                    settle(state, &mut matcher);
                    return pushed;
                }
                _ => start += 1,
            }
        }
        settle(state, &mut matcher);
        0
    }
}

/// Appends `bytes` to `buffer`, charging one step per byte.
unsafe fn add(
    state: *mut ffi::lua_State,
    matcher: &mut LuaMatcher,
    buffer: *mut ffi::luaL_Buffer,
    bytes: &[u8],
) {
    unsafe {
        if bytes.is_empty() {
            return;
        }
        let spent = matcher.spend(bytes.len() as u64);
        check(state, matcher, spent);
        ffi::luaL_addlstring(buffer, bytes.as_ptr().cast(), bytes.len());
    }
}

/// Appends the replacement string (argument 3) for the match `whole`, with its `%` escapes.
unsafe fn add_template(
    state: *mut ffi::lua_State,
    matcher: &mut LuaMatcher,
    buffer: *mut ffi::luaL_Buffer,
    whole: (usize, usize),
) {
    unsafe {
        let mut len = 0;
        let template = bytes_of(ffi::lua_tolstring(state, 3, &mut len), len);
        let mut rest = template;
        while let Some(at) = rest.iter().position(|&c| c == ESCAPE) {
            add(state, matcher, buffer, &rest[..at]);
            let escaped = rest.get(at + 1).copied().unwrap_or(0);
            match escaped {
                ESCAPE => add(state, matcher, buffer, b"%"),
                b'0' => {
                    let subject = matcher.subject();
                    add(state, matcher, buffer, &subject[whole.0..whole.1]);
                }
                b'1'..=b'9' => {
                    let captured = matcher.capture(usize::from(escaped - b'1'), whole);
                    match check(state, matcher, captured) {
                        Captured::Bytes { start, len } => {
                            let subject = matcher.subject();
                            add(state, matcher, buffer, &subject[start..start + len]);
                        }
                        Captured::Position(at) => {
                            ffi::lua_pushinteger(state, at as ffi::lua_Integer);
                            add_top(state, matcher, buffer);
                        }
                    }
                }
                _ => {
                    let _ = matcher.settle();
                    raise(state, &[b"invalid use of '%' in replacement string"]);
                }
            }
            rest = &rest[at + 2..];
        }
        add(state, matcher, buffer, rest);
    }
}

/// Appends the string (or number) on top of the stack and pops it.
unsafe fn add_top(state: *mut ffi::lua_State, matcher: &mut LuaMatcher, buffer: *mut ffi::luaL_Buffer) {
    unsafe {
        let mut len = 0;
        ffi::lua_tolstring(state, -1, &mut len);
        let spent = matcher.spend(len as u64);
        check(state, matcher, spent);
        ffi::luaL_addvalue(buffer);
    }
}

/// Appends the replacement for the match `whole`; false when the replacement function or table
/// gave nil or false, which keeps the matched text.
unsafe fn add_replacement(
    state: *mut ffi::lua_State,
    matcher: &mut LuaMatcher,
    buffer: *mut ffi::luaL_Buffer,
    whole: (usize, usize),
    kind: c_int,
) -> bool {
    unsafe {
        match kind {
            ffi::LUA_TFUNCTION => {
                ffi::lua_pushvalue(state, 3);
                let args = push_captures(state, matcher, Some(whole));
                // Lua code runs next, and may raise: pay first.
                settle(state, matcher);
                ffi::lua_call(state, args, 1);
            }
            ffi::LUA_TTABLE => {
                push_capture(state, matcher, 0, whole);
                settle(state, matcher);
                ffi::lua_gettable(state, 3);
            }
            _ => {
                add_template(state, matcher, buffer, whole);
                return true;
            }
        }
        if ffi::lua_toboolean(state, -1) == 0 {
            ffi::lua_pop(state, 1);
            let subject = matcher.subject();
            add(state, matcher, buffer, &subject[whole.0..whole.1]);
            false
        } else if ffi::lua_isstring(state, -1) == 0 {
            let _ = matcher.settle();
            let type_name = std::ffi::CStr::from_ptr(ffi::luaL_typename(state, -1));
            raise(state, &[b"invalid replacement value (a ", type_name.to_bytes(), b")"]);
        } else {
            add_top(state, matcher, buffer);
            true
        }
    }
}

/// `luaL_typeerror`, which the C API lacks a binding for.
unsafe fn type_error(state: *mut ffi::lua_State, arg: c_int, expected: &[u8]) -> ! {
    unsafe {
        let got = if ffi::luaL_getmetafield(state, arg, c"__name".as_ptr()) == ffi::LUA_TSTRING {
            ffi::lua_tostring(state, -1)
        } else if ffi::lua_type(state, arg) == ffi::LUA_TLIGHTUSERDATA {
            c"light userdata".as_ptr()
        } else {
            ffi::luaL_typename(state, arg)
        };
        ffi::lua_pushlstring(state, expected.as_ptr().cast(), expected.len());
        ffi::lua_pushstring(state, c" expected, got ".as_ptr());
        ffi::lua_pushstring(state, got);
        ffi::lua_concat(state, 3);
        ffi::luaL_argerror(state, arg, ffi::lua_tostring(state, -1));
        // Not reached: `luaL_argerror` raises, though its binding says it returns.
        ffi::lua_error(state)
    }
}

pub(crate) unsafe extern "C-unwind" fn gsub(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let subject = check_bytes(state, 1);
        let pattern = check_bytes(state, 2);
        let kind = ffi::lua_type(state, 3);
        let most = ffi::luaL_optinteger(state, 4, subject.len() as ffi::lua_Integer + 1);
        if !matches!(kind, ffi::LUA_TNUMBER | ffi::LUA_TSTRING | ffi::LUA_TFUNCTION | ffi::LUA_TTABLE) {
            type_error(state, 3, b"string/function/table");
        }
        let mut storage = MaybeUninit::<ffi::luaL_Buffer>::uninit();
        let buffer = storage.as_mut_ptr();
        ffi::luaL_buffinit(state, buffer);
        let (anchored, pattern) = strip_anchor(pattern);
        let mut matcher = Matcher::new(subject, pattern, LuaMeter(state));
        let mut position = 0;
        // Start of the subject text not yet copied to the buffer (copied in runs, not by the byte).
        let mut copied = 0;
        let mut last_end = usize::MAX;
        let mut count: ffi::lua_Integer = 0;
        let mut changed = false;
        while count < most {
            let outcome = matcher.match_at(position);
            match check(state, &mut matcher, outcome) {
                Some(end) if end != last_end => {
                    count += 1;
                    add(state, &mut matcher, buffer, &subject[copied..position]);
                    changed |= add_replacement(state, &mut matcher, buffer, (position, end), kind);
                    position = end;
                    copied = end;
                    last_end = end;
                }
                _ if position < subject.len() => position += 1,
                _ => break,
            }
            if anchored {
                break;
            }
        }
        if changed {
            add(state, &mut matcher, buffer, &subject[copied..]);
            ffi::luaL_pushresult(buffer);
        } else {
            // What was skipped is still scanned work.
            let spent = matcher.spend((position - copied) as u64);
            check(state, &mut matcher, spent);
            ffi::lua_pushvalue(state, 1);
        }
        settle(state, &mut matcher);
        ffi::lua_pushinteger(state, count);
        2
    }
}
