//! `timer.create(msecs, callback)` → timer; `timer.destroy(timer)` → true if it cancelled a
//! pending timer, false if the timer had already fired or been destroyed (harmless either way).
//!
//! Timers are one-shot, as the original's: the callback runs once, with no arguments, after
//! `msecs` milliseconds (an integer ≥ 0, or a string Lua converts to one; 0 means "on the timer thread's next pass"), under the
//! state's limits like any entry. A callback may create timers, which is how a script repeats
//! something. The callback lives in the state's registry until the timer fires or is destroyed,
//! so it counts against the state's memory, as does the timer's entry in the engine's queue
//! ([`TIMER_BYTES`], reserved by `create` and given back when the timer fires or is destroyed);
//! a state may hold [`MAX_TIMERS_PER_STATE`] pending timers. The timer object itself is only a handle: dropping it does not cancel the timer.

use std::sync::Arc;
use std::time::Duration;

use mlua::{AnyUserData, Lua, MetaMethod, Table, UserData, UserDataFields, Value};

use super::{bad_argument, check_integer, error, Lib};
use crate::memory::TIMER_BYTES;
use crate::state::Context;
use crate::timers::{Pending, MAX_TIMERS_PER_STATE};

/// The Lua timer object: the id of its entry in the engine's timer queue.
struct TimerHandle {
    /// `None` only while `create` is still scheduling it.
    id: Option<u64>,
}

impl UserData for TimerHandle {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_meta_field(MetaMethod::Type, "timer");
    }
}

pub(crate) fn open(lib: &Lib) -> mlua::Result<Table> {
    let timer = lib.lua.create_table_with_capacity(0, 2)?;
    let ctx = Arc::clone(lib.ctx);
    let create_fn =
        lib.function(move |lua, (msecs, callback): (Value, Value)| create(lua, &ctx, &msecs, callback))?;
    timer.raw_set("create", create_fn)?;
    let ctx = Arc::clone(lib.ctx);
    timer.raw_set("destroy", lib.function(move |lua, handle: Value| destroy(lua, &ctx, &handle))?)?;
    Ok(timer)
}

fn create(lua: &Lua, ctx: &Context, msecs: &Value, callback: Value) -> mlua::Result<AnyUserData> {
    let delay_ms = check_integer(lua, msecs, 1, "create")?;
    let delay_ms = u64::try_from(delay_ms).map_err(|_| error("timer.create: msecs must not be negative"))?;
    let deadline = ctx
        .clock
        .now()
        .checked_add(Duration::from_millis(delay_ms))
        .ok_or_else(|| error(format!("timer.create: {delay_ms} ms is too far in the future")))?;
    let Value::Function(callback) = callback else {
        return Err(bad_argument(2, "create", "function", &callback));
    };
    // Everything that allocates in Lua comes before scheduling, so a memory error leaves no
    // timer behind.
    let handle = lua.create_userdata(TimerHandle { id: None })?;
    let key = lua.create_registry_value(callback)?;
    if !ctx.memory.try_reserve(lua, TIMER_BYTES) {
        let _ = lua.remove_registry_value(key);
        return Err(error(nflua_data::NO_MEMORY));
    }
    let timer = Pending { state_id: ctx.id, state_name: Arc::clone(&ctx.name), callback: key };
    match ctx.timers.schedule(deadline, timer) {
        Ok(id) => {
            handle.borrow_mut::<TimerHandle>()?.id = Some(id);
            Ok(handle)
        }
        Err(timer) => {
            ctx.memory.release(TIMER_BYTES);
            let _ = lua.remove_registry_value(timer.callback);
            Err(error(format!("timer.create: too many timers (max {MAX_TIMERS_PER_STATE})")))
        }
    }
}

fn destroy(lua: &Lua, ctx: &Context, handle: &Value) -> mlua::Result<bool> {
    let id = match handle {
        Value::UserData(ud) => ud.borrow::<TimerHandle>().ok().map(|t| t.id),
        _ => None,
    };
    let Some(id) = id else {
        return Err(bad_argument(1, "destroy", "timer", handle));
    };
    match id.and_then(|id| ctx.timers.cancel(ctx.id, id)) {
        Some(callback) => {
            ctx.memory.release(TIMER_BYTES);
            let _ = lua.remove_registry_value(callback);
            Ok(true)
        }
        None => Ok(false),
    }
}
