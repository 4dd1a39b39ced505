//! Any datagram: splitting, request and reply decoding must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nflua_proto::{messages, Reply, Request};

fuzz_target!(|data: &[u8]| {
    for msg in messages(data).flatten() {
        let _ = Request::decode(&msg);
        let _ = Reply::decode(&msg);
    }
});
