//! One engine shared by several threads, as the daemon shares it between its control thread,
//! NFQUEUE workers and timer thread.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nflua_engine::{HookMode, HookResult, PacketContext};

use super::*;

/// 14 bytes of Ethernet header and a few bytes standing for the IP packet (the hooks here only
/// count).
const FRAME: [u8; 20] = [0; 20];

fn hook(engine: &Engine, state: &str, function: &str) -> Result<bool, EngineError> {
    let ctx = PacketContext::from_frame(&FRAME, HookMode::Match).expect("frame");
    engine.call_hook(state, function, &ctx).map(|outcome| outcome.result == HookResult::Match(true))
}

#[test]
fn threads_share_states() {
    let (engine, sink) = engine();
    let engine = Arc::new(engine);
    for name in ["a", "b"] {
        engine.create(config(name, 1 << 20, 100_000)).unwrap();
        run(&engine, name, "n = 0 function count() n = n + 1 return n % 2 == 0 end").unwrap();
    }
    const CALLS: usize = 2000;
    // Two threads per state: parallel across states, serialized within one.
    let workers: Vec<_> = ["a", "a", "b", "b"]
        .into_iter()
        .map(|name| {
            let engine = Arc::clone(&engine);
            thread::spawn(move || (0..CALLS).filter(|_| hook(&engine, name, "count").unwrap()).count())
        })
        .collect();
    let matched: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(matched, 2 * CALLS, "every second call of each state matched");
    for name in ["a", "b"] {
        assert_eq!(eval(&engine, &sink, name, "result = n"), (2 * CALLS).to_string());
        assert_eq!(engine.stats(name).unwrap().calls, 1 + 2 * CALLS as u64 + 1);
    }
}

#[test]
fn waiting_for_a_busy_state_is_counted() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    engine.create(config("slow", 1 << 20, 10_000_000)).unwrap();
    engine.create(config("alone", 1 << 20, 10_000_000)).unwrap();
    run(&engine, "slow", "function f() for i = 1, 200000 do end return false end").unwrap();
    run(&engine, "alone", "function f() return false end").unwrap();
    // The first call holds the state long enough that the second one must wait.
    let (started_tx, started_rx) = mpsc::channel();
    let first = {
        let engine = Arc::clone(&engine);
        thread::spawn(move || {
            let _ = started_tx.send(());
            for _ in 0..5 {
                hook(&engine, "slow", "f").unwrap();
            }
        })
    };
    started_rx.recv().unwrap();
    for _ in 0..5 {
        hook(&engine, "slow", "f").unwrap();
    }
    first.join().unwrap();
    assert!(engine.stats("slow").unwrap().lock_waits > 0);
    hook(&engine, "alone", "f").unwrap();
    assert_eq!(engine.stats("alone").unwrap().lock_waits, 0);
}

#[test]
fn destroy_while_another_thread_calls() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let (engine, stop) = (Arc::clone(&engine), Arc::clone(&stop));
        thread::spawn(move || {
            let (mut ok, mut gone) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                match hook(&engine, "s", "f") {
                    Ok(_) => ok += 1,
                    Err(EngineError::NotFound(_) | EngineError::NoFunction { .. }) => gone += 1,
                    Err(other) => panic!("{other}"),
                }
            }
            (ok, gone)
        })
    };
    for _ in 0..200 {
        engine.create(config("s", 65536, 10_000)).unwrap();
        run(&engine, "s", "function f() for i = 1, 100 do end return true end").unwrap();
        engine.destroy("s").unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, gone) = caller.join().unwrap();
    assert!(ok + gone > 0);
    assert_eq!(engine.state_count(), 0);
}

/// Holds calls of state "slow" inside `nf.netlink` until the test lets them go.
struct GateSink {
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl NetlinkSink for GateSink {
    fn send_data(&self, state: &str, _: u32, _: u32, _: u32, payload: &[u8]) -> io::Result<usize> {
        if state == "slow" {
            self.entered.lock().unwrap().send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        Ok(payload.len())
    }
}

#[test]
fn a_busy_state_blocks_only_itself() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let sink = Arc::new(GateSink { entered: Mutex::new(entered_tx), release: Mutex::new(release_rx) });
    let engine = Arc::new(Engine::new(EngineConfig::default(), sink));
    for name in ["slow", "fast"] {
        engine.create(config(name, 65536, 10_000)).unwrap();
        run(&engine, name, "function f() nf.netlink(1, 0, 'x') return true end").unwrap();
    }
    let slow = {
        let engine = Arc::clone(&engine);
        thread::spawn(move || hook(&engine, "slow", "f"))
    };
    entered.recv().unwrap();
    // "slow" is locked inside Lua: other states, and the map, are free.
    for _ in 0..100 {
        assert!(hook(&engine, "fast", "f").unwrap());
    }
    engine.create(config("new", 65536, 1000)).unwrap();
    engine.destroy("new").unwrap();
    assert!(engine.contains("slow"));
    release.send(()).unwrap();
    assert!(slow.join().unwrap().unwrap());
}

#[test]
fn destroy_waits_for_the_running_call() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let sink = Arc::new(GateSink { entered: Mutex::new(entered_tx), release: Mutex::new(release_rx) });
    let engine = Arc::new(Engine::new(EngineConfig::default(), sink));
    engine.create(config("slow", 65536, 10_000)).unwrap();
    // Executing the definition itself sends nothing; only the hook call waits in the sink.
    run(&engine, "slow", "function f() nf.netlink(1, 0, 'x') return true end").unwrap();
    let call = {
        let engine = Arc::clone(&engine);
        thread::spawn(move || hook(&engine, "slow", "f"))
    };
    entered.recv().unwrap();
    let destroyer = {
        let engine = Arc::clone(&engine);
        thread::spawn(move || engine.destroy("slow"))
    };
    // The state leaves the map at once; its Lua closes when the call is done.
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.contains("slow") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(!engine.contains("slow"));
    assert!(matches!(hook(&engine, "slow", "f"), Err(EngineError::NotFound(_))));
    release.send(()).unwrap();
    assert!(call.join().unwrap().unwrap(), "the running call finished normally");
    destroyer.join().unwrap().unwrap();
}

#[test]
fn timer_thread_runs_beside_workers() {
    let (engine, sink) = engine();
    let engine = Arc::new(engine);
    engine.create(config("s", 1 << 20, 100_000)).unwrap();
    run(
        &engine,
        "s",
        "fired = 0 function f() timer.create(0, function() fired = fired + 1 end) return true end",
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let timer_thread = {
        let (engine, stop) = (Arc::clone(&engine), Arc::clone(&stop));
        thread::spawn(move || {
            let mut ran = 0;
            while !stop.load(Ordering::Relaxed) {
                ran += engine.run_due_timers(Instant::now() + Duration::from_secs(1));
            }
            ran + engine.run_due_timers(Instant::now() + Duration::from_secs(1))
        })
    };
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let engine = Arc::clone(&engine);
            thread::spawn(move || {
                for _ in 0..500 {
                    assert!(hook(&engine, "s", "f").unwrap());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(timer_thread.join().unwrap(), 1000);
    assert_eq!(eval(&engine, &sink, "s", "result = fired"), "1000");
}
