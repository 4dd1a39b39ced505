//! The daemon's request handling fed raw datagrams from a root sender, as
//! the server loop feeds it: no panic, and every reply is a well-formed
//! Netlink message of at most a page. Packet hooks are disabled so no real
//! queue is ever bound.
//!
//! Input: datagrams, each prefixed by its length as two little-endian bytes.
#![no_main]
use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use nflua_netlink::Credentials;
use nflua_engine::{Engine, EngineConfig, NetlinkSink};
use nfluad::handler::{Handler, Policy, Sender};
use nfluad::queue::hooks::{Hooks, QueueDefaults};

struct NullSink;

impl NetlinkSink for NullSink {
    fn send_data(&self, _: &str, _: u32, _: u32, _: u32, payload: &[u8]) -> std::io::Result<usize> {
        Ok(payload.len())
    }
}

fuzz_target!(|data: &[u8]| {
    // Caps keep each input cheap: without them most of the time goes to scripts running up
    // to four billion instructions in states of up to 4 GiB, which tests nothing new.
    let config =
        EngineConfig { max_states: 8, max_runs_cap: 20_000, max_alloc_cap: 1 << 20, ..EngineConfig::default() };
    let engine = Arc::new(Engine::new(config, Arc::new(NullSink)));
    let hooks = Hooks::new(Arc::clone(&engine), QueueDefaults { max_len: 16, recv_buffer: 0, stream_timeout: std::time::Duration::from_secs(1), stream_memory: 1 << 20, enabled: false });
    let policy = Policy { allow_uids: vec![], allow_gids: vec![], default_max_runs: 10_000 };
    // Without lanes, jobs run inline: their replies come back with the others.
    let mut handler = Handler::new(engine, hooks, policy, 1, Default::default(), Default::default());
    let from = Sender { port: 77, creds: Some(Credentials { pid: 1, uid: 0, gid: 0 }) };
    let mut rest = data;
    while rest.len() >= 2 {
        let len = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let (datagram, tail) = rest[2..].split_at(len);
        rest = tail;
        for reply in handler.handle_datagram(datagram, from, Instant::now()) {
            assert!(reply.len() <= 4096 + 16, "reply of {} bytes", reply.len());
            for msg in nflua_proto::messages(&reply) {
                assert!(msg.is_ok(), "malformed reply {reply:?}");
            }
        }
    }
});
