//! The Lua a state sees: which standard libraries, which base functions are removed or replaced,
//! how `require` finds the built-in modules, and the memory and GC settings.
//!
//! - Opened: base, string, table, math, utf8, coroutine; `debug` only with the `d` flag (a debug
//!   state is trusted: `debug.sethook` can lift the instruction limit for a call, as in the
//!   original).
//! - Not there: `io`, `os`, `package` (so no `package.loadlib`), `dofile`, `loadfile`.
//! - `load` compiles text only (bytecode can break the VM's invariants).
//! - `print` writes to the daemon log (`tracing`, target `nflua::lua`, field `state`).
//! - `setmetatable` refuses a metatable with a `__gc` field: Lua 5.4 runs finalizers with hooks
//!   disabled, so a looping finalizer could never be stopped.
//! - `require(name)` knows only `nf`, `timer`, `data`, `json`, `base64`, `dissect`, each built on
//!   first use.
//! - Warnings (`warn`, and errors raised in `__gc` of debug states) go to the log; an error
//!   warning counts as an error of the state.
//!
//! `load` and `require` are defined by [`PRELUDE`], a few lines of Lua run once per state; it also
//! returns `wrap`, which makes every Rust function given to scripts (`print`, `setmetatable`, the
//! built-in modules) raise plain strings at the caller's position, as a C library function does,
//! instead of mlua's error userdata (see `lualib::Lib`).

use std::sync::Arc;

use mlua::state::{GcIncParams, GcMode};
use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table, Value};

use crate::coroutines;
use crate::costs;
use crate::limits::{self, Budget};
use crate::lualib::{self, Lib};
use crate::state::Context;
use crate::traceback;
use crate::StateConfig;

/// Lowest GC pause in percent, the original module's: start a new cycle as soon as the heap
/// outgrows what the last one left alive (Lua's default, 200, waits for it to double). Besides
/// keeping small heaps small, this is what lets finalizers keep up: userdata made by mlua have
/// finalizers, which Lua's emergency collection (on a failed allocation) does not run, and are
/// freed only by the cycle after the one that finalized them; with pause 200 a flood of DATA
/// messages ran a 64 KiB state out of memory when their buffers were such userdata. (They are
/// finalizer-free views now, see `hook.rs`; packet objects, timer handles and `data.new`
/// buffers still have finalizers, and this tuning was not revisited.)
///
/// Exactly 100 is costly, though: a cycle on a small heap finishes within one step and leaves
/// no debt, so the very next allocation starts the next full cycle. A hook call, with its two
/// buffers, took 5 µs, three quarters of it in the collector. Any slack fixes that: each state
/// gets [`gc_pause`], up to [`GC_PAUSE_MAX_SLACK`] more when its heap is small against its
/// limit.
pub const GC_PAUSE: i32 = 100;

/// Most the pause rises above [`GC_PAUSE`]: 200, Lua's own default, reached only by a state
/// with at least five times its heap free (see [`GC_SLACK_PER_FREE_UNIT`]). Each cycle marks
/// the whole live heap, so the collector's work per call falls with the slack: a hook reading
/// two bytes in a 1 MiB state ran 1,240 instructions of collection per call at pause 120 and
/// 580 at 200, of 6,950 and 6,280 in all (callgrind, `examples/hookprof.rs`).
pub const GC_PAUSE_MAX_SLACK: i32 = 100;

/// Pause points per unit of free room relative to the heap. Garbage grows the heap by up to
/// `pause - 100` percent before a cycle starts, and garbage with finalizers lives through one
/// more cycle, so about three times the slack must fit in the free room: the finalizer test
/// (`garbage_buffers_are_collected_in_time`, a 32 KiB state) fails from about 33 points per
/// unit. 20 leaves a margin.
const GC_SLACK_PER_FREE_UNIT: usize = 20;

/// The pause for a state using `used_bytes` of `limit_bytes` (rounded down to steps of 5, so it
/// does not change with every few bytes the heap moves). `used_bytes` counts garbage too, which
/// only makes the pause lower.
pub(crate) fn gc_pause(used_bytes: usize, limit_bytes: usize) -> i32 {
    let used = used_bytes.max(1);
    let free = limit_bytes.saturating_sub(used);
    let slack = free.saturating_mul(GC_SLACK_PER_FREE_UNIT) / used;
    let slack = i32::try_from(slack).unwrap_or(i32::MAX).min(GC_PAUSE_MAX_SLACK);
    GC_PAUSE + slack / 5 * 5
}

/// Sets the incremental collector's pause.
pub(crate) fn set_gc_pause(lua: &Lua, pause: i32) {
    lua.gc_set_mode(GcMode::Incremental(GcIncParams::default().pause(pause)));
}

/// Defines the replaced globals; receives the original functions and returns `wrap`. Runs once,
/// before any script, so the locals it captures cannot be touched by scripts.
const PRELUDE: &str = r##"
local raw_load, open_builtin, error, select, type = ...

-- Rust library functions answer (true, results...) or (false, message).
local function check(ok, ...)
  if ok then return ... end
  error((...), 2)
end

local function wrap(f)
  return function(...) return check(f(...)) end
end

function load(chunk, chunkname, mode, ...)
  local kind = type(chunk)
  if kind ~= "string" and kind ~= "function" then
    error("bad argument #1 to 'load' (string expected, got " .. kind .. ")", 2)
  end
  if select("#", ...) > 0 then return raw_load(chunk, chunkname, "t", ...) end
  return raw_load(chunk, chunkname, "t")
end

local loaded = {}
function require(name)
  local module = loaded[name]
  if module == nil then
    local ok, result = open_builtin(name, wrap)
    if not ok then error(result, 2) end
    module = result
    loaded[name] = module
  end
  return module
end

-- The original loaded its libraries as globals: `nf.netlink(...)` works without
-- `require`. Keep that, still loading each module only on first use.
local builtin = { nf = true, timer = true, data = true, json = true, base64 = true, dissect = true }
setmetatable(_G, { __index = function(globals, name)
  if builtin[name] then
    local module = require(name)
    rawset(globals, name, module)
    return module
  end
end })

return wrap
"##;

pub(crate) struct Sandbox {
    pub(crate) lua: Lua,
    pub(crate) xpcall: Function,
    pub(crate) on_error: Function,
}

#[allow(unsafe_code)] // mlua's name for opening the debug library
pub(crate) fn build(config: &StateConfig, ctx: &Arc<Context>, budget: &Arc<Budget>) -> mlua::Result<Sandbox> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
    let lua = if config.debug {
        // SAFETY: "unsafe" here means the debug library, which the operator asked for with the
        // `d` flag; `package` is not opened, so no C module can be loaded either way.
        unsafe { Lua::unsafe_new_with(libs | StdLib::DEBUG, LuaOptions::new()) }
    } else {
        Lua::new_with(libs, LuaOptions::new())?
    };
    // The limit applies from here on (usage so far counts too), so a limit too small for the
    // sandbox fails creation instead of leaving a state that cannot run anything.
    lua.set_memory_limit(config.max_alloc_bytes)?;
    set_gc_pause(&lua, GC_PAUSE);

    // Before the prelude, which captures `load` and `select`.
    costs::install(&lua)?;
    let globals = lua.globals();
    let xpcall: Function = globals.raw_get("xpcall")?;
    globals.raw_set("dofile", Value::Nil)?;
    globals.raw_set("loadfile", Value::Nil)?;
    let wrap: Function = lua.load(PRELUDE).set_name(format!("={}", traceback::PRELUDE_NAME)).call((
        globals.raw_get::<Function>("load")?,
        builtin_opener(&lua, ctx)?,
        globals.raw_get::<Function>("error")?,
        globals.raw_get::<Function>("select")?,
        globals.raw_get::<Function>("type")?,
    ))?;
    let lib = Lib::new(&lua, wrap, ctx);
    let tostring: Function = globals.raw_get("tostring")?;
    let state_name = ctx.name.clone();
    globals.raw_set(
        "print",
        lib.function(move |lua, args: MultiValue| print(lua, &state_name, &tostring, args))?,
    )?;
    globals.raw_set("setmetatable", lib.function(|_, args: MultiValue| setmetatable(args))?)?;
    install_warnings(&lua, ctx);
    coroutines::install(&lua)?;
    crate::patterns::install(&lua)?;
    // Last: the prelude is ours and must not eat into (or fail on) a tiny `maxruns`.
    limits::install(&lua, budget).map_err(|_| {
        mlua::Error::RuntimeError(
            "this Lua's thread layout is not Lua 5.4's: instruction accounting is not possible".into(),
        )
    })?;

    let errors = Arc::clone(ctx);
    let on_error = lua.create_function(move |lua, err: Value| {
        traceback::on_error(lua, err, &errors.error_text);
        Ok(())
    })?;
    Ok(Sandbox { lua, xpcall, on_error })
}

/// `print(...)`: one log line, values separated by tabs as the stand-alone interpreter prints.
/// Charges the bytes of its string arguments (the rest are short, or converted by Lua code).
fn print(lua: &Lua, state: &str, tostring: &Function, args: MultiValue) -> mlua::Result<()> {
    let bytes =
        args.iter().map(|v| if let Value::String(s) = v { s.as_bytes().len() as u64 } else { 0 }).sum();
    limits::charge(lua, bytes)?;
    let mut line = String::new();
    for (i, value) in args.into_iter().enumerate() {
        if i > 0 {
            line.push('\t');
        }
        match value {
            Value::String(s) => line.push_str(&s.to_string_lossy()),
            Value::Integer(n) => line.push_str(&n.to_string()),
            other => {
                // The original `tostring` keeps Lua's number format and `__tostring`/`__name`.
                let text: mlua::LuaString = tostring.call(other)?;
                line.push_str(&text.to_string_lossy());
            }
        }
    }
    tracing::info!(target: "nflua::lua", state = %state, "{line}");
    Ok(())
}

/// `setmetatable(t, mt)` with the base library's checks and messages, refusing `__gc`.
fn setmetatable(args: MultiValue) -> mlua::Result<Table> {
    let table = match args.front() {
        Some(Value::Table(t)) => t.clone(),
        other => {
            let got = other.map_or("no value", Value::type_name);
            return Err(lualib::error(format!(
                "bad argument #1 to 'setmetatable' (table expected, got {got})"
            )));
        }
    };
    let metatable = match args.get(1) {
        Some(Value::Nil) => None,
        Some(Value::Table(mt)) => Some(mt.clone()),
        _ => return Err(lualib::error("bad argument #2 to 'setmetatable' (nil or table expected)")),
    };
    if let Some(mt) = &metatable {
        if !mt.raw_get::<Value>("__gc")?.is_nil() {
            return Err(lualib::error(
                "setmetatable: __gc metamethods are not allowed (finalizers cannot be interrupted)",
            ));
        }
    }
    if let Some(old) = table.metatable() {
        if !old.raw_get::<Value>("__metatable")?.is_nil() {
            return Err(lualib::error("cannot change a protected metatable"));
        }
    }
    table.set_metatable(metatable)?;
    Ok(table)
}

/// `open_builtin(name, wrap)` → `true, module` or `false, message`; the prelude's `require`
/// caches what it returns.
fn builtin_opener(lua: &Lua, ctx: &Arc<Context>) -> mlua::Result<Function> {
    let ctx = Arc::clone(ctx);
    lua.create_function(move |lua, (name, wrap): (Value, Function)| {
        let name = match &name {
            Value::String(s) => s.to_string_lossy(),
            Value::Integer(_) | Value::Number(_) => name.to_string()?,
            other => {
                let message = format!(
                    "bad argument #1 to 'require' (string expected, got {})",
                    crate::lualib::type_name(other)
                );
                return Ok((false, Value::String(lua.create_string(message)?)));
            }
        };
        let lib = Lib::new(lua, wrap, &ctx);
        match lualib::open(&lib, &name) {
            Ok(Some(module)) => Ok((true, Value::Table(module))),
            Ok(None) => Ok((false, Value::String(lua.create_string(format!("module '{name}' not found"))?))),
            Err(e) => Ok((false, Value::String(lua.create_string(traceback::error_message(&e))?))),
        }
    })
}

fn install_warnings(lua: &Lua, ctx: &Arc<Context>) {
    let ctx = Arc::clone(ctx);
    lua.set_warning_function(move |_, piece, incomplete| {
        let mut pending = ctx.warning.lock().unwrap_or_else(|e| e.into_inner());
        pending.push_str(piece);
        if incomplete {
            return Ok(());
        }
        let message = std::mem::take(&mut *pending);
        if message.starts_with('@') {
            // Control messages ("@on", "@off") of the stand-alone interpreter; the log is
            // always on.
        } else if message.starts_with("error in ") {
            ctx.count_error();
            tracing::warn!(state = %ctx.name, "{message}");
        } else {
            tracing::info!(target: "nflua::lua", state = %ctx.name, warning = true, "{message}");
        }
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_grows_with_free_room() {
        // A fresh state in the smallest limit, and a full one: the original's pause.
        assert_eq!(gc_pause(30_000, 32_768), 100);
        assert_eq!(gc_pause(40_000, 32_768), 100);
        // 64 KiB default with the libraries loaded (about 45 KiB); a fresh state in 32 KiB.
        assert_eq!(gc_pause(45_000, 65_536), 105);
        assert_eq!(gc_pause(20_000, 32_768), 110);
        // More room, more slack, up to Lua's default.
        assert_eq!(gc_pause(45_000, 200_000), 165);
        assert_eq!(gc_pause(45_000, 1 << 20), 200);
        assert_eq!(gc_pause(0, usize::MAX), 200);
    }
}
