//! `nflua-bench-packet`: the packet-path benchmark. UDP over a veth pair
//! between two namespaces, through no queue, the raw NFQUEUE accept loop and
//! nfluad, printed as tables with ratios: rates, zero-loss limits, packets decided per CPU
//! second of the whole consumer process, packets nfluad let pass unevaluated, and the
//! consumers' CPU with no traffic and at a low rate. Run it through bench/packet.sh,
//! which builds everything, creates the namespaces and removes them again.
//!
//! ```text
//! nflua-bench-packet --ns-a NAME --ns-b NAME --sources IP,IP... [--quick]
//!     [--configs a,b,b1,c,c2,d,e] [--sizes 64,1400] [--rates 50000,...] [--rates-large ...]
//!     [--seconds S] [--repeats N] [--idle-seconds S]
//! ```

mod measure;
mod ns;
mod path;
mod table;

use std::time::Instant;

use anyhow::{bail, Context};

use measure::Traffic;
use ns::Netns;
use path::{Config, Path};
use table::{Paced, Result};

struct Args {
    ns_a: Netns,
    ns_b: Netns,
    sources: String,
    configs: Vec<Config>,
    sizes: Vec<usize>,
    /// Paced rates for payloads up to 64 bytes, and for larger ones.
    rates: Vec<u64>,
    rates_large: Vec<u64>,
    seconds: f64,
    repeats: usize,
    /// Length of the no-traffic CPU measurement.
    idle_seconds: f64,
}

fn list<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<Vec<T>> {
    value
        .split(',')
        .map(|v| v.trim().parse().ok().with_context(|| format!("{flag}: bad value {v:?}")))
        .collect()
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        ns_a: Netns(String::new()),
        ns_b: Netns(String::new()),
        sources: String::new(),
        configs: path::ALL.to_vec(),
        sizes: vec![64, 1400],
        rates: vec![50_000, 100_000, 150_000, 200_000, 250_000, 300_000],
        rates_large: vec![50_000, 100_000, 150_000, 200_000, 250_000],
        seconds: 2.0,
        // Five, not three: run-to-run spread on veth is 15-25 %, and with three a single outlier
        // moves a ratio by 0.2.
        repeats: 5,
        idle_seconds: 3.0,
    };
    let mut quick = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--quick" {
            quick = true;
            continue;
        }
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ns-a" => a.ns_a = Netns(v),
            "--ns-b" => a.ns_b = Netns(v),
            "--sources" => a.sources = v,
            "--configs" => {
                a.configs = v
                    .split(',')
                    .map(|k| Config::parse(k).with_context(|| format!("--configs: unknown {k:?}")))
                    .collect::<anyhow::Result<_>>()?
            }
            "--sizes" => a.sizes = list(&flag, &v)?,
            "--rates" => a.rates = list(&flag, &v)?,
            "--rates-large" => a.rates_large = list(&flag, &v)?,
            "--seconds" => a.seconds = v.parse().context("--seconds")?,
            "--repeats" => a.repeats = v.parse().context("--repeats")?,
            "--idle-seconds" => a.idle_seconds = v.parse().context("--idle-seconds")?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    anyhow::ensure!(!a.ns_a.0.is_empty() && !a.ns_b.0.is_empty(), "--ns-a and --ns-b are required");
    anyhow::ensure!(!a.sources.is_empty(), "--sources is required");
    if quick {
        // A smoke run: every path once, short, two paced rates.
        a.repeats = 1;
        a.seconds = 1.0;
        a.idle_seconds = 1.0;
        // The rates the CPU comparison (150k) and the unevaluated check (up to 250k) look at.
        a.rates = vec![150_000, 250_000];
        a.rates_large = vec![150_000];
    }
    a.rates.sort_unstable();
    a.rates_large.sort_unstable();
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let started = Instant::now();
    let log = |what: String| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    for &size in &args.sizes {
        let traffic = Traffic {
            ns_a: &args.ns_a,
            ns_b: &args.ns_b,
            sources: &args.sources,
            size,
            seconds: args.seconds,
            max_count: 5_000_000,
        };
        let rates = if size <= 64 { &args.rates } else { &args.rates_large };
        let mut results: Vec<Result> = args
            .configs
            .iter()
            .map(|&config| Result {
                config,
                unpaced: Vec::new(),
                paced: Vec::new(),
                lock: None,
                idle_load: None,
                low_rate_loads: Vec::new(),
            })
            .collect();
        // Unpaced runs go round by round, one run of every path per round: the machine's load
        // drifts over minutes, and interleaving lets each round's paths share the same drift,
        // so ratios can be taken within a round (see `table::paired_ratio`).
        for round in 1..=args.repeats {
            for result in &mut results {
                log(format!("{size} B {}, unpaced round {round}/{}", result.config.label(), args.repeats));
                let path = Path::setup(result.config, &args.ns_b)?;
                let sample = traffic.run(&path, 0);
                let low = sample.is_ok().then(|| measure_low_rate(&traffic, &path));
                let lock = path.lock_waits();
                path.teardown()?;
                let s = sample?;
                let per_cpu = s.per_consumer_cpu().map_or(String::new(), |p| format!(", {p:.0} per CPU-s"));
                eprintln!(
                    "    sent {} received {} ({:.0}/s{per_cpu}){}",
                    s.sent,
                    s.received,
                    s.received_rate(),
                    unevaluated_text(&s)
                );
                result.unpaced.push(s);
                if let Some(low) = low {
                    result.low_rate_loads.push(low?);
                }
                result.add_lock(lock?);
            }
        }
        for result in &mut results {
            log(format!("{size} B {}, paced", result.config.label()));
            let path = Path::setup(result.config, &args.ns_b)?;
            let idle = measure_idle(&traffic, &path, args.idle_seconds);
            let paced = measure_paced(&traffic, &path, rates);
            let lock = path.lock_waits();
            path.teardown()?;
            result.idle_load = idle?;
            result.paced = paced?;
            result.add_lock(lock?);
        }
        table::print_size(size, &results, args.repeats, args.seconds);
    }
    table::print_caveat();
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn unevaluated_text(s: &measure::Sample) -> String {
    s.unevaluated.map_or(String::new(), |u| format!(", unevaluated {u}"))
}

/// The consumer's share of a core with no traffic, path set up.
fn measure_idle(traffic: &Traffic, path: &Path, idle_secs: f64) -> anyhow::Result<Option<f64>> {
    // Let a freshly started consumer finish starting up before it counts as idle.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let idle = traffic.idle_load(path, idle_secs)?;
    eprintln!("    no traffic: consumer {}", show_load(idle));
    Ok(idle)
}

/// The consumer's share of a core at `LOW_RATE`, after a pause that lets it settle from the
/// run before (its receive loop stops yielding for packets once tries keep failing).
fn measure_low_rate(traffic: &Traffic, path: &Path) -> anyhow::Result<Option<f64>> {
    std::thread::sleep(std::time::Duration::from_millis(300));
    let s = traffic.run(path, table::LOW_RATE)?;
    eprintln!("    {}/s: consumer {}", table::LOW_RATE, show_load(s.consumer_load()));
    Ok(s.consumer_load())
}

fn show_load(load: Option<f64>) -> String {
    load.map_or("-".to_owned(), |l| format!("{:.3} % of a core", l * 100.0))
}

/// Paced rates in ascending order until the first one with loss, but never before
/// `table::ALWAYS_MEASURED`: the CPU comparison and the unevaluated check need every path at
/// those rates. A rate the sender could not hold (its core is shared with the consumer) but
/// that lost nothing does not stop the series: loss is what the comparison between paths is
/// about.
fn measure_paced(traffic: &Traffic, path: &Path, rates: &[u64]) -> anyhow::Result<Vec<Paced>> {
    let mut paced = Vec::new();
    for &rate in rates {
        let s = traffic.run(path, rate)?;
        let per_cpu = s.per_consumer_cpu().map_or(String::new(), |p| format!(", {p:.0} per CPU-s"));
        eprintln!(
            "    {rate}/s: sent {} ({:.0}/s) lost {}{per_cpu}{}",
            s.sent,
            s.sent_rate(),
            s.lost(),
            unevaluated_text(&s)
        );
        let run = Paced {
            rate,
            offered: s.sent_rate(),
            lost: s.lost(),
            per_cpu: s.per_consumer_cpu(),
            unevaluated: s.unevaluated,
        };
        paced.push(run);
        if run.lost > 0 && rate >= table::ALWAYS_MEASURED {
            break;
        }
    }
    Ok(paced)
}
