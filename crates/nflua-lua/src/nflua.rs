//! The `nflua` module: control and data sockets as Lua userdata, over `nflua-client`.
//!
//! | Lua                                   | client call                          |
//! |---------------------------------------|--------------------------------------|
//! | `nflua.control([port])`               | `ControlSocket::open`                |
//! | `nflua.data([port])`                  | `DataSocket::open`                   |
//! | `control:create/destroy/execute/list` | `send_create/…` (one command)        |
//! | `control:receive()`                   | `receive` (one datagram per call)    |
//! | `data:send(state, buffer)`            | `DataSocket::send`                   |
//! | `data:receive(buffer [, offset])`     | `DataSocket::receive` into the view  |
//! | `sock:setblocking(flag)`              | `set_nonblocking(!flag)` (addition)  |
//!
//! Decisions where the seed leaves room:
//! * The daemon is found through `NFLUA_PORT` (and `NFLUA_DAEMON_UID`), read at each
//!   `nflua.control()` / `nflua.data()`.
//! * Any explicit port that is not an integer in [1, 2^31) raises exactly
//!   "port must be in range [1, 2^31)".
//! * Non-blocking use: `sock:setblocking(false)`, or `O_NONBLOCK` set on `getfd()` by other means
//!   (luaposix's `fcntl`, as the original's tests did). Either way a receive with nothing queued
//!   returns `nil, "pending"`; sends on a full daemon queue return `nil, message, EAGAIN`.
//! * `data:receive` takes a 0-based byte `offset` into the buffer, as the original C module and
//!   LuaData segments do; it defaults to 0 and needs `nflua.datamaxsize` bytes from there.
//! * Invalid names (empty, too long, not UTF-8) and oversized scripts or payloads are failures
//!   (`nil, message, EINVAL/EMSGSIZE`), not errors: they usually come from data, not code.
//! * Using a closed socket raises, `close` included (as Lua's `io` does); `<close>` variables
//!   and garbage collection close quietly.
//! * `list` tables carry `maxruns = nil` when the daemon answered with legacy records.

use mlua::{
    Lua, MetaMethod, MultiValue, Result as LuaResult, Table, UserData, UserDataFields, UserDataMethods,
    UserDataRefMut, Value,
};
use nflua_client::consts::{
    DATA_MAX, DEFAULT_CHUNK_NAME, DEFAULT_MAX_ALLOC_BYTES, MAX_STATES, SCRIPT_FRAG_SIZE, SCRIPT_NAME_MAX,
    STATE_NAME_MAX,
};
use nflua_client::{
    ClientConfig, ClientError, ControlSocket, CreateRequest, DataSocket, Port, Response, StateFlags,
    StateInfo,
};
use nflua_data::Data;

use crate::args::{float_to_integer, Args};
use crate::error::{failure, pending, status, values, Binder, Callback, Fail, Outcome};

const CONTROL_TYPE: &str = "nflua.control";
const DATA_TYPE: &str = "nflua.data";

/// Registry keys of the method tables; the userdata metatables point `__index` at them.
const CONTROL_METHODS_KEY: &str = "nflua.control.methods";
const DATA_METHODS_KEY: &str = "nflua.data.methods";

const PORT_RANGE: &str = "port must be in range [1, 2^31)";

/// A control socket as Lua sees it.
struct Control {
    sock: ControlSocket,
}

/// A data socket as Lua sees it.
struct Channel {
    sock: DataSocket,
}

impl UserData for Control {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_meta_field(MetaMethod::Type, CONTROL_TYPE);
        fields.add_meta_field_with(MetaMethod::Index, |lua| {
            lua.named_registry_value::<Table>(CONTROL_METHODS_KEY)
        });
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method_mut(MetaMethod::Close, |_, this, _: MultiValue| {
            this.sock.close();
            Ok(())
        });
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(describe(CONTROL_TYPE, this.sock.port().ok()))
        });
    }
}

impl UserData for Channel {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_meta_field(MetaMethod::Type, DATA_TYPE);
        fields.add_meta_field_with(MetaMethod::Index, |lua| {
            lua.named_registry_value::<Table>(DATA_METHODS_KEY)
        });
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method_mut(MetaMethod::Close, |_, this, _: MultiValue| {
            this.sock.close();
            Ok(())
        });
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(describe(DATA_TYPE, this.sock.port().ok()))
        });
    }
}

fn describe(type_name: &str, port: Option<u32>) -> String {
    match port {
        Some(port) => format!("{type_name} (port {port})"),
        None => format!("{type_name} (closed)"),
    }
}

const CONTROL_METHODS: [(&str, Callback); 10] = [
    ("close", control_close),
    ("getfd", control_getfd),
    ("getpid", control_getpid),
    ("getstate", control_getstate),
    ("setblocking", control_setblocking),
    ("create", control_create),
    ("destroy", control_destroy),
    ("execute", control_execute),
    ("list", control_list),
    ("receive", control_receive),
];

const DATA_METHODS: [(&str, Callback); 6] = [
    ("close", data_close),
    ("getfd", data_getfd),
    ("getpid", data_getpid),
    ("setblocking", data_setblocking),
    ("send", data_send),
    ("receive", data_receive),
];

/// Builds the `nflua` table; also makes sure `require "data"` yields the buffer module this
/// library understands (as the original's `luaL_requiref` did).
pub(crate) fn open(lua: &Lua) -> LuaResult<Table> {
    crate::data::ensure_loaded(lua)?;
    let binder = Binder::new(lua)?;
    lua.set_named_registry_value(CONTROL_METHODS_KEY, methods(lua, &binder, &CONTROL_METHODS)?)?;
    lua.set_named_registry_value(DATA_METHODS_KEY, methods(lua, &binder, &DATA_METHODS)?)?;

    let module = lua.create_table()?;
    module.set("control", binder.function(lua, "control", open_control)?)?;
    module.set("data", binder.function(lua, "data", open_data)?)?;
    module.set("datamaxsize", DATA_MAX)?;
    module.set("defaultmaxallocbytes", DEFAULT_MAX_ALLOC_BYTES)?;
    module.set("fragsize", SCRIPT_FRAG_SIZE)?;
    module.set("maxstates", MAX_STATES)?;
    module.set("scriptnamemaxsize", SCRIPT_NAME_MAX)?;
    module.set("statenamemaxsize", STATE_NAME_MAX)?;
    Ok(module)
}

fn methods(lua: &Lua, binder: &Binder, list: &[(&'static str, Callback)]) -> LuaResult<Table> {
    let table = lua.create_table()?;
    for &(name, f) in list {
        table.set(name, binder.method(lua, name, f)?)?;
    }
    Ok(table)
}

/// The port argument: nil for an automatic port, else an integer in [1, 2^31).
fn port_arg(args: &Args, pos: usize) -> Result<Port, Fail> {
    let port = match args.get(pos) {
        Value::Nil => return Ok(Port::Auto),
        Value::Integer(n) => Some(*n),
        Value::Number(n) => float_to_integer(*n),
        _ => None,
    };
    port.and_then(Port::explicit).ok_or_else(|| Fail::Contract(PORT_RANGE.to_owned()))
}

fn open_control(lua: &Lua, args: &Args) -> Outcome {
    let port = port_arg(args, 1)?;
    match ControlSocket::open(ClientConfig::from_env(), port) {
        Ok(sock) => values(lua, Control { sock }),
        Err(err) => failure(lua, &err),
    }
}

fn open_data(lua: &Lua, args: &Args) -> Outcome {
    let port = port_arg(args, 1)?;
    match DataSocket::open(ClientConfig::from_env(), port) {
        Ok(sock) => values(lua, Channel { sock }),
        Err(err) => failure(lua, &err),
    }
}

fn closed(type_name: &str) -> Fail {
    Fail::Contract(format!("attempt to use a closed {type_name} socket"))
}

/// `self` of a control method, open.
fn control(args: &Args) -> Result<UserDataRefMut<Control>, Fail> {
    let this = args.this::<Control>(CONTROL_TYPE)?;
    if this.sock.is_closed() {
        return Err(closed(CONTROL_TYPE));
    }
    Ok(this)
}

/// `self` of a data method, open.
fn channel(args: &Args) -> Result<UserDataRefMut<Channel>, Fail> {
    let this = args.this::<Channel>(DATA_TYPE)?;
    if this.sock.is_closed() {
        return Err(closed(DATA_TYPE));
    }
    Ok(this)
}

/// A Lua string as the `&str` the client sends; one that is not UTF-8 is a failure like any
/// other bad name.
fn text(s: &mlua::LuaString, what: &str) -> Result<String, ClientError> {
    s.to_str()
        .map(|s| s.to_owned())
        .map_err(|_| ClientError::InvalidArgument(format!("{what} must be UTF-8")))
}

fn control_close(lua: &Lua, args: &Args) -> Outcome {
    control(args)?.sock.close();
    values(lua, true)
}

fn control_getfd(lua: &Lua, args: &Args) -> Outcome {
    match control(args)?.sock.fd() {
        Ok(fd) => values(lua, fd),
        Err(err) => failure(lua, &err),
    }
}

fn control_getpid(lua: &Lua, args: &Args) -> Outcome {
    match control(args)?.sock.port() {
        Ok(port) => values(lua, port),
        Err(err) => failure(lua, &err),
    }
}

fn control_getstate(lua: &Lua, args: &Args) -> Outcome {
    values(lua, control(args)?.sock.state().as_str())
}

fn control_setblocking(lua: &Lua, args: &Args) -> Outcome {
    let mut this = control(args)?;
    let blocking = args.boolean(2)?;
    status(lua, this.sock.set_nonblocking(!blocking))
}

fn control_create(lua: &Lua, args: &Args) -> Outcome {
    let mut this = control(args)?;
    let name = args.string(2)?;
    let max_runs = args.u32(3, "instructions")?;
    let max_alloc = match args.get(4) {
        Value::Nil => DEFAULT_MAX_ALLOC_BYTES as u32,
        _ => args.u32(4, "memory")?,
    };
    let flags = match args.opt_string(5)? {
        None => StateFlags::empty(),
        Some(letters) => parse_flags(args, 5, &letters)?,
    };
    let name = match text(&name, "state name") {
        Ok(name) => name,
        Err(err) => return failure(lua, &err),
    };
    status(lua, this.sock.send_create(&CreateRequest { name: &name, max_runs, max_alloc, flags }))
}

fn parse_flags(args: &Args, pos: usize, letters: &mlua::LuaString) -> Result<StateFlags, Fail> {
    // Bytes that are not UTF-8 become U+FFFD, which is as unknown a flag as any.
    let letters = String::from_utf8_lossy(&letters.as_bytes()).into_owned();
    StateFlags::from_letters(&letters)
        .map_err(|c| args.bad(pos, format!("unknown flag '{c}'; flags may contain only 'd'")))
}

fn control_destroy(lua: &Lua, args: &Args) -> Outcome {
    let mut this = control(args)?;
    let name = args.string(2)?;
    let result = text(&name, "state name").and_then(|name| this.sock.send_destroy(&name));
    status(lua, result)
}

fn control_execute(lua: &Lua, args: &Args) -> Outcome {
    let mut this = control(args)?;
    let state = args.string(2)?;
    let chunk = args.string(3)?;
    let script_name = args.opt_string(4)?;
    let result = text(&state, "state name").and_then(|state| {
        let script_name = match &script_name {
            Some(name) => text(name, "script name")?,
            None => DEFAULT_CHUNK_NAME.to_owned(),
        };
        this.sock.send_execute(&state, &chunk.as_bytes(), &script_name)
    });
    status(lua, result)
}

fn control_list(lua: &Lua, args: &Args) -> Outcome {
    let mut this = control(args)?;
    status(lua, this.sock.send_list())
}

fn control_receive(lua: &Lua, args: &Args) -> Outcome {
    let mut this = control(args)?;
    match this.sock.receive() {
        Ok(Response::Done) => values(lua, true),
        Ok(Response::States(states)) => values(lua, state_list(lua, states)?),
        Ok(Response::Pending) => pending(lua),
        // The seed API sends no hook or stats requests, so no such answer comes.
        Ok(Response::Hooks(_) | Response::Stats(_)) => values(lua, true),
        Err(err) => failure(lua, &err),
    }
}

/// LIST as the seed shows it: a sequence of `{name, maxruns, maxalloc, curralloc, flags}`.
fn state_list(lua: &Lua, states: Vec<StateInfo>) -> LuaResult<Table> {
    let list = lua.create_table_with_capacity(states.len(), 0)?;
    for (i, state) in states.into_iter().enumerate() {
        let record = lua.create_table_with_capacity(0, 5)?;
        record.set("name", state.name)?;
        record.set("maxruns", state.max_runs)?;
        record.set("maxalloc", state.max_alloc)?;
        record.set("curralloc", state.cur_alloc)?;
        record.set("flags", state.flags.to_letters())?;
        list.raw_set(i + 1, record)?;
    }
    Ok(list)
}

fn data_close(lua: &Lua, args: &Args) -> Outcome {
    channel(args)?.sock.close();
    values(lua, true)
}

fn data_getfd(lua: &Lua, args: &Args) -> Outcome {
    match channel(args)?.sock.fd() {
        Ok(fd) => values(lua, fd),
        Err(err) => failure(lua, &err),
    }
}

fn data_getpid(lua: &Lua, args: &Args) -> Outcome {
    match channel(args)?.sock.port() {
        Ok(port) => values(lua, port),
        Err(err) => failure(lua, &err),
    }
}

fn data_setblocking(lua: &Lua, args: &Args) -> Outcome {
    let mut this = channel(args)?;
    let blocking = args.boolean(2)?;
    status(lua, this.sock.set_nonblocking(!blocking))
}

/// What `data:send` may send.
enum Payload {
    Bytes(mlua::LuaString),
    Buffer(Data),
}

fn data_send(lua: &Lua, args: &Args) -> Outcome {
    let mut this = channel(args)?;
    let state = args.string(2)?;
    // The payload's type is checked before the name's content, whose faults are only failures.
    let payload = match args.get(3) {
        Value::String(s) => Payload::Bytes(s.clone()),
        value => Payload::Buffer(
            Data::from_lua_value(lua, value).ok_or_else(|| args.expected(3, "data or string"))?,
        ),
    };
    let state = match text(&state, "state name") {
        Ok(state) => state,
        Err(err) => return failure(lua, &err),
    };
    let result = match payload {
        Payload::Bytes(s) => this.sock.send(&state, &s.as_bytes()),
        Payload::Buffer(buffer) => {
            buffer.with_bytes(|bytes| this.sock.send(&state, bytes)).map_err(|e| args.bad(3, e))?
        }
    };
    status(lua, result)
}

fn data_receive(lua: &Lua, args: &Args) -> Outcome {
    let mut this = channel(args)?;
    let buffer = Data::from_lua_value(lua, args.get(2)).ok_or_else(|| args.expected(2, "data"))?;
    let offset = args.opt_integer(3)?.unwrap_or(0);
    let size = buffer.len();
    let start = usize::try_from(offset)
        .ok()
        .filter(|&start| size.checked_sub(start).is_some_and(|room| room >= DATA_MAX))
        .ok_or_else(|| {
            args.bad(
                3,
                format!(
                    "not enough space in buffer: {size} bytes, offset {offset}, \
                     need nflua.datamaxsize ({DATA_MAX}) bytes from the offset"
                ),
            )
        })?;
    // Received straight into the buffer's memory. The write lock is held across a blocking
    // recv, which is safe: this Lua state is single-threaded and nothing else locks the buffer.
    let received = buffer
        .with_bytes_mut(|view| match view.get_mut(start..) {
            Some(window) => this.sock.receive(window),
            None => Err(ClientError::InvalidArgument("buffer shrank".to_owned())),
        })
        .map_err(|e| args.bad(2, e))?;
    match received {
        Ok(Some(message)) => values(lua, (message.len, message.state)),
        Ok(None) => pending(lua),
        Err(err) => failure(lua, &err),
    }
}
