//! The object `nf.getpacket()` returns: `packet:send([payload])` and `packet:close()`.
//!
//! A packet object holds no bytes, only the number of the hook call it came from: it reads the
//! packet from that call's buffer (so changes the script made through `frame` or `packet` are
//! sent too) and records the packet to emit in the call's outcome, which the daemon sends. Once
//! the call has returned, or the object was sent or closed, every method raises.
//!
//! The replacement packet counts against the state's memory until the call returns (see
//! `memory.rs`): `send` reserves its bytes, refused past `maxalloc` with "not enough memory".
//! Building it charges one instruction per byte read and written.
//!
//! One call yields at most one replacement packet: a second `send` in the same call (through
//! another object from `nf.getpacket`) raises instead of silently replacing the first.
//!
//! The methods are built with the sandbox's `wrap`, like every library function, so their errors
//! reach scripts as plain strings; that is why the type is registered per state with a method
//! table rather than through a static `UserData` impl.

use std::sync::Arc;

use mlua::{AnyUserData, Lua, MetaMethod, UserDataFields, UserDataRefMut, Value};

use super::{bad_argument, bytes_or_number, error, Lib};
use crate::hook::ETHERNET_HEADER_LEN;
use crate::state::Context;

/// A packet object's state on the Rust side.
pub(crate) struct PacketObject {
    /// The hook call this packet belongs to (see `State::begin_hook`).
    generation: u64,
    closed: bool,
}

/// Registers the packet type in this state's Lua (once, when `nf` is opened).
pub(crate) fn register(lib: &Lib) -> mlua::Result<()> {
    let methods = lib.lua.create_table_with_capacity(0, 2)?;
    let ctx = Arc::clone(lib.ctx);
    let send_fn =
        lib.function(move |lua, (this, payload): (Value, Value)| send(lua, &ctx, &this, &payload))?;
    methods.raw_set("send", send_fn)?;
    let ctx = Arc::clone(lib.ctx);
    methods.raw_set("close", lib.function(move |_, this: Value| close(&ctx, &this))?)?;
    lib.lua.register_userdata_type::<PacketObject>(|registry| {
        registry.add_meta_field(MetaMethod::Index, methods);
        registry.add_meta_field(MetaMethod::Type, "packet");
    })
}

/// A new packet object for hook call `generation`.
pub(crate) fn new(lua: &Lua, generation: u64) -> mlua::Result<AnyUserData> {
    lua.create_any_userdata(PacketObject { generation, closed: false })
}

/// `self` of a method: an open packet object of the running hook call.
fn open_packet(ctx: &Context, method: &str, this: &Value) -> mlua::Result<UserDataRefMut<PacketObject>> {
    let packet = match this {
        Value::UserData(ud) => ud.borrow_mut::<PacketObject>().ok(),
        _ => None,
    };
    let Some(packet) = packet else {
        return Err(bad_argument(1, method, "packet", this));
    };
    if packet.closed {
        return Err(error(format!("packet:{method}: packet is closed")));
    }
    let current = ctx.hook().as_ref().map(|call| call.generation);
    if current != Some(packet.generation) {
        return Err(error(format!("packet:{method}: packet is no longer valid (its hook call returned)")));
    }
    Ok(packet)
}

/// `packet:send([payload])`: records the packet (payload replaced when given) to be emitted
/// and closes the object. Returns true.
fn send(lua: &Lua, ctx: &Context, this: &Value, payload: &Value) -> mlua::Result<bool> {
    let mut packet = open_packet(ctx, "send", this)?;
    let payload = match payload {
        Value::Nil => None,
        other => Some(
            bytes_or_number(lua, other)
                .ok_or_else(|| bad_argument(2, "send", "string or data", other))?
                .map_err(|e| error(format!("packet:send: {e}")))?,
        ),
    };
    crate::limits::charge(lua, payload.as_ref().map_or(0, |p| p.len() as u64))?;
    let frame = match ctx.hook().as_ref() {
        Some(call) if call.replacement.is_some() => {
            return Err(error("packet:send: the packet was already sent in this hook call"))
        }
        Some(call) => call.frame.clone(),
        None => return Err(error("packet:send: packet is no longer valid (its hook call returned)")),
    };
    // Read the frame (and the payload), write the packet: about twice the frame's bytes.
    let work = frame.len().saturating_mul(2).saturating_add(payload.as_ref().map_or(0, Vec::len));
    crate::limits::charge(lua, u64::try_from(work).unwrap_or(u64::MAX))?;
    let replacement = frame
        .with_bytes(|frame| {
            let ip_packet = frame.get(ETHERNET_HEADER_LEN..).unwrap_or_default();
            match &payload {
                Some(payload) => nflua_packet::replace_payload(ip_packet, payload),
                None => Ok(ip_packet.to_vec()),
            }
        })
        .map_err(|e| error(format!("packet:send: {e}")))?
        .map_err(|e| error(format!("packet:send: {e}")))?;
    if !ctx.memory.try_reserve(lua, replacement.len()) {
        return Err(error(nflua_data::NO_MEMORY));
    }
    let len = replacement.len();
    match ctx.hook().as_mut() {
        // Released by `State::end_hook`, which takes the packet out of the call.
        Some(call) => call.replacement = Some(replacement),
        None => ctx.memory.release(len),
    }
    packet.closed = true;
    Ok(true)
}

/// `packet:close()`: discards the object without sending. Returns true.
fn close(ctx: &Context, this: &Value) -> mlua::Result<bool> {
    open_packet(ctx, "close", this)?.closed = true;
    Ok(true)
}
