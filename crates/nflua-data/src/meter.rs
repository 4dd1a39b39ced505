//! What a host counts for the buffers a Lua state holds and for the work its `data` functions
//! do: an optional [`Meter`] in the state's app data.
//!
//! `data.new` buffers live on the Rust heap, outside the Lua allocator, and copying or filling
//! one runs no VM instruction. A host that limits its states (the engine) installs a meter with
//! [`set_meter`]; then every buffer asks it to [`Meter::reserve`] its bytes before they are
//! allocated, gives them back with [`Meter::release`] when the memory is freed (the last view
//! collected, or the buffer invalidated), and every function whose work grows with its
//! arguments [`Meter::charge`]s that work first. Without a meter (the stock interpreter's
//! module) nothing is counted and nothing changes.
//!
//! Cost model (one unit per byte produced, copied or scanned, per layout entry parsed):
//!
//! | call                                  | charged                          |
//! |---------------------------------------|----------------------------------|
//! | `data.new(n)` / `data.new(s)` / `data.new{...}` | `n` / `#s` / `#t` (bytes filled) |
//! | `tostring(d)`                         | `#d` (bytes copied into the string) |
//! | `d.f` / `d.f = s` on a string field   | the field's bytes                |
//! | `d:layout{...}`, `data.layout{...}`   | one per entry of the table       |
//! | `d[i]`, `#d`, `d:segment(...)`, integer fields | nothing (constant work, counted as the VM instruction that called them) |
//!
//! A buffer the state cannot hold is refused with Lua's memory error text before any work is
//! charged, so `data.new(n)` past the memory limit says "not enough memory" whatever the
//! instruction budget.

use std::fmt;
use std::sync::Arc;

use mlua::{Lua, Result as LuaResult};

/// Lua's own text for a failed allocation, which a refused reservation raises too.
pub const NO_MEMORY: &str = "not enough memory";

/// A host's accounting of one Lua state (see the module doc).
pub trait Meter: Send + Sync {
    /// Takes `bytes` more of the state's memory for a buffer about to be allocated; `false` when
    /// the state cannot hold them (the buffer is then not made).
    fn reserve(&self, lua: &Lua, bytes: usize) -> bool;

    /// Gives back `bytes` reserved earlier. Called when the memory is freed, which may happen
    /// inside the Lua collector (a finalizer) or on another thread: it must not touch the Lua
    /// state, only its own atomics.
    fn release(&self, bytes: usize);

    /// Charges `work` units (see the module doc) to the running entry; an error (e.g. the
    /// instruction limit's) stops the function before it does the work.
    fn charge(&self, lua: &Lua, work: u64) -> LuaResult<()>;
}

/// The meter in a state's app data.
struct Installed(Arc<dyn Meter>);

/// Makes `meter` count the buffers and the work of `lua`'s `data` functions from now on.
/// Buffers made before keep being uncounted.
pub fn set_meter(lua: &Lua, meter: Arc<dyn Meter>) {
    lua.set_app_data(Installed(meter));
}

/// The state's meter, if its host installed one. Cloned out, so no app data borrow is held while
/// it runs.
fn meter_of(lua: &Lua) -> Option<Arc<dyn Meter>> {
    lua.app_data_ref::<Installed>().map(|m| Arc::clone(&m.0))
}

/// Bytes a buffer holds against its state's meter; given back when dropped.
pub(crate) struct Reservation {
    meter: Arc<dyn Meter>,
    bytes: usize,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation").field("bytes", &self.bytes).finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.meter.release(self.bytes);
    }
}

/// Reserves `bytes` for a new buffer of `lua`: `Ok(None)` without a meter, an error with
/// [`NO_MEMORY`] when refused.
pub(crate) fn reserve(lua: &Lua, bytes: usize) -> Result<Option<Reservation>, &'static str> {
    let Some(meter) = meter_of(lua) else { return Ok(None) };
    if meter.reserve(lua, bytes) {
        Ok(Some(Reservation { meter, bytes }))
    } else {
        Err(NO_MEMORY)
    }
}

/// Charges `work` units to the running entry of `lua`, if it has a meter.
pub(crate) fn charge(lua: &Lua, work: usize) -> LuaResult<()> {
    if work == 0 {
        return Ok(());
    }
    match meter_of(lua) {
        Some(meter) => meter.charge(lua, u64::try_from(work).unwrap_or(u64::MAX)),
        None => Ok(()),
    }
}
