//! A hook called in a loop, for profilers: `cargo build --release --example hookprof`, then
//! `valgrind --tool=callgrind target/release/examples/hookprof 20000 c2` (or `perf record`).
//! Arguments: calls per phase (a warm-up, then a timed run), the function (`f`: match hook
//! `return false`; `c2`: the packet bench's target hook reading two header bytes), the
//! state's memory limit in bytes (default 65536) and, optionally, MiB of memory to sweep before
//! each timed call, which times calls with caches as cold as in the daemon at low packet rates
//! (32 MiB on our VM: 4-7 us per call, against 2.4-3.2 us for a bare mlua call of a function
//! returning false). `HOOKPROF_CHUNK` runs more Lua in the state first.

use std::sync::Arc;
use std::time::Duration;

use nflua_engine::{Engine, EngineConfig, HookMode, NetlinkSink, PacketContext, StateConfig};

struct NullSink;

impl NetlinkSink for NullSink {
    fn send_data(&self, _: &str, _: u32, _: u32, _: u32, payload: &[u8]) -> std::io::Result<usize> {
        Ok(payload.len())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let function = args.next().unwrap_or_else(|| "f".into());
    let memory: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(65536);
    let config = EngineConfig { max_hook_call: Some(Duration::from_millis(100)), ..EngineConfig::default() };
    let engine = Engine::new(config, Arc::new(NullSink));
    let state = StateConfig { name: "s".into(), max_alloc_bytes: memory, max_runs: 1_000_000, debug: false };
    engine.create(state).expect("create");
    engine
        .execute(
            "s",
            b"function f() return false end \
              function c2(frame, packet) \
                if #packet > 28 and packet[1] == 0 then return 'drop' end return 'accept' end",
            "=hookprof",
        )
        .expect("execute");
    if let Ok(chunk) = std::env::var("HOOKPROF_CHUNK") {
        engine.execute("s", chunk.as_bytes(), "=extra").expect("extra chunk");
    }
    // Ethernet, then an IPv4 UDP header and payload.
    let mut frame = [0u8; 64];
    frame[12] = 0x08;
    frame[14] = 0x45;
    frame[15] = 1;
    frame[23] = 17;
    let mode = if function == "f" { HookMode::Match } else { HookMode::Target };
    let packet = PacketContext::from_frame(&frame, mode).expect("frame");
    for _ in 0..calls {
        engine.call_hook("s", &function, &packet).expect("hook");
    }
    let evict_mib: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    if evict_mib > 0 {
        // Each call after a sweep of `evict_mib` MiB: caches as cold as after a sleep.
        let mut sweep = vec![0u8; evict_mib << 20];
        let mut spent = Duration::ZERO;
        for i in 0..calls {
            for b in sweep.iter_mut().step_by(64) {
                *b = b.wrapping_add(i as u8);
            }
            let started = std::time::Instant::now();
            engine.call_hook("s", &function, &packet).expect("hook");
            spent += started.elapsed();
        }
        eprintln!("{} ns/call cold", spent.as_nanos() / calls.max(1) as u128);
        return;
    }
    let started = std::time::Instant::now();
    for _ in 0..calls {
        engine.call_hook("s", &function, &packet).expect("hook");
    }
    eprintln!("{} ns/call", started.elapsed().as_nanos() / calls.max(1) as u128);
}
