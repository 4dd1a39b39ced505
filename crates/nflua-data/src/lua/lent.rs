//! Borrowed views: the memories lent to a state ([`LentBuffer`]), the views' metatable and the
//! function that makes the views of a hook or callback call.

use super::*;

/// The memories lent to one Lua state, by slot; in the state's app data, which mlua drops only
/// after closing the state, so every view (even one a `__close` handler touches while the state
/// closes) finds its memory.
pub(crate) struct LentMemories(pub(super) Vec<Data>);

impl LentMemories {
    /// Byte `index` (0-based) of the view `cell`: `Some(byte, or None past its end)`, `None`
    /// when the view is not valid.
    pub(crate) fn byte(&self, cell: &ViewCell, index: usize) -> Option<Option<u8>> {
        let memory = self.0.get(cell.slot())?;
        memory.byte_of(cell.generation(), cell.offset(), cell.len(), index).ok()
    }

    /// The length of the view `cell`, `None` when the view is not valid.
    pub(crate) fn len(&self, cell: &ViewCell) -> Option<usize> {
        // A read past the end checks the view's validity and reads nothing.
        self.byte(cell, usize::MAX).map(|_| cell.len())
    }
}

/// A buffer reused from call to call and handed to one Lua state as borrowed views: Lua objects
/// without finalizer or Rust value inside, which behave as `data` objects (see the module doc).
///
/// Per use: [`LentBuffer::refill`] with the bytes, [`LentBuffer::lend`] views of the returned
/// `Data` (or of its segments) to Lua, call Lua, [`LentBuffer::invalidate`]. A view then fails
/// with "data buffer is no longer valid" forever after, wherever a script stashed it, and so do
/// Rust clones of the returned `Data`. In steady state this allocates nothing in Rust; each view
/// is one small block on the Lua heap, freed by the collector's sweep.
///
/// The memory stays registered with the state until the state is closed, even if the
/// `LentBuffer` is dropped earlier; it keeps the capacity of the largest fill.
#[derive(Debug)]
pub struct LentBuffer {
    memory: Data,
    /// The memory's allocated bytes after the last fill (kept here so reading it takes no lock).
    capacity: AtomicUsize,
    slot: usize,
    /// Whether the views' metatable is known to exist in the state.
    view_type_ready: bool,
}

impl LentBuffer {
    /// A new, empty buffer whose views will live in `lua`. Use it with that state only.
    ///
    /// # Panics
    ///
    /// If `lua`'s app data is borrowed, i.e. when called from inside a Lua callback that holds an
    /// app data reference.
    pub fn new(lua: &Lua) -> LentBuffer {
        let memory = Data::with_size(0);
        let registered = lua.app_data_mut::<LentMemories>().map(|mut lent| {
            lent.0.push(memory.clone());
            lent.0.len() - 1
        });
        let slot = match registered {
            Some(slot) => slot,
            None => {
                lua.set_app_data(LentMemories(vec![memory.clone()]));
                0
            }
        };
        LentBuffer { memory, capacity: AtomicUsize::new(0), slot, view_type_ready: false }
    }

    /// Invalidates every view of the previous fill and fills the buffer with a copy of `bytes`,
    /// reusing its allocation; returns a view of all of it (no layout).
    pub fn refill(&self, bytes: &[u8]) -> Data {
        self.refill_parts(&[bytes])
    }

    /// [`LentBuffer::refill`] with the concatenation of `parts`.
    pub fn refill_parts(&self, parts: &[&[u8]]) -> Data {
        let (data, capacity) = self.memory.refill_parts(parts);
        self.capacity.store(capacity, Relaxed);
        data
    }

    /// Invalidates every view of the current fill, Lua objects and Rust clones alike; keeps the
    /// allocation for the next [`LentBuffer::refill`].
    pub fn invalidate(&self) {
        self.memory.retire();
    }

    /// Bytes the buffer holds allocated (the largest fill's, until [`LentBuffer::free`]).
    pub fn capacity(&self) -> usize {
        self.capacity.load(Relaxed)
    }

    /// Invalidates every view, as [`LentBuffer::invalidate`], and frees the allocation (the next
    /// fill makes a new one).
    pub fn free(&self) {
        self.memory.invalidate();
        self.capacity.store(0, Relaxed);
    }

    /// Borrowed views of `first` and, if given, `second` (views of this buffer, as for
    /// [`LentBuffer::lend`]), to be made inside a Lua call: calling the function [`view_caller`]
    /// returns with `(f, extra..., views)` calls `f(extra..., first_view [, second_view])`. This
    /// is the cheap way to hand views to a Lua function: no protected call and no mlua reference
    /// per view; a memory error making them is an error of that call.
    pub fn views(&mut self, lua: &Lua, first: &Data, second: Option<&Data>) -> LuaResult<LentViews> {
        let (generation, _, _) = first.parts();
        // Both of this buffer, and of the same fill: the views share one generation.
        let fits = |d: &Data| d.shares_memory_with(&self.memory) && d.parts().0 == generation;
        if !fits(first) || !second.is_none_or(fits) {
            return Err(LuaError::runtime("LentBuffer::views: not views of this buffer's fill"));
        }
        self.ready(lua)?;
        // Checked as cells: then every number fits a u32, hence an i64.
        let range = |d: &Data| {
            let (_, offset, len) = d.parts();
            cell(self.slot, generation, offset, len).map(|_| (offset as i64, len as i64))
        };
        let (offset1, len1) = range(first)?;
        let (n, (offset2, len2)) = match second {
            Some(second) => (2, range(second)?),
            None => (1, (0, 0)),
        };
        // The generation travels as a Lua integer, bit for bit.
        Ok((n, self.slot as i64, generation as i64, offset1, len1, offset2, len2))
    }

    /// Makes sure the state has the views' metatable.
    fn ready(&mut self, lua: &Lua) -> LuaResult<()> {
        if !self.view_type_ready {
            register_view_type(lua)?;
            self.view_type_ready = true;
        }
        Ok(())
    }

    /// A borrowed view of `data`, which must be a view of this buffer (from [`LentBuffer::refill`]
    /// or a segment of it), as a Lua object. Fails at the state's memory limit ("not enough
    /// memory"); the first call also makes the views' metatable, if the state has none yet.
    pub fn lend(&mut self, lua: &Lua, data: &Data) -> LuaResult<AnyUserData> {
        if !data.shares_memory_with(&self.memory) {
            return Err(LuaError::runtime("LentBuffer::lend: not a view of this buffer"));
        }
        self.ready(lua)?;
        let (generation, offset, len) = data.parts();
        view::create(lua, cell(self.slot, generation, offset, len)?)
    }
}

/// What [`LentBuffer::views`] gives, to pass last to the function of [`view_caller`]: the
/// number of views, the memory's slot and generation, and two (offset, length) pairs.
pub type LentViews = (i64, i64, i64, i64, i64, i64, i64);

/// The Lua function `caller(f, extra..., views)` that calls `f(extra..., views...)` with the
/// borrowed views [`LentBuffer::views`] describes, made inside the call. A C function: it adds
/// no VM instructions, but shows as a `[C]` frame in tracebacks below `f`. Only call it with
/// views from [`LentBuffer::views`] for this state.
pub fn view_caller(lua: &Lua) -> LuaResult<Function> {
    register_view_type(lua)?;
    view::caller(lua)
}

/// Makes the views' metatable of `lua`, unless it has one. Its functions resolve the view and call
/// the same functions as plain objects' methods.
pub(super) fn register_view_type(lua: &Lua) -> LuaResult<()> {
    if view::has_metatable(lua)? {
        return Ok(());
    }
    let (segment_fn, layout_fn) = method_functions(lua)?;
    let metatable = lua.create_table_with_capacity(0, 6)?;
    let index_fn = raising::function(lua, move |lua, (this, key): (MaybeView, Value)| {
        // Methods win, and are found even on an invalidated view (calling them raises).
        if let Some(method) = method(&key, &segment_fn, &layout_fn) {
            return Ok(method);
        }
        index(lua, &this_view(lua, this)?, &key)
    })?;
    let memories = lent_memories(lua);
    metatable.raw_set("__index", view::indexer(lua, &metatable, &index_fn, memories)?)?;
    let new_index_fn = raising::function(lua, |lua, (this, key, value): (MaybeView, Value, Value)| {
        new_index(lua, &this_view(lua, this)?, &key, &value)
    })?;
    metatable.raw_set("__newindex", new_index_fn)?;
    let len_fn = raising::function(lua, |lua, this: MaybeView| {
        this_view(lua, this)?.with_bytes(<[u8]>::len).map_err(lua_err)
    })?;
    metatable.raw_set("__len", view::measurer(lua, &metatable, &len_fn, lent_memories(lua))?)?;
    let tostring_fn = raising::function(lua, |lua, this: MaybeView| to_string(lua, &this_view(lua, this)?))?;
    metatable.raw_set("__tostring", tostring_fn)?;
    metatable.raw_set(MetaMethod::Type.name(), "data")?;
    metatable.raw_set("__metatable", false)?;
    view::register_metatable(lua, &metatable)
}

/// The address of the state's [`LentMemories`] (made empty if the state has none yet), for the
/// views' fast `__index`. Stable: app data lives boxed until the state is closed, and only the
/// `Vec` inside changes.
pub(super) fn lent_memories(lua: &Lua) -> *const LentMemories {
    if lua.app_data_ref::<LentMemories>().is_none() {
        lua.set_app_data(LentMemories(Vec::new()));
    }
    lua.app_data_ref::<LentMemories>().map_or(std::ptr::null(), |lent| std::ptr::from_ref(&*lent))
}
