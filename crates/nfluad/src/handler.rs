//! Turns one datagram from a client into engine calls and reply datagrams.
//! No sockets here: the server feeds bytes in and sends what comes out, so
//! this is also what a fuzzer of the daemon's request handling drives.

use std::sync::Arc;
use std::time::Instant;

use nflua_client::socket::Credentials;
use nflua_engine::{Engine, EngineError, StateConfig};
use nflua_proto::consts::{DEFAULT_CHUNK_NAME, NLMSG_HDRLEN};
use nflua_proto::hook::encode_hook_list_reply;
use nflua_proto::reply::encode_stats_reply;
use nflua_proto::{
    encode_ack, encode_error, encode_list_reply, errno, messages, DecodeError, Header, Message, MsgFlags,
    MsgType, RecordFormat, Request, StateFlags, StateRecord,
};

use crate::clients::Clients;
use crate::journal::{Journal, RecordError};
use crate::queue::hooks::{HookError, Hooks};
use crate::stats::Snapshot;

/// Who sent a datagram.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    pub port: u32,
    pub creds: Option<Credentials>,
}

/// Who may talk to the daemon (SPEC §2: root, or listed uids/gids).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    pub default_max_runs: u32,
}

impl Policy {
    fn allows(&self, creds: Option<Credentials>) -> bool {
        creds.is_some_and(|c| {
            c.uid == 0 || self.allow_uids.contains(&c.uid) || self.allow_gids.contains(&c.gid)
        })
    }
}

/// An error to answer with: errno and text.
#[derive(Debug)]
struct Failure {
    errno: i32,
    text: String,
}

impl Failure {
    fn new(errno: i32, text: impl Into<String>) -> Self {
        Failure { errno, text: text.into() }
    }
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Self {
        Failure::new(e.errno(), e.to_string())
    }
}

impl From<HookError> for Failure {
    fn from(e: HookError) -> Self {
        Failure::new(e.errno(), e.to_string())
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        Failure::new(e.errno(), e.to_string())
    }
}

/// Request handling state: the engine, per-client reassembly, and policy.
pub struct Handler {
    pub engine: Arc<Engine>,
    pub hooks: Hooks,
    pub clients: Clients,
    pub policy: Policy,
    /// Our own port id, the sender field of every reply header.
    pub port: u32,
    /// `--state-dir`: every successful change is recorded before it is acknowledged.
    pub journal: Option<Journal>,
}

impl Handler {
    /// Handles every message of `datagram` and returns the datagrams to send
    /// back to the sender, in order.
    pub fn handle_datagram(&mut self, datagram: &[u8], from: Sender, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if !self.policy.allows(from.creds) {
            let uid = from.creds.map_or_else(|| "unknown".to_owned(), |c| c.uid.to_string());
            tracing::warn!(port = from.port, uid, "request from a sender without permission");
            let header = Header::parse(datagram).unwrap_or_else(|_| synthetic_header(datagram));
            let text = format!(
                "permission denied: uid {uid} may not use nfluad (see nfluad --allow-uid/--allow-gid)"
            );
            out.push(error_datagram(errno::EPERM, &header, &text, self.port));
            return out;
        }
        for msg in messages(datagram) {
            match msg {
                Ok(msg) => self.handle_message(&msg, from, now, &mut out),
                Err(e) => {
                    tracing::warn!(port = from.port, error = %e, "malformed datagram");
                    out.push(error_datagram(
                        e.errno(),
                        &synthetic_header(datagram),
                        &e.to_string(),
                        self.port,
                    ));
                }
            }
        }
        self.clients.release(from.port);
        out
    }

    fn handle_message(&mut self, msg: &Message<'_>, from: Sender, now: Instant, out: &mut Vec<Vec<u8>>) {
        let request = match Request::decode(msg) {
            Ok(r) => r,
            // Never answer Netlink's own control messages: two peers must not
            // bounce errors at each other.
            Err(DecodeError::NotARequest { .. }) => return,
            Err(e) => {
                if msg.header.ty == MsgType::Execute.as_u16() {
                    self.abandon_execute(from.port, &msg.header, now);
                }
                tracing::debug!(port = from.port, error = %e, "bad request");
                out.push(error_datagram(e.errno(), &msg.header, &e.to_string(), self.port));
                return;
            }
        };
        let seq = msg.header.seq;
        let result = match request {
            Request::Create(record) => self.create(record).map(|()| ack(MsgType::Create, seq, self.port)),
            Request::Destroy { name } => self.destroy(name).map(|()| ack(MsgType::Destroy, seq, self.port)),
            Request::List { ext } => {
                out.extend(self.list(ext, seq));
                return;
            }
            Request::Execute(frag) => match self.execute(&msg.header, &frag, from.port, now) {
                Ok(Some(reply)) => Ok(reply),
                Ok(None) => return,
                Err(f) => Err(f),
            },
            Request::Data { name, payload } => {
                match self.engine.deliver(name, from.port, payload) {
                    // DATA is not acknowledged on success (as the original).
                    Ok(()) => return,
                    Err(e) => Err(Failure::from(e)),
                }
            }
            Request::HookAdd(spec) => self.hook_add(spec).map(|()| ack(MsgType::HookAdd, seq, self.port)),
            Request::HookDel { queue } => {
                self.hook_del(queue).map(|()| ack(MsgType::HookDel, seq, self.port))
            }
            Request::Stats => {
                let json = Snapshot::take(&self.engine, &self.hooks.registry())
                    .with_failures(self.journal.as_ref().map(Journal::failures))
                    .to_json();
                out.extend(encode_stats_reply(json.as_bytes(), seq, self.port));
                return;
            }
            Request::HookList => {
                let mut b = Vec::new();
                encode_hook_list_reply(&mut b, seq, self.port, &self.hooks.list());
                Ok(b)
            }
        };
        match result {
            Ok(reply) => out.push(reply),
            Err(f) => {
                tracing::debug!(port = from.port, errno = f.errno, error = %f.text, "request failed");
                out.push(error_datagram(f.errno, &msg.header, &f.text, self.port));
            }
        }
    }

    fn create(&mut self, record: StateRecord) -> Result<(), Failure> {
        let flags = record.flags.unwrap_or_default();
        let config = StateConfig {
            name: record.name,
            max_alloc_bytes: record.max_alloc as usize,
            max_runs: record.max_runs.unwrap_or(self.policy.default_max_runs),
            debug: flags.contains(StateFlags::DEBUG),
        };
        let (name, max_alloc, max_runs, debug) =
            (config.name.clone(), config.max_alloc_bytes, config.max_runs, config.debug);
        if let Some(failed) = self.journal.as_ref().and_then(|j| j.failures().get(&name)) {
            return Err(Failure::new(
                errno::EEXIST,
                format!(
                    "state '{name}' failed to restore from the journal ({}); its entries are kept for \
                     inspection: destroy '{name}' to discard them",
                    failed.reason
                ),
            ));
        }
        self.engine.create(config)?;
        self.journaled(&name, |j| j.record_create(&name, max_alloc, max_runs, debug))
    }

    fn destroy(&mut self, name: &str) -> Result<(), Failure> {
        // A state that failed to restore exists only in the journal.
        if self.journal.as_ref().is_some_and(|j| j.failures().get(name).is_some()) {
            return self.journaled(name, |j| j.discard_failed(name));
        }
        self.engine.destroy(name)?;
        self.journaled(name, |j| j.record_destroy(name))
    }

    fn hook_add(&mut self, spec: nflua_proto::hook::HookSpec) -> Result<(), Failure> {
        self.hooks.add(spec.clone())?;
        self.journaled(&spec.state, |j| j.record_hook_add(&spec))
    }

    fn hook_del(&mut self, queue: u16) -> Result<(), Failure> {
        self.hooks.del(queue)?;
        self.journaled("hooks", |j| j.record_hook_del(queue))
    }

    /// Records a change that already took effect. If the disk refuses, the
    /// client is told how far the record got (see [`RecordError`]).
    fn journaled(
        &mut self,
        what: &str,
        record: impl FnOnce(&mut Journal) -> Result<(), RecordError>,
    ) -> Result<(), Failure> {
        let Some(journal) = self.journal.as_mut() else { return Ok(()) };
        record(journal).map_err(|e| {
            tracing::error!(%what, error = %e, "journal write failed");
            Failure::new(errno::EIO, format!("{what}: {e}"))
        })
    }

    fn list(&self, ext: bool, seq: u32) -> Vec<Vec<u8>> {
        let records: Vec<StateRecord> = self
            .engine
            .list()
            .into_iter()
            .map(|s| StateRecord {
                name: s.name,
                max_alloc: clamp_u32(s.max_alloc_bytes),
                cur_alloc: clamp_u32(s.cur_alloc_bytes),
                max_runs: Some(s.max_runs),
                flags: Some(if s.debug { StateFlags::DEBUG } else { StateFlags::empty() }),
            })
            .collect();
        let format = if ext { RecordFormat::Extended } else { RecordFormat::Legacy };
        encode_list_reply(&records, format, seq, self.port)
    }

    /// Feeds one EXECUTE fragment; runs the script when complete. `Ok(None)`:
    /// nothing to answer yet (or a fragment of an already failed request).
    fn execute(
        &mut self,
        header: &Header,
        frag: &nflua_proto::ExecuteFragment<'_>,
        port: u32,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let client = self.clients.get(port, now);
        if frag.script.is_some() {
            client.discard_seq = None;
        } else if client.discard_seq == Some(header.seq) {
            if frag.is_last() {
                client.discard_seq = None;
            }
            return Ok(None);
        }
        let script = match client.reassembler.push(header.seq, frag) {
            Ok(Some(script)) => script,
            Ok(None) => return Ok(None),
            Err(e) => {
                if !frag.is_last() {
                    client.discard_seq = Some(header.seq);
                }
                return Err(Failure::new(e.errno(), e.to_string()));
            }
        };
        let chunk_name = if script.name.is_empty() { DEFAULT_CHUNK_NAME } else { script.name.as_str() };
        let ran = self.engine.execute(&script.state, &script.body, chunk_name);
        // A chunk that raised may still have changed globals before it did:
        // it is journaled too, so a replay ends in the same place.
        if let Ok(()) | Err(EngineError::Lua(_)) = &ran {
            let failed = ran.is_err();
            self.journaled(&script.state, |j| {
                j.record_execute(&script.state, chunk_name, &script.body, failed)
            })?;
        }
        ran?;
        Ok(Some(ack(MsgType::Execute, header.seq, self.port)))
    }

    /// A malformed EXECUTE message ends the pending request of its sender.
    fn abandon_execute(&mut self, port: u32, header: &Header, now: Instant) {
        let client = self.clients.get(port, now);
        client.reassembler.clear();
        let flags = MsgFlags::from_bits_truncate(header.flags);
        client.discard_seq = (!flags.contains(MsgFlags::DONE)).then_some(header.seq);
    }
}

fn clamp_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn ack(ty: MsgType, seq: u32, port: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(NLMSG_HDRLEN);
    encode_ack(&mut b, ty, seq, port);
    b
}

fn error_datagram(errno: i32, request: &Header, text: &str, port: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + text.len());
    encode_error(&mut b, errno, request, text, port);
    b
}

/// A header to echo when the datagram did not hold a readable one.
fn synthetic_header(datagram: &[u8]) -> Header {
    let mut h = Header::parse(datagram).unwrap_or_default();
    h.len = h.len.max(datagram.len() as u32);
    h
}
