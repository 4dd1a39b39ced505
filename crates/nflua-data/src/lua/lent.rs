//! Borrowed views: the memories lent to a state ([`LentBuffer`]), the views' metatable and the
//! function that makes the views of a hook or callback call.

use super::*;

/// The memories lent to one Lua state, by slot; in the state's app data, which mlua drops only
/// after closing the state, so every view (even one a `__close` handler touches while the state
/// closes) finds its memory.
pub(crate) struct LentMemories(pub(super) Vec<LentSlot>);

/// One lent memory and what its tokens cover in the current call (`token.rs`).
pub(crate) struct LentSlot {
    pub(super) memory: Data,
    pub(super) records: Arc<Records>,
}

impl LentMemories {
    /// Byte `index` (0-based) of the view `cell`: `Some(byte, or None past its end)`, `None`
    /// when the view is not valid.
    pub(crate) fn byte(&self, cell: &ViewCell, index: usize) -> Option<Option<u8>> {
        let memory = &self.0.get(cell.slot())?.memory;
        memory.byte_of(cell.generation(), cell.offset(), cell.len(), index).ok()
    }

    /// The length of the view `cell`, `None` when the view is not valid.
    pub(crate) fn len(&self, cell: &ViewCell) -> Option<usize> {
        // A read past the end checks the view's validity and reads nothing.
        self.byte(cell, usize::MAX).map(|_| cell.len())
    }

    /// The cell a token stands for (dead if the token is of an earlier call); `None` if the
    /// number is not a token of this state.
    pub(crate) fn token_cell(&self, token: usize) -> Option<ViewCell> {
        let (slot, view, generation) = token::decode(token)?;
        self.0.get(slot)?.records.cell(slot, view, generation)
    }

    /// The records of the memory in `slot`.
    pub(super) fn records(&self, slot: usize) -> Option<&Records> {
        self.0.get(slot).map(|s| &*s.records)
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
    /// What this memory's tokens cover, shared with the state's `LentMemories`.
    records: Arc<Records>,
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
        let records = Arc::new(Records::default());
        let lent = || LentSlot { memory: memory.clone(), records: Arc::clone(&records) };
        let registered = lua.app_data_mut::<LentMemories>().map(|mut memories| {
            memories.0.push(lent());
            memories.0.len() - 1
        });
        let slot = match registered {
            Some(slot) => slot,
            None => {
                lua.set_app_data(LentMemories(vec![lent()]));
                0
            }
        };
        LentBuffer { memory, records, capacity: AtomicUsize::new(0), slot, view_type_ready: false }
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
    /// is the cheap way to hand views to a Lua function: they are tokens (light userdata, see
    /// `token.rs`), so neither Rust nor Lua allocates anything for them. Fails for a buffer
    /// made after the state's first 4096.
    pub fn views(&mut self, lua: &Lua, first: &Data, second: Option<&Data>) -> LuaResult<LentViews> {
        let (generation, _, _) = first.parts();
        // Both of this buffer, and of the same fill: the views share one generation.
        let fits = |d: &Data| d.shares_memory_with(&self.memory) && d.parts().0 == generation;
        if !fits(first) || !second.is_none_or(fits) {
            return Err(LuaError::runtime("LentBuffer::views: not views of this buffer's fill"));
        }
        self.ready(lua)?;
        let mut tokens = [0i64; token::VIEWS_PER_CALL];
        for (view, data) in [Some(first), second].into_iter().flatten().enumerate() {
            let (_, offset, len) = data.parts();
            let cell = cell(self.slot, generation, offset, len)?;
            let token = token::encode(self.slot, view, generation)
                .ok_or_else(|| LuaError::runtime("LentBuffer::views: too many lent buffers in one state"))?;
            self.records.set(view, generation, cell.offset() as u32, cell.len() as u32);
            // The token travels as a Lua integer, bit for bit.
            tokens[view] = token as i64;
        }
        let n = if second.is_some() { 2 } else { 1 };
        Ok((n, tokens[0], tokens[1]))
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
/// number of views and their tokens (the second is 0 when there is one view).
pub type LentViews = (i64, i64, i64);

/// The Lua function `caller(f, extra..., views)` that calls `f(extra..., views...)` with the
/// borrowed views [`LentBuffer::views`] describes, made inside the call. A C function: it adds
/// no VM instructions, but shows as a `[C]` frame in tracebacks below `f`. Only call it with
/// views from [`LentBuffer::views`] for this state.
pub fn view_caller(lua: &Lua) -> LuaResult<Function> {
    register_view_type(lua)?;
    view::caller(lua, lent_memories(lua))
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
        not_foreign(&this, "index")?;
        // Methods win, and are found even on an invalidated view (calling them raises).
        if let Some(method) = method(&key, &segment_fn, &layout_fn) {
            return Ok(method);
        }
        index(lua, &this_view(lua, this)?, &key)
    })?;
    let memories = lent_memories(lua);
    metatable.raw_set("__index", view::indexer(lua, &metatable, &index_fn, memories)?)?;
    let new_index_fn = raising::function(lua, |lua, (this, key, value): (MaybeView, Value, Value)| {
        not_foreign(&this, "index")?;
        new_index(lua, &this_view(lua, this)?, &key, &value)
    })?;
    metatable.raw_set("__newindex", new_index_fn)?;
    let len_fn = raising::function(lua, |lua, this: MaybeView| {
        not_foreign(&this, "get length of")?;
        this_view(lua, this)?.with_bytes(<[u8]>::len).map_err(lua_err)
    })?;
    metatable.raw_set("__len", view::measurer(lua, &metatable, &len_fn, lent_memories(lua))?)?;
    let tostring_fn = raising::function(lua, |lua, this: MaybeView| match this {
        // As Lua's own `tostring` of a light userdata ("%p" as the C library prints it).
        MaybeView::Foreign(0) => lua.create_string("userdata: (nil)"),
        MaybeView::Foreign(address) => lua.create_string(format!("userdata: {address:#x}")),
        this => to_string(lua, &this_view(lua, this)?),
    })?;
    metatable.raw_set("__tostring", tostring_fn)?;
    metatable.raw_set(MetaMethod::Type.name(), "data")?;
    metatable.raw_set("__metatable", false)?;
    view::register_metatable(lua, &metatable)
}

/// The views' metatable is every light userdata's in a state that lends tokens (`token.rs`):
/// for the others (`json.null`) the metamethods raise what Lua raises for a light userdata
/// without one ("attempt to index a userdata value"), less the variable's name.
fn not_foreign(this: &MaybeView, doing: &str) -> LuaResult<()> {
    match this {
        MaybeView::Foreign(_) => Err(LuaError::runtime(format!("attempt to {doing} a userdata value"))),
        _ => Ok(()),
    }
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
