//! A hostile state author against the engine's limits: scripts that try to run more than
//! `maxruns`, make library functions work unpaid, outlive the wall-clock limit, or crash the
//! engine. Each figure is measured: VM instructions are counted independently in a stock Lua
//! with a count hook on every instruction (coroutines inherit it), and compared with what the
//! engine let the same script run. The one test marked `#[ignore = "known: ..."]` fails by design (see it).

#![allow(unsafe_code)] // libc calls the tests need (sockets, signals, namespaces)

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlua::{ffi, Lua};
use nflua_engine::{Engine, EngineConfig, EngineError, NetlinkSink, StateConfig};

#[derive(Default)]
struct Sink {
    sent: Mutex<Vec<Vec<u8>>>,
}

impl NetlinkSink for Sink {
    fn send_data(&self, _: &str, _: u32, _: u32, _: u32, payload: &[u8]) -> io::Result<usize> {
        self.sent.lock().unwrap().push(payload.to_vec());
        Ok(payload.len())
    }

    fn send_packet(&self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

struct Harness {
    engine: Engine,
    sink: Arc<Sink>,
}

impl Harness {
    fn new(config: EngineConfig) -> Harness {
        let sink = Arc::new(Sink::default());
        Harness { engine: Engine::new(config, sink.clone()), sink }
    }

    /// No wall-clock limit: only the instruction count stops scripts.
    fn untimed() -> Harness {
        Harness::new(EngineConfig { max_call: None, max_hook_call: None, ..EngineConfig::default() })
    }

    fn state(&self, name: &str, max_alloc: usize, max_runs: u32) {
        let config = StateConfig { name: name.into(), max_alloc_bytes: max_alloc, max_runs, debug: false };
        self.engine.create(config).unwrap();
    }

    fn run(&self, name: &str, chunk: &str) -> Result<(), EngineError> {
        self.engine.execute(name, chunk.as_bytes(), "=chunk")
    }

    fn charged(&self, name: &str) -> u64 {
        self.engine.stats(name).unwrap().instructions
    }

    /// Runs `chunk` and returns (result, instructions charged, wall time).
    fn measure(&self, name: &str, chunk: &str) -> (Result<(), EngineError>, u64, Duration) {
        let before = self.charged(name);
        let start = Instant::now();
        let result = self.run(name, chunk);
        let took = start.elapsed();
        (result, self.charged(name) - before, took)
    }

    /// The value of global expression `expr` in state `name`, as a string.
    fn eval(&self, name: &str, expr: &str) -> String {
        let before = self.sink.sent.lock().unwrap().len();
        self.run(name, &format!("require('nf').netlink(1, 0, tostring({expr}))")).unwrap();
        let sent = self.sink.sent.lock().unwrap();
        assert_eq!(sent.len(), before + 1);
        String::from_utf8_lossy(&sent[before]).into_owned()
    }
}

fn lua_error(result: Result<(), EngineError>) -> String {
    match result {
        Err(EngineError::Lua(text)) => text,
        other => panic!("expected a Lua error, got {other:?}"),
    }
}

static COUNTED: AtomicU64 = AtomicU64::new(0);

unsafe extern "C-unwind" fn count_every(_: *mut ffi::lua_State, _: *mut ffi::lua_Debug) {
    COUNTED.fetch_add(1, Ordering::Relaxed);
}

/// VM instructions `chunk` runs in a stock Lua 5.4 (every library opened), counted one by one;
/// coroutines inherit the hook from the thread that creates them. Also returns the error text.
fn stock_count(chunk: &str) -> (u64, Option<String>) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lua = Lua::new();
    let function = lua.load(chunk).set_name("=chunk").into_function().unwrap();
    COUNTED.store(0, Ordering::Relaxed);
    // SAFETY: the hook touches only an atomic; the state is idle.
    unsafe { ffi::lua_sethook(lua.state(), Some(count_every), ffi::LUA_MASKCOUNT, 1) };
    let outcome = function.call::<()>(());
    let counted = COUNTED.load(Ordering::Relaxed);
    (counted, outcome.err().map(|e| e.to_string()))
}

/// What one attack achieved under a `maxruns`.
#[derive(Debug)]
struct Overshoot {
    /// Loop iterations that finished before the limit stopped the script.
    done: u64,
    /// VM instructions those iterations (and the setup) run in a stock Lua, counted one by one.
    ran: u64,
    /// What the engine charged for the whole entry.
    #[allow(dead_code)] // shown in the report line
    charged: u64,
    #[allow(dead_code)] // shown in the report line
    took: Duration,
    error: String,
}

/// Runs `setup`, then `body` in a loop until the engine stops it, in a fresh state limited to
/// `max_runs`; then counts in a stock Lua what the iterations that finished really ran.
fn overshoot(setup: &str, body: &str, max_runs: u32) -> Overshoot {
    let h = Harness::untimed();
    h.state("s", 16 << 20, max_runs);
    let looped = |n: &str| format!("{setup}\ndone = 0\nfor i = 1, {n} do\n{body}\ndone = i end");
    let (result, charged, took) = h.measure("s", &looped("1e9"));
    let error = lua_error(result);
    let done: u64 = h.eval("s", "done").parse().unwrap();
    let (ran, stock_error) = stock_count(&looped(&done.to_string()));
    assert_eq!(stock_error, None, "the attack must run in stock Lua");
    let o = Overshoot { done, ran, charged, took, error };
    eprintln!("maxruns {max_runs}: {body:?} -> {o:?}");
    o
}

/// Asserts that `body`, looped, runs at most 1 % past `maxruns` (and was stopped by it).
fn assert_within_budget(setup: &str, body: &str) {
    let max_runs = 100_000u64;
    let o = overshoot(setup, body, max_runs as u32);
    assert!(o.error.contains("instruction limit exceeded"), "{body}: {}", o.error);
    assert!(o.done > 0, "{body}: no iteration finished; the attack was not exercised ({o:?})");
    assert!(
        o.ran <= max_runs + max_runs / 100,
        "{body}: ran {} VM instructions ({} iterations) under maxruns {max_runs}",
        o.ran,
        o.done
    );
}

const BODY: &str = "local function body() for j = 1, 490 do end end";

mod coroutines {
    use super::*;

    #[test]
    fn resume_wrap_close_in_every_combination() {
        for attack in [
            "coroutine.resume(coroutine.create(body))",
            "coroutine.wrap(body)()",
            // An error inside the coroutine, caught by resume.
            "coroutine.resume(coroutine.create(function() body() error('x') end))",
            // A wrapped coroutine that raises: the error passes through the wrapper.
            "pcall(coroutine.wrap(function() body() error('x') end))",
            // Yield across pcall, resumed once more.
            "local co = coroutine.wrap(function() pcall(function() body() coroutine.yield() body() end) end) co() co()",
            // A pending to-be-closed variable closed by coroutine.close.
            "local co = coroutine.create(function() local x <close> = setmetatable({}, {__close = body}) coroutine.yield() end) \
             coroutine.resume(co) coroutine.close(co)",
            // A wrapped coroutine dying with a pending __close handler.
            "pcall(coroutine.wrap(function() local x <close> = setmetatable({}, {__close = body}) error('e') end))",
            // A coroutine whose __close handler raises, closed by close.
            "local co = coroutine.create(function() local x <close> = setmetatable({}, {__close = function() body() error('c') end}) coroutine.yield() end) \
             coroutine.resume(co) coroutine.close(co)",
            // Yield from a metamethod called by the VM.
            "local co = coroutine.wrap(function() local t = setmetatable({}, {__index = function() body() coroutine.yield() body() end}) local _ = t.x end) co() co()",
            // Resumed from a metamethod.
            "local _ = setmetatable({}, {__index = function() coroutine.resume(coroutine.create(body)) end}).x",
            // Resumed from a __close handler inside a coroutine.
            "coroutine.wrap(function() local x <close> = setmetatable({}, {__close = function() coroutine.wrap(body)() end}) end)()",
            // A coroutine resuming itself and the one that resumed it (both errors).
            "local outer outer = coroutine.create(function() body() coroutine.resume(coroutine.running()) coroutine.resume(outer) end) coroutine.resume(outer)",
            // Deeply nested coroutines.
            "local function nest(n) if n == 0 then return body() end coroutine.wrap(nest)(n - 1) end nest(10)",
        ] {
            assert_within_budget(BODY, attack);
        }
    }

    #[test]
    fn coroutines_run_from_c_functions() {
        for attack in [
            "local t = {3, 1, 2} table.sort(t, function(a, b) coroutine.wrap(body)() return a < b end)",
            "string.gsub('abc', '.', function() coroutine.resume(coroutine.create(body)) end)",
            "string.gsub('abc', '%w', setmetatable({}, {__index = function() coroutine.wrap(body)() end}))",
            "xpcall(error, function() coroutine.wrap(body)() end)",
            "tostring(setmetatable({}, {__tostring = function() coroutine.wrap(body)() return '' end}))",
            "local n = 0 load(function() n = n + 1 if n < 3 then coroutine.wrap(body)() return ' ' end end)",
            "for _ in string.gmatch('ab', '.') do coroutine.wrap(body)() end",
        ] {
            assert_within_budget(BODY, attack);
        }
    }
}

mod metamethods {
    use super::*;

    #[test]
    fn lua_code_called_from_c_functions_is_counted() {
        let setup = "local function body() for j = 1, 30 do end end\n\
                     local mt = {__lt = function(a, b) body() return a.v < b.v end, \
                                 __index = function() body() return 1 end, \
                                 __newindex = function(t, k, v) body() rawset(t, k, v) end, \
                                 __len = function() body() return 3 end, \
                                 __tostring = function() body() return 'o' end, \
                                 __name = 'obj', \
                                 __call = function() body() end, \
                                 __eq = function() body() return true end, \
                                 __concat = function() body() return 'c' end, \
                                 __close = function() body() end}\n\
                     local function obj(v) return setmetatable({v = v}, mt) end";
        for attack in [
            "local t = {obj(3), obj(1), obj(2), obj(5), obj(4)} table.sort(t)",
            "local t = {5, 4, 3, 2, 1} table.sort(t, function(a, b) body() return a < b end)",
            "tostring(obj(1))",
            "string.format('%s', obj(1))",
            "local p = setmetatable({}, mt) table.insert(p, 1)",
            "local p = setmetatable({}, mt) table.unpack(p, 1, 3)",
            "local p = setmetatable({}, mt) table.concat(p, ',', 1, 0)",
            "pcall(obj(1))",
            "local _ = obj(1) == obj(2)",
            "local _ = obj(1) .. 'x'",
            "local _ = #obj(1)",
            "do local x <close> = obj(1) end",
            "xpcall(error, function(m) body() return m end)",
            "string.gsub('abcd', '.', function(c) body() return c end)",
            "string.gsub('abcd', '.', setmetatable({}, mt))",
            "local n = 0 load(function() n = n + 1 body() if n < 4 then return ' ' end end)",
            "select('#', pcall(body))",
            "rawlen(setmetatable({}, mt)) ipairs(setmetatable({}, mt))",
            "for _, v in ipairs(setmetatable({}, {__index = function(_, i) body() if i < 4 then return i end end})) do end",
            "next({})",
        ] {
            assert_within_budget(setup, attack);
        }
    }
}

/// Work that neither the count hook nor a library charge sees, against the wall-clock limit.
mod wall_clock {
    use super::*;

    const MAX_CALL: Duration = Duration::from_millis(300);

    /// Runs `setup` (unlimited time) and then `attack` under [`MAX_CALL`] and a large
    /// `maxruns`; returns the error and how long the attack ran.
    fn timed(max_alloc: usize, setup: &str, attack: &str) -> (String, Duration) {
        timed_after(max_alloc, setup, Duration::ZERO, attack)
    }

    /// [`timed`], with the engine left without any entry for `quiet` before the attack.
    fn timed_after(max_alloc: usize, setup: &str, quiet: Duration, attack: &str) -> (String, Duration) {
        let h = prepared(max_alloc, setup);
        std::thread::sleep(quiet);
        run_timed(&h, attack)
    }

    /// A harness with state "s" under [`MAX_CALL`] after `setup` ran.
    fn prepared(max_alloc: usize, setup: &str) -> Harness {
        let h = Harness::new(EngineConfig { max_call: Some(MAX_CALL), ..EngineConfig::default() });
        h.state("s", max_alloc, 4_000_000_000);
        // In pieces (separated by "\n--\n"), each well within the limit on a quiet machine; a
        // piece the clock stopped on a busy one (the whole suite runs in parallel) is run again:
        // each only assigns globals, so a second run does the same.
        for piece in setup.split("\n--\n") {
            let mut tries = 0;
            while let Err(e) = h.run("s", piece) {
                tries += 1;
                assert!(tries < 5 && e.to_string().contains("time limit exceeded"), "setup: {e}");
            }
        }
        h
    }

    fn run_timed(h: &Harness, attack: &str) -> (String, Duration) {
        let start = Instant::now();
        let result = h.run("s", attack);
        let took = start.elapsed();
        let error = lua_error(result);
        eprintln!("{attack:?}: {took:?}, {error:?}");
        (error, took)
    }

    fn assert_stopped_in_time(max_alloc: usize, setup: &str, attack: &str) {
        let (error, took) = timed(max_alloc, setup, attack);
        assert!(error.contains("time limit exceeded") || error.contains("instruction limit"), "{error}");
        assert!(
            took < MAX_CALL + Duration::from_millis(100),
            "{attack}: ran {took:?} under max_call {MAX_CALL:?}"
        );
    }

    /// Held: the work per instruction grows slowly enough for the clock to catch it.
    #[test]
    fn growing_varargs_are_stopped_by_the_clock() {
        assert_stopped_in_time(64 << 20, "", "local function f(...) return f(1, ...) end f()");
    }

    /// The same attack under an instruction limit only: maxruns 100000 should stop it within
    /// 100 ms, as it stops every library call.
    #[test]
    #[ignore = "known: 100000 instructions of vararg copying take 2.5 s (debug build): VARARGPREP/VARARG copy every vararg in one instruction, quadratic in a tail call that grows its varargs; the wall clock (on in nfluad by default) stops it, see growing_varargs_are_stopped_by_the_clock"]
    fn growing_varargs_under_maxruns() {
        let h = Harness::untimed();
        h.state("s", 64 << 20, 100_000);
        let (result, charged, took) = h.measure("s", "local function f(...) return f(1, ...) end f()");
        let error = lua_error(result);
        eprintln!("varargs under maxruns 100000: {took:?}, {charged} charged, {error:?}");
        assert!(took < Duration::from_millis(100), "ran {took:?} ({charged} instructions charged)");
    }

    #[test]
    fn plain_loop_is_stopped() {
        assert_stopped_in_time(1 << 20, "", "while true do end");
    }

    /// 16 MB strings whose bytes all match: each `==` is one instruction and one 16 MB memcmp.
    /// Two equal strings that are different objects, built in pieces (see [`timed`]).
    const TWINS: &str = "local piece = ('x'):rep(1 << 16) t = {} for i = 1, 256 do t[i] = piece end\n--\n\
                         a = table.concat(t)\n--\n\
                         b = table.concat(t, '') t = nil";

    #[test]
    fn long_string_equality_stops_at_max_call() {
        let twins = TWINS.replace("256", "512");
        assert_stopped_in_time(192 << 20, &twins, "local a, b = a, b while true do local _ = a == b end");
    }

    #[test]
    fn long_string_order_stops_at_max_call() {
        assert_stopped_in_time(128 << 20, TWINS, "local a, b = a, b while true do local _ = a < b end");
    }

    #[test]
    fn long_concatenation_stops_at_max_call() {
        // One instruction here is a 16 MB allocation and copy; the guarantee is the limit plus a
        // watchdog tick plus that one instruction, which a machine busy with the rest of the suite
        // can stretch past the usual 100 ms slack. So the slack includes twice what one such
        // instruction took just before, measured on the same state.
        let h = prepared(128 << 20, TWINS);
        let one = Instant::now();
        h.run("s", "local a = a:sub(1, 8 << 20) local _ = a .. a").expect("one concatenation");
        let one = one.elapsed();
        let (error, took) = run_timed(&h, "local a = a:sub(1, 8 << 20) while true do local _ = a .. a end");
        assert!(error.contains("time limit exceeded"), "{error}");
        let bound = MAX_CALL + Duration::from_millis(100) + 2 * one;
        assert!(took < bound, "ran {took:?} under max_call {MAX_CALL:?} (one concatenation: {one:?})");
    }

    /// After a quiet spell the watchdog sleeps until an entry starts; the entry's start must
    /// wake it, or one 16 MB concatenation per instruction runs for seconds.
    #[test]
    fn long_concatenation_after_a_quiet_spell_stops_at_max_call() {
        // The idle tick is the limit: within two of them after the setup the watchdog parks, for
        // up to a second. A quiet spell of just over a second puts the attack's start after any
        // wake-up the park's own timeout could give, so only the entry's start can wake it in
        // time (without it the attack ran about 900 ms).
        let (error, took) = timed_after(
            128 << 20,
            TWINS,
            Duration::from_millis(1050),
            "local a = a:sub(1, 8 << 20) while true do local _ = a .. a end",
        );
        assert!(error.contains("time limit exceeded"), "{error}");
        // 300-320 ms on a quiet machine; up to ~420 ms seen with the suite's other tests
        // beside it (each 16 MB concatenation is one instruction the clock cannot cut). The
        // bound stays far below the ~900 ms of a watchdog that the entry did not wake.
        assert!(took < MAX_CALL + Duration::from_millis(250), "ran {took:?} under max_call {MAX_CALL:?}");
    }

    #[test]
    fn full_collections_stop_at_max_call() {
        // A heap of many small tables makes every full collection long.
        assert_stopped_in_time(
            64 << 20,
            &["keep = {}"]
                .into_iter()
                .chain(std::iter::repeat_n("for i = 1, 50000 do keep[#keep + 1] = {i} end", 6))
                .collect::<Vec<_>>()
                .join("\n--\n"),
            "while true do collectgarbage() end",
        );
    }

    #[test]
    fn parsing_stops_at_max_call() {
        assert_stopped_in_time(
            32 << 20,
            "source = '--' .. ('x'):rep(4 << 20)",
            "while true do load(source) end",
        );
    }
}

/// Scripts that try to crash the engine or leave a state unusable. Each must fail with a Lua
/// error, and the state must still run code afterwards.
mod crashes {
    use super::*;

    fn assert_fails_cleanly(max_alloc: usize, attack: &str, expected: &str) {
        let h = Harness::untimed();
        h.state("s", max_alloc, 50_000_000);
        let start = Instant::now();
        let error = lua_error(h.run("s", attack));
        eprintln!("{attack:?}: {:?}: {}", start.elapsed(), error.lines().next().unwrap_or(""));
        assert!(expected.split('|').any(|e| error.contains(e)), "{attack}: {error}");
        assert_eq!(h.eval("s", "1 + 1"), "2", "the state is still usable");
    }

    #[test]
    fn recursion_through_c_functions() {
        for (attack, expected) in [
            ("local function f() return 1 + f() end f()", "stack overflow|not enough memory"),
            ("local function f(s) return (s:gsub('.', f)) end f('ab')", "stack overflow"),
            ("local t = setmetatable({}, {__tostring = function(x) print(x) return '' end}) print(t)", "stack overflow"),
            ("local t t = setmetatable({}, {__tostring = function(x) return string.format('%s', x) end}) tostring(t)", "stack overflow"),
            ("local function n() coroutine.wrap(n)() end n()", "stack overflow"),
            ("local function n() local co = coroutine.create(n) local ok, e = coroutine.resume(co) error(e, 0) end n()", "stack overflow"),
            ("local t t = setmetatable({}, {__index = function(_, k) return t[k] end}) local _ = t.x", "stack overflow"),
            ("local t t = setmetatable({}, {__close = function() local x <close> = t end}) do local y <close> = t end", "stack overflow"),
        ] {
            assert_fails_cleanly(64 << 20, attack, expected);
        }
    }

    #[test]
    fn deepest_pattern_inside_deepest_c_nesting() {
        // Nested gsub callbacks as deep as Lua allows, the innermost running the deepest pattern
        // the matcher allows (it recurses natively).
        let attack = "local pat = ('a?'):rep(190) .. ('a'):rep(9) \
                      local s = ('a'):rep(200) \
                      local function f(n) if n == 0 then return s:find(pat) end \
                        local ok, r = pcall(string.gsub, 'x', 'x', function() return f(n - 1) end) \
                        if not ok then return s:find(pat) end return r end \
                      f(250) error('done')";
        assert_fails_cleanly(64 << 20, attack, "done");
    }

    #[test]
    fn huge_capture_counts_and_results() {
        for (attack, expected) in [
            ("string.find(('a'):rep(40), ('(a)'):rep(33))", "too many captures"),
            ("string.find('a', ('('):rep(40))", "too many captures"),
            ("local t = {} for i = 1, 32 do t[i] = '()' end local r = {string.find('', table.concat(t))} error(#r)", "34"),
        ] {
            assert_fails_cleanly(1 << 20, attack, expected);
        }
    }
}

/// The step-counting pattern functions against the stock ones on odd cases: every result and
/// every error message (with its position) must be Lua 5.4's.
mod pattern_oddities {
    use super::*;

    /// Lua that evaluates `expr` under pcall and stores its results, typed, in `result`.
    fn probe(expr: &str) -> String {
        format!(
            "local r = table.pack(pcall(function() return {expr} end))\n\
             local o = {{}}\n\
             for i = 1, r.n do local v = r[i]\n\
               o[i] = type(v) == 'string' and string.format('%q', v) or type(v) .. ':' .. tostring(v) end\n\
             result = table.concat(o, ',')"
        )
    }

    fn stock(expr: &str) -> String {
        let lua = Lua::new();
        lua.load(probe(expr)).set_name("=chunk").exec().unwrap();
        lua.globals().get::<String>("result").unwrap()
    }

    fn differences(cases: &[&str]) -> Vec<String> {
        let h = Harness::untimed();
        h.state("s", 1 << 20, 10_000_000);
        let mut differ = Vec::new();
        for expr in cases {
            if let Err(e) = h.run("s", &probe(expr)) {
                differ.push(format!("{expr}\n  engine failed: {e}"));
                continue;
            }
            let ours = h.eval("s", "result");
            let theirs = stock(expr);
            if ours != theirs {
                differ.push(format!("{expr}\n  engine: {ours}\n  stock:  {theirs}"));
            }
        }
        differ
    }

    #[test]
    fn odd_cases_match_stock_lua() {
        let cases = [
            "('abc'):find('', 4)",
            "('abc'):find('', 5)",
            "('abc'):find('c', -1)",
            "('abc'):find('a', -10)",
            "('abc'):find('a', 0)",
            "('abc'):find('b', math.mininteger)",
            "('abc'):find('b', math.maxinteger)",
            "('abc'):find('b', '2')",
            "('abc'):find('b', 1.5)",
            "('a.c'):find('.', 1, true)",
            "('a+b'):find('+', 1, 1)",
            "('abc'):find('b', nil, true)",
            "('a\\0b'):find('\\0')",
            "('a\\0b'):find('[\\0]')",
            "('a\\0b'):match('.%z.')",
            "('a\\0b'):find('%Z+')",
            "('abc'):match('()', 4)",
            "('abc'):match('()', 5)",
            "('abc'):find('(a')",
            "('abc'):match('(()')",
            "('abc'):find('a)')",
            "('abc'):find('%')",
            "('abc'):find('[a')",
            "('abc'):find('[]')",
            "('abc'):find('[^]')",
            "(']'):find('[]]')",
            "(']'):find('[^]]')",
            "('-'):find('[a-]')",
            "('b'):find('[]-a]')",
            "('%'):find('[%]')",
            "('%'):find('[%%]')",
            "('abc'):find('%b')",
            "('abc'):find('%ba')",
            "('xaxx'):find('%bxx')",
            "('((a)'):find('%b()')",
            "('THE (quick)'):find('%f[%a]%a+', 5)",
            "('abc'):find('%f[%z]')",
            "('abc'):find('%f[^%z]')",
            "('abc'):find('%fa')",
            "('abc'):find('%f')",
            "('abc'):find('%f[')",
            "('abab'):find('(ab)%1')",
            "('aa'):find('()%1')",
            "('aa'):find('(a%1)')",
            "('aa'):find('%0')",
            "('aa'):find('%9')",
            "('aa'):find('(a)%2')",
            "('abc'):gsub('', '-')",
            "('abc'):gsub('%w*', '-')",
            "('abc'):gsub('x*', '-')",
            "('abc'):gsub('^', '>')",
            "('abc'):gsub('$', '<')",
            "('abc'):gsub('^a*', '')",
            "('abc'):gsub('.', '%%%0')",
            "('abc'):gsub('.', '%1')",
            "('abc'):gsub('.', '%2')",
            "('abc'):gsub('(.)', '%2')",
            "('abc'):gsub('()', '%1')",
            "('abc'):gsub('.', '%')",
            "('abc'):gsub('.', '%x')",
            "('abc'):gsub('.', 'x%')",
            "('abc'):gsub('.', '%\\0')",
            "('abc'):gsub('.', 5)",
            "('abc'):gsub('.', 5.5)",
            "('abc'):gsub('.', {a = 1, b = true})",
            "('abc'):gsub('.', {a = 1, b = false})",
            "('abc'):gsub('.', {a = {}})",
            "('abc'):gsub('.', function() return 1.5 end)",
            "('abc'):gsub('.', function() return {} end)",
            "('abc'):gsub('.', function(c) if c == 'b' then return nil end return c:upper() end)",
            "('abc'):gsub('.', 'x', 0)",
            "('abc'):gsub('.', 'x', -1)",
            "('abc'):gsub('.', 'x', 1.5)",
            "('abc'):gsub('.', 'x', '2')",
            "('abc'):gsub('.', 'x', math.maxinteger)",
            "('abc'):gsub('.')",
            "('abc'):gsub('.', true)",
            "('abc'):gsub('.', nil)",
            "('abc'):gsub({}, 'x')",
            "string.gsub()",
            "string.find()",
            "string.find('a')",
            "('a'):find({})",
            "('a'):match({})",
            "string.gmatch('a')",
            "string.match(12345, 3)",
            "string.find(12.5, '.', 1, true)",
            "string.gsub(123, 2, 9)",
            "(function() local t = {} for w in ('one two  three'):gmatch('%a*') do t[#t + 1] = '[' .. w .. ']' end return table.concat(t) end)()",
            "(function() local t = {} for w in ('abcd'):gmatch('.', 3) do t[#t + 1] = w end return table.concat(t) end)()",
            "(function() local t = {} for w in ('abcd'):gmatch('.', -1) do t[#t + 1] = w end return table.concat(t) end)()",
            "(function() local t = {} for w in ('abcd'):gmatch('', 10) do t[#t + 1] = w end return #t end)()",
            "(function() local t = {} for w in ('^a^b'):gmatch('^.') do t[#t + 1] = w end return table.concat(t) end)()",
            "(function() local t = {} for a, b in ('k=v, x=y'):gmatch('(%w+)=(%w+)') do t[#t + 1] = a .. b end return table.concat(t) end)()",
            "(function() for w in ('abc'):gmatch('(') do end end)()",
            "(function() local it = ('abc'):gmatch('.') it() it() it() return it(), it() end)()",
            "string.match(('a'):rep(300), ('a?'):rep(250))",
            "string.match(('a'):rep(250), ('(a)'):rep(30))",
            "string.find(('a'):rep(20), ('.-'):rep(5) .. 'b')",
            "('\\v\\f'):find('%s+')",
            "('\\200\\255'):find('%a')",
            "('\\200\\255'):find('%W+')",
            "('x'):find('%g')",
            "('_'):find('%p')",
            "('abc'):find('[%a-z]')",
            "('-'):find('[%a-z]')",
            "('abc'):find('[a-%z]')",
            "('abc'):match('^(a)(b)(c)$')",
            "('abc'):match('^$')",
            "(''):match('^$')",
            "(''):find('')",
            "(''):gsub('', 'x')",
            "('abc'):find('b', 2, false)",
            "('a$'):find('$', 1)",
            "('a$b'):find('a$b')",
            "('a$b'):find('$b')",
            "('a^b'):find('a^b')",
            "('^a'):find('^^a')",
        ];
        let differ = differences(&cases);
        assert!(
            differ.is_empty(),
            "{} of {} cases differ:\n{}",
            differ.len(),
            cases.len(),
            differ.join("\n")
        );
    }
}
