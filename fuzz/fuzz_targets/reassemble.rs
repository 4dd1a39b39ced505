//! A stream of datagrams fed to the EXECUTE and LIST reassemblers: no panic,
//! and a completed script never exceeds the protocol maximum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nflua_proto::consts::SCRIPT_MAX;
use nflua_proto::{messages, ExecuteReassembler, ListReassembler, RecordFormat, Reply, Request};

fuzz_target!(|data: &[u8]| {
    let mut exec = ExecuteReassembler::new();
    let mut list = ListReassembler::new(RecordFormat::Legacy);
    // Datagrams are separated by the byte 0xFF so one input holds many.
    for datagram in data.split(|&b| b == 0xFF) {
        for msg in messages(datagram).flatten() {
            if let Ok(Request::Execute(f)) = Request::decode(&msg) {
                if let Ok(Some(script)) = exec.push(msg.header.seq, &f) {
                    assert!(script.body.len() <= SCRIPT_MAX);
                }
            }
            if let Ok(Reply::List(f)) = Reply::decode(&msg) {
                let _ = list.push(&f);
            }
        }
    }
});
