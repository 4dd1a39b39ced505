//! The wall-clock backstop (`EngineConfig::max_call`, `max_hook_call`) and the halt flag: both
//! stop an entry no instruction limit would stop in time, and say why.

use std::time::{Duration, Instant};

use super::*;

fn engine_with(max_call: Option<Duration>) -> Engine {
    let config = EngineConfig { max_call, max_hook_call: max_call, ..EngineConfig::default() };
    let engine = Engine::new(config, Arc::new(RecordingSink::default()));
    engine.create(config_of("s")).unwrap();
    engine
}

/// A state whose instruction limit is out of reach (4e9 instructions take tens of seconds).
fn config_of(name: &str) -> StateConfig {
    config(name, 1 << 20, 4_000_000_000)
}

#[test]
fn a_call_past_its_wall_time_is_stopped() {
    let engine = engine_with(Some(Duration::from_millis(200)));
    let started = Instant::now();
    let text = lua_error(run(&engine, "s", "while true do end"));
    let took = started.elapsed();
    eprintln!("stopped after {took:?}: {text}");
    assert!(text.starts_with("chunk:1: time limit exceeded (200 ms)"), "{text}");
    assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(1500), "{took:?}");
    // The next entry has its own allowance.
    run(&engine, "s", "for i = 1, 1000 do end").unwrap();
    // Catching the error does not help.
    let text = lua_error(run(&engine, "s", "while true do pcall(function() while true do end end) end"));
    assert!(text.contains("time limit exceeded (200 ms)"), "{text}");
}

#[test]
fn no_wall_clock_limit_when_disabled() {
    let engine = engine_with(None);
    let started = Instant::now();
    // About 30 M instructions: well over 200 ms in a debug build, and nothing stops it.
    run(&engine, "s", "for i = 1, 1e7 do end").unwrap();
    assert!(started.elapsed() > Duration::from_millis(50));
}

#[test]
fn halting_stops_running_and_later_entries() {
    let engine = Arc::new(engine_with(None));
    let worker = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            let started = Instant::now();
            (run(&engine, "s", "while true do end"), started)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let halted = Instant::now();
    engine.halt_scripts();
    let (result, started) = worker.join().unwrap();
    let after_halt = halted.elapsed();
    let text = lua_error(result);
    eprintln!("ran {:?}, stopped {after_halt:?} after the halt: {text}", started.elapsed());
    assert!(text.contains("interrupted: the daemon is shutting down"), "{text}");
    assert!(after_halt < Duration::from_millis(100), "{after_halt:?}");
    let text = lua_error(run(&engine, "s", "local a = 1"));
    assert!(text.contains("interrupted"), "{text}");
}
