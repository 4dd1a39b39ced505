//! Coroutines under `maxruns`: the instructions an entry runs across every coroutine it makes stay
//! within its budget (the figure is measured, not only the error), and `resume`, `wrap` and
//! `close` behave as Lua 5.4's own.

use super::*;

/// Instructions charged to state `s` so far (exact between entries).
fn charged(engine: &Engine) -> u64 {
    engine.stats("s").unwrap().instructions
}

/// A script that counts finished loop iterations in global `done`; each iteration makes and
/// runs one coroutine whose body loops `body_loops` times.
fn spawner(make: &str, body_loops: u32, iterations: &str) -> String {
    format!(
        "done = 0\n\
         local function body() for j = 1, {body_loops} do end end\n\
         for i = 1, {iterations} do {make} done = done + 1 end"
    )
}

/// Runs `make` (one coroutine spawn and run) in a loop under `max_runs` until the limit stops it,
/// and returns (instructions the iterations that finished ran, instructions charged), after
/// checking the figure against `max_runs`.
fn instructions_until_stopped(make: &str, max_runs: u32) -> (u64, u64) {
    let (engine, sink) = engine();
    engine.create(config("s", 1 << 20, 4_000_000_000)).unwrap();
    // Calibration, in a state with room to spare: what one iteration costs, exactly.
    let before = charged(&engine);
    run(&engine, "s", &spawner(make, 490, "100")).unwrap();
    let hundred = charged(&engine) - before;
    let before = charged(&engine);
    run(&engine, "s", &spawner(make, 490, "200")).unwrap();
    let per_iteration = (charged(&engine) - before - hundred) / 100;
    assert!(per_iteration > 245, "{per_iteration}");
    engine.destroy("s").unwrap();

    engine.create(config("s", 1 << 20, max_runs)).unwrap();
    let before = charged(&engine);
    let text = lua_error(run(&engine, "s", &spawner(make, 490, "1e9")));
    assert!(text.contains("instruction limit exceeded"), "{text}");
    let charged_now = charged(&engine) - before;
    let done: u64 = eval(&engine, &sink, "s", "result = done").parse().unwrap();
    let ran = done * per_iteration;
    eprintln!(
        "{make}: maxruns {max_runs}, {done} iterations of {per_iteration} instructions finished = \
         {ran} instructions (+ at most one partial iteration), {charged_now} charged"
    );
    (ran, charged_now)
}

#[test]
fn coroutines_cannot_stretch_the_budget() {
    let max_runs = 100_000u64;
    for make in [
        "coroutine.resume(coroutine.create(body))",
        "coroutine.wrap(body)()",
        "local co = coroutine.create(body) coroutine.resume(co) coroutine.close(co)",
        // A coroutine that yields halfway and is never resumed again.
        "coroutine.wrap(function() for j = 1, 245 do end coroutine.yield() body() end)()",
        // Nested: a coroutine running another.
        "coroutine.wrap(function() coroutine.resume(coroutine.create(body)) end)()",
    ] {
        let (ran, charged) = instructions_until_stopped(make, max_runs as u32);
        assert!(ran <= max_runs + max_runs / 100, "{make}: ran {ran} instructions under maxruns {max_runs}");
        // Nothing is overcharged either: the iterations that finished plus the one cut short
        // account for the whole budget.
        assert!(ran + 2000 >= max_runs, "{make}: only {ran} instructions ran under maxruns {max_runs}");
        assert_eq!(charged, max_runs + 1, "{make}: the budget, plus the instruction the hook stopped");
    }
}

#[test]
fn instruction_counter_is_exact() {
    let (engine, _) = with_state();
    let before = charged(&engine);
    // LOADI, RETURN (a vararg chunk starts counting after its VARARGPREP).
    run(&engine, "s", "local a = 1").unwrap();
    assert_eq!(charged(&engine) - before, 2);
    // The same figure whether the work runs on the main thread or in a coroutine.
    let before = charged(&engine);
    run(&engine, "s", "for i = 1, 1000 do end").unwrap();
    let plain = charged(&engine) - before;
    let before = charged(&engine);
    run(&engine, "s", "local f = function() for i = 1, 1000 do end end f()").unwrap();
    let called = charged(&engine) - before;
    let before = charged(&engine);
    run(&engine, "s", "coroutine.wrap(function() for i = 1, 1000 do end end)()").unwrap();
    let in_coroutine = charged(&engine) - before;
    assert!(plain > 1000 && called > plain, "{plain} {called}");
    // wrap + call: a GETTABUP, GETFIELD, CLOSURE, CALL, CALL more than the plain call.
    assert!(in_coroutine > called && in_coroutine < called + 10, "{called} {in_coroutine}");
}

/// Runs `chunk` (which returns a string) in the sandbox and in a stock Lua 5.4.
fn both(chunk: &str) -> (String, String) {
    let (engine, sink) = with_state();
    let ours = eval(&engine, &sink, "s", &format!("result = (function() {chunk} end)()"));
    let lua = mlua::Lua::new();
    let stock: String = lua
        .load(format!("return tostring((function() {chunk} end)())"))
        .set_name("=chunk")
        .eval()
        .unwrap_or_else(|e| panic!("{chunk}: {e}"));
    (ours, stock)
}

#[test]
fn behaves_as_lua_54() {
    for chunk in [
        // Values in and out, yields, status.
        "local co = coroutine.create(function(a, b) local c = coroutine.yield(a + b) return c * 2, 'x' end) \
         local r1 = {coroutine.resume(co, 1, 2)} local r2 = {coroutine.resume(co, 10)} \
         local r3 = {coroutine.resume(co)} \
         return table.concat({tostring(r1[1]), r1[2], tostring(r2[1]), r2[2], r2[3], tostring(r3[1]), r3[2], coroutine.status(co)}, ' ')",
        "local f = coroutine.wrap(function(...) local n = select('#', ...) coroutine.yield(n) return 'end' end) \
         return f(1, nil, 3) .. ' ' .. f()",
        // Errors through resume and wrap, with and without positions.
        "local ok, e = coroutine.resume(coroutine.create(function() error('boom') end)) return tostring(ok) .. ' ' .. e",
        "local ok, e = pcall(coroutine.wrap(function() error('boom') end)) return e",
        "local ok, e = pcall(coroutine.wrap(function() error('boom', 0) end)) return e",
        "local ok, e = pcall(coroutine.wrap(function() error({}) end)) return type(e)",
        "local ok, e = pcall(coroutine.wrap(function() local x = nil + 1 end)) return e",
        // Dead, running and non-coroutines.
        "local co = coroutine.create(function() end) coroutine.resume(co) local ok, e = coroutine.resume(co) return e",
        "local ok, e = coroutine.resume(coroutine.running()) return tostring(ok) .. ' ' .. tostring(e)",
        "local ok, e = pcall(coroutine.resume, 42) return e",
        "local ok, e = pcall(coroutine.resume) return e",
        "local ok, e = pcall(coroutine.wrap, 42) return e",
        "local f = coroutine.wrap(function() end) f() local ok, e = pcall(f) return e",
        "local co co = coroutine.create(function() return coroutine.resume(co) end) \
         local ok, a, b = coroutine.resume(co) return tostring(a) .. ' ' .. tostring(b)",
        // close: suspended with to-be-closed variables, dead after an error, running, normal.
        "local log = {} local co = coroutine.create(function() \
           local x <close> = setmetatable({}, {__close = function() log[#log + 1] = 'closed' end}) \
           coroutine.yield() end) \
         coroutine.resume(co) local ok = coroutine.close(co) \
         return tostring(ok) .. ' ' .. table.concat(log, ',') .. ' ' .. coroutine.status(co)",
        "local co = coroutine.create(function() error('bad') end) coroutine.resume(co) \
         local ok, e = coroutine.close(co) return tostring(ok) .. ' ' .. tostring(e)",
        "local ok, e = pcall(coroutine.close, coroutine.running()) return e",
        "local outer outer = coroutine.create(function() \
           local inner = coroutine.create(function() return pcall(coroutine.close, outer) end) \
           return coroutine.resume(inner) end) \
         local _, _, ok, e = coroutine.resume(outer) return tostring(ok) .. ' ' .. e",
        "return tostring(coroutine.close(coroutine.create(print)))",
        // A wrapped coroutine whose error runs its __close handlers.
        "local log = {} local f = coroutine.wrap(function() \
           local x <close> = setmetatable({}, {__close = function(_, err) log[#log + 1] = tostring(err) end}) \
           error('inner') end) \
         local ok, e = pcall(f) return e .. ' | ' .. table.concat(log)",
        // Yield across pcall inside a coroutine, isyieldable, running.
        "local co = coroutine.wrap(function() pcall(function() coroutine.yield(coroutine.isyieldable()) end) return 'done' end) \
         return tostring(co()) .. ' ' .. co()",
        "local _, main = coroutine.running() return tostring(main)",
    ] {
        let (ours, stock) = both(chunk);
        assert_eq!(ours, stock, "{chunk}");
    }
}

#[test]
fn a_stopped_coroutine_stops_its_resumer() {
    let (engine, _) = engine();
    engine.create(config("s", 1 << 20, 10_000)).unwrap();
    // The limit error is caught by resume; the main thread must not run on for long after it.
    let before = charged(&engine);
    let text = lua_error(run(
        &engine,
        "s",
        "local ok = coroutine.resume(coroutine.create(function() while true do end end)) \
         while true do end",
    ));
    assert!(text.contains("instruction limit exceeded"), "{text}");
    assert_eq!(charged(&engine) - before, 10_001);
}
