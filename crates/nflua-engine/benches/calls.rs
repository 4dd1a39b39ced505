//! Calls per second through the engine's entry points, single thread: a trivial match hook
//! (`return false`), a hook that looks at its buffers, a string-heavy hook (`find` and `gsub` on a
//! 1 KB payload, beside the same function in a stock Lua), a DATA delivery to an empty
//! `__receive_callback`, and zero-delay timers.
//!
//! Run with `cargo bench -p nflua-engine --bench calls` (release build). `NFLUA_BENCH_CALLS` sets
//! the calls per measurement (default 1,000,000), `NFLUA_BENCH_MEM` the state's memory limit
//! (default 65536, the SPEC's default `maxalloc`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use nflua_engine::{Engine, EngineConfig, HookMode, NetlinkSink, PacketContext, StateConfig};

struct NullSink;

impl NetlinkSink for NullSink {
    fn send_data(&self, _: &str, _: u32, _: u32, _: u32, payload: &[u8]) -> std::io::Result<usize> {
        Ok(payload.len())
    }
}

/// Runs `f` `calls` times after a warm-up, prints the rate and returns it (calls per second).
fn measure(label: &str, calls: usize, mut f: impl FnMut()) -> f64 {
    // Warm up: the first calls build caches (function name, userdata metatable) and grow the heap.
    for _ in 0..calls / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    let elapsed = start.elapsed();
    let per_call = elapsed / u32::try_from(calls).unwrap_or(u32::MAX);
    let rate = calls as f64 / elapsed.as_secs_f64();
    println!("{label:<40} {rate:>10.0} calls/s  {:>6} ns/call", per_call.as_nanos());
    rate
}

/// Timers created for the timer measurement, in a state of their own (the hook state also holds
/// the filter's tables).
const TIMERS: usize = 500;

/// Memory of the timers' state: each pending timer holds its callback's registry slot and handle
/// on the Lua heap and its queue entry (`TIMER_BYTES`) outside it: 191 bytes in all, measured.
const TIMER_STATE_MEM: usize = 256 << 10;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What a string-heavy hook does to its payload: one `find` with a capture, one `gsub` that
/// rewrites every run of spaces.
const INSPECT: &str = r#"
local function inspect(s)
  local _, _, host = s:find("\r\nHost: ([^\r\n]+)")
  local _, runs = s:gsub("%s+", " ")
  return host == "blocked.example" or runs > 1000
end
"#;

/// A 1 KB HTTP request: request line, a Host header, and padding headers.
fn http_payload() -> Vec<u8> {
    let mut text = String::from("GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nAccept: */*\r\n");
    let mut n = 0;
    while text.len() < 1000 {
        text.push_str(&format!("X-Pad-{n}: some value with  spaces\r\n"));
        n += 1;
    }
    text.truncate(1020);
    text.push_str("\r\n\r\n");
    text.into_bytes()
}

/// The string-heavy hook in the engine (on the packet, made a string with `tostring`, and on a
/// string already in the state, which isolates the string functions), and the same function in
/// a stock Lua with the stock string library.
fn string_heavy(engine: &Engine, calls: usize) {
    let calls = calls / 10;
    let payload = http_payload();
    // Ethernet, IPv4 (protocol TCP), TCP, the request.
    let mut frame = vec![0u8; 54];
    frame[12] = 0x08;
    frame[14] = 0x45;
    frame[23] = 6;
    frame[46] = 0x50;
    frame.extend_from_slice(&payload);
    let packet = PacketContext::from_frame(&frame, HookMode::Match).expect("frame");
    let literal: String = payload.iter().map(|b| format!("\\{b:03}")).collect();
    engine
        .execute(
            "s",
            format!(
                "{INSPECT} local payload = \"{literal}\"
                 function inspect_packet(frame, packet) return inspect(tostring(packet)) end
                 function inspect_string() return inspect(payload) end"
            )
            .as_bytes(),
            "=bench",
        )
        .expect("string hooks");
    let ours = measure("hook find+gsub, 1 KB packet (tostring)", calls, || {
        engine.call_hook("s", "inspect_packet", &packet).expect("hook");
    });
    let ours_string = measure("hook find+gsub, 1 KB string", calls, || {
        engine.call_hook("s", "inspect_string", &packet).expect("hook");
    });
    let stock = mlua::Lua::new();
    let inspect: mlua::Function =
        stock.load(format!("{INSPECT} return inspect")).eval().expect("stock inspect");
    let subject = stock.create_string(&payload).expect("string");
    let stock_rate = measure("same function, stock Lua 5.4", calls, || {
        let _: bool = inspect.call(&subject).expect("stock call");
    });
    println!("  engine/stock: {:.2} (packet), {:.2} (string)", ours / stock_rate, ours_string / stock_rate);
}

fn main() {
    let calls = env_or("NFLUA_BENCH_CALLS", 1_000_000);
    let engine = Engine::new(EngineConfig::default(), Arc::new(NullSink));
    let config = StateConfig {
        name: "s".into(),
        max_alloc_bytes: env_or("NFLUA_BENCH_MEM", 65536),
        max_runs: 1_000_000,
        debug: false,
    };
    engine.create(config.clone()).expect("create");
    engine
        .execute(
            "s",
            b"function f() return false end \
              function look(frame, packet) return frame[24] == 6 and #packet > 20 end \
              function __receive_callback(pid, buffer) end",
            "=bench",
        )
        .expect("execute");

    // 64-byte frame: Ethernet, IPv4 (protocol TCP at frame[23]), TCP, 10 bytes of payload.
    let mut frame = [0u8; 64];
    frame[12] = 0x08;
    frame[14] = 0x45;
    frame[23] = 6;
    let packet = PacketContext::from_frame(&frame, HookMode::Match).expect("frame");

    measure("hook `return false`", calls, || {
        engine.call_hook("s", "f", &packet).expect("hook");
    });
    measure("hook reading frame[24] and #packet", calls, || {
        engine.call_hook("s", "look", &packet).expect("hook");
    });
    // The packet bench's filter (d): protocol, source address and port read byte by byte, two
    // table lookups.
    engine
        .execute(
            "s",
            b"local blocked_ports = { [23] = true, [445] = true }
              local blocked_sources = {}
              for i = 1, 64 do blocked_sources[(198 << 24) | (51 << 16) | (100 << 8) | i] = true end
              function filter(frame, packet)
                if packet[10] ~= 17 then return false end
                local src = (packet[13] << 24) | (packet[14] << 16) | (packet[15] << 8) | packet[16]
                local l4 = (packet[1] & 0x0F) * 4
                local dport = (packet[l4 + 3] << 8) | packet[l4 + 4]
                return blocked_sources[src] == true or blocked_ports[dport] == true
              end",
            "=bench",
        )
        .expect("filter");
    let mut udp = frame;
    udp[23] = 17;
    let udp_packet = PacketContext::from_frame(&udp, HookMode::Match).expect("frame");
    measure("hook filter: 9 header bytes, 2 lookups", calls, || {
        engine.call_hook("s", "filter", &udp_packet).expect("hook");
    });
    // The same filter in a state that also holds a large table, as a blocklist state does: the
    // collector's work per call grows with what it has to traverse.
    let big = Engine::new(EngineConfig::default(), Arc::new(NullSink));
    let big_config =
        StateConfig { name: "big".into(), max_alloc_bytes: 64 << 20, max_runs: 10_000_000, debug: false };
    big.create(big_config).expect("create big");
    big.execute("big", b"blocklist = {} for i = 1, 200000 do blocklist[i * 7919] = true end", "=bench")
        .expect("blocklist");
    big.execute("big", b"function filter(frame, packet) return blocklist[packet[16]] == true end", "=bench")
        .expect("filter");
    measure("hook filter, state with 200k-entry table", calls, || {
        big.call_hook("big", "filter", &udp_packet).expect("hook");
    });
    let big_stats = big.stats("big").expect("stats");
    println!("  (that state: {} bytes now)", big_stats.cur_alloc_bytes);
    string_heavy(&engine, calls);
    measure("deliver to empty __receive_callback", calls, || {
        engine.deliver("s", 1, &frame).expect("deliver");
    });
    engine
        .create(StateConfig { name: "t".into(), max_alloc_bytes: TIMER_STATE_MEM, ..config })
        .expect("create t");
    engine
        .execute(
            "t",
            format!("local function f() end for i = 1, {TIMERS} do timer.create(0, f) end").as_bytes(),
            "=bench",
        )
        .expect("timers");
    let start = Instant::now();
    let ran = engine.run_due_timers(Instant::now() + Duration::from_secs(1));
    let elapsed = start.elapsed();
    println!("{:<40} {:>10.0} calls/s", format!("{ran} timers"), ran as f64 / elapsed.as_secs_f64());
    // Library calls the cost model wraps, in a loop run by one execute.
    engine
        .execute(
            "s",
            b"function lib_loop(n) local t = {} for i = 1, n do \
                local b = string.byte('abc', 2) local c = string.char(b) table.insert(t, c) if i % 64 == 0 then t = {} end end end",
            "=bench",
        )
        .expect("lib loop");
    // Within the state's million instructions.
    let loops = 40_000;
    let start = Instant::now();
    engine.execute("s", format!("lib_loop({loops})").as_bytes(), "=bench").expect("lib loop");
    let elapsed = start.elapsed();
    println!(
        "{:<40} {:>10.0} ns/iteration",
        "string.byte + string.char + table.insert",
        elapsed.as_nanos() as f64 / loops as f64
    );
    let stats = engine.stats("s").expect("stats");
    println!("state memory: {} bytes now, {} peak", stats.cur_alloc_bytes, stats.peak_alloc_bytes);
}
