//! The engine driven as the daemon drives it, with a sink that records what `nf.netlink` and
//! `nf.reply` send. Packet hooks, timers and threads have their own files under `engine/`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nflua_engine::{Engine, EngineConfig, EngineError, NetlinkSink, StateConfig};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    state: String,
    seq: u32,
    port: u32,
    groups: u32,
    payload: Vec<u8>,
}

#[derive(Default)]
struct RecordingSink {
    sent: Mutex<Vec<Sent>>,
    /// IP packets from `nf.reply`.
    packets: Mutex<Vec<Vec<u8>>>,
    refuse: AtomicBool,
}

impl RecordingSink {
    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    fn packets(&self) -> Vec<Vec<u8>> {
        self.packets.lock().unwrap().clone()
    }
}

impl NetlinkSink for RecordingSink {
    fn send_data(&self, state: &str, seq: u32, port: u32, groups: u32, payload: &[u8]) -> io::Result<usize> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(111));
        }
        self.sent.lock().unwrap().push(Sent {
            state: state.to_string(),
            seq,
            port,
            groups,
            payload: payload.to_vec(),
        });
        Ok(payload.len())
    }

    fn send_packet(&self, ip_packet: &[u8]) -> io::Result<()> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(1));
        }
        self.packets.lock().unwrap().push(ip_packet.to_vec());
        Ok(())
    }
}

fn engine() -> (Engine, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    (Engine::new(EngineConfig::default(), sink.clone()), sink)
}

fn config(name: &str, max_alloc_bytes: usize, max_runs: u32) -> StateConfig {
    StateConfig { name: name.to_string(), max_alloc_bytes, max_runs, debug: false }
}

/// An engine with one state "s" (64 KiB, 1,000,000 instructions).
fn with_state() -> (Engine, Arc<RecordingSink>) {
    let (engine, sink) = engine();
    engine.create(config("s", 65536, 1_000_000)).unwrap();
    (engine, sink)
}

fn run(engine: &Engine, name: &str, chunk: &str) -> Result<(), EngineError> {
    engine.execute(name, chunk.as_bytes(), "=chunk")
}

fn lua_error(result: Result<(), EngineError>) -> String {
    match result {
        Err(EngineError::Lua(text)) => text,
        other => panic!("expected a Lua error, got {other:?}"),
    }
}

/// Runs `chunk`, which must end by storing a result in global `result`, and returns it through
/// `nf.netlink` (the only way out of a state).
fn eval(engine: &Engine, sink: &RecordingSink, name: &str, chunk: &str) -> String {
    let before = sink.sent().len();
    run(engine, name, &format!("{chunk}\nrequire('nf').netlink(1, 0, tostring(result))")).unwrap();
    let sent = sink.sent();
    assert_eq!(sent.len(), before + 1);
    String::from_utf8(sent[before].payload.clone()).unwrap()
}

mod states {
    use super::*;

    #[test]
    fn create_list_destroy() {
        let (engine, _) = engine();
        engine.create(config("b", 65536, 100)).unwrap();
        engine.create(StateConfig { debug: true, ..config("a", 40000, 5) }).unwrap();
        let list = engine.list();
        assert_eq!(list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((list[0].max_alloc_bytes, list[0].max_runs, list[0].debug), (40000, 5, true));
        assert!(list.iter().all(|s| s.cur_alloc_bytes > 0 && s.cur_alloc_bytes <= s.max_alloc_bytes));
        assert_eq!(engine.state_count(), 2);

        engine.destroy("a").unwrap();
        let err = engine.destroy("a").unwrap_err();
        assert_eq!((err.errno(), err.to_string()), (2, "state 'a' not found".to_string()));
        assert_eq!(run(&engine, "a", "x = 1").unwrap_err().errno(), 2);
        assert_eq!(engine.list().len(), 1);
    }

    #[test]
    fn duplicate_name() {
        let (engine, _) = engine();
        engine.create(config("x", 65536, 100)).unwrap();
        let err = engine.create(config("x", 65536, 100)).unwrap_err();
        assert_eq!((err.errno(), err.to_string()), (17, "state 'x' already exists".to_string()));
    }

    #[test]
    fn caps_lower_what_a_state_gets() {
        let sink = Arc::new(RecordingSink::default());
        let caps = EngineConfig { max_runs_cap: 500, max_alloc_cap: 65536, ..EngineConfig::default() };
        let engine = Engine::new(caps, sink);
        engine.create(config("big", 1 << 30, 4_000_000_000)).unwrap();
        engine.create(config("small", 40000, 100)).unwrap();
        let stats = |n: &str| engine.stats(n).map(|s| (s.max_alloc_bytes, s.max_runs));
        assert_eq!(stats("big"), Some((65536, 500)));
        assert_eq!(stats("small"), Some((40000, 100)));
        let err = engine.execute("big", b"for i = 1, 1000 do end", "=t").unwrap_err();
        assert!(err.to_string().contains("instruction"), "{err}");
    }

    #[test]
    fn too_many_states() {
        let sink = Arc::new(RecordingSink::default());
        let engine = Engine::new(
            EngineConfig { max_states: 3, min_alloc_bytes: 32768, ..EngineConfig::default() },
            sink,
        );
        for name in ["a", "b", "c"] {
            engine.create(config(name, 32768, 100)).unwrap();
        }
        let err = engine.create(config("d", 32768, 100)).unwrap_err();
        assert!(matches!(err, EngineError::TooManyStates(3)), "{err}");
        assert_eq!(err.errno(), 28);
        engine.destroy("b").unwrap();
        engine.create(config("d", 32768, 100)).unwrap();
    }

    #[test]
    fn bad_configurations() {
        let (engine, _) = engine();
        let err = engine.create(config("m", 32767, 100)).unwrap_err();
        assert!(matches!(err, EngineError::MemoryTooSmall { got: 32767, min: 32768 }), "{err}");
        assert_eq!(err.errno(), 22);
        assert_eq!(engine.create(config("r", 65536, 0)).unwrap_err().errno(), 22);
        for name in [String::new(), "n".repeat(64)] {
            let err = engine.create(config(&name, 65536, 100)).unwrap_err();
            assert!(matches!(err, EngineError::InvalidName(_)), "{err}");
        }
        engine.create(config(&"n".repeat(63), 65536, 100)).unwrap();
        assert_eq!(engine.state_count(), 1);
    }

    #[test]
    fn limit_too_small_for_the_libraries() {
        let sink = Arc::new(RecordingSink::default());
        let engine = Engine::new(
            EngineConfig { max_states: 10, min_alloc_bytes: 1024, ..EngineConfig::default() },
            sink,
        );
        let err = engine.create(config("tiny", 8192, 100)).unwrap_err();
        assert!(matches!(err, EngineError::Create(_)), "{err}");
        assert_eq!(
            (err.errno(), err.to_string()),
            (12, "could not create state: not enough memory".to_string())
        );
        assert_eq!(engine.state_count(), 0);
    }

    #[test]
    fn minimum_memory_is_enough_for_every_module() {
        let (engine, sink) = engine();
        engine.create(config("small", 32768, 1_000_000)).unwrap();
        let fresh = engine.list()[0].cur_alloc_bytes;
        assert!(fresh < 24 * 1024, "a fresh state uses {fresh} bytes");
        let got = eval(
            &engine,
            &sink,
            "small",
            "for _, m in ipairs{'nf', 'timer', 'data', 'json', 'base64'} do require(m) end result = 'ok'",
        );
        assert_eq!(got, "ok");
        assert!(engine.list()[0].cur_alloc_bytes <= 32768);
    }

    #[test]
    fn one_failing_state_does_not_disturb_another() {
        let (engine, sink) = engine();
        engine.create(config("bad", 65536, 1000)).unwrap();
        engine.create(config("good", 65536, 100_000)).unwrap();
        run(&engine, "good", "counter = 41").unwrap();
        lua_error(run(&engine, "bad", "while true do end"));
        lua_error(run(&engine, "bad", "t = {} for i = 1, 1e9 do t[i] = i end"));
        lua_error(run(&engine, "bad", "error('boom')"));
        assert_eq!(eval(&engine, &sink, "good", "result = counter + 1"), "42");
        let bad = engine.stats("bad").unwrap();
        assert_eq!((bad.calls, bad.errors), (3, 3));
        let good = engine.stats("good").unwrap();
        assert_eq!((good.calls, good.errors), (2, 0));
    }

    #[test]
    fn stats_count_calls_errors_memory() {
        let (engine, _) = with_state();
        run(&engine, "s", "x = 1").unwrap();
        lua_error(run(&engine, "s", "error('x')"));
        lua_error(run(&engine, "s", "syntax error here"));
        let _ = engine.deliver("s", 1, b"x");
        let stats = engine.stats("s").unwrap();
        assert_eq!((stats.calls, stats.errors), (3, 3));
        assert!(stats.peak_alloc_bytes >= stats.cur_alloc_bytes);
        assert_eq!(stats.max_alloc_bytes, 65536);
        assert!(engine.stats("nope").is_none());
    }
}

mod memory {
    use super::*;

    fn bomb(chunk: &str) {
        let (engine, sink) = engine();
        engine.create(config("s", 65536, u32::MAX)).unwrap();
        let text = lua_error(run(&engine, "s", chunk));
        assert!(text.contains("not enough memory"), "{text}");
        let info = &engine.list()[0];
        assert!(info.cur_alloc_bytes <= info.max_alloc_bytes, "{info:?}");
        assert_eq!(engine.stats("s").unwrap().peak_alloc_bytes, 65536);
        assert_eq!(eval(&engine, &sink, "s", "result = 1 + 1"), "2");
    }

    #[test]
    fn table_bomb() {
        bomb("t = {} for i = 1, 1e9 do t[i] = i end");
    }

    #[test]
    fn string_rep_bomb() {
        bomb("local s = string.rep('x', 1e9)");
    }

    #[test]
    fn growing_string_bomb() {
        bomb("local s = 'x' while true do s = s .. s end");
    }

    #[test]
    fn garbage_buffers_are_collected_in_time() {
        // Each delivery leaves a buffer (userdata with a finalizer) behind; emergency
        // collections do not run finalizers, so only a GC that keeps pace prevents a memory error.
        let (engine, _) = engine();
        engine.create(config("s", 32768, 1000)).unwrap();
        run(&engine, "s", "function __receive_callback(pid, buf) end").unwrap();
        for _ in 0..20_000 {
            engine.deliver("s", 1, &[7; 64]).unwrap();
        }
        engine.create(config("t", 32768, u32::MAX)).unwrap();
        run(&engine, "t", "local data = require 'data' for i = 1, 20000 do local d = data.new(64) end")
            .unwrap();
    }

    #[test]
    fn memory_error_inside_pcall_is_catchable_and_bounded() {
        let (engine, sink) = with_state();
        let got = eval(
            &engine,
            &sink,
            "s",
            "local ok, err = pcall(string.rep, 'x', 1e5) result = tostring(ok) .. ' ' .. err",
        );
        assert_eq!(got, "false not enough memory");
    }
}

mod instructions {
    use super::*;

    fn limited(max_runs: u32) -> (Engine, Arc<RecordingSink>) {
        let (engine, sink) = engine();
        engine.create(config("s", 1 << 20, max_runs)).unwrap();
        (engine, sink)
    }

    fn assert_stops(chunk: &str) {
        let (engine, sink) = limited(1000);
        let text = lua_error(run(&engine, "s", chunk));
        assert!(text.contains("instruction limit exceeded"), "{chunk}: {text}");
        // The limit belongs to that call only.
        run(&engine, "s", "local x = 1 + 1").unwrap();
        run(&engine, "s", "for i = 1, 100 do end").unwrap();
        assert!(sink.sent().is_empty());
    }

    #[test]
    fn infinite_loop() {
        assert_stops("while true do end");
        let (engine, _) = limited(1000);
        let text = lua_error(run(&engine, "s", "local x = 0\nwhile true do x = x + 1 end"));
        assert!(text.starts_with("chunk:2: instruction limit exceeded\nstack traceback:"), "{text}");
    }

    #[test]
    fn loop_in_coroutine() {
        assert_stops("coroutine.wrap(function() while true do end end)()");
        assert_stops("local co = coroutine.create(function() while true do end end) coroutine.resume(co)");
        assert_stops("coroutine.wrap(function() coroutine.wrap(function() while true do end end)() end)()");
    }

    #[test]
    fn pcall_cannot_dodge_the_limit() {
        assert_stops("while true do pcall(function() while true do end end) end");
        assert_stops("while true do pcall(error) end");
        assert_stops("pcall(function() while true do pcall(function() while true do end end) end end) while true do end");
        assert_stops("while true do xpcall(function() while true do end end, function(e) return e end) end");
        assert_stops(
            "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
        );
        assert_stops("while true do pcall(coroutine.wrap(function() while true do end end)) end");
        assert_stops("local t = setmetatable({}, {__index = function() while true do end end}) while true do pcall(function() return t.x end) end");
    }

    #[test]
    fn spawning_coroutines_is_bounded() {
        // Every instruction a coroutine runs is charged, however short it lives (the figure is
        // checked in engine/coroutines.rs).
        assert_stops("while true do coroutine.wrap(function() for i = 1, 900 do end end)() end");
    }

    #[test]
    fn budget_is_per_entry_and_exact_enough() {
        let (engine, _) = limited(1000);
        // Each of these runs a few hundred instructions: fine every time, never accumulated.
        for _ in 0..50 {
            run(&engine, "s", "for i = 1, 300 do end").unwrap();
        }
        lua_error(run(&engine, "s", "for i = 1, 1200 do end"));
        let (engine, _) = limited(10);
        run(&engine, "s", "local a = 1").unwrap();
        lua_error(run(&engine, "s", "for i = 1, 20 do end"));
    }

    #[test]
    fn large_budgets_allow_long_runs() {
        let (engine, _) = limited(1_000_000);
        run(&engine, "s", "for i = 1, 200000 do end").unwrap();
        lua_error(run(&engine, "s", "for i = 1, 2000000 do end"));
        assert!(engine.stats("s").unwrap().instructions >= 1_000_000);
    }

    #[test]
    fn receive_callback_has_its_own_budget() {
        let (engine, _) = limited(1000);
        run(&engine, "s", "function __receive_callback(pid, buf) if #buf > 1 then while true do end end end")
            .unwrap();
        let text = lua_error(engine.deliver("s", 7, b"xx"));
        assert!(text.contains("instruction limit exceeded"), "{text}");
        engine.deliver("s", 7, b"x").unwrap();
    }
}

mod errors {
    use super::*;

    #[test]
    fn runtime_error_has_message_and_traceback() {
        let (engine, _) = with_state();
        let text = lua_error(run(&engine, "s", "local function f()\n  error('boom')\nend\nf()"));
        assert!(text.starts_with("chunk:2: boom\nstack traceback:\n"), "{text}");
        assert!(text.contains("in function 'error'"), "{text}");
        assert!(text.contains("chunk:2: in local 'f'"), "{text}");
        assert!(text.contains("chunk:4: in main chunk"), "{text}");
    }

    #[test]
    fn syntax_error_text() {
        let (engine, _) = with_state();
        let text = lua_error(run(&engine, "s", "x = = 1"));
        assert_eq!(text, "chunk:1: unexpected symbol near '='");
        let text = lua_error(engine.execute("s", b"x = ", "myscript.lua"));
        assert!(text.starts_with("[string \"myscript.lua\"]:1:"), "{text}");
        let text = lua_error(engine.execute("s", b"error('e')", "@/etc/x.lua"));
        assert!(text.starts_with("/etc/x.lua:1: e"), "{text}");
    }

    #[test]
    fn non_string_error_values() {
        let (engine, _) = with_state();
        let text = lua_error(run(&engine, "s", "error({})"));
        assert!(text.starts_with("(error object is a table value)\nstack traceback:"), "{text}");
        let text = lua_error(run(
            &engine,
            "s",
            "error(setmetatable({}, {__tostring = function() while true do end end}))",
        ));
        assert!(text.starts_with("(error object is a table value)"), "{text}");
        let text = lua_error(run(&engine, "s", "error(42)"));
        assert!(text.starts_with("42\n"), "{text}");
        let text = lua_error(run(&engine, "s", "error()"));
        assert!(text.starts_with("nil\n"), "{text}");
    }

    #[test]
    fn library_errors_read_cleanly() {
        let (engine, _) = with_state();
        let text = lua_error(run(&engine, "s", "require('nf').netlink(1, 0, {})"));
        assert!(
            text.starts_with("chunk:1: nf.netlink: payload must be a string or a data object, got table\nstack traceback:\n\tchunk:1: in main chunk"),
            "{text}"
        );
    }

    #[test]
    fn yields_across_the_c_boundary() {
        let (engine, _) = with_state();
        let text = lua_error(run(&engine, "s", "coroutine.yield(1)"));
        assert!(text.contains("attempt to yield from outside a coroutine"), "{text}");
        let text = lua_error(run(
            &engine,
            "s",
            "coroutine.wrap(function() string.gsub('a', 'a', coroutine.yield) end)()",
        ));
        assert!(text.contains("attempt to yield across a C-call boundary"), "{text}");
        // Through a Rust library function (print calls __tostring).
        let text = lua_error(run(
            &engine,
            "s",
            "coroutine.wrap(function() print(setmetatable({}, {__tostring = coroutine.yield})) end)()",
        ));
        assert!(text.contains("yield across"), "{text}");
        engine.deliver("s", 1, b"").unwrap_err();
        run(&engine, "s", "function __receive_callback() coroutine.yield() end").unwrap();
        let text = lua_error(engine.deliver("s", 1, b""));
        assert!(text.contains("yield"), "{text}");
    }

    #[test]
    fn deep_lua_recursion() {
        // Lua's stack limit (1,000,000 slots) is reached at about 32 MiB of heap.
        let (engine, sink) = engine();
        engine.create(config("s", 128 << 20, u32::MAX)).unwrap();
        let text = lua_error(run(&engine, "s", "local function f() return 1 + f() end f()"));
        assert!(text.contains("stack overflow"), "{text}");
        assert!(text.contains("(skipping"), "{text}");
        assert_eq!(eval(&engine, &sink, "s", "result = 'alive'"), "alive");
        // With the default memory the heap runs out first; also an error.
        let (engine, _) = with_state();
        let text = lua_error(run(&engine, "s", "local function f() return 1 + f() end f()"));
        assert!(text.contains("stack overflow") || text.contains("not enough memory"), "{text}");
    }

    #[test]
    fn deep_c_recursion() {
        let (engine, sink) = engine();
        engine.create(config("s", 64 << 20, u32::MAX)).unwrap();
        let chunks = [
            "local function f(s) return (string.gsub(s, '.', f)) end f('x')",
            "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) local _ = t.x",
            "local mt = {} mt.__index = setmetatable({}, mt) local _ = setmetatable({}, mt).x",
            "local t = setmetatable({}, {__add = function(a, b) return a + b end}) local _ = t + 1",
            "local t = setmetatable({}, {__tostring = function(t) return tostring(t) end}) tostring(t)",
            "local t = setmetatable({}, {__tostring = function(t) print(t) end}) print(t)",
            "local function r() return load(r) end load(r)",
            "local s = '' for i = 1, 300 do s = s .. '(' end load('return ' .. s)()",
            "local s = 'return ' .. string.rep('{', 1000) assert(load(s))",
            "local f f = function() return pcall(f) end f()",
            "local f f = function() return coroutine.wrap(f)() end f()",
        ];
        for chunk in chunks {
            // A Lua error or a caught failure; what matters is that the process survives.
            let _ = run(&engine, "s", chunk);
        }
        assert_eq!(eval(&engine, &sink, "s", "result = 'alive'"), "alive");
    }

    #[test]
    fn deep_c_recursion_on_a_small_thread_stack() {
        // Daemon worker threads may keep Rust's default 2 MiB stack.
        let worker = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let (engine, _) = engine();
                engine.create(config("s", 64 << 20, u32::MAX)).unwrap();
                for chunk in [
                    "local t = setmetatable({}, {__tostring = function(t) print(t) end}) print(t)",
                    "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) local _ = t.x",
                    "local f f = function() return coroutine.wrap(f)() end f()",
                    "local t = setmetatable({}, {__index = function(t, k) return json.encode(t[k]) end}) \
                     json = require 'json' local _ = t.x",
                ] {
                    let text = lua_error(run(&engine, "s", chunk));
                    assert!(text.contains("overflow"), "{chunk}: {text}");
                }
                // Recursion through `load`'s reader ends quietly: each failing load returns nil.
                run(&engine, "s", "local function r() return load(r) end load(r)").unwrap();
            })
            .unwrap();
        worker.join().unwrap();
    }

    #[test]
    fn finalizers_are_refused_and_debug_state_gc_errors_are_counted() {
        let (engine, _) = with_state();
        let text = lua_error(run(&engine, "s", "setmetatable({}, {__gc = function() end})"));
        assert!(text.contains("__gc metamethods are not allowed"), "{text}");
        // setmetatable keeps its own rules.
        let text = lua_error(run(
            &engine,
            "s",
            "local t = setmetatable({}, {__metatable = 'locked'}) setmetatable(t, {})",
        ));
        assert!(text.contains("cannot change a protected metatable"), "{text}");

        engine.create(StateConfig { debug: true, ..config("d", 65536, 100_000) }).unwrap();
        run(&engine, "d", "debug.setmetatable({}, {__gc = function() error('in gc') end}) collectgarbage()")
            .unwrap();
        assert_eq!(engine.stats("d").unwrap().errors, 1);
    }

    #[test]
    fn close_handlers_run_under_the_limit() {
        let (engine, _) = engine();
        engine.create(config("s", 1 << 20, 1000)).unwrap();
        let text = lua_error(run(
            &engine,
            "s",
            "local x <close> = setmetatable({}, {__close = function() while true do end end}) error('first')",
        ));
        assert!(text.contains("instruction limit exceeded"), "{text}");
        run(&engine, "s", "x = 1").unwrap();
    }
}

mod sandbox {
    use super::*;

    #[test]
    fn removed_and_kept_globals() {
        let (engine, sink) = with_state();
        let got = eval(
            &engine,
            &sink,
            "s",
            "result = table.concat({type(io), type(os), type(dofile), type(loadfile), type(package), type(debug), \
             type(string), type(table), type(math), type(utf8), type(coroutine), type(load), type(print), \
             type(require), type(pcall), type(collectgarbage)}, ' ')",
        );
        assert_eq!(got, "nil nil nil nil nil nil table table table table table function function function function function");
    }

    #[test]
    fn require_knows_only_the_builtins() {
        let (engine, sink) = with_state();
        for name in ["io", "os", "debug", "string", "package", "nflua"] {
            let text = lua_error(run(&engine, "s", &format!("require '{name}'")));
            assert!(text.starts_with(&format!("chunk:1: module '{name}' not found")), "{text}");
        }
        let got = eval(
            &engine,
            &sink,
            "s",
            "result = tostring(require('json') == require('json')) .. ' ' .. type(require('data').new)",
        );
        assert_eq!(got, "true function");
    }

    #[test]
    fn load_takes_text_only() {
        let (engine, sink) = with_state();
        let got = eval(
            &engine,
            &sink,
            "s",
            "local f, err = load(string.dump(function() return 1 end)) result = tostring(f) .. ' ' .. err",
        );
        assert!(got.starts_with("nil "), "{got}");
        assert!(got.contains("attempt to load a binary chunk (mode is 't')"), "{got}");
        let got = eval(
            &engine,
            &sink,
            "s",
            "local f = load(string.dump(function() return 1 end), 'x', 'b') result = tostring(f)",
        );
        assert_eq!(got, "nil");
        let got = eval(&engine, &sink, "s", "result = load('return 1 + 1')()");
        assert_eq!(got, "2");
        let got = eval(&engine, &sink, "s", "result = load('return x', 'c', 't', {x = 'env'})()");
        assert_eq!(got, "env");
        let got = eval(
            &engine,
            &sink,
            "s",
            "local parts = {'return ', '4', '2'} local i = 0 \
             result = load(function() i = i + 1 return parts[i] end)()",
        );
        assert_eq!(got, "42");
        let got = eval(&engine, &sink, "s", "local f, err = load('x = = 1', '=mine') result = err");
        assert_eq!(got, "mine:1: unexpected symbol near '='");
    }

    #[test]
    fn debug_only_with_the_flag() {
        let (engine, sink) = engine();
        engine.create(StateConfig { debug: true, ..config("d", 65536, 100_000) }).unwrap();
        assert_eq!(eval(&engine, &sink, "d", "result = type(debug.traceback)"), "function");
    }

    #[test]
    fn print_goes_to_the_log_with_the_state_name() {
        let (engine, _) = with_state();
        let lines = capture_logs(|| {
            run(&engine, "s", "print('hello', 1, 2.5, nil, true, setmetatable({}, {__tostring = function() return 'T' end}))").unwrap();
        });
        assert!(lines.iter().any(|l| l == "nflua::lua state=s hello\t1\t2.5\tnil\ttrue\tT"), "{lines:?}");
    }

    #[test]
    fn gc_is_incremental_and_collects() {
        let (engine, sink) = with_state();
        let got = eval(
            &engine,
            &sink,
            "s",
            "local before = collectgarbage('count') \
             for i = 1, 200 do local t = {i, i, i, i} end \
             collectgarbage() result = tostring(collectgarbage('count') <= before + 1) .. ' ' .. collectgarbage('incremental')",
        );
        assert_eq!(got, "true incremental");
    }

    /// Collects `target fields message` lines of events logged while `f` runs.
    fn capture_logs(f: impl FnOnce()) -> Vec<String> {
        use tracing::field::{Field, Visit};
        use tracing::span::{Attributes, Id, Record};
        use tracing::{Event, Metadata, Subscriber};

        #[derive(Default)]
        struct Line(String, String);
        impl Visit for Line {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.1 = format!("{value:?}");
                } else {
                    self.0.push_str(&format!(" {}={value:?}", field.name()));
                }
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "message" {
                    self.1 = value.to_string();
                } else {
                    self.0.push_str(&format!(" {}={value}", field.name()));
                }
            }
        }
        struct Capture(Arc<Mutex<Vec<String>>>);
        impl Subscriber for Capture {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &Event<'_>) {
                let mut line = Line::default();
                event.record(&mut line);
                let text = format!("{}{} {}", event.metadata().target(), line.0, line.1);
                self.0.lock().unwrap().push(text);
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let lines = Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Capture(lines.clone()), f);
        let lines = lines.lock().unwrap().clone();
        lines
    }
}

mod libraries {
    use super::*;

    #[test]
    fn json_round_trip() {
        let (engine, sink) = with_state();
        let got = eval(
            &engine,
            &sink,
            "s",
            r#"local json = require 'json'
               local v = json.decode[[{"list": [1, 2, {"x": null}], "s": "h\u00e9", "f": 0.5, "b": false}]]
               assert(v.list[3].x == json.null)
               result = json.encode(v)"#,
        );
        assert_eq!(got, r#"{"b":false,"f":0.5,"list":[1,2,{"x":null}],"s":"hé"}"#);
        let got = eval(
            &engine,
            &sink,
            "s",
            "local json = require 'json' local v, err = json.decode('[1,') result = tostring(v) .. ' ' .. err",
        );
        assert!(got.starts_with("nil json.decode: "), "{got}");
        let text = lua_error(run(&engine, "s", "local t = {} t[1] = t require('json').encode(t)"));
        assert!(text.starts_with("chunk:1: json.encode: table cycle"), "{text}");
    }

    #[test]
    fn base64_round_trip() {
        let (engine, sink) = with_state();
        let got = eval(
            &engine,
            &sink,
            "s",
            "local b = require 'base64' local all = {} for i = 0, 255 do all[#all + 1] = string.char(i) end \
             all = table.concat(all) \
             assert(b.decode(b.encode(all)) == all) \
             local bad, err = b.decode('@@@') \
             result = b.encode('hello') .. ' ' .. tostring(bad) .. ' ' .. err",
        );
        assert!(got.starts_with("aGVsbG8= nil base64.decode: "), "{got}");
    }

    #[test]
    fn netlink_sends_through_the_sink() {
        let (engine, sink) = with_state();
        run(
            &engine,
            "s",
            "local nf = require 'nf' \
             assert(nf.netlink(5, 0, 'one') == 3) \
             assert(nf.netlink(-1, 2, require('data').new(4)) == 4) \
             nf.netlink(0x1FFFFFFFF, -1, '')",
        )
        .unwrap();
        let sent = sink.sent();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0], Sent { state: "s".into(), seq: 0, port: 5, groups: 0, payload: b"one".to_vec() });
        assert_eq!(
            (sent[1].seq, sent[1].port, sent[1].groups, sent[1].payload.clone()),
            (1, 0xFFFF_FFFF, 2, vec![0; 4])
        );
        assert_eq!((sent[2].seq, sent[2].port, sent[2].groups), (2, 0xFFFF_FFFF, 0xFFFF_FFFF));
        run(&engine, "s", "require('nf').netlink(1, 0, 'again')").unwrap();
        assert_eq!(sink.sent()[3].seq, 3, "seq keeps counting across entries");
    }

    #[test]
    fn netlink_limits_and_failures() {
        let (engine, sink) = with_state();
        run(&engine, "s", "require('nf').netlink(1, 0, string.rep('x', 4012))").unwrap();
        let text = lua_error(run(&engine, "s", "require('nf').netlink(1, 0, string.rep('x', 4013))"));
        assert!(
            text.starts_with("chunk:1: nf.netlink: payload of 4013 bytes exceeds the maximum of 4012"),
            "{text}"
        );
        let text = lua_error(run(&engine, "s", "require('nf').netlink(1, 0, require('data').new(4013))"));
        assert!(text.contains("4013 bytes"), "{text}");
        let text = lua_error(run(&engine, "s", "require('nf').netlink(1.5, 0, 'x')"));
        assert!(!text.is_empty());
        sink.refuse.store(true, Ordering::Relaxed);
        let text = lua_error(run(&engine, "s", "require('nf').netlink(1, 0, 'x')"));
        assert!(text.starts_with("chunk:1: nf.netlink: Connection refused"), "{text}");
        sink.refuse.store(false, Ordering::Relaxed);
        assert_eq!(sink.sent().len(), 1);
    }

    #[test]
    fn time_and_packet_functions_outside_hooks() {
        let (engine, sink) = with_state();
        let got = eval(
            &engine,
            &sink,
            "s",
            "local s, ms = require('nf').time() \
             result = math.type(s) .. ' ' .. math.type(ms) .. ' ' .. tostring(s > 1.6e9 and ms >= 0 and ms < 1000)",
        );
        assert_eq!(got, "integer integer true");
        for name in ["reply", "getpacket", "connid", "hotdrop"] {
            let text = lua_error(run(&engine, "s", &format!("require('nf').{name}()")));
            assert!(
                text.starts_with(&format!("chunk:1: nf.{name}: not available outside a packet hook")),
                "{text}"
            );
        }
    }
}

mod receive {
    use super::*;

    /// The group of `nf.netlink` is optional, nil or absent meaning 0, as in the original module
    /// (whose own test suite calls `nf.netlink(pid, nil, data)`).
    #[test]
    fn netlink_group_may_be_nil_or_absent() {
        let (engine, sink) = with_state();
        run(
            &engine,
            "s",
            "function __receive_callback(pid, buf) nf.netlink(pid, nil, 'nil group') \
             nf.netlink(pid, 3, 'group 3') end",
        )
        .unwrap();
        engine.deliver("s", 4242, b"go").unwrap();
        let sent = sink.sent();
        assert_eq!((sent[0].port, sent[0].groups, &sent[0].payload[..]), (4242, 0, &b"nil group"[..]));
        assert_eq!((sent[1].groups, &sent[1].payload[..]), (3, &b"group 3"[..]));
    }

    #[test]
    fn callback_gets_pid_and_buffer() {
        let (engine, sink) = with_state();
        run(
            &engine,
            "s",
            "local nf = require 'nf' \
             function __receive_callback(pid, buf) nf.netlink(pid, 0, buf) nf.netlink(pid, 0, math.type(pid)) \
             nf.netlink(pid, 0, tostring(buf) .. ' ' .. #buf .. ' ' .. tostring(buf[1])) end",
        )
        .unwrap();
        engine.deliver("s", 4242, b"ping\x00\xff").unwrap();
        let sent = sink.sent();
        assert_eq!(sent[0].port, 4242);
        assert_eq!(sent[0].payload, b"ping\x00\xff");
        assert_eq!(sent[1].payload, b"integer");
        assert_eq!(sent[2].payload, b"ping\x00\xff 6 112");
        engine.deliver("s", 0x8000_0001, b"").unwrap();
        assert_eq!(sink.sent()[3].port, 0x8000_0001);
    }

    #[test]
    fn stashed_buffer_is_invalid_later() {
        let (engine, sink) = with_state();
        run(&engine, "s", "function __receive_callback(pid, buf) stash = buf end").unwrap();
        engine.deliver("s", 1, b"secret").unwrap();
        let text = lua_error(run(&engine, "s", "require('nf').netlink(1, 0, stash)"));
        assert!(text.contains("no longer valid"), "{text}");
        for access in ["local _ = #stash", "local _ = tostring(stash)", "local _ = stash[1]"] {
            let text = lua_error(run(&engine, "s", access));
            assert!(text.contains("no longer valid"), "{access}: {text}");
        }
        // The state itself is fine.
        assert_eq!(eval(&engine, &sink, "s", "result = type(stash)"), "userdata");
    }

    #[test]
    fn missing_or_failing_callback() {
        let (engine, _) = with_state();
        let err = engine.deliver("s", 1, b"x").unwrap_err();
        assert!(matches!(err, EngineError::NoReceiveCallback(ref n) if n == "s"), "{err}");
        assert_eq!(err.errno(), 2);
        assert_eq!(engine.deliver("nope", 1, b"x").unwrap_err().errno(), 2);
        run(&engine, "s", "function __receive_callback(pid, buf) error('bad ' .. pid) end").unwrap();
        let text = lua_error(engine.deliver("s", 9, b"x"));
        assert!(text.starts_with("chunk:1: bad 9\nstack traceback:"), "{text}");
        run(&engine, "s", "__receive_callback = 42").unwrap();
        let text = lua_error(engine.deliver("s", 9, b"x"));
        assert!(text.contains("attempt to call a number value"), "{text}");
    }
}

#[test]
fn builtin_modules_are_lazy_globals_too() {
    let (engine, sink) = with_state();
    run(&engine, "s", "assert(rawget(_G, 'json') == nil); assert(json.decode('[1]')[1] == 1)").unwrap();
    run(&engine, "s", "assert(rawget(_G, 'json') == require 'json'); nf.netlink(5, 0, 'x')").unwrap();
    assert_eq!(sink.sent().len(), 1);
    run(&engine, "s", "assert(undefined_thing == nil)").unwrap();
}

#[path = "engine/clock.rs"]
mod clock;
#[path = "engine/concurrency.rs"]
mod concurrency;
#[path = "engine/coroutines.rs"]
mod coroutines;
#[path = "engine/costs.rs"]
mod costs;
#[path = "engine/held.rs"]
mod held;
#[path = "engine/hooks.rs"]
mod hooks;
#[path = "engine/reload.rs"]
mod reload;
#[path = "engine/timers.rs"]
mod timers;
