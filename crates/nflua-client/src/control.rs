//! The control socket: one command at a time, with the seed's four states.
//!
//! ```text
//!   ready --send--> waiting --receive: part of a LIST--> receiving
//!     ^                |                                    |
//!     +--- receive: ack / error / last LIST part -----------+
//!   any --protocol violation--> failed (close it)
//! ```

use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use nflua_proto::consts::{DEFAULT_MAX_ALLOC_BYTES, STATE_NAME_MAX};
use nflua_proto::hook::{encode_hook_add, encode_hook_del, encode_hook_list, HookSpec};
use nflua_proto::{
    encode_create, encode_destroy, encode_list, encode_stats, execute_messages, messages, name,
    reload_messages, BundleChunk, ListReassembler, MsgType, RecordFormat, Reply, StateFlags, StateRecord,
};

use crate::config::ClientConfig;
use crate::error::{strerror, ClientError};
use crate::link::{DaemonLink, Wait};
use crate::presence::usersock_port_bound;
use crate::socket::Port;

/// Largest STATS answer a client accepts, so a lying peer cannot make it
/// buffer without bound.
const STATS_LIMIT: usize = 16 << 20;

/// Milliseconds of silence after which a blocking helper checks that the
/// daemon is still there: seldom enough to cost nothing, often enough that a
/// dead daemon is reported at once rather than after the whole timeout.
const PRESENCE_CHECK_MS: u64 = 250;

/// The seed's `getstate()` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketState {
    Ready,
    Waiting,
    Receiving,
    Failed,
}

impl SocketState {
    pub fn as_str(self) -> &'static str {
        match self {
            SocketState::Ready => "ready",
            SocketState::Waiting => "waiting",
            SocketState::Receiving => "receiving",
            SocketState::Failed => "failed",
        }
    }
}

/// A state as LIST reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInfo {
    pub name: String,
    pub max_alloc: u32,
    pub cur_alloc: u32,
    /// `None` when the daemon answered with legacy records.
    pub max_runs: Option<u32>,
    pub flags: StateFlags,
}

/// What one `receive` call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// CREATE, DESTROY or EXECUTE succeeded.
    Done,
    /// LIST finished.
    States(Vec<StateInfo>),
    /// HOOK_LIST finished.
    Hooks(Vec<HookSpec>),
    /// STATS finished: the daemon's statistics as JSON text.
    Stats(String),
    /// More datagrams are needed (a LIST in progress, or a non-blocking
    /// socket with nothing to read yet).
    Pending,
}

/// Parameters of CREATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest<'a> {
    pub name: &'a str,
    pub max_runs: u32,
    pub max_alloc: u32,
    pub flags: StateFlags,
}

impl<'a> CreateRequest<'a> {
    /// A state with the default memory limit and no flags.
    pub fn new(name: &'a str, max_runs: u32) -> Self {
        CreateRequest {
            name,
            max_runs,
            max_alloc: DEFAULT_MAX_ALLOC_BYTES as u32,
            flags: StateFlags::empty(),
        }
    }
}

#[derive(Debug)]
pub struct ControlSocket {
    link: DaemonLink,
    seq: u32,
    state: SocketState,
    /// What the outstanding command expects back.
    expect: Option<MsgType>,
    list: Option<ListReassembler>,
    /// Send LIST with EXT (extended records); on by default.
    extended_list: bool,
    /// STATS text received so far.
    stats: Vec<u8>,
    /// How long the blocking helpers (`create`, `list`, ...) wait between
    /// datagrams; negative: forever.
    timeout_ms: i32,
}

impl ControlSocket {
    /// Opens a control socket on `port` talking to the daemon of `config`.
    pub fn open(config: ClientConfig, port: Port) -> Result<ControlSocket, ClientError> {
        Ok(ControlSocket {
            link: DaemonLink::open(config, port)?,
            seq: 0,
            state: SocketState::Ready,
            expect: None,
            list: None,
            extended_list: true,
            stats: Vec::new(),
            timeout_ms: -1,
        })
    }

    /// Port id of this socket (`getpid`).
    pub fn port(&self) -> Result<u32, ClientError> {
        Ok(self.link.socket()?.port())
    }

    /// Descriptor for poll/select (`getfd`).
    pub fn fd(&self) -> Result<RawFd, ClientError> {
        Ok(self.link.socket()?.as_raw_fd())
    }

    pub fn state(&self) -> SocketState {
        self.state
    }

    pub fn close(&mut self) {
        self.link.close();
    }

    pub fn is_closed(&self) -> bool {
        self.link.is_closed()
    }

    pub fn set_nonblocking(&mut self, on: bool) -> Result<(), ClientError> {
        self.link.set_nonblocking(on)
    }

    /// Bounds the blocking helpers' waits (`None`: forever); they fail with
    /// [`ClientError::NoAnswer`] when the daemon stays silent that long, and
    /// with [`ClientError::DaemonGone`] as soon as its port is unbound.
    pub fn set_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    }

    /// Ask for legacy (72-byte) records, as a 2019-era client does.
    pub fn set_extended_list(&mut self, on: bool) {
        self.extended_list = on;
    }

    fn begin(&mut self) -> Result<u32, ClientError> {
        self.link.socket()?;
        match self.state {
            SocketState::Ready => {}
            SocketState::Failed => return Err(ClientError::Failed("earlier protocol error".into())),
            SocketState::Waiting | SocketState::Receiving => return Err(ClientError::NotReady),
        }
        self.seq = self.seq.wrapping_add(1).max(1);
        Ok(self.seq)
    }

    fn sent(&mut self, expect: MsgType) {
        self.state = SocketState::Waiting;
        self.expect = Some(expect);
    }

    /// Sends CREATE with an extended record.
    pub fn send_create(&mut self, req: &CreateRequest<'_>) -> Result<(), ClientError> {
        name::check_state_name(req.name).map_err(ClientError::StateName)?;
        let record = StateRecord {
            name: req.name.to_owned(),
            max_alloc: req.max_alloc,
            cur_alloc: 0,
            max_runs: Some(req.max_runs),
            flags: Some(req.flags),
        };
        self.send_create_record(&record, RecordFormat::Extended)
    }

    /// Sends CREATE with a record in the given layout; `Legacy` reproduces an
    /// old client's 72-byte request.
    pub fn send_create_record(
        &mut self,
        record: &StateRecord,
        format: RecordFormat,
    ) -> Result<(), ClientError> {
        name::check_state_name(&record.name).map_err(ClientError::StateName)?;
        let seq = self.begin()?;
        let mut buf = Vec::new();
        encode_create(&mut buf, seq, self.port()?, record, format);
        self.link.send(&buf)?;
        self.sent(MsgType::Create);
        Ok(())
    }

    pub fn send_destroy(&mut self, state: &str) -> Result<(), ClientError> {
        name::check_state_name(state).map_err(ClientError::StateName)?;
        let seq = self.begin()?;
        let mut buf = Vec::with_capacity(16 + STATE_NAME_MAX);
        encode_destroy(&mut buf, seq, self.port()?, state);
        self.link.send(&buf)?;
        self.sent(MsgType::Destroy);
        Ok(())
    }

    /// Sends all fragments of `script`; `script_name` "" means `=chunk`.
    pub fn send_execute(&mut self, state: &str, script: &[u8], script_name: &str) -> Result<(), ClientError> {
        let port = self.port()?;
        // Validate before taking a seq so a bad argument leaves the socket ready.
        execute_messages(0, port, state, script_name, script)?;
        let seq = self.begin()?;
        for msg in execute_messages(seq, port, state, script_name, script)? {
            // On failure some fragments may be out: the daemon drops the partial
            // script when it expires or when this socket's next script starts.
            self.link.send(&msg)?;
        }
        self.sent(MsgType::Execute);
        Ok(())
    }

    /// Sends a reload of `state`: the chunks, run in order in a new state with its name, limits
    /// and flags, replace its code only if all of them succeed (answered like EXECUTE).
    pub fn send_reload(&mut self, state: &str, chunks: &[BundleChunk<'_>]) -> Result<(), ClientError> {
        let port = self.port()?;
        reload_messages(0, port, state, chunks)?;
        let seq = self.begin()?;
        for msg in reload_messages(seq, port, state, chunks)? {
            self.link.send(&msg)?;
        }
        self.sent(MsgType::Execute);
        Ok(())
    }

    pub fn send_list(&mut self) -> Result<(), ClientError> {
        let seq = self.begin()?;
        let mut buf = Vec::with_capacity(16);
        encode_list(&mut buf, seq, self.port()?, self.extended_list);
        self.link.send(&buf)?;
        let format = if self.extended_list { RecordFormat::Extended } else { RecordFormat::Legacy };
        self.list = Some(ListReassembler::new(format));
        self.sent(MsgType::List);
        Ok(())
    }

    /// Sends HOOK_ADD: bind the spec's queues to its state's function.
    pub fn send_hook_add(&mut self, spec: &HookSpec) -> Result<(), ClientError> {
        name::check_state_name(&spec.state).map_err(ClientError::StateName)?;
        name::check_state_name(&spec.function)
            .map_err(|e| ClientError::InvalidArgument(format!("function name: {e}")))?;
        spec.validate().map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let seq = self.begin()?;
        let mut buf = Vec::new();
        encode_hook_add(&mut buf, seq, self.port()?, spec);
        self.link.send(&buf)?;
        self.sent(MsgType::HookAdd);
        Ok(())
    }

    /// Sends HOOK_DEL for the hook holding `queue`.
    pub fn send_hook_del(&mut self, queue: u16) -> Result<(), ClientError> {
        let seq = self.begin()?;
        let mut buf = Vec::new();
        encode_hook_del(&mut buf, seq, self.port()?, queue);
        self.link.send(&buf)?;
        self.sent(MsgType::HookDel);
        Ok(())
    }

    pub fn send_hook_list(&mut self) -> Result<(), ClientError> {
        let seq = self.begin()?;
        let mut buf = Vec::new();
        encode_hook_list(&mut buf, seq, self.port()?);
        self.link.send(&buf)?;
        self.sent(MsgType::HookList);
        Ok(())
    }

    /// Sends STATS: statistics of every state and hook.
    pub fn send_stats(&mut self) -> Result<(), ClientError> {
        let seq = self.begin()?;
        let mut buf = Vec::new();
        encode_stats(&mut buf, seq, self.port()?);
        self.link.send(&buf)?;
        self.stats.clear();
        self.sent(MsgType::Stats);
        Ok(())
    }

    /// STATS and wait for all of it.
    pub fn stats(&mut self) -> Result<String, ClientError> {
        self.send_stats()?;
        match self.await_answer()? {
            Response::Stats(text) => Ok(text),
            other => Err(self.fail(format!("unexpected STATS outcome {other:?}"))),
        }
    }

    fn fail(&mut self, why: String) -> ClientError {
        self.state = SocketState::Failed;
        self.expect = None;
        self.list = None;
        ClientError::Failed(why)
    }

    fn finish(&mut self) {
        self.state = SocketState::Ready;
        self.expect = None;
        self.list = None;
    }

    /// Reads one datagram of the reply to the outstanding command.
    pub fn receive(&mut self) -> Result<Response, ClientError> {
        Ok(self.receive_one(Wait::Mode)?.unwrap_or(Response::Pending))
    }

    /// `None`: nothing arrived within what `wait` allows.
    fn receive_one(&mut self, wait: Wait) -> Result<Option<Response>, ClientError> {
        self.link.socket()?;
        let expect = match (self.state, self.expect) {
            (SocketState::Failed, _) => return Err(ClientError::Failed("earlier protocol error".into())),
            (SocketState::Ready, _) | (_, None) => return Err(ClientError::NotReady),
            (_, Some(expect)) => expect,
        };
        let len = match self.link.recv_from_daemon(wait) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(None),
            Err(ClientError::Failed(why)) => return Err(self.fail(why)),
            Err(e) => return Err(e),
        };
        let datagram = std::mem::take(&mut self.link.buf);
        let result = self.handle_datagram(&datagram[..len], expect);
        self.link.buf = datagram;
        result.map(Some)
    }

    fn handle_datagram(&mut self, datagram: &[u8], expect: MsgType) -> Result<Response, ClientError> {
        let mut response = Response::Pending;
        for msg in messages(datagram) {
            let msg = msg.map_err(|e| self.fail(format!("malformed reply: {e}")))?;
            if msg.header.seq != self.seq {
                let why = format!("reply seq {} does not match request seq {}", msg.header.seq, self.seq);
                return Err(self.fail(why));
            }
            let reply = Reply::decode(&msg).map_err(|e| self.fail(format!("malformed reply: {e}")))?;
            response = match reply {
                Reply::Ack { ty } if ty == expect => {
                    self.finish();
                    Response::Done
                }
                Reply::Error(e) => {
                    self.finish();
                    let message = e.message.map(str::to_owned).unwrap_or_else(|| strerror(e.errno));
                    return Err(ClientError::Daemon { errno: e.errno, message });
                }
                Reply::Stats { chunk, last } if expect == MsgType::Stats => {
                    if self.stats.len() + chunk.len() > STATS_LIMIT {
                        return Err(self.fail("STATS answer too large".into()));
                    }
                    self.stats.extend_from_slice(chunk);
                    if last {
                        self.finish();
                        let text = String::from_utf8(std::mem::take(&mut self.stats))
                            .map_err(|_| self.fail("STATS answer is not UTF-8".into()))?;
                        Response::Stats(text)
                    } else {
                        self.state = SocketState::Receiving;
                        Response::Pending
                    }
                }
                Reply::Hooks(hooks) if expect == MsgType::HookList => {
                    self.finish();
                    Response::Hooks(hooks)
                }
                Reply::List(frag) if expect == MsgType::List => {
                    let Some(list) = self.list.as_mut() else {
                        return Err(self.fail("no LIST pending".into()));
                    };
                    match list.push(&frag) {
                        Ok(None) => {
                            self.state = SocketState::Receiving;
                            Response::Pending
                        }
                        Ok(Some(records)) => {
                            self.finish();
                            Response::States(records.into_iter().map(state_info).collect())
                        }
                        Err(e) => return Err(self.fail(e.to_string())),
                    }
                }
                other => return Err(self.fail(format!("unexpected reply {other:?} to {}", expect.name()))),
            };
        }
        Ok(response)
    }

    /// Waits until a datagram can be read, for at most `timeout_ms`
    /// (negative: forever); false on timeout.
    pub fn wait_readable(&self, timeout_ms: i32) -> Result<bool, ClientError> {
        self.link.wait(timeout_ms)
    }

    /// Blocks until the outstanding command completes (or `timeout_ms`
    /// passes between datagrams; negative waits forever).
    pub fn wait(&mut self, timeout_ms: i32) -> Result<Response, ClientError> {
        loop {
            match self.receive_one(Wait::Upto(timeout_ms))? {
                None => return Err(ClientError::TimedOut),
                Some(Response::Pending) => continue,
                Some(done) => return Ok(done),
            }
        }
    }

    /// The blocking helpers' wait: up to the socket's timeout between
    /// datagrams (forever without one), and, every [`PRESENCE_CHECK_MS`] of
    /// silence, a look at whether the daemon still holds its port. A request
    /// that outlives either ends with an error that says what is known about
    /// its fate: [`ClientError::NoAnswer`] or [`ClientError::DaemonGone`].
    fn await_answer(&mut self) -> Result<Response, ClientError> {
        let daemon = self.link.config.daemon_port;
        let limit = (self.timeout_ms >= 0).then_some(self.timeout_ms as u64);
        let mut silent_ms = 0u64;
        loop {
            let slice =
                limit.map_or(PRESENCE_CHECK_MS, |l| l.saturating_sub(silent_ms).min(PRESENCE_CHECK_MS));
            let started = Instant::now();
            match self.receive_one(Wait::Upto(slice as i32))? {
                Some(Response::Pending) => {
                    silent_ms = 0;
                    continue;
                }
                Some(done) => return Ok(done),
                None => silent_ms += started.elapsed().as_millis() as u64,
            }
            let bound = self.link.daemon_bound().or_else(|| usersock_port_bound(daemon));
            if bound == Some(false) {
                // Its last answer may have been queued before it went.
                while let Some(response) = self.receive_one(Wait::Upto(0))? {
                    if !matches!(response, Response::Pending) {
                        return Ok(response);
                    }
                }
                return Err(ClientError::DaemonGone { port: daemon });
            }
            if let Some(ms) = limit.filter(|&l| silent_ms >= l) {
                return Err(ClientError::NoAnswer { ms });
            }
        }
    }

    /// CREATE and wait for the answer.
    pub fn create(&mut self, req: &CreateRequest<'_>) -> Result<(), ClientError> {
        self.send_create(req)?;
        self.await_answer().map(drop)
    }

    /// DESTROY and wait for the answer.
    pub fn destroy(&mut self, state: &str) -> Result<(), ClientError> {
        self.send_destroy(state)?;
        self.await_answer().map(drop)
    }

    /// EXECUTE and wait for the answer.
    pub fn execute(&mut self, state: &str, script: &[u8], script_name: &str) -> Result<(), ClientError> {
        self.send_execute(state, script, script_name)?;
        self.await_answer().map(drop)
    }

    /// A reload (see [`ControlSocket::send_reload`]) and wait for the answer: `Ok` once the new
    /// code is in place, the first failing chunk's error otherwise (the state is then as before).
    pub fn reload(&mut self, state: &str, chunks: &[BundleChunk<'_>]) -> Result<(), ClientError> {
        self.send_reload(state, chunks)?;
        self.await_answer().map(drop)
    }

    /// HOOK_ADD and wait for the answer.
    pub fn hook_add(&mut self, spec: &HookSpec) -> Result<(), ClientError> {
        self.send_hook_add(spec)?;
        self.await_answer().map(drop)
    }

    /// HOOK_DEL and wait for the answer.
    pub fn hook_del(&mut self, queue: u16) -> Result<(), ClientError> {
        self.send_hook_del(queue)?;
        self.await_answer().map(drop)
    }

    /// HOOK_LIST and wait for the answer.
    pub fn hook_list(&mut self) -> Result<Vec<HookSpec>, ClientError> {
        self.send_hook_list()?;
        match self.await_answer()? {
            Response::Hooks(hooks) => Ok(hooks),
            other => Err(self.fail(format!("unexpected HOOK_LIST outcome {other:?}"))),
        }
    }

    /// LIST and wait for all of it.
    pub fn list(&mut self) -> Result<Vec<StateInfo>, ClientError> {
        self.send_list()?;
        match self.await_answer()? {
            Response::States(states) => Ok(states),
            other => Err(self.fail(format!("unexpected LIST outcome {other:?}"))),
        }
    }
}

fn state_info(r: StateRecord) -> StateInfo {
    StateInfo {
        name: r.name,
        max_alloc: r.max_alloc,
        cur_alloc: r.cur_alloc,
        max_runs: r.max_runs,
        flags: r.flags.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::NetlinkSocket;
    use nflua_proto::{encode_ack, Header};

    /// A "daemon" whose uid the client does not trust is ignored: its reply
    /// never completes the command.
    #[test]
    fn replies_from_untrusted_uids_are_ignored() {
        let fake = NetlinkSocket::bind(Port::Auto, 0).unwrap();
        let uid = crate::socket::effective_uid();
        let config = ClientConfig { daemon_port: fake.port(), trusted_uids: vec![uid.wrapping_add(1)] };
        let mut c = ControlSocket::open(config, Port::Auto).unwrap();
        c.send_destroy("x").unwrap();
        let mut buf = [0u8; 256];
        let info = fake.recv(&mut buf, false).unwrap();
        let request = Header::parse(&buf[..info.len]).unwrap();
        let mut ack = Vec::new();
        encode_ack(&mut ack, MsgType::Destroy, request.seq, fake.port());
        fake.send_to(&ack, c.port().unwrap(), 0).unwrap();
        assert!(matches!(c.wait(300), Err(ClientError::TimedOut)));
        assert_eq!(c.state(), SocketState::Waiting);

        // The same reply from a trusted uid completes it.
        let mut trusting = ControlSocket::open(
            ClientConfig { daemon_port: fake.port(), trusted_uids: vec![uid] },
            Port::Auto,
        )
        .unwrap();
        trusting.send_destroy("x").unwrap();
        let info = fake.recv(&mut buf, false).unwrap();
        let request = Header::parse(&buf[..info.len]).unwrap();
        let mut ack = Vec::new();
        encode_ack(&mut ack, MsgType::Destroy, request.seq, fake.port());
        fake.send_to(&ack, trusting.port().unwrap(), 0).unwrap();
        assert_eq!(trusting.wait(2000).unwrap(), Response::Done);
    }

    #[test]
    fn reply_with_another_seq_fails_the_socket() {
        let fake = NetlinkSocket::bind(Port::Auto, 0).unwrap();
        let uid = crate::socket::effective_uid();
        let mut c = ControlSocket::open(
            ClientConfig { daemon_port: fake.port(), trusted_uids: vec![uid] },
            Port::Auto,
        )
        .unwrap();
        c.send_list().unwrap();
        let mut ack = Vec::new();
        encode_ack(&mut ack, MsgType::List, 999, fake.port());
        fake.send_to(&ack, c.port().unwrap(), 0).unwrap();
        assert!(matches!(c.wait(2000), Err(ClientError::Failed(_))));
        assert_eq!(c.state(), SocketState::Failed);
        assert!(matches!(c.send_list(), Err(ClientError::Failed(_))));
    }

    /// A daemon that takes the request and says nothing: the blocking
    /// helper gives up after its timeout, saying the request may still be
    /// applied; one that dies with the request in hand is told apart at the
    /// next presence check, long before the timeout.
    #[test]
    fn silence_and_death_are_told_apart() {
        let uid = crate::socket::effective_uid();
        let fake = NetlinkSocket::bind(Port::Auto, 0).unwrap();
        let config = ClientConfig { daemon_port: fake.port(), trusted_uids: vec![uid] };
        let mut c = ControlSocket::open(config.clone(), Port::Auto).unwrap();
        c.set_timeout(Some(std::time::Duration::from_millis(600)));
        let started = Instant::now();
        let err = c.destroy("x").unwrap_err();
        let waited = started.elapsed().as_millis();
        assert!(matches!(err, ClientError::NoAnswer { ms: 600 }), "{err:?}");
        assert_eq!(err.to_string(), "no answer within 600 ms; the request may still complete");
        assert!((600..2000).contains(&waited), "gave up after {waited} ms");

        let mut c = ControlSocket::open(config, Port::Auto).unwrap();
        c.set_timeout(Some(std::time::Duration::from_secs(30)));
        let killer = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            fake.recv(&mut buf, false).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(fake);
        });
        let started = Instant::now();
        let err = c.destroy("x").unwrap_err();
        let waited = started.elapsed().as_millis();
        killer.join().unwrap();
        assert!(matches!(err, ClientError::DaemonGone { .. }), "{err:?}");
        assert!(err.to_string().contains("went away before answering"), "{err}");
        // 100 ms until the death, then at most one presence check.
        assert!(waited < 1000, "death noticed after {waited} ms");
    }
}
