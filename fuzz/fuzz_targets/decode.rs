//! Any datagram: splitting, request and reply decoding must never panic; nor must reading the
//! same bytes as a reload's bundle of chunks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nflua_proto::{decode_bundle, messages, Reply, Request};

fuzz_target!(|data: &[u8]| {
    for msg in messages(data).flatten() {
        let _ = Request::decode(&msg);
        let _ = Reply::decode(&msg);
    }
    let _ = decode_bundle(data);
});
