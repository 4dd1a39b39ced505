//! Arbitrary IP packets (separated by the byte 0xFF) through a small reassembly table: no panic,
//! and the bounds always hold.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nflua_stream::{Direction, Limits, Table};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { depth: 256, max_ahead: 128, max_flows: 8, max_settled: 8, max_bytes: 1024, idle_ns: 50 };
    let mut table: Table<()> = Table::new(limits);
    let mut now = 0;
    for packet in data.split(|&b| b == 0xFF) {
        now += 10;
        if let Ok(seen) = table.segment(now, packet) {
            if let Some(flow) = table.flow(seen.flow) {
                for direction in [Direction::Original, Direction::Reply] {
                    assert!(flow.stream(direction).len() <= limits.depth);
                    assert!(flow.half(direction).held_ahead() <= limits.max_ahead);
                }
            }
            if seen.closed {
                table.remove(seen.flow);
            }
        }
        assert!(table.stored() <= limits.max_bytes && table.active() <= limits.max_flows);
        assert!(table.len() <= limits.max_flows + limits.max_settled + 1);
        table.expire(now);
    }
});
