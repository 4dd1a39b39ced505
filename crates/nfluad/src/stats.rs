//! Statistics of states and hooks: one snapshot, shown two ways — JSON for
//! `nfluactl stats` (the STATS message) and Prometheus text for `--metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use nflua_engine::Engine;
use nflua_proto::HookMode;
use serde::Serialize;

use crate::journal::{FailedState, RestoreFailures};
use crate::queue::hooks::HookRegistry;

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub states: Vec<StateSnapshot>,
    pub hooks: Vec<HookSnapshot>,
    pub netlink: NetlinkSnapshot,
    pub requests: RequestsSnapshot,
    /// Journaled states that failed to restore and are not served.
    pub failed_states: Vec<FailedState>,
}

/// Requests the daemon refused, dropped or turned away, counted as they happen (shared by the
/// receiving thread, which counts, and the readers of statistics).
#[derive(Debug, Default)]
pub struct RequestCounters {
    /// Datagrams from senders without permission (answered EPERM).
    pub refused: AtomicU64,
    /// Datagrams whose sender was the daemon's own port (dropped: never requests).
    pub own_port: AtomicU64,
    /// Requests answered ENOBUFS because their state's queue was full.
    pub busy: AtomicU64,
}

#[derive(Debug, Default, Serialize)]
pub struct RequestsSnapshot {
    pub refused: u64,
    pub own_port: u64,
    pub busy: u64,
}

/// `nf.netlink` messages the daemon could not deliver (SPEC §9: overflow is
/// counted, never silent).
#[derive(Debug, Default, Serialize)]
pub struct NetlinkSnapshot {
    /// Messages a receiver's full buffer refused.
    pub dropped: u64,
    /// ENOBUFS notices delivered to receivers that had lost messages.
    pub loss_notices: u64,
}

#[derive(Debug, Serialize)]
pub struct StateSnapshot {
    pub name: String,
    pub memory_current: usize,
    pub memory_peak: usize,
    pub memory_limit: usize,
    pub maxruns: u32,
    pub instructions: u64,
    pub calls: u64,
    pub errors: u64,
    pub timers: usize,
    /// Entries that waited for another thread to leave the state.
    pub lock_waits: u64,
}

#[derive(Debug, Serialize)]
pub struct HookSnapshot {
    pub queue_first: u16,
    pub queue_last: u16,
    pub state: String,
    pub function: String,
    pub mode: &'static str,
    pub packets: u64,
    pub errors: u64,
    /// Packets not given to Lua (`--tcp-payload` and no payload).
    pub not_given: u64,
    pub verdicts: Verdicts,
    /// Lua time per packet, seconds (upper bound of a power-of-two bucket).
    pub lua_seconds_p50: Option<f64>,
    pub lua_seconds_p99: Option<f64>,
    /// Packets that passed the hook's rule without a verdict from Lua (fail-open queue full,
    /// `--queue-bypass` with no queue bound), counted by the accounting rule; `None` when the
    /// hook's counter could not be made (see `queue::bypass`).
    pub unevaluated: Option<u64>,
    /// Of those, the ones counted while no queue of the hook was bound (nfluad down).
    pub unevaluated_while_down: Option<u64>,
    /// The kernel's figures of each queue of the hook, sampled.
    pub queues: Vec<QueueSnapshot>,
    /// A stream hook's connections and held packets (`None` for a packet hook).
    pub stream: Option<StreamSnapshot>,
}

/// A stream hook's figures, summed over its queues (see `queue::stream`).
#[derive(Debug, Serialize)]
pub struct StreamSnapshot {
    /// Bytes of each direction the function sees.
    pub depth: u32,
    /// Connections tracked (being read and decided ones remembered), of them being read, bytes
    /// of their streams kept, packets held: now.
    pub flows: u64,
    pub reading: u64,
    pub bytes: u64,
    pub held: u64,
    /// Connections decided; of them, those ended by the hold timeout, by a gap or the memory
    /// bound, and by too many packets held; packets refused by the connection bound.
    pub decided: u64,
    pub timed_out: u64,
    pub broken: u64,
    pub held_over: u64,
    pub refused: u64,
}

#[derive(Debug, Serialize)]
pub struct QueueSnapshot {
    pub queue: u16,
    /// Packets waiting for a verdict at the last sample.
    pub backlog: u64,
    /// Highest backlog sampled (every 10 ms while packets flow).
    pub backlog_high_water: u64,
    /// Estimated time the queue spent full: sampled ticks that found it at its length.
    pub full_seconds: f64,
    /// Dropped by the kernel because the queue was full (fail-closed queues only).
    pub dropped_full: u64,
    /// Dropped by the kernel because the daemon's socket could not take them (fail-closed only).
    pub dropped_socket: u64,
}

#[derive(Debug, Serialize)]
pub struct Verdicts {
    pub drop: u64,
    pub accept: u64,
    pub stolen: u64,
    pub queue: u64,
    pub repeat: u64,
    pub stop: u64,
}

impl Snapshot {
    pub fn take(engine: &Engine, hooks: &HookRegistry, requests: &RequestCounters) -> Snapshot {
        let states = engine
            .all_stats()
            .into_iter()
            .map(|s| StateSnapshot {
                name: s.name,
                memory_current: s.cur_alloc_bytes,
                memory_peak: s.peak_alloc_bytes,
                memory_limit: s.max_alloc_bytes,
                maxruns: s.max_runs,
                instructions: s.instructions,
                calls: s.calls,
                errors: s.errors,
                timers: s.timers,
                lock_waits: s.lock_waits,
            })
            .collect();
        let hooks = hooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(spec, st)| {
                let v = |i: usize| st.verdicts[i].load(Ordering::Relaxed);
                HookSnapshot {
                    queue_first: spec.queue_first,
                    queue_last: spec.queue_last,
                    state: spec.state.clone(),
                    function: spec.function.clone(),
                    mode: if spec.mode == HookMode::Match { "match" } else { "target" },
                    packets: st.packets.load(Ordering::Relaxed),
                    errors: st.errors.load(Ordering::Relaxed),
                    not_given: st.not_given.load(Ordering::Relaxed),
                    verdicts: Verdicts {
                        drop: v(0),
                        accept: v(1),
                        stolen: v(2),
                        queue: v(3),
                        repeat: v(4),
                        stop: v(5),
                    },
                    lua_seconds_p50: st.lua_quantile(0.5),
                    lua_seconds_p99: st.lua_quantile(0.99),
                    unevaluated: st.bypass.unevaluated().map(|(n, _)| n),
                    unevaluated_while_down: st.bypass.unevaluated().map(|(_, n)| n),
                    queues: st
                        .bypass
                        .queues
                        .iter()
                        .map(|q| {
                            let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
                            QueueSnapshot {
                                queue: q.queue,
                                backlog: n(&q.backlog),
                                backlog_high_water: n(&q.backlog_high_water),
                                full_seconds: n(&q.full_ns) as f64 * 1e-9,
                                dropped_full: n(&q.dropped_full),
                                dropped_socket: n(&q.dropped_socket),
                            }
                        })
                        .collect(),
                    stream: spec.stream_depth.map(|depth| {
                        let f = &st.stream;
                        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
                        StreamSnapshot {
                            depth,
                            flows: n(&f.flows),
                            reading: n(&f.reading),
                            bytes: n(&f.bytes),
                            held: n(&f.held),
                            decided: n(&f.decided),
                            timed_out: n(&f.timed_out),
                            broken: n(&f.broken),
                            held_over: n(&f.held_over),
                            refused: n(&f.refused),
                        }
                    }),
                }
            })
            .collect();
        let sink = engine.sink_stats();
        let netlink = NetlinkSnapshot { dropped: sink.dropped, loss_notices: sink.loss_notices };
        let requests = RequestsSnapshot {
            refused: requests.refused.load(Ordering::Relaxed),
            own_port: requests.own_port.load(Ordering::Relaxed),
            busy: requests.busy.load(Ordering::Relaxed),
        };
        Snapshot { states, hooks, netlink, requests, failed_states: Vec::new() }
    }

    /// Adds the journaled states that failed to restore (`--state-dir`).
    pub fn with_failures(mut self, failures: Option<&RestoreFailures>) -> Snapshot {
        self.failed_states = failures.map(RestoreFailures::list).unwrap_or_default();
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let state_metrics: [Metric<StateSnapshot>; 9] = [
            ("nflua_state_memory_bytes", "gauge", "Bytes the state's Lua heap uses now.", |s| {
                s.memory_current as f64
            }),
            ("nflua_state_memory_peak_bytes", "gauge", "Highest heap use seen.", |s| s.memory_peak as f64),
            ("nflua_state_memory_limit_bytes", "gauge", "The state's maxalloc.", |s| s.memory_limit as f64),
            ("nflua_state_maxruns", "gauge", "Instructions one entry may run.", |s| s.maxruns as f64),
            ("nflua_state_instructions_total", "counter", "Instructions run (lower bound).", |s| {
                s.instructions as f64
            }),
            ("nflua_state_calls_total", "counter", "Entries into the state.", |s| s.calls as f64),
            ("nflua_state_errors_total", "counter", "Entries that failed.", |s| s.errors as f64),
            ("nflua_state_timers", "gauge", "Pending timers.", |s| s.timers as f64),
            ("nflua_state_lock_waits_total", "counter", "Entries that waited for the state.", |s| {
                s.lock_waits as f64
            }),
        ];
        for (name, kind, help, get) in state_metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in &self.states {
                let _ = writeln!(out, "{name}{{state=\"{}\"}} {}", escape(&s.name), get(s));
            }
        }
        let hook_metrics: [Metric<HookSnapshot>; 3] = [
            ("nflua_hook_packets_total", "counter", "Packets the hook saw.", |h| h.packets as f64),
            ("nflua_hook_errors_total", "counter", "Packets whose Lua call failed.", |h| h.errors as f64),
            ("nflua_hook_not_given_total", "counter", "Packets not given to Lua.", |h| h.not_given as f64),
        ];
        for (name, kind, help, get) in hook_metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for h in &self.hooks {
                let _ = writeln!(out, "{name}{{{}}} {}", hook_labels(h), get(h));
            }
        }
        let bypass_metrics: [OptionalMetric<HookSnapshot>; 2] = [
            (
                "nflua_hook_unevaluated_total",
                "Packets that passed the hook's rule without a verdict from Lua (queue full, or no queue bound).",
                |h| h.unevaluated,
            ),
            (
                "nflua_hook_unevaluated_while_down_total",
                "Of those, packets counted while no queue of the hook was bound.",
                |h| h.unevaluated_while_down,
            ),
        ];
        for (name, help, get) in bypass_metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for h in &self.hooks {
                if let Some(n) = get(h) {
                    let _ = writeln!(out, "{name}{{{}}} {n}", hook_labels(h));
                }
            }
        }
        let stream_metrics: [Metric<StreamSnapshot>; 9] = [
            ("nflua_stream_flows", "gauge", "Connections a stream hook tracks.", |f| f.flows as f64),
            ("nflua_stream_reading", "gauge", "Connections a stream hook is reading (undecided).", |f| {
                f.reading as f64
            }),
            ("nflua_stream_bytes", "gauge", "Bytes of streams a stream hook keeps.", |f| f.bytes as f64),
            ("nflua_stream_held", "gauge", "Packets held waiting for their connection's decision.", |f| {
                f.held as f64
            }),
            ("nflua_stream_decided_total", "counter", "Connections decided.", |f| f.decided as f64),
            (
                "nflua_stream_timed_out_total",
                "counter",
                "Connections whose held packets waited too long.",
                |f| f.timed_out as f64,
            ),
            (
                "nflua_stream_broken_total",
                "counter",
                "Connections with a gap or cut by the memory bound.",
                |f| f.broken as f64,
            ),
            (
                "nflua_stream_held_over_total",
                "counter",
                "Connections that would have held too many packets.",
                |f| f.held_over as f64,
            ),
            (
                "nflua_stream_refused_total",
                "counter",
                "Packets of connections past the connection bound.",
                |f| f.refused as f64,
            ),
        ];
        for (name, kind, help, get) in stream_metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for h in &self.hooks {
                if let Some(f) = &h.stream {
                    let _ = writeln!(out, "{name}{{{}}} {}", hook_labels(h), get(f));
                }
            }
        }
        let queue_metrics: [Metric<QueueSnapshot>; 5] = [
            ("nflua_queue_backlog", "gauge", "Packets waiting in the kernel queue for a verdict.", |q| {
                q.backlog as f64
            }),
            ("nflua_queue_backlog_high_water", "gauge", "Highest backlog sampled.", |q| {
                q.backlog_high_water as f64
            }),
            ("nflua_queue_full_seconds_total", "counter", "Estimated time the queue spent full.", |q| {
                q.full_seconds
            }),
            ("nflua_queue_dropped_full_total", "counter", "Dropped by the kernel: queue full.", |q| {
                q.dropped_full as f64
            }),
            ("nflua_queue_dropped_socket_total", "counter", "Dropped by the kernel: socket full.", |q| {
                q.dropped_socket as f64
            }),
        ];
        for (name, kind, help, get) in queue_metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for h in &self.hooks {
                for q in &h.queues {
                    let _ = writeln!(
                        out,
                        "{name}{{queue=\"{}\",state=\"{}\"}} {}",
                        q.queue,
                        escape(&h.state),
                        get(q)
                    );
                }
            }
        }
        let _ = writeln!(out, "# HELP nflua_hook_verdicts_total Verdicts given, by verdict.");
        let _ = writeln!(out, "# TYPE nflua_hook_verdicts_total counter");
        for h in &self.hooks {
            let v = &h.verdicts;
            for (name, n) in [
                ("drop", v.drop),
                ("accept", v.accept),
                ("stolen", v.stolen),
                ("queue", v.queue),
                ("repeat", v.repeat),
                ("stop", v.stop),
            ] {
                let _ =
                    writeln!(out, "nflua_hook_verdicts_total{{{},verdict=\"{name}\"}} {n}", hook_labels(h));
            }
        }
        let _ = writeln!(out, "# HELP nflua_hook_lua_seconds Lua time per packet (bucket upper bound).");
        let _ = writeln!(out, "# TYPE nflua_hook_lua_seconds summary");
        for h in &self.hooks {
            for (q, v) in [("0.5", h.lua_seconds_p50), ("0.99", h.lua_seconds_p99)] {
                if let Some(v) = v {
                    let _ =
                        writeln!(out, "nflua_hook_lua_seconds{{{},quantile=\"{q}\"}} {v}", hook_labels(h));
                }
            }
        }
        let netlink_metrics: [(&str, &str, u64); 2] = [
            (
                "nflua_netlink_dropped_total",
                "nf.netlink messages dropped because the receiver's buffer was full.",
                self.netlink.dropped,
            ),
            (
                "nflua_netlink_loss_notices_total",
                "ENOBUFS notices sent to receivers that lost nf.netlink messages.",
                self.netlink.loss_notices,
            ),
        ];
        let request_metrics: [(&str, &str, u64); 3] = [
            (
                "nflua_requests_refused_total",
                "Datagrams refused: their sender may not use nfluad.",
                self.requests.refused,
            ),
            (
                "nflua_requests_own_port_total",
                "Datagrams from the daemon's own port, dropped unread.",
                self.requests.own_port,
            ),
            (
                "nflua_requests_busy_total",
                "Requests refused because their state's queue was full.",
                self.requests.busy,
            ),
        ];
        for (name, help, n) in netlink_metrics.into_iter().chain(request_metrics) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {n}");
        }
        let name = "nflua_journal_failed_states";
        let _ = writeln!(out, "# HELP {name} Journaled states that failed to restore and are not served.");
        let _ = writeln!(out, "# TYPE {name} gauge\n{name} {}", self.failed_states.len());
        out
    }
}

/// Name, type, help text, and how to read the value.
type Metric<T> = (&'static str, &'static str, &'static str, fn(&T) -> f64);

/// A counter's name, help text, and its value where it is measured.
type OptionalMetric<T> = (&'static str, &'static str, fn(&T) -> Option<u64>);

fn hook_labels(h: &HookSnapshot) -> String {
    format!(
        "queues=\"{}:{}\",state=\"{}\",function=\"{}\"",
        h.queue_first,
        h.queue_last,
        escape(&h.state),
        escape(&h.function)
    )
}

/// Label values escape backslash, quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_help_type_and_labels() {
        let snap = Snapshot {
            states: vec![StateSnapshot {
                name: "we\"b".into(),
                memory_current: 100,
                memory_peak: 200,
                memory_limit: 65536,
                maxruns: 10,
                instructions: 5,
                calls: 3,
                errors: 1,
                timers: 0,
                lock_waits: 7,
            }],
            hooks: vec![HookSnapshot {
                queue_first: 0,
                queue_last: 1,
                state: "fw".into(),
                function: "f".into(),
                mode: "target",
                packets: 10,
                errors: 0,
                not_given: 0,
                verdicts: Verdicts { drop: 0, accept: 10, stolen: 0, queue: 0, repeat: 0, stop: 0 },
                lua_seconds_p50: None,
                lua_seconds_p99: None,
                unevaluated: Some(42),
                unevaluated_while_down: Some(2),
                stream: None,
                queues: vec![QueueSnapshot {
                    queue: 1,
                    backlog: 3,
                    backlog_high_water: 4096,
                    full_seconds: 0.25,
                    dropped_full: 0,
                    dropped_socket: 0,
                }],
            }],
            netlink: NetlinkSnapshot { dropped: 7, loss_notices: 2 },
            requests: RequestsSnapshot { refused: 3, own_port: 0, busy: 0 },
            failed_states: vec![],
        };
        let text = snap.to_prometheus();
        assert!(text.contains("# TYPE nflua_state_memory_bytes gauge"), "{text}");
        assert!(text.contains("nflua_state_memory_bytes{state=\"we\\\"b\"} 100"), "{text}");
        assert!(text.contains("nflua_state_errors_total{state=\"we\\\"b\"} 1"), "{text}");
        assert!(text.contains("nflua_state_lock_waits_total{state=\"we\\\"b\"} 7"), "{text}");
        assert!(text.contains("# TYPE nflua_netlink_dropped_total counter\nnflua_netlink_dropped_total 7"));
        assert!(text.contains("\nnflua_netlink_loss_notices_total 2\n"), "{text}");
        assert!(text.contains("# TYPE nflua_hook_unevaluated_total counter\nnflua_hook_unevaluated_total{queues=\"0:1\",state=\"fw\",function=\"f\"} 42\n"), "{text}");
        assert!(
            text.contains(
                "nflua_hook_unevaluated_while_down_total{queues=\"0:1\",state=\"fw\",function=\"f\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("nflua_queue_backlog_high_water{queue=\"1\",state=\"fw\"} 4096\n"), "{text}");
        assert!(text.contains("nflua_queue_full_seconds_total{queue=\"1\",state=\"fw\"} 0.25\n"), "{text}");
        assert!(
            text.contains("# TYPE nflua_requests_refused_total counter\nnflua_requests_refused_total 3\n")
        );
    }
}
