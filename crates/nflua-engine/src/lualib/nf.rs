//! `nf`: talking to userspace (`nf.netlink`), the clock (`nf.time`), and the packet functions.
//!
//! `nf.reply`, `nf.getpacket`, `nf.connid` and `nf.hotdrop` act on the packet of the running
//! hook call, which `hook::call` puts in the state's `Context` for the duration of the call;
//! anywhere else (execute, callbacks, timers) they raise "not available outside a packet hook".
//! They lock the hook context only to read or record a field, never while Lua runs or
//! allocates.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use mlua::{AnyUserData, Integer, Lua, Table, Value};
use nflua_data::Data;

use super::{bad_argument, bytes_or_number, check_integer, error, opt_integer, packet, Lib};
use crate::hook::{HookCall, HookMode, ETHERNET_HEADER_LEN};
use crate::limits::charge;
use crate::state::Context;
use crate::Clock;
use crate::DATA_MAX_SIZE;

pub(crate) fn open(lib: &Lib) -> mlua::Result<Table> {
    let nf = lib.lua.create_table_with_capacity(0, 6)?;
    let ctx = Arc::clone(lib.ctx);
    // As the original module: `luaL_checkinteger` for the port, `luaL_optinteger` for the group
    // (nil or absent meaning none; its test suite calls `nf.netlink(pid, nil, data)`).
    let netlink_fn = lib.function(move |lua, (port, groups, payload): (Value, Value, Value)| {
        let port = check_integer(lua, &port, 1, "netlink")?;
        let groups = opt_integer(lua, &groups, 2, "netlink", 0)?;
        netlink(lua, &ctx, port, groups, &payload)
    })?;
    nf.raw_set("netlink", netlink_fn)?;
    let ctx = Arc::clone(lib.ctx);
    nf.raw_set("time", lib.function(move |_, ()| Ok(time(&ctx.clock)))?)?;

    packet::register(lib)?;
    let ctx = Arc::clone(lib.ctx);
    let reply_fn =
        lib.function(move |lua, (kind, message): (Value, Value)| reply(lua, &ctx, &kind, &message))?;
    nf.raw_set("reply", reply_fn)?;
    let ctx = Arc::clone(lib.ctx);
    nf.raw_set("getpacket", lib.function(move |lua, ()| getpacket(lua, &ctx))?)?;
    let ctx = Arc::clone(lib.ctx);
    nf.raw_set("connid", lib.function(move |_, ()| connid(&ctx))?)?;
    let ctx = Arc::clone(lib.ctx);
    nf.raw_set("conntrack", lib.function(move |lua, ()| conntrack(lua, &ctx))?)?;
    let ctx = Arc::clone(lib.ctx);
    nf.raw_set("conntrack_delete", lib.function(move |_, ()| conntrack_delete(&ctx))?)?;
    let ctx = Arc::clone(lib.ctx);
    nf.raw_set("flow", lib.function(move |lua, ()| flow(lua, &ctx))?)?;
    let ctx = Arc::clone(lib.ctx);
    nf.raw_set("hotdrop", lib.function(move |_, drop: Value| hotdrop(&ctx, &drop))?)?;
    Ok(nf)
}

/// Runs `f` on the running hook call, or raises for `nf.<function>` outside hooks. `f` runs with
/// the hook context locked: it must not touch Lua.
fn with_hook<R>(
    ctx: &Context,
    function: &str,
    f: impl FnOnce(&mut HookCall) -> mlua::Result<R>,
) -> mlua::Result<R> {
    match ctx.hook().as_mut() {
        Some(call) => f(call),
        None => Err(error(format!("nf.{function}: not available outside a packet hook"))),
    }
}

/// `nf.reply(type, message)`: a TCP (`type` starting with "t") or UDP ("u") packet answering the
/// current packet's sender with `message`, sent through the sink. Returns true.
fn reply(lua: &Lua, ctx: &Context, kind: &Value, message: &Value) -> mlua::Result<bool> {
    let frame = with_hook(ctx, "reply", |call| Ok(call.frame.clone()))?;
    let build = match kind {
        Value::String(s) => match s.as_bytes().first() {
            Some(b't') => nflua_packet::tcp_reply,
            Some(b'u') => nflua_packet::udp_reply,
            _ => {
                return Err(error(format!(
                    "nf.reply: type must start with 't' (TCP) or 'u' (UDP), got '{}'",
                    s.to_string_lossy()
                )))
            }
        },
        other => return Err(bad_argument(1, "reply", "string", other)),
    };
    let message = bytes_or_number(lua, message)
        .ok_or_else(|| bad_argument(2, "reply", "string or data", message))?
        .map_err(|e| error(format!("nf.reply: {e}")))?;
    charge(lua, message.len() as u64)?;
    let packet = frame
        .with_bytes(|frame| build(frame.get(ETHERNET_HEADER_LEN..).unwrap_or_default(), &message))
        .map_err(|e| error(format!("nf.reply: {e}")))?
        .map_err(|e| error(format!("nf.reply: {e}")))?;
    ctx.sink.send_packet(&packet).map_err(|e| error(format!("nf.reply: {e}")))?;
    Ok(true)
}

/// `nf.getpacket()`: the current packet as an object for `packet:send` (target mode only).
fn getpacket(lua: &Lua, ctx: &Context) -> mlua::Result<AnyUserData> {
    let generation = with_hook(ctx, "getpacket", |call| match call.mode {
        HookMode::Target => Ok(call.generation),
        HookMode::Match => Err(error("nf.getpacket: only in target mode")),
    })?;
    packet::new(lua, generation)
}

/// `nf.connid()`: the conntrack id, or nil for an untracked packet. Where the queue gives no
/// conntrack ids the daemon derives one from the connection's addresses and ports, the same
/// both ways and for every packet; the kernel's id (`nf.conntrack().id`) is not used for it,
/// because a connection's first packet has no entry ctnetlink can find while it is queued
/// (it is confirmed when the packet leaves the hook), and one connection must not get two ids.
fn connid(ctx: &Context) -> mlua::Result<Option<Integer>> {
    with_hook(ctx, "connid", |call| Ok(call.conntrack_id.map(Integer::from)))
}

/// The IP packet of the running hook call, copied out (the sink's call must not run under the
/// buffer's lock: Lua is not touched, but the sink may block on the kernel).
fn hook_ip_packet(ctx: &Context, function: &str) -> mlua::Result<Vec<u8>> {
    let frame = with_hook(ctx, function, |call| Ok(call.frame.clone()))?;
    frame
        .with_bytes(|f| f.get(ETHERNET_HEADER_LEN..).unwrap_or_default().to_vec())
        .map_err(|e| error(format!("nf.{function}: {e}")))
}

/// TCP state names by conntrack's number.
const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

/// `nf.conntrack()`: the packet's conntrack entry read over ctnetlink (`id`, `status`, `mark`,
/// `timeout`, `state` for TCP, `packets`/`bytes` each way when counted), or nil when untracked.
fn conntrack(lua: &Lua, ctx: &Context) -> mlua::Result<Option<mlua::Table>> {
    let packet = hook_ip_packet(ctx, "conntrack")?;
    let Some(e) = ctx.sink.conntrack_lookup(&packet).map_err(|e| error(format!("nf.conntrack: {e}")))? else {
        return Ok(None);
    };
    let t = lua.create_table_with_capacity(0, 9)?;
    t.raw_set("id", e.id)?;
    t.raw_set("status", e.status)?;
    t.raw_set("mark", e.mark)?;
    t.raw_set("timeout", e.timeout)?;
    if let Some(state) = e.tcp_state {
        t.raw_set("state", TCP_STATES.get(usize::from(state)).copied().unwrap_or("UNKNOWN"))?;
    }
    if let Some((packets, bytes)) = e.original {
        t.raw_set("packets_original", packets)?;
        t.raw_set("bytes_original", bytes)?;
    }
    if let Some((packets, bytes)) = e.reply {
        t.raw_set("packets_reply", packets)?;
        t.raw_set("bytes_reply", bytes)?;
    }
    Ok(Some(t))
}

/// `nf.conntrack_delete()`: deletes the packet's conntrack entry; false when there was none.
fn conntrack_delete(ctx: &Context) -> mlua::Result<bool> {
    let packet = hook_ip_packet(ctx, "conntrack_delete")?;
    ctx.sink.conntrack_delete(&packet).map_err(|e| error(format!("nf.conntrack_delete: {e}")))
}

/// `nf.flow()` in a stream hook: the connection (`id`, `direction` "original" or "reply",
/// `client`, `client_port`, `server`, `server_port`); nil in a packet hook.
fn flow(lua: &Lua, ctx: &Context) -> mlua::Result<Option<mlua::Table>> {
    let Some(info) = with_hook(ctx, "flow", |call| Ok(call.flow.clone()))? else {
        return Ok(None);
    };
    let t = lua.create_table_with_capacity(0, 6)?;
    t.raw_set("id", info.id)?;
    t.raw_set("direction", info.direction)?;
    t.raw_set("client", info.client.0.to_string())?;
    t.raw_set("client_port", info.client.1)?;
    t.raw_set("server", info.server.0.to_string())?;
    t.raw_set("server_port", info.server.1)?;
    Ok(Some(t))
}

/// `nf.hotdrop(drop)`: whether to drop the packet whatever the match result (match mode only).
fn hotdrop(ctx: &Context, drop: &Value) -> mlua::Result<()> {
    with_hook(ctx, "hotdrop", |call| match (call.mode, drop) {
        (HookMode::Match, Value::Boolean(drop)) => {
            call.hotdrop = *drop;
            Ok(())
        }
        (HookMode::Match, other) => Err(bad_argument(1, "hotdrop", "boolean", other)),
        (HookMode::Target, _) => Err(error("nf.hotdrop: only in match mode")),
    })
}

/// `nf.netlink(port, groups, payload)`: one DATA message from this state; returns the bytes sent.
fn netlink(lua: &Lua, ctx: &Context, port: Integer, groups: Integer, payload: &Value) -> mlua::Result<usize> {
    // Old C bindings report automatic port ids (bit 31 set) as negative numbers: take the
    // integer modulo 2^32, which is what the truncating cast does.
    let port = port as u32;
    let groups = groups as u32;
    match payload {
        Value::String(s) => {
            check_size(s.as_bytes().len())?;
            charge(lua, s.as_bytes().len() as u64)?;
            send(ctx, port, groups, &s.as_bytes())
        }
        Value::UserData(_) | Value::LightUserData(_) => {
            // A plain data object or a borrowed view (the buffers of hooks and callbacks, which
            // are light userdata).
            let data = Data::from_lua_value(lua, payload).ok_or_else(|| bad_payload(payload))?;
            check_size(data.len())?;
            charge(lua, data.len() as u64)?;
            let bytes = data.to_vec().map_err(|e| error(format!("nf.netlink: {e}")))?;
            send(ctx, port, groups, &bytes)
        }
        other => Err(bad_payload(other)),
    }
}

fn send(ctx: &Context, port: u32, groups: u32, payload: &[u8]) -> mlua::Result<usize> {
    check_size(payload.len())?;
    let seq = ctx.netlink_seq.fetch_add(1, Relaxed);
    ctx.sink.send_data(&ctx.name, seq, port, groups, payload).map_err(|e| error(format!("nf.netlink: {e}")))
}

fn check_size(len: usize) -> mlua::Result<()> {
    if len > DATA_MAX_SIZE {
        return Err(error(format!(
            "nf.netlink: payload of {len} bytes exceeds the maximum of {DATA_MAX_SIZE}"
        )));
    }
    Ok(())
}

fn bad_payload(value: &Value) -> mlua::Error {
    error(format!("nf.netlink: payload must be a string or a data object, got {}", super::type_name(value)))
}

/// `nf.time()` → seconds since the epoch, milliseconds within the second.
fn time(clock: &Clock) -> (i64, i64) {
    let now = clock.wall();
    (i64::try_from(now.as_secs()).unwrap_or(i64::MAX), i64::from(now.subsec_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_seconds_and_milliseconds() {
        let (secs, millis) = time(&Clock::System);
        assert!(secs > 1_600_000_000);
        assert!((0..1000).contains(&millis));
    }

    #[test]
    fn size_limit_is_inclusive() {
        assert!(check_size(DATA_MAX_SIZE).is_ok());
        assert!(check_size(DATA_MAX_SIZE + 1).is_err());
    }
}
