//! Heap allocations per packet hook call, counted by a global allocator (which is why this is a
//! test binary of its own). In steady state a hook call allocates nothing, in Rust or on the Lua
//! heap (mlua's Lua allocator goes through the global one, so Lua's blocks are counted too): its
//! two views are tokens (light userdata), so the collector has nothing to do either.

#![allow(unsafe_code)] // libc calls the tests need (sockets, signals, namespaces)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use nflua_engine::{Engine, EngineConfig, HookMode, NetlinkSink, PacketContext, StateConfig};

/// Counts allocations (and reallocations) made by the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator also runs while thread locals are torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards every call to `System` unchanged; counting touches no heap.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe {
            count();
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe {
            count();
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            count();
            System.realloc(ptr, layout, new_size)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct NullSink;

impl NetlinkSink for NullSink {
    fn send_data(&self, _: &str, _: u32, _: u32, _: u32, payload: &[u8]) -> std::io::Result<usize> {
        Ok(payload.len())
    }
}

#[test]
fn a_hook_call_allocates_nothing() {
    let engine = Engine::new(EngineConfig::default(), Arc::new(NullSink));
    let config = StateConfig { name: "s".into(), max_alloc_bytes: 65536, max_runs: 1_000_000, debug: false };
    engine.create(config).unwrap();
    engine
        .execute("s", b"function f(frame, packet) return frame[24] == 6 and #packet > 20 end", "=t")
        .unwrap();
    let mut frame = [0u8; 64];
    frame[23] = 6;
    let packet = PacketContext::from_frame(&frame, HookMode::Match).unwrap();
    for _ in 0..10_000 {
        engine.call_hook("s", "f", &packet).unwrap();
    }
    const CALLS: u64 = 20_000;
    let heap = engine.stats("s").unwrap().cur_alloc_bytes;
    let before = allocations();
    for _ in 0..CALLS {
        engine.call_hook("s", "f", &packet).unwrap();
    }
    let made = allocations() - before;
    assert_eq!(made, 0, "{made} allocations in {CALLS} hook calls");
    assert_eq!(engine.stats("s").unwrap().cur_alloc_bytes, heap, "the Lua heap did not grow");
}
