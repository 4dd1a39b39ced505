//! `Engine::reload`: new code in a new state under the old name, swapped in only when every
//! chunk ran; calls in flight finish on the old code, later ones run the new; the old state's
//! timers are cancelled.

use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use nflua_engine::{HookMode, HookResult, PacketContext, Verdict};

use super::*;

fn reload(engine: &Engine, name: &str, chunks: &[(&str, &str)]) -> Result<(), EngineError> {
    let chunks: Vec<(&str, &[u8])> = chunks.iter().map(|(n, c)| (*n, c.as_bytes())).collect();
    engine.reload(name, &chunks)
}

fn verdict(engine: &Engine, name: &str) -> Result<HookResult, EngineError> {
    let frame = [0u8; 34];
    let packet = PacketContext::from_frame(&frame, HookMode::Target).unwrap();
    engine.call_hook(name, "f", &packet).map(|o| o.result)
}

#[test]
fn the_new_code_replaces_the_old_whole() {
    let (engine, sink) = with_state();
    run(&engine, "s", "function f() return 'drop' end old_only = 1").unwrap();
    reload(
        &engine,
        "s",
        &[("@a.lua", "shared = 'a'"), ("@b.lua", "function f() return shared == 'a' and 'accept' end")],
    )
    .unwrap();
    assert_eq!(verdict(&engine, "s").unwrap(), HookResult::Target(Some(Verdict::Accept)));
    // Nothing of the old state's globals is left.
    assert_eq!(eval(&engine, &sink, "s", "result = tostring(old_only)"), "nil");
    let info = engine.list().into_iter().find(|s| s.name == "s").unwrap();
    assert_eq!((info.max_alloc_bytes, info.max_runs), (65536, 1_000_000), "same limits");
}

#[test]
fn a_failing_chunk_changes_nothing_and_says_why() {
    let (engine, sink) = with_state();
    run(&engine, "s", "function f() return 'drop' end kept = 'yes'").unwrap();
    let err = lua_error(reload(
        &engine,
        "s",
        &[("@ok.lua", "function f() return 'accept' end"), ("@bad.lua", "error('no good')")],
    ));
    assert!(err.starts_with("bad.lua:1: no good"), "{err}");
    let err = lua_error(reload(&engine, "s", &[("@syntax.lua", "function (")]));
    assert!(err.starts_with("syntax.lua:1:"), "{err}");
    assert_eq!(verdict(&engine, "s").unwrap(), HookResult::Target(Some(Verdict::Drop)));
    assert_eq!(eval(&engine, &sink, "s", "result = kept"), "yes");
    assert!(matches!(reload(&engine, "ghost", &[("=x", "")]), Err(EngineError::NotFound(_))));
}

#[test]
fn old_timers_are_cancelled_and_new_ones_run() {
    let (engine, sink) = with_state();
    run(&engine, "s", "timer.create(10, function() nf.netlink(1, 0, 'old') end)").unwrap();
    reload(&engine, "s", &[("=new", "timer.create(10, function() nf.netlink(1, 0, 'new') end)")]).unwrap();
    assert_eq!(engine.run_due_timers(Instant::now() + Duration::from_secs(1)), 1);
    let sent: Vec<String> = sink.sent().into_iter().map(|s| String::from_utf8(s.payload).unwrap()).collect();
    assert_eq!(sent, ["new"]);
    // A failed reload's timers never run either.
    let _ = reload(
        &engine,
        "s",
        &[("=t", "timer.create(10, function() nf.netlink(1, 0, 'staged') end) error('x')")],
    );
    assert_eq!(engine.run_due_timers(Instant::now() + Duration::from_secs(1)), 0);
    assert_eq!(engine.stats("s").unwrap().timers, 0);
}

/// Hook calls from another thread while the code is reloaded 20 times: every call is answered
/// by one version or the next (never an error, never a mix: the function returns the version
/// its own chunk set), and versions only go forward.
#[test]
fn calls_during_reloads_see_one_version_each() {
    let (engine, _) = with_state();
    let version = |v: usize| {
        format!(
            "version = {v} function f() local seen = version return seen == {v} and 'accept' or 'drop' end"
        )
    };
    run(&engine, "s", &version(0)).unwrap();
    let engine = Arc::new(engine);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (engine, stop, calls) = (Arc::clone(&engine), Arc::clone(&stop), Arc::clone(&calls));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(verdict(&engine, "s").unwrap(), HookResult::Target(Some(Verdict::Accept)));
                calls.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for v in 1..=20 {
        reload(&engine, "s", &[("=v", &version(v))]).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    caller.join().unwrap();
    assert!(calls.load(Ordering::Relaxed) > 0);
    assert_eq!(engine.stats("s").unwrap().errors, 0);
}
