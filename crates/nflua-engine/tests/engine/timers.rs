//! `timer.create` / `timer.destroy` and the engine's timer API, driven as the daemon's timer
//! thread drives it, with explicit `now`s so nothing sleeps.

use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use nflua_engine::MAX_TIMERS_PER_STATE;

use super::*;

fn later(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn payloads(sink: &RecordingSink) -> Vec<String> {
    sink.sent().into_iter().map(|s| String::from_utf8(s.payload).unwrap()).collect()
}

#[test]
fn fire_in_deadline_order_once() {
    let (engine, sink) = with_state();
    assert_eq!(engine.next_timer(), None);
    let before = Instant::now();
    run(
        &engine,
        "s",
        "local function say(word) return function(...) nf.netlink(1, 0, word .. select('#', ...)) end end \
         timer.create(30, say('thirty')) timer.create(10, say('ten')) \
         timer.create(20, say('twenty')) timer.create(10, say('ten again'))",
    )
    .unwrap();
    let next = engine.next_timer().unwrap();
    assert!(next >= before + Duration::from_millis(10) && next <= later(10), "{next:?}");
    assert_eq!(engine.run_due_timers(before), 0, "nothing due yet");
    assert_eq!(engine.run_due_timers(later(1000)), 4);
    // Ties fire in creation order; callbacks get no arguments.
    assert_eq!(payloads(&sink), ["ten0", "ten again0", "twenty0", "thirty0"]);
    assert_eq!(engine.run_due_timers(later(1000)), 0, "one-shot");
    assert_eq!(engine.next_timer(), None);
    assert_eq!(engine.stats("s").unwrap().calls, 1 + 4);
}

#[test]
fn only_due_timers_run() {
    let (engine, sink) = with_state();
    run(&engine, "s", "timer.create(0, function() nf.netlink(1, 0, 'now') end) timer.create(60000, print)")
        .unwrap();
    assert_eq!(engine.run_due_timers(later(1000)), 1);
    assert_eq!(payloads(&sink), ["now"]);
    assert_eq!(engine.stats("s").unwrap().timers, 1);
    assert!(engine.next_timer().unwrap() > later(50_000));
}

#[test]
fn destroy_cancels_a_pending_timer() {
    let (engine, sink) = with_state();
    let got = eval(
        &engine,
        &sink,
        "s",
        "local t = timer.create(10, function() nf.netlink(1, 0, 'fired') end) \
         fired = timer.create(10, function() end) \
         result = tostring(timer.destroy(t)) .. ' ' .. tostring(timer.destroy(t)) .. ' ' .. tostring(t)",
    );
    assert!(got.starts_with("true false timer: "), "{got}");
    assert_eq!(engine.stats("s").unwrap().timers, 1);
    assert_eq!(engine.run_due_timers(later(1000)), 1);
    assert_eq!(eval(&engine, &sink, "s", "result = timer.destroy(fired)"), "false", "already fired");
    assert!(!payloads(&sink).contains(&"fired".to_string()));
}

#[test]
fn bad_arguments() {
    let (engine, _) = with_state();
    for (call, message) in [
        ("create(-1, print)", "timer.create: msecs must not be negative"),
        ("create(1.5, print)", "bad argument #1 to 'create' (number has no integer representation)"),
        ("create('ten', print)", "bad argument #1 to 'create' (number expected, got string)"),
        ("create('1.5', print)", "bad argument #1 to 'create' (number has no integer representation)"),
        ("create('-1', print)", "timer.create: msecs must not be negative"),
        ("create({}, print)", "bad argument #1 to 'create' (number expected, got table)"),
        ("create(10, 'print')", "bad argument #2 to 'create' (function expected, got string)"),
        ("create(10)", "bad argument #2 to 'create' (function expected, got nil)"),
        ("destroy(nil)", "bad argument #1 to 'destroy' (timer expected, got nil)"),
        ("destroy(data.new(1))", "bad argument #1 to 'destroy' (timer expected, got userdata)"),
    ] {
        let text = lua_error(run(&engine, "s", &format!("timer.{call}")));
        assert!(text.starts_with(&format!("chunk:1: {message}")), "{call}: {text}");
    }
    run(&engine, "s", "timer.create(1e3, print)").unwrap();
    assert_eq!(engine.stats("s").unwrap().timers, 1, "failed creates leave nothing behind");
}

/// `luaL_checkinteger` takes strings Lua converts to integers; so does `timer.create`.
#[test]
fn numeric_strings_are_accepted_as_lua_does() {
    let (engine, sink) = with_state();
    let before = Instant::now();
    run(
        &engine,
        "s",
        "timer.create('100', function() nf.netlink(1, 0, 'hundred') end) \
         timer.create(' 0x12C ', function() nf.netlink(1, 0, 'three hundred') end) \
         timer.create('5e2', function() nf.netlink(1, 0, 'five hundred') end)",
    )
    .unwrap();
    assert_eq!(engine.stats("s").unwrap().timers, 3);
    let at = |ms| before + Duration::from_millis(ms);
    assert_eq!(engine.run_due_timers(at(50)), 0, "none due before 100 ms");
    assert_eq!(engine.run_due_timers(at(200)), 1);
    assert_eq!(engine.run_due_timers(at(400)), 1);
    assert_eq!(engine.run_due_timers(later(1000)), 1);
    assert_eq!(payloads(&sink), ["hundred", "three hundred", "five hundred"]);
}

#[test]
fn callbacks_run_under_the_limits_and_errors_are_counted() {
    let (engine, sink) = engine();
    engine.create(config("s", 65536, 1000)).unwrap();
    run(
        &engine,
        "s",
        "timer.create(0, function() while true do end end) \
         timer.create(0, function() error('timer failed') end) \
         timer.create(0, function() coroutine.yield() end) \
         timer.create(0, function() nf.netlink(1, 0, 'still here') end)",
    )
    .unwrap();
    assert_eq!(engine.run_due_timers(later(1000)), 4);
    assert_eq!(payloads(&sink), ["still here"]);
    let stats = engine.stats("s").unwrap();
    assert_eq!((stats.calls, stats.errors), (1 + 4, 3));
}

#[test]
fn callbacks_may_create_timers() {
    let (engine, sink) = with_state();
    run(
        &engine,
        "s",
        "ticks = 0 \
         local function tick() ticks = ticks + 1 if ticks < 3 then timer.create(0, tick) end end \
         timer.create(0, tick)",
    )
    .unwrap();
    // A zero-delay timer created by a callback waits for the next pass.
    for _ in 0..3 {
        assert_eq!(engine.run_due_timers(later(1000)), 1);
    }
    assert_eq!(engine.run_due_timers(later(1000)), 0);
    assert_eq!(eval(&engine, &sink, "s", "result = ticks"), "3");
}

#[test]
fn destroying_the_state_cancels_its_timers() {
    let (engine, sink) = with_state();
    engine.create(config("other", 65536, 1000)).unwrap();
    run(&engine, "s", "timer.create(0, function() nf.netlink(1, 0, 'old s') end)").unwrap();
    run(&engine, "other", "timer.create(5, function() nf.netlink(1, 0, 'other') end)").unwrap();
    engine.destroy("s").unwrap();
    // Same name, new state: the old state's timers are not its own.
    engine.create(config("s", 65536, 1000)).unwrap();
    assert_eq!(engine.run_due_timers(later(1000)), 1);
    assert_eq!(payloads(&sink), ["other"]);
    assert_eq!(engine.next_timer(), None);
}

#[test]
fn waker_is_called_for_a_new_earliest_timer() {
    let (engine, _) = with_state();
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&wakes);
    engine.set_timer_waker(Box::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    run(&engine, "s", "timer.create(1000, print)").unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    run(&engine, "s", "timer.create(2000, print)").unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1, "not the earliest");
    run(&engine, "s", "timer.create(10, print)").unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 2);
}

#[test]
fn pending_timers_are_capped_per_state() {
    let (engine, _) = engine();
    engine.create(config("s", 8 << 20, u32::MAX)).unwrap();
    engine.create(config("t", 65536, 1000)).unwrap();
    run(&engine, "s", &format!("for i = 1, {MAX_TIMERS_PER_STATE} do timer.create(60000, print) end"))
        .unwrap();
    let text = lua_error(run(&engine, "s", "timer.create(60000, print)"));
    assert!(text.starts_with("chunk:1: timer.create: too many timers (max 4096)"), "{text}");
    assert_eq!(engine.stats("s").unwrap().timers, MAX_TIMERS_PER_STATE);
    run(&engine, "t", "timer.create(60000, print)").unwrap();
}

#[test]
fn timer_callbacks_count_against_the_state_memory() {
    let (engine, _) = engine();
    engine.create(config("s", 65536, u32::MAX)).unwrap();
    // Each timer keeps a fresh closure alive until it fires: a small state runs out.
    let text = lua_error(run(
        &engine,
        "s",
        "for i = 1, 4000 do local x = i timer.create(60000, function() return x end) end",
    ));
    assert!(text.contains("not enough memory"), "{text}");
    let info = &engine.list()[0];
    assert!(info.cur_alloc_bytes <= info.max_alloc_bytes);
}
