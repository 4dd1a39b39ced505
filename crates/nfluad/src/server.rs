//! The serving loop: read a datagram, hand it to the [`Handler`], send the
//! replies; stop cleanly on SIGTERM/SIGINT.
//!
//! # Threads
//!
//! ```text
//!   receiving thread (this loop)   reads, authorizes, decodes, reassembles; answers LIST,
//!        │                         STATS, CREATE, HOOK_*, and errors at once; never runs Lua
//!        ├─► lanes (lanes.rs) ──►  workers: EXECUTE, DATA, DESTROY, timers of one state in
//!        │                         order, of different states in parallel; they send replies
//!   timer thread (timers.rs) ──┘   takes due timers and queues them on their state's lane
//!   NFQUEUE workers (queue/)       packet hooks, one thread per queue
//!   metrics thread (metrics.rs)    scrapes read the same lock-free figures as STATS
//! ```
//!
//! So a long Lua entry delays only later work of its own state; requests that need no state,
//! and every other state, are served meanwhile. A full lane answers ENOBUFS rather than block
//! or grow. Datagrams from the daemon's own port are never requests (a state cannot feed
//! itself: `nf.netlink` refuses that port too) and are dropped and counted.
//!
//! Shutdown: the first SIGTERM/SIGINT halts every Lua entry ([`nflua_engine::Engine::halt_scripts`]),
//! drops queued jobs, waits briefly for workers, stops hooks; a watchdog ends the process
//! if this takes longer than [`SHUTDOWN_LIMIT`] (a library call that does not look at the
//! halt flag cannot hold the daemon).
//!
//! The loop blocks in `recv` itself rather than in `poll`: a request costs one
//! receive and one send, as between two plain sockets, which is what the data
//! channel's round trip is measured against. The receive timeout
//! ([`HOUSEKEEPING`]) wakes the loop for expiry and loss notices, and, since
//! a socket with a timeout is never restarted after a signal handler, also
//! lets a termination signal end the wait at once. Sends never wait
//! (`MSG_DONTWAIT`): a client that stops reading must not stall the daemon.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nflua_engine::{Engine, EngineConfig};
use nflua_netlink::{NetlinkSocket, Port};
use nflua_proto::consts::{MAX_STATES, MIN_ALLOC_BYTES, PAYLOAD_MAX};

use crate::config::Config;
use crate::handler::{Handler, Policy, Sender};
use crate::inject::Injector;
use crate::jobs::Job;
use crate::journal::{Journal, RestoreFailures};
use crate::lanes::{LaneLimits, Lanes};
use crate::queue::hooks::{Hooks, QueueDefaults};
use crate::sink::SocketSink;
use crate::stats::RequestCounters;
use crate::timers::TimerThread;

/// A datagram larger than this is cut and answered with an error; requests
/// are at most a page, so anything bigger is malformed anyway.
const RECV_BUFFER: usize = 2 * PAYLOAD_MAX;

/// How often pending requests are checked for expiry.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Longest wait in `recv`. Termination signals interrupt it wherever they are delivered
/// (see `signals.rs`), so this only paces housekeeping.
const RECV_TIMEOUT: Duration = HOUSEKEEPING;

/// The whole shutdown, from the signal to the process's exit, takes at most this long.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_millis(900);

/// How long the shutdown waits for workers to end their (halted) entries.
const WORKER_GRACE: Duration = Duration::from_millis(500);

pub struct Server {
    sock: Arc<NetlinkSocket>,
    handler: Handler,
    config: Config,
    /// Set by SIGTERM/SIGINT.
    stop: Arc<AtomicBool>,
    /// Kept to tell receivers about `nf.netlink` messages they lost.
    sink: Arc<SocketSink>,
    /// Stopped (and joined) when the server is dropped.
    timers: Option<TimerThread>,
    lanes: Lanes<Job>,
    /// The last client found gone while answering it.
    vanished: Option<u32>,
}

impl Server {
    /// Binds the daemon's port and sets up the engine and signal handling.
    pub fn bind(config: Config) -> anyhow::Result<Server> {
        let sock = NetlinkSocket::bind(Port::Explicit(config.port), 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                anyhow::anyhow!(
                    "port {:#x} is taken: another nfluad (or another program) serves this network namespace",
                    config.port
                )
            } else {
                anyhow::Error::new(e).context(format!("binding NETLINK_USERSOCK port {:#x}", config.port))
            }
        })?;
        sock.set_recv_timeout(RECV_TIMEOUT).context("setting the receive timeout")?;
        if let Err(e) = sock.set_recv_buffer(config.recv_buffer) {
            tracing::warn!(error = %e, "could not set the receive buffer");
        }
        let sock = Arc::new(sock);
        let sink = Arc::new(SocketSink::new(Arc::clone(&sock), Injector::default()));
        let engine = Arc::new(Engine::new(
            EngineConfig {
                max_states: MAX_STATES,
                min_alloc_bytes: MIN_ALLOC_BYTES,
                max_call: config.max_call,
                max_hook_call: config.max_hook_call,
                ..EngineConfig::default()
            },
            Arc::clone(&sink) as Arc<dyn nflua_engine::NetlinkSink>,
        ));
        let hooks = Hooks::new(
            Arc::clone(&engine),
            QueueDefaults {
                max_len: config.queue_maxlen,
                recv_buffer: config.queue_recv_buffer,
                stream_timeout: config.stream_timeout,
                stream_memory: config.stream_memory,
                enabled: true,
            },
        );
        let counters = Arc::new(RequestCounters::default());
        let failures = RestoreFailures::default();
        if let Some(addr) = &config.metrics {
            let bound = crate::metrics::spawn(
                addr,
                Arc::clone(&engine),
                hooks.registry(),
                Arc::clone(&counters),
                failures.clone(),
            )
            .with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!(%bound, "metrics served over HTTP at /metrics");
        }
        let stop = Arc::new(AtomicBool::new(false));
        crate::signals::install(&stop)?;
        let policy = Policy {
            allow_uids: config.allow_uids.clone(),
            allow_gids: config.allow_gids.clone(),
            default_max_runs: config.default_max_runs,
        };
        let mut handler = Handler::new(engine, hooks, policy, config.port, counters, failures.clone());
        if let Some(dir) = &config.state_dir {
            restore_journal(&mut handler, dir, failures)?;
        }
        // Only now: the journal is restored inline, before anything is served.
        let jobs = handler.job_context();
        let reply_sock = Arc::clone(&sock);
        let lanes = Lanes::new(LaneLimits::default(), move |job| {
            if let Some((port, reply)) = jobs.run(job) {
                send_reply(&reply_sock, port, &reply, true);
            }
        });
        handler.set_lanes(lanes.clone());
        let timers = TimerThread::spawn(Arc::clone(&handler.engine), lanes.clone())
            .context("starting the timer thread")?;
        Ok(Server { sock, handler, config, stop, sink, timers: Some(timers), lanes, vanished: None })
    }

    /// Serves until a termination signal arrives.
    pub fn run(mut self) -> anyhow::Result<()> {
        tracing::info!(port = format_args!("{:#x}", self.config.port), "nfluad serving");
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut last_housekeeping = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            self.serve_one(&mut buf);
            let now = Instant::now();
            if now.duration_since(last_housekeeping) >= HOUSEKEEPING {
                last_housekeeping = now;
                self.housekeeping(now);
            }
        }
        tracing::info!("termination signal received, shutting down");
        spawn_watchdog();
        // No script may delay the exit: running entries stop at their next window.
        self.handler.engine.halt_scripts();
        let stuck = self.lanes.stop(Instant::now() + WORKER_GRACE);
        if stuck > 0 {
            tracing::warn!(stuck, "workers did not end their entries in time; leaving them");
        }
        self.timers.take();
        // Workers flush their pending verdicts and unbind their queues.
        self.handler.hooks.clear();
        let states = self.handler.engine.list().len();
        drop(self.handler);
        tracing::info!(states, "nfluad stopped");
        Ok(())
    }

    fn housekeeping(&mut self, now: Instant) {
        self.sink.flush_loss_notices();
        self.handler.refusals.flush(now);
        let expired = self.handler.clients.expire(now, self.config.fragment_timeout);
        if expired > 0 {
            tracing::info!(
                expired,
                in_flight = self.handler.clients.len(),
                pending_bytes = self.handler.clients.pending_bytes(),
                "dropped half-sent requests of clients that went quiet"
            );
        }
    }

    /// Waits for one datagram (at most [`HOUSEKEEPING`]) and handles it.
    fn serve_one(&mut self, buf: &mut [u8]) {
        let info = match self.sock.recv(buf, false) {
            Ok(info) => info,
            // The timeout, or a signal: the caller looks at both.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                // Our receive buffer overflowed: requests were lost, and
                // their senders cannot be told which. Say it loudly.
                tracing::error!("receive buffer overflow: requests were dropped by the kernel");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "receive failed");
                // Whatever it is, do not spin on it.
                std::thread::sleep(Duration::from_millis(10));
                return;
            }
        };
        if info.src_port == 0 {
            return; // the kernel has nothing to say on this protocol
        }
        if info.src_port == self.config.port {
            // Something we sent to ourselves: never a request (see the module doc).
            self.handler.counters.own_port.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let datagram = &buf[..info.len];
        let from = Sender { port: info.src_port, creds: info.creds };
        let replies = if info.truncated {
            vec![oversized_reply(datagram, self.config.port)]
        } else {
            self.handler.handle_datagram(datagram, from, Instant::now())
        };
        for reply in &replies {
            if !send_reply(&self.sock, from.port, reply, self.vanished != Some(from.port)) {
                // The client is gone: forget what it had in flight. Said once per port: a
                // sender that queued thousands of datagrams and left must not flood the log.
                self.vanished = Some(from.port);
                self.handler.clients.forget(from.port);
                return;
            }
        }
    }
}

/// Sends one reply without waiting; false when the client's socket is gone. A client that does
/// not read (its buffer is full) loses the reply: logged at debug level only, since a sender
/// flooding the daemon without reading would otherwise flood the log.
fn send_reply(sock: &NetlinkSocket, port: u32, reply: &[u8], log_vanished: bool) -> bool {
    match sock.send_to_nowait(reply, port, 0) {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            if log_vanished {
                tracing::debug!(port, "client vanished before its reply");
            }
            false
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) => {
            tracing::trace!(port, "reply dropped: the client's receive buffer is full");
            true
        }
        Err(e) => {
            tracing::warn!(port, error = %e, "could not send reply");
            true
        }
    }
}

/// Ends the process if the shutdown has not finished within [`SHUTDOWN_LIMIT`].
fn spawn_watchdog() {
    let spawned = std::thread::Builder::new().name("shutdown-watchdog".into()).spawn(|| {
        std::thread::sleep(SHUTDOWN_LIMIT);
        tracing::error!(limit_ms = SHUTDOWN_LIMIT.as_millis() as u64, "shutdown took too long; exiting now");
        std::process::exit(0);
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the shutdown watchdog");
    }
}

/// Opens the journal, rebuilds what it holds, and from then on records
/// changes. States that fail to restore are listed in `failures`.
fn restore_journal(
    handler: &mut Handler,
    dir: &std::path::Path,
    failures: RestoreFailures,
) -> anyhow::Result<()> {
    let (journal, restored) = Journal::open(dir, failures)?;
    handler.journal = Some(Arc::new(std::sync::Mutex::new(journal)));
    let (states, chunks, hooks) = handler.restore(restored);
    let failed = handler.failures.list().len();
    if let Some(journal) = &handler.journal {
        crate::jobs::lock_journal(journal).remove_orphans();
    }
    tracing::info!(dir = %dir.display(), states, chunks, hooks, failed, "journal restored");
    Ok(())
}

fn oversized_reply(datagram: &[u8], port: u32) -> Vec<u8> {
    let mut header = nflua_proto::Header::parse(datagram).unwrap_or_default();
    header.len = header.len.max(datagram.len() as u32);
    let mut out = Vec::new();
    let text = format!("datagram exceeds {RECV_BUFFER} bytes");
    nflua_proto::encode_error(&mut out, nflua_proto::errno::EMSGSIZE, &header, &text, port);
    out
}
