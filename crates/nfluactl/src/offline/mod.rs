//! `nfluactl test`: a filter run over a capture file, offline. No daemon, no root, no network:
//! the scripts run in a fresh state of the daemon's own engine (same libraries, sandbox and
//! limits), and every packet of the capture is handed to the function as a hook would hand it
//! (same `frame`/`packet` arguments, same verdict mapping; with `--stream`, the same reassembly
//! as stream hooks, `nflua-stream`). Time is the capture's ([`nflua_engine::ReplayClock`]):
//! `nf.time()` returns the packet's timestamp and timers fire as capture time passes their
//! deadlines, before the first packet at or after them.
//!
//! Layout: `capture` (reading pcap/pcapng into IP packets), `recorder` (the engine's sink:
//! `nf.reply` packets and `nf.netlink` messages are kept, not sent), `stream` (the stream hook's
//! connections and decisions), `report` (lines, JSON, `--expect`, `--write-pcap`).

mod capture;
mod recorder;
pub mod report;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use nflua_engine::{
    Clock, Engine, EngineConfig, Given, HookMode, HookResult, PacketContext, ReplayClock, StateConfig,
    StateRef, DEFAULT_MAX_CALL, DEFAULT_MAX_HOOK_CALL, ETHERNET_HEADER_LEN,
};

use capture::{Capture, Frame, Record};
use recorder::Recorder;
use report::{PacketResult, Report};
use stream::Streams;

/// The state's name inside the run (scripts rarely care; `nf.netlink` messages carry it).
const STATE: &str = "test";

/// Timer passes at one capture instant at most: a callback re-arming itself with a zero delay
/// would otherwise keep capture time from ever moving on.
const MAX_TIMER_PASSES: usize = 100_000;

/// What `nfluactl test` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub pcap: PathBuf,
    pub scripts: Vec<PathBuf>,
    pub function: String,
    pub mode: HookMode,
    pub stream: bool,
    pub stream_depth: u32,
    /// How long (capture time) a stream hook holds a packet for its connection's decision.
    pub hold_timeout: Duration,
    pub tcp_payload: bool,
    pub instructions: u32,
    pub memory: u32,
}

/// Runs the capture through the function and says what happened to each packet.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let mut capture = Capture::open(&options.pcap)?;
    let first = capture.next_record()?;
    let clock = ReplayClock::new();
    // The scripts load at the capture's first instant, as if hooked just before it began.
    if let Some(record) = &first {
        clock.set_wall(record.time);
    }
    let recorder = Arc::new(Recorder::default());
    let config = EngineConfig {
        max_call: Some(DEFAULT_MAX_CALL),
        max_hook_call: Some(DEFAULT_MAX_HOOK_CALL),
        clock: Clock::Replay(Arc::clone(&clock)),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Arc::clone(&recorder) as Arc<dyn nflua_engine::NetlinkSink>);
    let state = StateConfig {
        name: STATE.into(),
        max_alloc_bytes: options.memory as usize,
        max_runs: options.instructions,
        debug: false,
    };
    engine.create(state).map_err(|e| anyhow!("creating the state: {e}"))?;
    for script in &options.scripts {
        let code = std::fs::read(script).with_context(|| format!("reading {}", script.display()))?;
        engine
            .execute(STATE, &code, &format!("@{}", script.display()))
            .map_err(|e| anyhow!("{}: {e}", script.display()))?;
    }
    let state = engine.state_ref(STATE).map_err(|e| anyhow!("{e}"))?;
    let streams = options.stream.then(|| Streams::new(options.stream_depth, options.hold_timeout));
    let mut replay =
        Replay { options, engine: &engine, state, clock, recorder, streams, report: Report::default() };
    let mut next = first;
    while let Some(record) = next {
        replay.packet(&record);
        next = capture.next_record()?;
    }
    Ok(replay.finish())
}

/// A run in progress.
struct Replay<'a> {
    options: &'a Options,
    engine: &'a Engine,
    state: StateRef,
    clock: Arc<ReplayClock>,
    recorder: Arc<Recorder>,
    streams: Option<Streams>,
    report: Report,
}

impl Replay<'_> {
    fn packet(&mut self, record: &Record) {
        self.run_timers_until(record.time);
        let start = *self.report.start.get_or_insert(record.time);
        let mut result = PacketResult::new(self.report.results.len() + 1, record.time.saturating_sub(start));
        match record.frame() {
            Frame::Skipped(reason) => {
                result.summary = "-".into();
                result.skip(reason.into_owned());
                self.report.results.push(result);
            }
            Frame::Ip { ip_packet, source_mac } => {
                result.summary = report::summary(ip_packet);
                let link_header =
                    nflua_engine::link_header(source_mac.as_ref().map(|m| &m[..]), ip_packet, 0);
                match &mut self.streams {
                    Some(streams) => {
                        let index = self.report.results.len();
                        self.report.results.push(result);
                        let call = Call { state: &self.state, function: &self.options.function };
                        streams.packet(&call, record.time, index, ip_packet, link_header, &mut self.report);
                    }
                    None => {
                        self.evaluate(&mut result, ip_packet, link_header);
                        self.report.results.push(result);
                    }
                }
            }
        }
        let index = self.report.results.len() - 1;
        let replies = self.recorder.take_replies();
        self.report.record_sent(index, record.time, replies);
    }

    /// A packet hook's call, as the daemon's queue worker makes it.
    fn evaluate(
        &mut self,
        result: &mut PacketResult,
        ip_packet: &[u8],
        link_header: [u8; ETHERNET_HEADER_LEN],
    ) {
        let given = if self.options.tcp_payload { Given::TcpPayload } else { Given::IpPacket };
        let id = nflua_packet::connection_id(ip_packet);
        let Some(ctx) = PacketContext::new(link_header, ip_packet, given, self.options.mode, id) else {
            result.not_given(self.options.mode, "no TCP payload (--tcp-payload)");
            return;
        };
        match self.state.call_hook(&self.options.function, &ctx) {
            Ok(outcome) => {
                let verdict = match outcome.result {
                    HookResult::Match(_) if outcome.hotdrop => "drop",
                    HookResult::Match(true) => "match",
                    HookResult::Match(false) => "nomatch",
                    HookResult::Target(Some(v)) => v.name(),
                    HookResult::Target(None) => "continue",
                };
                result.verdict = verdict;
                if let Some(bytes) = outcome.replacement {
                    result.rewrite(bytes);
                }
            }
            Err(e) => result.fail(e.to_string()),
        }
    }

    /// Runs the timers due before capture time `wall`, each at its own deadline, then sets the
    /// clock to `wall`.
    fn run_timers_until(&mut self, wall: Duration) {
        let until = self.clock.instant_at(wall);
        let mut passes = 0;
        while let Some(deadline) = self.engine.next_timer() {
            if deadline > until {
                break;
            }
            if passes == MAX_TIMER_PASSES {
                self.report.timer_storms += 1;
                break;
            }
            passes += 1;
            self.clock.set_instant(deadline);
            let errors_before = self.state_errors();
            for timer in self.engine.take_due_timers(deadline) {
                self.engine.run_timer(timer);
                self.report.timers_run += 1;
            }
            self.report.timer_errors += self.state_errors() - errors_before;
        }
        self.clock.set_wall(wall);
    }

    fn state_errors(&self) -> u64 {
        self.engine.stats(STATE).map_or(0, |s| s.errors)
    }

    /// Packets a stream hook still holds stay `undecided`.
    fn finish(mut self) -> Report {
        self.report.netlink_messages = self.recorder.messages();
        self.report
    }
}

/// What a stream call needs of the run.
pub(crate) struct Call<'a> {
    pub state: &'a StateRef,
    pub function: &'a str,
}
