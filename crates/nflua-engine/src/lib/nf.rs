//! `nf`: talking to userspace (`nf.netlink`), the clock (`nf.time`), and the packet functions.
//!
//! `nf.reply`, `nf.getpacket`, `nf.connid` and `nf.hotdrop` act on the packet a hook is
//! handling; until packet hooks exist they always raise. The packet path will put the packet of
//! the running entry into the state's `Context`, where these functions will find it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mlua::{Integer, MultiValue, Table, Value};
use nflua_data::Data;

use super::{error, Lib};
use crate::state::Context;
use crate::DATA_MAX_SIZE;

pub(crate) fn open(lib: &Lib) -> mlua::Result<Table> {
    let nf = lib.lua.create_table_with_capacity(0, 6)?;
    let ctx = Arc::clone(lib.ctx);
    let netlink_fn = lib.function(
        move |_, (port, groups, payload): (Integer, Integer, Value)| {
            netlink(&ctx, port, groups, &payload)
        },
    )?;
    nf.raw_set("netlink", netlink_fn)?;
    nf.raw_set("time", lib.function(|_, ()| Ok(time()))?)?;
    for name in ["reply", "getpacket", "connid", "hotdrop"] {
        let outside_hook = lib.function(move |_, _: MultiValue| -> mlua::Result<()> {
            Err(error(format!(
                "nf.{name}: not available outside a packet hook"
            )))
        })?;
        nf.raw_set(name, outside_hook)?;
    }
    Ok(nf)
}

/// `nf.netlink(port, groups, payload)`: one DATA message from this state; returns the bytes sent.
fn netlink(ctx: &Context, port: Integer, groups: Integer, payload: &Value) -> mlua::Result<usize> {
    // Old C bindings report automatic port ids (bit 31 set) as negative numbers: take the
    // integer modulo 2^32, which is what the truncating cast does.
    let port = port as u32;
    let groups = groups as u32;
    match payload {
        Value::String(s) => send(ctx, port, groups, &s.as_bytes()),
        Value::UserData(ud) => {
            let data = ud
                .borrow::<Data>()
                .map_err(|_| bad_payload(payload))?
                .clone();
            check_size(data.len())?;
            let bytes = data
                .to_vec()
                .map_err(|e| error(format!("nf.netlink: {e}")))?;
            send(ctx, port, groups, &bytes)
        }
        other => Err(bad_payload(other)),
    }
}

fn send(ctx: &Context, port: u32, groups: u32, payload: &[u8]) -> mlua::Result<usize> {
    check_size(payload.len())?;
    let seq = ctx.netlink_seq.fetch_add(1, Relaxed);
    ctx.sink
        .send_data(&ctx.name, seq, port, groups, payload)
        .map_err(|e| error(format!("nf.netlink: {e}")))
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
    error(format!(
        "nf.netlink: payload must be a string or a data object, got {}",
        value.type_name()
    ))
}

/// `nf.time()` → seconds since the epoch, milliseconds within the second.
fn time() -> (i64, i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        i64::from(now.subsec_millis()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_seconds_and_milliseconds() {
        let (secs, millis) = time();
        assert!(secs > 1_600_000_000);
        assert!((0..1000).contains(&millis));
    }

    #[test]
    fn size_limit_is_inclusive() {
        assert!(check_size(DATA_MAX_SIZE).is_ok());
        assert!(check_size(DATA_MAX_SIZE + 1).is_err());
    }
}
