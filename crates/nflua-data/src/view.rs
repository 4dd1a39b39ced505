//! The raw Lua C API side of borrowed views: making a view object, recognising one, setting its
//! layout. What views mean and how they behave is in `lua/` (`lua/lent.rs`: `LentBuffer`).
//!
//! A borrowed view is a full userdata holding a [`ViewCell`] (plain numbers, nothing to drop) and
//! one user value (its layout object, or nil), with a metatable that has no `__gc`. Lua 5.4 marks
//! an object for finalization only when `lua_setmetatable` gives it a metatable with a `__gc`
//! field (`luaC_checkfinalizer`), so a view is freed by the sweep like a table: no finalizer
//! pass, no extra cycle before its memory comes back. The metatable is made once per Lua state
//! and kept in the registry under the address of a private static; its `__metatable` field hides
//! it from `getmetatable`, as mlua does for its own userdata, so no script can add a `__gc`.
//!
//! Views are made in two ways. [`create`] makes a userdata view from Rust, for
//! `LentBuffer::lend` and for segments of views. The hot path, a hook or callback call, hands
//! *tokens* instead (`token.rs`): light userdata whose bits name the memory, the view and the
//! fill, whose range and layout sit in a record beside the memory. The C function [`caller`]
//! turns the call's numbers into them: `caller(f, extra..., n, token1, token2)` calls
//! `f(extra..., view1 [, view2])`. The engine calls it under its `xpcall`; pushing a light
//! userdata allocates nothing, so a call's views cost neither an allocation nor, later, any
//! work of the collector. Light userdata share their type's metatable, which [`caller`] makes
//! the views' one.

//! Reads are the other hot path: a filter reads a packet byte by byte. The views' `__index` and
//! `__len` are C closures ([`indexer`], [`measurer`]) that answer `view[i]` (integer `i`) and
//! `#view` for a valid view straight from the bytes, and hand everything else — names, layout
//! fields, invalid views and so every error message — to the general mlua functions. A header
//! filter reading nine bytes ran at 0.41 M calls/s through mlua's callbacks and at 0.89 M with
//! the fast path (engine bench, one core).
//!
//! # Safety
//!
//! This module holds the crate's `unsafe` code.
//!
//! The functions called from Rust enter Lua through `Lua::exec_raw`, which locks the state,
//! checks 3 free stack slots (each closure uses at most 2 beyond its arguments), runs the closure
//! under `lua_pcall` and restores the stack afterwards. So a memory error from
//! `lua_newuserdatauv` (at the state's memory limit) comes back as `Error::MemoryError` ("not
//! enough memory") instead of aborting. As `exec_raw` requires, the closures own nothing with a
//! destructor (they capture `Copy` values and `&mut` to them), since an error longjmps over them;
//! only `lua_newuserdatauv` can raise here.
//!
//! [`caller`]'s function runs as any C function called from Lua: its errors (a bad argument, no
//! memory for a view, whatever `f` raises) longjmp to the enclosing protected call, over its own
//! frame, which holds only integers and cells (nothing to drop) and calls nothing that can
//! panic. It checks the stack room it needs with `lua_checkstack`.
//!
//! A userdata's bytes are read only after checking that its metatable is ours (set only here, on
//! blocks of `size_of::<ViewCell>()` bytes) and that its length is exactly that size (a `debug`
//! state could put our metatable on another userdata with `debug.setmetatable`). The numbers
//! read are not trusted further: the slot is looked up with a bounds check and a view's range is
//! checked against the bytes on every access, so a forged cell makes an invalid view, nothing
//! worse.

#![allow(unsafe_code)] // talks to C: see the Safety notes

use std::mem::size_of;
use std::os::raw::{c_int, c_void};
use std::ptr;

use mlua::state::RawLua;

use crate::lua::LentMemories;
use crate::token;
use mlua::{ffi, AnyUserData, Error as LuaError, FromLua, Function, Lua, Result as LuaResult, Table, Value};

/// What a view holds: 24 bytes, so a userdata view is an 80-byte block on the Lua heap (a token
/// stands for one without being one: `token.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct ViewCell {
    /// The memory's generation the view was made for.
    generation: u64,
    /// Index of the lent memory in the state's list (see `lua/lent.rs`).
    slot: u32,
    /// Range from the start of the memory.
    offset: u32,
    len: u32,
}

impl ViewCell {
    /// `None` if a number does not fit: views reach the first 4 GiB of a memory only.
    pub(crate) fn new(slot: usize, generation: u64, offset: usize, len: usize) -> Option<ViewCell> {
        Some(ViewCell {
            generation,
            slot: u32::try_from(slot).ok()?,
            offset: u32::try_from(offset).ok()?,
            len: u32::try_from(len).ok()?,
        })
    }

    pub(crate) fn slot(&self) -> usize {
        self.slot as usize
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn offset(&self) -> usize {
        self.offset as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }
}

/// Its address is the registry key of the views' metatable.
static METATABLE_KEY: u8 = 0;

fn key() -> *const c_void {
    ptr::addr_of!(METATABLE_KEY).cast()
}

/// Makes `metatable` the metatable of every view made in `lua` from now on.
pub(crate) fn register_metatable(lua: &Lua, metatable: &Table) -> LuaResult<()> {
    // SAFETY: see the module doc; `lua_rawsetp` pops the table (it may allocate, under pcall).
    unsafe {
        lua.exec_raw::<()>(metatable, |state| {
            ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, key());
        })
    }
}

/// Whether `lua` has a views' metatable yet.
pub(crate) fn has_metatable(lua: &Lua) -> LuaResult<bool> {
    // SAFETY: see the module doc; pushes one value, pops it, pushes the answer.
    unsafe {
        lua.exec_raw::<bool>((), |state| {
            let kind = ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, key());
            ffi::lua_pop(state, 1);
            ffi::lua_pushboolean(state, c_int::from(kind == ffi::LUA_TTABLE));
        })
    }
}

/// A new view object holding `cell`, without a layout. Fails (a conversion error) if `lua` has no
/// views' metatable.
pub(crate) fn create(lua: &Lua, cell: ViewCell) -> LuaResult<AnyUserData> {
    // SAFETY: see the module doc. The block is written before anything else can run, and it is
    // `ViewCell`-sized, which is what `read_view` checks before reading it.
    unsafe {
        lua.exec_raw::<AnyUserData>((), move |state| {
            let block = ffi::lua_newuserdatauv(state, size_of::<ViewCell>(), 1);
            ptr::write_unaligned(block.cast::<ViewCell>(), cell);
            if ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, key()) == ffi::LUA_TTABLE {
                ffi::lua_setmetatable(state, -2);
            } else {
                // Nothing is returned, which the caller sees as nil: no view without the type.
                ffi::lua_settop(state, 0);
            }
        })
    }
}

/// The view at `idx` (an absolute index), or `None` if the value is not a view. Leaves the stack
/// as it was; uses 2 slots, which the caller must have checked.
pub(crate) unsafe fn read_view(state: *mut ffi::lua_State, idx: c_int) -> Option<Found> {
    unsafe {
        ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, key());
        let top = ffi::lua_gettop(state);
        let found = if ffi::lua_type(state, idx) == ffi::LUA_TLIGHTUSERDATA {
            token_under(state, idx, top)
        } else {
            cell_under(state, idx, top).map(|cell| Found { cell, token_view: None })
        };
        ffi::lua_pop(state, 1);
        found
    }
}

/// A view as [`read_view`] finds it: its cell and, for a token, which of its call's views it is
/// (where its layout is kept).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found {
    pub(crate) cell: ViewCell,
    pub(crate) token_view: Option<usize>,
}

/// The token at `idx` (absolute), if the light userdata's metatable is the one at `metatable`
/// and the state lends tokens; uses 1 slot.
unsafe fn token_under(state: *mut ffi::lua_State, idx: c_int, metatable: c_int) -> Option<Found> {
    unsafe {
        if ffi::lua_getmetatable(state, idx) == 0 {
            return None;
        }
        let ours = ffi::lua_rawequal(state, -1, metatable) != 0;
        ffi::lua_pop(state, 1);
        if !ours {
            return None;
        }
        ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, memories_key());
        let memories = ffi::lua_touserdata(state, -1).cast::<LentMemories>();
        ffi::lua_pop(state, 1);
        // The state's `LentMemories`, alive and not borrowed mutably (see `indexer`).
        let memories = memories.as_ref()?;
        let token = ffi::lua_touserdata(state, idx) as usize;
        let (_, view, _) = token::decode(token)?;
        memories.token_cell(token).map(|cell| Found { cell, token_view: Some(view) })
    }
}

/// The cell of the value at `idx` (absolute) if its metatable is the one at `metatable` (an
/// absolute or pseudo-index) and it is a block of the cell's size. Leaves the stack as it was;
/// uses 1 slot.
unsafe fn cell_under(state: *mut ffi::lua_State, idx: c_int, metatable: c_int) -> Option<ViewCell> {
    unsafe {
        if ffi::lua_type(state, idx) != ffi::LUA_TUSERDATA || ffi::lua_getmetatable(state, idx) == 0 {
            return None;
        }
        let ours = ffi::lua_rawequal(state, -1, metatable) != 0;
        ffi::lua_pop(state, 1);
        if !ours || ffi::lua_rawlen(state, idx) != size_of::<ViewCell>() {
            return None;
        }
        Some(ptr::read_unaligned(ffi::lua_touserdata(state, idx).cast::<ViewCell>()))
    }
}

/// Whether `value` is a view (a userdata view or a token).
pub(crate) fn is_view(lua: &Lua, value: &Value) -> LuaResult<bool> {
    if !matches!(value, Value::UserData(_) | Value::LightUserData(_)) {
        return Ok(false);
    }
    // SAFETY: see the module doc; the value is argument 1.
    unsafe {
        lua.exec_raw::<bool>(value, |state| {
            let found = read_view(state, 1).is_some();
            ffi::lua_settop(state, 0);
            ffi::lua_pushboolean(state, c_int::from(found));
        })
    }
}

/// Where a view's layout is: a userdata view's user value (its layout object, or nil), or, for
/// a token, the record of its view (`token.rs`).
#[derive(Debug)]
pub(crate) enum ViewLayout {
    UserValue(Value),
    Token(usize),
}

/// A view as a Rust function receives it: its cell and where its layout is.
///
/// As an mlua function argument it is read straight from the Lua stack (`FromLua::from_stack`,
/// which mlua calls for arguments): no `pcall`, no mlua reference to the view. That method is
/// hidden in mlua's docs; should a later mlua stop calling it, `from_lua` gives the same answer
/// through [`inspect`], only slower.
#[derive(Debug)]
pub(crate) struct ViewArg {
    pub(crate) cell: ViewCell,
    pub(crate) layout: ViewLayout,
}

fn not_a_view(from: &'static str) -> LuaError {
    LuaError::FromLuaConversionError {
        from,
        to: "data".to_owned(),
        message: Some("expected a data object".to_owned()),
    }
}

impl FromLua for ViewArg {
    fn from_lua(value: Value, lua: &Lua) -> LuaResult<ViewArg> {
        inspect(lua, &value)?.ok_or_else(|| not_a_view(value.type_name()))
    }

    unsafe fn from_stack(idx: c_int, lua: &RawLua) -> LuaResult<ViewArg> {
        unsafe {
            let state = lua.state();
            let idx = ffi::lua_absindex(state, idx);
            if ffi::lua_checkstack(state, 2) == 0 {
                return Err(LuaError::StackError);
            }
            let Some(found) = read_view(state, idx) else {
                let from = match ffi::lua_type(state, idx) {
                    ffi::LUA_TUSERDATA | ffi::LUA_TLIGHTUSERDATA => "userdata",
                    _ => "value",
                };
                return Err(not_a_view(from));
            };
            if let Some(view) = found.token_view {
                return Ok(ViewArg { cell: found.cell, layout: ViewLayout::Token(view) });
            }
            let user_value = match ffi::lua_getiuservalue(state, idx, 1) {
                ffi::LUA_TNIL | ffi::LUA_TNONE => Ok(Value::Nil),
                _ => Value::from_stack(-1, lua),
            };
            ffi::lua_pop(state, 1);
            Ok(ViewArg { cell: found.cell, layout: ViewLayout::UserValue(user_value?) })
        }
    }
}

/// A function argument that may be a view, so the function can raise its own message (a
/// failed conversion would raise mlua's error userdata before it runs). The views' metatable
/// is every light userdata's in a state that lends tokens (see `token.rs`): the metamethods
/// meet the others (`json.null`) as `Foreign`, with their address.
#[derive(Debug)]
pub(crate) enum MaybeView {
    View(ViewArg),
    Foreign(usize),
    Other,
}

fn maybe_view(converted: LuaResult<ViewArg>, light: Option<usize>) -> LuaResult<MaybeView> {
    match converted {
        Ok(view) => Ok(MaybeView::View(view)),
        Err(LuaError::FromLuaConversionError { .. }) => {
            Ok(light.map_or(MaybeView::Other, MaybeView::Foreign))
        }
        Err(other) => Err(other),
    }
}

impl FromLua for MaybeView {
    fn from_lua(value: Value, lua: &Lua) -> LuaResult<MaybeView> {
        let light = match &value {
            Value::LightUserData(p) => Some(p.0 as usize),
            _ => None,
        };
        maybe_view(ViewArg::from_lua(value, lua), light)
    }

    unsafe fn from_stack(idx: c_int, lua: &RawLua) -> LuaResult<MaybeView> {
        unsafe {
            let state = lua.state();
            let light = (ffi::lua_type(state, idx) == ffi::LUA_TLIGHTUSERDATA)
                .then(|| ffi::lua_touserdata(state, idx) as usize);
            maybe_view(ViewArg::from_stack(idx, lua), light)
        }
    }
}

/// `value` as a view, or `None` if it is not one.
pub(crate) fn inspect(lua: &Lua, value: &Value) -> LuaResult<Option<ViewArg>> {
    if !matches!(value, Value::UserData(_) | Value::LightUserData(_)) {
        return Ok(None);
    }
    let mut found = None;
    // SAFETY: see the module doc; the value is argument 1, a userdata view's user value the
    // result.
    let user_value = unsafe {
        lua.exec_raw::<Value>(value, |state| {
            found = read_view(state, 1);
            if found.is_some_and(|f| f.token_view.is_none()) {
                ffi::lua_getiuservalue(state, 1, 1);
                ffi::lua_remove(state, 1);
            } else {
                ffi::lua_settop(state, 0);
            }
        })?
    };
    Ok(found.map(|found| match found.token_view {
        Some(view) => ViewArg { cell: found.cell, layout: ViewLayout::Token(view) },
        None => ViewArg { cell: found.cell, layout: ViewLayout::UserValue(user_value) },
    }))
}

/// Makes `layout` (a layout object) the layout of the userdata view `ud`; false if `ud` is not
/// one (a token's layout is in its record: `token.rs`).
pub(crate) fn set_layout(lua: &Lua, ud: &AnyUserData, layout: &AnyUserData) -> LuaResult<bool> {
    let mut done = false;
    // SAFETY: see the module doc; the view is argument 1, the layout argument 2, which
    // `lua_setiuservalue` pops (it only sets a field and a GC barrier: nothing can raise).
    unsafe {
        lua.exec_raw::<()>((ud, layout), |state| {
            if read_view(state, 1).is_some_and(|f| f.token_view.is_none()) {
                done = ffi::lua_setiuservalue(state, 1, 1) != 0;
            }
            ffi::lua_settop(state, 0);
        })?;
    }
    Ok(done)
}

/// The numbers ending the arguments of [`caller`]'s function: `n` and [`CALLER_VIEWS`] tokens.
const CALLER_NUMBERS: c_int = 1 + CALLER_VIEWS;

/// The views one call of [`caller`]'s function hands over at most.
const CALLER_VIEWS: c_int = token::VIEWS_PER_CALL as c_int;

/// Its address is the registry key of the state's `LentMemories`, as a light userdata (for
/// [`read_view`], which finds tokens' records there).
static MEMORIES_KEY: u8 = 0;

fn memories_key() -> *const c_void {
    ptr::addr_of!(MEMORIES_KEY).cast()
}

/// The C function `caller(f, extra..., n, token1, token2)` (see the module doc): returns what
/// `f(extra..., view1 [, view2])` returns, the views being the tokens as light userdata (see
/// `token.rs`); the second token is ignored when `n` is 1. Making it also makes the views'
/// metatable (which must exist: else a conversion error) the state's metatable of light
/// userdata, and registers `memories` (the state's `LentMemories`, which must stay at its
/// address as long as the state lives) for [`read_view`].
pub(crate) fn caller(lua: &Lua, memories: *const LentMemories) -> LuaResult<Function> {
    // SAFETY: see the module doc; `lua_setmetatable` on a light userdata sets the type's
    // metatable, `lua_rawsetp` may allocate (under pcall), as may pushing a C closure.
    unsafe {
        lua.exec_raw::<Function>((), move |state| {
            if ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, key()) != ffi::LUA_TTABLE {
                ffi::lua_settop(state, 0);
                return;
            }
            ffi::lua_pushlightuserdata(state, memories.cast_mut().cast());
            ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, memories_key());
            ffi::lua_pushlightuserdata(state, ptr::null_mut());
            ffi::lua_rotate(state, -2, 1);
            ffi::lua_setmetatable(state, -2);
            ffi::lua_settop(state, 0);
            ffi::lua_pushcclosure(state, call_with_views, 0);
        })
    }
}

/// Raises `message` as a Lua error.
unsafe fn raise(state: *mut ffi::lua_State, message: &'static std::ffi::CStr) -> ! {
    unsafe {
        ffi::lua_pushstring(state, message.as_ptr());
        ffi::lua_error(state)
    }
}

unsafe extern "C-unwind" fn call_with_views(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let top = ffi::lua_gettop(state);
        // Index of the first number (`n`); `f` is at 1.
        let first = top - CALLER_NUMBERS + 1;
        if first < 2 {
            raise(state, c"view caller: bad arguments");
        }
        let integer = |idx: c_int| {
            let mut is_integer = 0;
            let value = ffi::lua_tointegerx(state, idx, &mut is_integer);
            (is_integer != 0).then_some(value)
        };
        // The tokens come from `LentBuffer::views` bit for bit; a forged one is a dead view.
        let tokens = match (integer(first), integer(first + 1), integer(first + 2)) {
            (Some(1), Some(one), _) => [Some(one), None],
            (Some(2), Some(one), Some(two)) => [Some(one), Some(two)],
            _ => raise(state, c"view caller: bad arguments"),
        };
        // The numbers are done with: the views take their place. Pushing a light userdata
        // allocates nothing: the stack has the room the numbers left.
        ffi::lua_settop(state, first - 1);
        for token in tokens.into_iter().flatten() {
            ffi::lua_pushlightuserdata(state, token as usize as *mut c_void);
        }
        ffi::lua_call(state, ffi::lua_gettop(state) - 1, ffi::LUA_MULTRET);
        ffi::lua_gettop(state)
    }
}

/// The views' `__index`: a C closure answering `view[i]` for an integer `i` on a valid view
/// straight from the bytes — a filter's `packet[10]`, the commonest operation on a packet —
/// and handing every other key, and every error, to `general` (mlua's function, which knows
/// methods, layout fields and the error messages). The bytes are read from `memories`, which
/// must stay at its address for as long as the state lives, and never be borrowed mutably
/// while Lua runs (it is the state's app data, changed only when a `LentBuffer` is made).
pub(crate) fn indexer(
    lua: &Lua,
    metatable: &Table,
    general: &Function,
    memories: *const LentMemories,
) -> LuaResult<Function> {
    fast_closure(lua, metatable, general, memories, index_view)
}

/// The views' `__len`, as [`indexer`] for `#view`: answered here for a valid view, by
/// `general` otherwise.
pub(crate) fn measurer(
    lua: &Lua,
    metatable: &Table,
    general: &Function,
    memories: *const LentMemories,
) -> LuaResult<Function> {
    fast_closure(lua, metatable, general, memories, measure_view)
}

/// `function` as a C closure with the upvalues [`fast_cell`] and the fallbacks read.
fn fast_closure(
    lua: &Lua,
    metatable: &Table,
    general: &Function,
    memories: *const LentMemories,
    function: ffi::lua_CFunction,
) -> LuaResult<Function> {
    // SAFETY: see the module doc; the closure's upvalues are the metatable, the general function
    // and a light userdata (pushing a C closure allocates, under pcall).
    unsafe {
        lua.exec_raw::<Function>((metatable, general), move |state| {
            ffi::lua_pushlightuserdata(state, memories.cast_mut().cast());
            ffi::lua_pushcclosure(state, function, 3);
        })
    }
}

unsafe extern "C-unwind" fn measure_view(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let len = fast_cell(state)
            .and_then(|(cell, memories)| std::panic::catch_unwind(|| memories.len(&cell)).ok().flatten());
        match len.and_then(|n| ffi::lua_Integer::try_from(n).ok()) {
            Some(n) => ffi::lua_pushinteger(state, n),
            None => {
                // Lua passes `#v` two arguments (the view twice); the general function takes one.
                ffi::lua_settop(state, 1);
                ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
                ffi::lua_insert(state, 1);
                ffi::lua_call(state, 1, 1);
            }
        }
        1
    }
}

/// Argument 1 as a view (our metatable is upvalue 1) with the state's `LentMemories` (upvalue
/// 3), if it is one.
unsafe fn fast_cell<'a>(state: *mut ffi::lua_State) -> Option<(ViewCell, &'a LentMemories)> {
    unsafe {
        // No `lua_checkstack`: Lua gives a C function LUA_MINSTACK (20) free slots, and the fast
        // paths use 2 at most (a metatable here, the answer after).
        // The state's `LentMemories`, alive and not borrowed mutably (see `indexer`).
        let memories =
            ffi::lua_touserdata(state, ffi::lua_upvalueindex(3)).cast::<LentMemories>().as_ref()?;
        // A light userdata reaches these only through the views' metatable, which is that
        // type's: no metatable to compare.
        let cell = if ffi::lua_type(state, 1) == ffi::LUA_TLIGHTUSERDATA {
            memories.token_cell(ffi::lua_touserdata(state, 1) as usize)?
        } else {
            cell_under(state, 1, ffi::lua_upvalueindex(1))?
        };
        Some((cell, memories))
    }
}

unsafe extern "C-unwind" fn index_view(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        if let Some(byte) = fast_byte(state) {
            match byte {
                Some(b) => ffi::lua_pushinteger(state, ffi::lua_Integer::from(b)),
                None => ffi::lua_pushnil(state),
            }
            return 1;
        }
        // Anything else: the general function, with the same two arguments. Its errors longjmp
        // over this frame, which holds nothing to drop.
        ffi::lua_settop(state, 2);
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
        ffi::lua_insert(state, 1);
        ffi::lua_call(state, 2, 1);
        1
    }
}

/// The answer of `view[i]` when argument 1 is a valid view and argument 2 an integer.
unsafe fn fast_byte(state: *mut ffi::lua_State) -> Option<Option<u8>> {
    unsafe {
        if ffi::lua_isinteger(state, 2) == 0 {
            return None;
        }
        let (cell, memories) = fast_cell(state)?;
        // 1-based; zero and negative indexes read past the end (nil on a valid view).
        let index = usize::try_from(ffi::lua_tointeger(state, 2)).ok().and_then(|i| i.checked_sub(1));
        let index = index.unwrap_or(usize::MAX);
        // Nothing in the lookup panics; should it, the general path answers instead of unwinding
        // through Lua.
        std::panic::catch_unwind(|| memories.byte(&cell, index)).ok().flatten()
    }
}
