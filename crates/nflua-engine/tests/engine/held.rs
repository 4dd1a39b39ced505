//! `maxalloc` over everything a state holds (Lua heap, `data` buffers, timers), the work `data`
//! functions charge to the instruction budget, and `data` errors as plain strings.

use std::time::{Duration, Instant};

use nflua_engine::TIMER_BYTES;

use super::*;

fn cur(engine: &Engine, name: &str) -> usize {
    engine.list().into_iter().find(|s| s.name == name).map(|s| s.cur_alloc_bytes).unwrap()
}

fn instructions(engine: &Engine, name: &str) -> u64 {
    engine.stats(name).unwrap().instructions
}

#[test]
fn data_buffers_count_against_maxalloc() {
    let (engine, sink) = engine();
    engine.create(config("s", 65536, u32::MAX)).unwrap();
    let text = lua_error(run(
        &engine,
        "s",
        "keep = {} for i = 1, 20 do keep[i] = require('data').new(40000000) end",
    ));
    assert!(text.starts_with("not enough memory"), "{text}");
    assert!(cur(&engine, "s") <= 65536);
    // 10,000-byte buffers: as many as fit beside the Lua heap, not one more.
    let heap = cur(&engine, "s");
    let got = eval(
        &engine,
        &sink,
        "s",
        "keep = {} local ok repeat ok = pcall(function() keep[#keep + 1] = data.new(10000) end) \
         until not ok result = #keep",
    );
    let kept: usize = got.parse().unwrap();
    let held = cur(&engine, "s");
    println!("64 KiB state: {kept} buffers of 10000 bytes kept, heap {heap} before, {held} held");
    assert!(
        kept >= 1 && held >= heap + kept * 10_000 && held <= 65536,
        "kept {kept}, held {held}, heap {heap}"
    );
    assert!(held + 10_000 > 65536 - 2048, "one more would have fit: kept {kept}, held {held}");
}

#[test]
fn list_and_stats_show_buffers_until_collected() {
    let (engine, _) = engine();
    engine.create(config("s", 1 << 20, 1_000_000)).unwrap();
    // The module and the buffers' metatable are made on first use.
    run(&engine, "s", "local d = data.new(0) d = nil collectgarbage() collectgarbage()").unwrap();
    let before = cur(&engine, "s");
    run(&engine, "s", "keep = {data.new(10000), data.new(10000), data.new(10000)}").unwrap();
    let held = cur(&engine, "s");
    // The three buffers plus their userdata and the table on the Lua heap.
    assert!(held >= before + 30_000 && held < before + 32_000, "before {before}, held {held}");
    let stats = engine.stats("s").unwrap();
    assert_eq!(stats.cur_alloc_bytes, held);
    assert!(stats.peak_alloc_bytes >= held);
    run(&engine, "s", "keep = nil collectgarbage() collectgarbage()").unwrap();
    let after = cur(&engine, "s");
    assert!(after < before + 1000, "before {before}, after {after}");
}

#[test]
fn buffers_leave_lua_less_room_and_give_it_back() {
    let (engine, _) = engine();
    engine.create(config("s", 256 << 10, 10_000_000)).unwrap();
    run(&engine, "s", "big = data.new(200000)").unwrap();
    let text = lua_error(run(&engine, "s", "local s = string.rep('x', 100000)"));
    assert!(text.starts_with("not enough memory"), "{text}");
    run(&engine, "s", "big = nil collectgarbage() collectgarbage()").unwrap();
    run(&engine, "s", "local s = string.rep('x', 100000)").unwrap();
}

#[test]
fn pending_timers_count() {
    let (engine, _) = engine();
    engine.create(config("s", 1 << 20, 1_000_000)).unwrap();
    // The module and the handles' metatable are made on first use.
    run(&engine, "s", "f = function() end timer.destroy(timer.create(1, f)) handles = {} collectgarbage()")
        .unwrap();
    let before = cur(&engine, "s");
    run(&engine, "s", "for i = 1, 100 do handles[i] = timer.create(100000, f) end").unwrap();
    let held = cur(&engine, "s");
    println!("100 timers: {} bytes each, {TIMER_BYTES} of them outside the Lua heap", (held - before) / 100);
    // Each timer: its queue entry, plus a handle and a registry slot on the Lua heap.
    assert!(held >= before + 100 * TIMER_BYTES, "before {before}, held {held}, {TIMER_BYTES} per timer");
    run(
        &engine,
        "s",
        "for i = 1, 100 do timer.destroy(handles[i]) end handles = {} collectgarbage() collectgarbage()",
    )
    .unwrap();
    let after = cur(&engine, "s");
    assert!(after < before + 100 * TIMER_BYTES / 2, "before {before}, after {after}");
    // A fired timer gives its bytes back too.
    run(&engine, "s", "timer.create(0, f) collectgarbage()").unwrap();
    let armed = cur(&engine, "s");
    assert_eq!(engine.run_due_timers(Instant::now() + Duration::from_millis(1)), 1);
    run(&engine, "s", "collectgarbage()").unwrap();
    assert!(cur(&engine, "s") + TIMER_BYTES <= armed, "armed {armed}, now {}", cur(&engine, "s"));
}

#[test]
fn a_large_message_does_not_stay_in_a_small_state() {
    let (engine, _) = engine();
    engine.create(config("s", 65536, 1_000_000)).unwrap();
    run(&engine, "s", "n = 0 function __receive_callback(pid, b) n = n + #b end").unwrap();
    engine.deliver("s", 1, &[7; 60_000]).unwrap();
    assert!(cur(&engine, "s") <= 65536, "the buffer is freed once it puts the state over");
    engine.deliver("s", 1, &[7; 100]).unwrap();
    let held = cur(&engine, "s");
    assert!(held <= 65536, "{held}");
}

#[test]
fn data_work_is_charged_exactly() {
    let (engine, _) = engine();
    engine.create(config("s", 128 << 20, 100_000)).unwrap();
    // The same chunk with a size of 0 and of 50,000: the difference is the work charged.
    run(&engine, "s", "local d = data.new(0)").unwrap();
    let base = instructions(&engine, "s");
    run(&engine, "s", "local d = data.new(0)").unwrap();
    let vm = instructions(&engine, "s") - base;
    run(&engine, "s", "local d = data.new(50000)").unwrap();
    assert_eq!(instructions(&engine, "s") - base - vm, vm + 50_000);
    // tostring copies: 60,000 fits, twice does not.
    run(&engine, "s", "d = data.new(60000)").unwrap();
    let before = instructions(&engine, "s");
    run(&engine, "s", "local s = tostring(d)").unwrap();
    let one = instructions(&engine, "s") - before;
    assert!((60_000..60_010).contains(&one), "{one}");
    let text = lua_error(run(&engine, "s", "local s = tostring(d) s = tostring(d)"));
    assert!(text.starts_with("chunk:1: instruction limit exceeded"), "{text}");
}

#[test]
fn big_data_calls_stop_at_the_limit_at_once() {
    let (engine, _) = engine();
    engine.create(config("s", 256 << 20, 100_000)).unwrap();
    run(&engine, "s", "d = data.new(200000) d:layout{s = {0, 1600000, 'string'}}").unwrap_err();
    run(&engine, "s", "d = data.new(90000) d:layout{s = {0, 720000, 'string'}}").unwrap();
    for (chunk, charged_at_least) in [
        ("local x = data.new(60000000)", 60_000_000),
        ("local x = data.new(string.rep('x', 50000) .. string.rep('y', 50000))", 100_000),
        ("local s = tostring(d) local t = tostring(d)", 180_000),
        ("local s = d.s local t = d.s", 180_000),
        ("d.s = string.rep('z', 90000) d.s = string.rep('z', 90000)", 180_000),
    ] {
        let before = instructions(&engine, "s");
        let start = Instant::now();
        let text = lua_error(run(&engine, "s", chunk));
        let elapsed = start.elapsed();
        assert!(text.contains("instruction limit exceeded"), "{chunk}: {text}");
        assert!(elapsed < Duration::from_millis(100), "{chunk}: {elapsed:?}");
        let charged = instructions(&engine, "s") - before;
        println!("{chunk}: stopped after {elapsed:?}, {charged} instructions charged");
        assert!(charged >= charged_at_least.min(100_001), "{chunk}: {charged}");
    }
    let held = cur(&engine, "s");
    assert!(held < 1 << 20, "nothing of the refused work was allocated: {held}");
    // Last: compiling this leaves megabytes of garbage behind.
    let big_layout: String = (0..200_000).map(|i| format!("f{i} = {{0, 8}}, ")).collect::<String>();
    run(&engine, "s", &format!("spec = {{{big_layout}}}")).unwrap_err();
}

#[test]
fn data_errors_are_strings_with_the_position() {
    let (engine, sink) = with_state();
    let got = eval(
        &engine,
        &sink,
        "s",
        "local ok, e = pcall(function() data.new(2)[5] = 1 end)\nresult = type(e) .. ' ' .. e",
    );
    assert_eq!(got, "string chunk:1: index 5 is outside a data buffer of 2 bytes");
    // A stashed receive buffer, read through the views' fast `__index` after its call.
    run(&engine, "s", "function __receive_callback(pid, b) kept = b end").unwrap();
    engine.deliver("s", 1, b"abc").unwrap();
    let got = eval(
        &engine,
        &sink,
        "s",
        "local ok, e = pcall(function() return kept[1] end)\nlocal ok2, e2 = pcall(function() return #kept end)\n\
         result = e .. '|' .. e2 .. '|' .. select(2, pcall(tostring, kept))",
    );
    assert_eq!(
        got,
        "chunk:1: data buffer is no longer valid|chunk:2: data buffer is no longer valid|\
         chunk:3: data buffer is no longer valid"
    );
}
