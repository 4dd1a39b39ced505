//! One measurement: a counting sink in namespace b, a bounded sender in a.

use crate::ns::{sibling, Netns, Proc};
use crate::path::{Path, PORT};

pub const DEST: &str = "192.0.2.2";

/// Outcome of one sender run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub sent: u64,
    /// Datagrams that reached the sink through the path under test: decided by the consumer
    /// (every path accepts all of them), fail-open pass-throughs excluded.
    pub received: u64,
    /// nfluad only: packets its hook let pass unevaluated (fail-open overflow) during the run,
    /// by its own count (accounting rule); they reached the sink but are not in `received`.
    pub unevaluated: Option<u64>,
    /// Sender's elapsed time.
    pub send_secs: f64,
    /// Sink's first-to-last datagram time.
    pub recv_secs: f64,
    /// CPU seconds the whole queue consumer process (every thread, user + system) used from
    /// just before the sender started to just after the sink was done (`None` without one).
    pub consumer_cpu: Option<f64>,
    /// Wall time of that window.
    pub window_secs: f64,
    /// CPU seconds of the sender (with the receive path veth runs in its context) and the sink.
    pub sender_cpu: f64,
    pub sink_cpu: f64,
    /// Times the consumer went to sleep waiting for packets during the run.
    pub consumer_sleeps: Option<u64>,
}

impl Sample {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    pub fn received_rate(&self) -> f64 {
        if self.recv_secs > 0.0 {
            self.received as f64 / self.recv_secs
        } else {
            0.0
        }
    }

    /// Packets decided per CPU second of the consumer: its efficiency, whatever bounded the
    /// rate (on this machine mostly the sender).
    pub fn per_consumer_cpu(&self) -> Option<f64> {
        self.consumer_cpu.filter(|&s| s > 0.0).map(|s| self.received as f64 / s)
    }

    /// Share of one core the consumer used over the window.
    pub fn consumer_load(&self) -> Option<f64> {
        self.consumer_cpu.filter(|_| self.window_secs > 0.0).map(|s| s / self.window_secs)
    }

    /// Cores kept busy while sending, by sender, consumer and sink (CPU seconds over the
    /// sender's time; the consumer's and the sink's idle tails add next to nothing).
    pub fn cores_busy(&self) -> [f64; 3] {
        let per = |cpu: f64| if self.send_secs > 0.0 { cpu / self.send_secs } else { 0.0 };
        [per(self.sender_cpu), per(self.consumer_cpu.unwrap_or(0.0)), per(self.sink_cpu)]
    }

    /// Consumer sleeps per 1000 packets received: each is a wake-up that the sender's CPU
    /// pays for (on a VM, an interrupt between cores that exits to the hypervisor).
    pub fn sleeps_per_k(&self) -> Option<f64> {
        let sleeps = self.consumer_sleeps?;
        (self.received > 0).then(|| sleeps as f64 * 1000.0 / self.received as f64)
    }

    pub fn sent_rate(&self) -> f64 {
        if self.send_secs > 0.0 {
            self.sent as f64 / self.send_secs
        } else {
            0.0
        }
    }
}

pub struct Traffic<'a> {
    pub ns_a: &'a Netns,
    pub ns_b: &'a Netns,
    /// Source addresses in namespace a, comma-separated.
    pub sources: &'a str,
    pub size: usize,
    pub seconds: f64,
    /// Upper bound of any run; the time bound normally ends unpaced runs.
    pub max_count: u64,
}

impl Traffic<'_> {
    /// Sends `rate` packets/s (0 = as fast as possible) for at most
    /// `self.seconds` and counts what arrives.
    pub fn run(&self, path: &Path, rate: u64) -> anyhow::Result<Sample> {
        let unevaluated_before = path.unevaluated()?;
        let mut sink_cmd = self.ns_b.command(sibling("nflua-bench-sink")?);
        let timeout_ms = ((self.seconds + 5.0) * 1000.0) as u64;
        sink_cmd.args(["--bind", &format!("{DEST}:{PORT}"), "--idle-ms", "300"]);
        sink_cmd.args(["--timeout-ms", &timeout_ms.to_string()]);
        let mut sink = Proc::spawn("nflua-bench-sink", sink_cmd)?;
        sink.expect("ready")?;

        let count = if rate > 0 { (rate as f64 * self.seconds) as u64 } else { self.max_count };
        let mut send_cmd = self.ns_a.command(sibling("nflua-bench-send")?);
        send_cmd.args(["--to", &format!("{DEST}:{PORT}"), "--from", self.sources]);
        send_cmd.args(["--size", &self.size.to_string(), "--count", &count.to_string()]);
        // Paced runs get some slack in time so the count, not the clock, ends them.
        let secs = if rate > 0 { self.seconds * 1.2 } else { self.seconds };
        send_cmd.args(["--seconds", &secs.to_string(), "--rate", &rate.to_string()]);
        let sleeps_before = path.consumer_sleeps()?;
        let window = std::time::Instant::now();
        let cpu_before = path.consumer_cpu_secs()?;
        let mut sender = Proc::spawn("nflua-bench-send", send_cmd)?;
        let (sent, send_secs) = sender.expect_count("sent ")?;
        // Read before reaping: the last line is printed when the work is done.
        let sender_cpu = sender.cpu_secs()?;
        sender.wait()?;

        let (arrived, recv_secs) = sink.expect_count("received ")?;
        let sink_cpu = sink.cpu_secs()?;
        sink.wait()?;
        let consumer_cpu = path.consumer_cpu_secs()?.zip(cpu_before).map(|(after, before)| after - before);
        let window_secs = window.elapsed().as_secs_f64();
        let consumer_sleeps =
            path.consumer_sleeps()?.zip(sleeps_before).map(|(after, before)| after.saturating_sub(before));
        let unevaluated = path.unevaluated()?.zip(unevaluated_before).map(|(after, before)| after - before);
        Ok(Sample {
            sent,
            received: arrived.saturating_sub(unevaluated.unwrap_or(0)),
            unevaluated,
            window_secs,
            send_secs,
            recv_secs,
            consumer_cpu,
            sender_cpu,
            sink_cpu,
            consumer_sleeps,
        })
    }

    /// The consumer's share of one core with the path set up and no traffic, over `secs`.
    pub fn idle_load(&self, path: &Path, secs: f64) -> anyhow::Result<Option<f64>> {
        let window = std::time::Instant::now();
        let before = path.consumer_cpu_secs()?;
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
        let after = path.consumer_cpu_secs()?;
        let wall = window.elapsed().as_secs_f64();
        Ok(after.zip(before).map(|(a, b)| (a - b) / wall))
    }
}
