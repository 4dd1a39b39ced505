//! Turns one datagram from a client into engine calls and reply datagrams.
//! No sockets here: the server feeds bytes in and sends what comes out, so
//! this is also what a fuzzer of the daemon's request handling drives.
//!
//! Runs on the receiving thread, which must never wait for Lua: requests that
//! need no state lock (LIST, STATS, CREATE, HOOK_*) are answered here at once;
//! work that enters a state (EXECUTE once reassembled, DATA, DESTROY) becomes
//! a [`Job`] on the state's lane (see `lanes.rs`), answered by the worker that
//! runs it. Without lanes (`Handler::lanes` is `None`: the fuzzer, tests) jobs
//! run inline and their replies come back with the others.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use nflua_engine::{Engine, EngineError, StateConfig};
use nflua_netlink::Credentials;
use nflua_proto::consts::{DEFAULT_CHUNK_NAME, NLMSG_HDRLEN};
use nflua_proto::hook::encode_hook_list_reply;
use nflua_proto::reply::encode_stats_reply;
use nflua_proto::{
    encode_ack, encode_error, encode_list_reply, errno, messages, DecodeError, Header, Message, MsgFlags,
    MsgType, RecordFormat, Request, StateFlags, StateRecord,
};

use crate::clients::Clients;
use crate::jobs::{journaled, Job, JobContext, Origin, SharedJournal};
use crate::journal::{Journal, RecordError, RestoreFailures};
use crate::lanes::{Lanes, Refused};
use crate::queue::hooks::{HookError, Hooks};
use crate::refusals::Refusals;
use crate::stats::{RequestCounters, Snapshot};

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
pub(crate) struct Failure {
    pub(crate) errno: i32,
    pub(crate) text: String,
}

impl Failure {
    pub(crate) fn new(errno: i32, text: impl Into<String>) -> Self {
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
    pub(crate) engine: Arc<Engine>,
    pub(crate) hooks: Hooks,
    pub(crate) clients: Clients,
    pub(crate) policy: Policy,
    /// Our own port id, the sender field of every reply header.
    pub(crate) port: u32,
    /// `--state-dir`: every successful change is recorded before it is acknowledged.
    pub(crate) journal: Option<SharedJournal>,
    /// Where work that enters a state goes; `None`: it runs inline, on the caller's thread.
    pub(crate) lanes: Option<Lanes<Job>>,
    /// Senders refused, for rate-limited logging.
    pub(crate) refusals: Refusals,
    /// Requests refused, dropped or turned away, for STATS and metrics.
    pub(crate) counters: Arc<RequestCounters>,
    /// Journaled states that failed to restore (shared with the journal, read without its lock).
    pub(crate) failures: RestoreFailures,
}

impl Handler {
    /// A handler serving as port `port`, with `engine`'s states and `hooks`, admitting senders
    /// by `policy`; no journal, and work that enters a state runs inline until
    /// [`Handler::set_lanes`] gives it lanes. `counters` and `failures` are shared with the
    /// metrics and the journal.
    pub fn new(
        engine: Arc<Engine>,
        hooks: Hooks,
        policy: Policy,
        port: u32,
        counters: Arc<RequestCounters>,
        failures: RestoreFailures,
    ) -> Handler {
        Handler {
            engine,
            hooks,
            clients: Clients::default(),
            policy,
            port,
            journal: None,
            lanes: None,
            refusals: Refusals::default(),
            counters,
            failures,
        }
    }

    /// Hands work that enters a state to `lanes` (one queue per state) instead of running it inline.
    pub fn set_lanes(&mut self, lanes: Lanes<Job>) {
        self.lanes = Some(lanes);
    }

    /// Handles every message of `datagram` and returns the datagrams to send
    /// back to the sender, in order.
    pub fn handle_datagram(&mut self, datagram: &[u8], from: Sender, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if !self.policy.allows(from.creds) {
            // Logged rate-limited: a flood of refused datagrams must not flood the log.
            self.counters.refused.fetch_add(1, Relaxed);
            if !self.refusals.note(from.creds.map(|c| c.uid), from.port, now) {
                return out;
            }
            let uid = from.creds.map_or_else(|| "unknown".to_owned(), |c| c.uid.to_string());
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
                    tracing::warn!(port = from.port, error = %e, "netlink protocol out of sync: malformed datagram: {e}");
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
                let text = e.to_string();
                crate::failure_log::warn(msg.header.ty, None, from.port, e.errno(), &text);
                out.push(error_datagram(e.errno(), &msg.header, &text, self.port));
                return;
            }
        };
        let seq = msg.header.seq;
        let origin = Origin { port: from.port, header: msg.header };
        let state = request_state(&request);
        let result = match request {
            Request::Create(record) => self.create(record).map(|()| ack(MsgType::Create, seq, self.port)),
            // A state that failed to restore exists only in the journal: destroying it discards
            // its entries there.
            Request::Destroy { name } if self.failures.get(name).is_some() => self
                .journaled(name, |j| j.discard_failed(name))
                .map(|()| ack(MsgType::Destroy, seq, self.port)),
            Request::Destroy { name } => {
                match self.submit(Job::Destroy { origin, state: name.to_owned() }, out) {
                    Ok(()) => return,
                    Err(f) => Err(f),
                }
            }
            Request::List { ext } => {
                out.extend(self.list(ext, seq));
                return;
            }
            Request::Execute(frag) => match self.execute(origin, &frag, now, out) {
                Ok(()) => return,
                Err(f) => Err(f),
            },
            Request::Data { name, payload } => {
                let held = match self.engine.hold_pending(name, payload.len()) {
                    Ok(held) => held,
                    Err(e) => {
                        let text = e.to_string();
                        crate::failure_log::warn(msg.header.ty, Some(name), from.port, e.errno(), &text);
                        out.push(error_datagram(e.errno(), &msg.header, &text, self.port));
                        return;
                    }
                };
                let job = Job::Data { origin, state: name.to_owned(), payload: payload.to_vec(), held };
                match self.submit(job, out) {
                    // DATA is not acknowledged on success (as the original).
                    Ok(()) => return,
                    Err(f) => Err(f),
                }
            }
            Request::HookAdd(spec) => self.hook_add(spec).map(|()| ack(MsgType::HookAdd, seq, self.port)),
            Request::HookDel { queue } => {
                self.hook_del(queue).map(|()| ack(MsgType::HookDel, seq, self.port))
            }
            Request::Stats => {
                let json = Snapshot::take(&self.engine, &self.hooks.registry(), &self.counters)
                    .with_failures(Some(&self.failures))
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
                crate::failure_log::warn(msg.header.ty, state.as_deref(), from.port, f.errno, &f.text);
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
        if let Some(failed) = self.failures.get(&name) {
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

    /// Hands `job` to its state's lane (or runs it inline without lanes). Work for a state
    /// that does not exist is refused here, so no lane is ever made for a name that is not a
    /// state.
    fn submit(&mut self, job: Job, out: &mut Vec<Vec<u8>>) -> Result<(), Failure> {
        let state = job.state().to_owned();
        if !self.engine.contains(&state) {
            return Err(EngineError::NotFound(state).into());
        }
        let Some(lanes) = &self.lanes else {
            out.extend(self.job_context().run(job).map(|(_, reply)| reply));
            return Ok(());
        };
        let bytes = job.bytes();
        lanes.push(&state, job, bytes, true).map_err(|refused| {
            self.counters.busy.fetch_add(1, Relaxed);
            let errno = if refused == Refused::Stopped { libc::ESHUTDOWN } else { errno::ENOBUFS };
            Failure::new(errno, refused.to_string())
        })
    }

    /// What a worker needs to run jobs of this handler.
    pub fn job_context(&self) -> JobContext {
        JobContext { engine: Arc::clone(&self.engine), journal: self.journal.clone(), port: self.port }
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
        &self,
        what: &str,
        record: impl FnOnce(&mut Journal) -> Result<(), RecordError>,
    ) -> Result<(), Failure> {
        journaled(self.journal.as_ref(), what, record)
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

    /// Feeds one EXECUTE fragment; hands the script to its state's lane when complete.
    /// `Ok(())`: nothing to answer now (or a fragment of an already failed request).
    fn execute(
        &mut self,
        origin: Origin,
        frag: &nflua_proto::ExecuteFragment<'_>,
        now: Instant,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), Failure> {
        let header = origin.header;
        let client = self.clients.get(origin.port, now);
        if frag.script.is_some() {
            client.discard_seq = None;
        } else if client.discard_seq == Some(header.seq) {
            if frag.is_last() {
                client.discard_seq = None;
            }
            return Ok(());
        }
        let script = match client.reassembler.push(header.seq, frag) {
            Ok(Some(script)) => script,
            Ok(None) => return Ok(()),
            Err(e) => {
                if !frag.is_last() {
                    client.discard_seq = Some(header.seq);
                }
                return Err(Failure::new(e.errno(), e.to_string()));
            }
        };
        if script.reload {
            let chunks = nflua_proto::decode_bundle(&script.body)
                .map_err(|e| Failure::new(nflua_proto::errno::EINVAL, e.to_string()))?
                .into_iter()
                .map(|c| (c.name.to_owned(), c.body.to_vec()))
                .collect();
            return self.submit(Job::Reload { origin, state: script.state, chunks }, out);
        }
        let chunk_name = if script.name.is_empty() { DEFAULT_CHUNK_NAME.to_owned() } else { script.name };
        self.submit(Job::Execute { origin, state: script.state, chunk_name, body: script.body }, out)
    }

    /// A malformed EXECUTE message ends the pending request of its sender.
    fn abandon_execute(&mut self, port: u32, header: &Header, now: Instant) {
        let client = self.clients.get(port, now);
        client.reassembler.clear();
        let flags = MsgFlags::from_bits_truncate(header.flags);
        client.discard_seq = (!flags.contains(MsgFlags::DONE)).then_some(header.seq);
    }
}

/// The state a request names, for the failure log.
fn request_state(request: &Request<'_>) -> Option<String> {
    match request {
        Request::Create(record) => Some(record.name.clone()),
        Request::Destroy { name } | Request::Data { name, .. } => Some((*name).to_owned()),
        Request::Execute(frag) => frag.script.as_ref().map(|s| s.state.to_owned()),
        Request::HookAdd(spec) => Some(spec.state.clone()),
        _ => None,
    }
}

fn clamp_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub(crate) fn ack(ty: MsgType, seq: u32, port: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(NLMSG_HDRLEN);
    encode_ack(&mut b, ty, seq, port);
    b
}

pub(crate) fn error_datagram(errno: i32, request: &Header, text: &str, port: u32) -> Vec<u8> {
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
