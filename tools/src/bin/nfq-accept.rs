//! Minimal NFQUEUE verdict loop: binds a queue, gives every packet the same verdict, prints
//! `received N` at the end. The consumer of nflua-nfqueue's integration tests (the benchmarks'
//! raw baseline is `nfq-raw` in bench/, independent of this crate).
//!
//! ```text
//! nfq-accept --queue N [--mode batch|single] [--verdict accept|drop] [--count N]
//!            [--duration-ms MS] [--idle-ms MS] [--copy-range BYTES] [--max-len N] [--max-batch N]
//!            [--recv-buffer BYTES] [--no-gso] [--no-fail-open] [--conntrack]
//! ```
//!
//! Stops after `--count` packets, `--duration-ms` (default 10 s), or `--idle-ms` without a
//! packet once one arrived — whichever comes first. Prints `ready queue N` once bound.
//! Exit status: 0 done, 1 error, 2 usage, 3 queue busy.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nflua_nfqueue::{Queue, QueueConfig, QueueError, Verdict, VerdictSink};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Batched verdicts (`NFQNL_MSG_VERDICT_BATCH`), flushed after every receive.
    Batch,
    /// One `NFQNL_MSG_VERDICT` datagram per packet.
    Single,
}

struct Args {
    config: QueueConfig,
    mode: Mode,
    verdict: Verdict,
    count: u64,
    duration: Duration,
    idle: Option<Duration>,
    max_batch: u32,
}

fn parse_num<T: std::str::FromStr>(name: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{name} needs a value"))?;
    let digits = value.strip_prefix("0x");
    match digits {
        Some(hex) => u64::from_str_radix(hex, 16).ok().and_then(|v| v.to_string().parse().ok()),
        None => value.parse().ok(),
    }
    .ok_or_else(|| format!("{name}: bad number {value:?}"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: QueueConfig::new(0),
        mode: Mode::Batch,
        verdict: Verdict::Accept,
        count: 0,
        duration: Duration::from_secs(10),
        idle: None,
        max_batch: nflua_nfqueue::DEFAULT_MAX_BATCH,
    };
    let mut queue_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--queue" => {
                args.config.queue = parse_num(&flag, it.next())?;
                queue_given = true;
            }
            "--mode" => {
                args.mode = match it.next().as_deref() {
                    Some("batch") => Mode::Batch,
                    Some("single") => Mode::Single,
                    other => return Err(format!("--mode: batch or single, not {other:?}")),
                }
            }
            "--verdict" => {
                args.verdict = match it.next().as_deref() {
                    Some("accept") => Verdict::Accept,
                    Some("drop") => Verdict::Drop,
                    other => return Err(format!("--verdict: accept or drop, not {other:?}")),
                }
            }
            "--count" => args.count = parse_num(&flag, it.next())?,
            "--duration-ms" => args.duration = Duration::from_millis(parse_num(&flag, it.next())?),
            "--idle-ms" => args.idle = Some(Duration::from_millis(parse_num(&flag, it.next())?)),
            "--copy-range" => args.config.copy_range = parse_num(&flag, it.next())?,
            "--max-len" => args.config.max_len = parse_num(&flag, it.next())?,
            "--max-batch" => args.max_batch = parse_num(&flag, it.next())?,
            "--recv-buffer" => args.config.recv_buffer = parse_num(&flag, it.next())?,
            "--no-gso" => args.config.gso = false,
            "--no-fail-open" => args.config.fail_open = false,
            "--conntrack" => args.config.conntrack = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !queue_given {
        return Err("--queue is required".into());
    }
    Ok(args)
}

fn run(args: &Args) -> Result<u64, QueueError> {
    let mut queue = Queue::open(&args.config)?;
    queue.set_max_batch(args.max_batch);
    println!("ready queue {}", queue.queue());
    let _ = std::io::stdout().flush();

    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last = start;
    let mut received = 0u64;
    let mut failure = None;
    let (mode, verdict) = (args.mode, args.verdict);
    loop {
        let now = Instant::now();
        let done = (args.count > 0 && received >= args.count)
            || now.duration_since(start) >= args.duration
            || args.idle.is_some_and(|idle| first.is_some() && now.duration_since(last) >= idle);
        if done || failure.is_some() {
            break;
        }
        let left = args.duration.saturating_sub(now.duration_since(start));
        let n = queue.recv_batch_with(left.min(Duration::from_millis(100)), |packet, verdicts| {
            let sent = match mode {
                Mode::Batch => verdicts.verdict(packet.id, verdict, None),
                Mode::Single => verdicts.verdict_single(packet.id, verdict, None),
            };
            if let Err(e) = sent {
                failure.get_or_insert(e);
            }
        })?;
        if n > 0 {
            last = Instant::now();
            first.get_or_insert(last);
            received += n as u64;
        }
    }
    let stats = queue.stats();
    queue.close()?;
    if let Some(e) = failure {
        return Err(e);
    }
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let rate = if secs > 0.0 { received as f64 / secs } else { 0.0 };
    eprintln!(
        "nfq-accept: {received} packets in {secs:.3} s ({rate:.0} packets/s); {} verdict messages in {} sends; {} overflows",
        stats.verdict_messages, stats.verdict_sends, stats.overflows
    );
    Ok(received)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("nfq-accept: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(received) => {
            println!("received {received}");
            ExitCode::SUCCESS
        }
        Err(e @ QueueError::Busy { .. }) => {
            eprintln!("nfq-accept: {e}");
            println!("busy");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("nfq-accept: {e}");
            ExitCode::from(1)
        }
    }
}
