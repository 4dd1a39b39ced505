//! Medians and the printed tables.

use crate::measure::Sample;
use crate::path::Config;

/// Everything measured for one configuration at one payload size.
pub struct Result {
    pub config: Config,
    pub unpaced: Vec<Sample>,
    /// Paced rates tried, ascending.
    pub paced: Vec<Paced>,
    /// nfluad only: hook calls that waited for the Lua state, and all calls.
    pub lock: Option<(u64, u64)>,
    /// The consumer's share of one core with no traffic.
    pub idle_load: Option<f64>,
    /// Its share at `LOW_RATE`, one per round (measured right after the round's unpaced run, on
    /// the same set-up path, so that the paths of a round share the machine's drift).
    pub low_rate_loads: Vec<Option<f64>>,
}

impl Result {
    /// Median share of a core at `LOW_RATE` over the rounds.
    pub fn low_rate_load(&self) -> Option<f64> {
        let loads: Vec<f64> = self.low_rate_loads.iter().flatten().copied().collect();
        (!loads.is_empty()).then(|| median(loads))
    }
}

/// The paced rate at which packets per consumer CPU second are compared (issue 13, point 3).
pub const CPU_RATE: u64 = 150_000;
/// Paced rates up to this one are measured for every path even after a loss: point 4's check
/// (unevaluated 0 wherever b is lossless) covers 150k-250k.
pub const ALWAYS_MEASURED: u64 = 250_000;
/// The low rate at which the consumers' CPU is compared (no buying rate with idle CPU).
pub const LOW_RATE: u64 = 10_000;
/// Target of the per-CPU-second ratios against the raw batched loop.
const CPU_TARGET: f64 = 0.8;
/// Idle and low-rate CPU of nfluad may exceed the raw loop's by this factor ...
const LOAD_FACTOR: f64 = 1.1;
/// ... plus this share of a core, below which a difference is noise (a wake-up per second of
/// a sampling thread is 0.001 %).
const LOAD_FLOOR: f64 = 0.0005;

/// One paced run: the rate asked for, what the sender managed, what was lost.
#[derive(Debug, Clone, Copy)]
pub struct Paced {
    pub rate: u64,
    pub offered: f64,
    pub lost: u64,
    /// Packets decided per consumer CPU second.
    pub per_cpu: Option<f64>,
    /// nfluad only: packets passed unevaluated.
    pub unevaluated: Option<u64>,
}

impl Paced {
    /// The sender held the rate (within 3 %) and nothing was lost: the rate counts towards the
    /// zero-loss limit.
    fn passed(&self) -> bool {
        self.lost == 0 && self.offered >= self.rate as f64 * 0.97
    }
}

impl Result {
    /// Highest paced rate that passed, below the first that did not.
    pub fn zero_loss(&self) -> Option<u64> {
        self.paced.iter().take_while(|p| p.passed()).last().map(|p| p.rate)
    }

    fn zero_loss_text(&self) -> String {
        match (self.zero_loss(), self.paced.first()) {
            (_, None) => "-".into(),
            (None, Some(lowest)) => format!("<{}k", lowest.rate / 1000),
            (Some(r), _) if self.paced.iter().all(Paced::passed) => format!(">={}k", r / 1000),
            (Some(r), _) => format!("{}k", r / 1000),
        }
    }

    pub fn rate(&self) -> f64 {
        median(self.unpaced.iter().map(Sample::received_rate).collect())
    }

    /// Median packets per consumer CPU second over the unpaced runs; `None` without a consumer.
    pub fn per_cpu(&self) -> Option<f64> {
        let v: Vec<f64> = self.unpaced.iter().filter_map(Sample::per_consumer_cpu).collect();
        (!v.is_empty()).then(|| median(v))
    }

    /// Adds one daemon's lock counters (each path setup starts a fresh daemon).
    pub fn add_lock(&mut self, lock: Option<(u64, u64)>) {
        if let Some((waits, calls)) = lock {
            let (w, c) = self.lock.unwrap_or((0, 0));
            self.lock = Some((w + waits, c + calls));
        }
    }
}

/// Median over rounds of `num`'s rate divided by `den`'s in the same round: the paths of a
/// round ran back to back, so a slow minute of the machine divides out.
pub fn paired_ratio(num: &Result, den: &Result) -> f64 {
    paired(num, den, |s| Some(s.received_rate()))
}

/// The same for packets per consumer CPU second.
fn paired_cpu_ratio(num: &Result, den: &Result) -> f64 {
    paired(num, den, Sample::per_consumer_cpu)
}

fn paired(num: &Result, den: &Result, figure: impl Fn(&Sample) -> Option<f64>) -> f64 {
    let ratios = num
        .unpaced
        .iter()
        .zip(&den.unpaced)
        .filter_map(|(n, d)| Some(figure(n)? / figure(d)?))
        .filter(|r| r.is_finite())
        .collect();
    median(ratios)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn median_u(v: impl Iterator<Item = u64>) -> f64 {
    median(v.map(|x| x as f64).collect())
}

pub fn print_size(size: usize, results: &[Result], repeats: usize, seconds: f64) {
    println!();
    println!(
        "== UDP {size}-byte payload: unpaced = median of {repeats} run(s) of {seconds} s, paths \
         interleaved round by round; zero-loss limit = highest paced rate (ascending, stop at first \
         loss) with no loss"
    );
    println!(
        "{:<36} {:>10} {:>10} {:>9} {:>12} {:>24} {:>10} {:>11}",
        "configuration",
        "sent",
        "received",
        "lost",
        "received/s",
        "runs (received/s)",
        "zero-loss",
        "per CPU-s"
    );
    for r in results {
        let runs: Vec<String> =
            r.unpaced.iter().map(|s| format!("{:.0}k", s.received_rate() / 1e3)).collect();
        let per_cpu = r.per_cpu().map_or("-".to_owned(), |p| format!("{:.0}k", p / 1e3));
        println!(
            "{:<36} {:>10.0} {:>10.0} {:>9.0} {:>12.0} {:>24} {:>10} {:>11}",
            r.config.label(),
            median_u(r.unpaced.iter().map(|s| s.sent)),
            median_u(r.unpaced.iter().map(|s| s.received)),
            median_u(r.unpaced.iter().map(Sample::lost)),
            r.rate(),
            runs.join(" "),
            r.zero_loss_text(),
            per_cpu,
        );
    }
    print_ratios(size, results);
}

fn print_ratios(size: usize, results: &[Result]) {
    let find = |c: Config| results.iter().find(|r| r.config == c);
    let small = size <= 64;
    let ratios = [
        ("c/b", Config::LuaTrivial, Config::RawBatch, if small { "target >= 0.9 (64 B)" } else { "" }),
        ("d/b", Config::LuaFilter, Config::RawBatch, if small { "target >= 0.8 (64 B)" } else { "" }),
        ("e/c", Config::LuaBalanced, Config::LuaTrivial, "target >= 1.6 where cores allow (*)"),
    ];
    println!(
        "per CPU-s: packets received per CPU second of the queue consumer (all its threads, user + \
         system, which includes the verdicts' reinjection up to the sink's socket)"
    );
    println!("ratios of received/s and per CPU-s are medians of the per-round ratios");
    println!("{:<8} {:>12} {:>12} {:>11}   target", "ratio", "received/s", "zero-loss", "per CPU-s");
    for (name, num, den, target) in ratios {
        let (Some(n), Some(d)) = (find(num), find(den)) else { continue };
        let limit = match (n.zero_loss(), d.zero_loss()) {
            (Some(a), Some(b)) => format!("{:.2}", a as f64 / b as f64),
            _ => "-".into(),
        };
        let verdict = match target {
            "" => String::new(),
            t => {
                let want: f64 = t.split_whitespace().nth(2).and_then(|w| w.parse().ok()).unwrap_or(0.0);
                let ok = paired_ratio(n, d) >= want;
                format!("{t}: {}", if ok { "met" } else { "MISSED" })
            }
        };
        println!(
            "{:<8} {:>12.2} {:>12} {:>11.2}   {verdict}",
            name,
            paired_ratio(n, d),
            limit,
            paired_cpu_ratio(n, d)
        );
    }
    if let (Some(c), Some(b)) = (find(Config::LuaTrivial), find(Config::RawBatch)) {
        // At every rate b passed, c must have lost nothing; a rate c never reached (its series
        // stopped at an earlier loss) counts as lossy.
        let c_at = |rate: u64| c.paced.iter().find(|p| p.rate == rate);
        let mut missed = Vec::new();
        let mut short = Vec::new();
        for p in b.paced.iter().filter(|p| p.passed()) {
            match c_at(p.rate) {
                Some(run) if run.lost == 0 => {
                    if !run.passed() {
                        short.push(format!("{}k ({:.0}k offered)", p.rate / 1000, run.offered / 1e3));
                    }
                }
                _ => missed.push(format!("{}k", p.rate / 1000)),
            }
        }
        let verdict =
            if missed.is_empty() { "met".to_owned() } else { format!("MISSED at {}", missed.join(", ")) };
        let note = if short.is_empty() {
            String::new()
        } else {
            format!(" (c's sender fell short without loss at {})", short.join(", "))
        };
        println!("c lossless at every paced rate where b is lossless: {verdict}{note}");
    }
    print_per_cpu(size, results);
    print_unevaluated(size, results);
    print_low_load(results);
    print_cores(results);
    for r in results {
        if let Some((waits, calls)) = r.lock {
            let share = if calls == 0 { 0.0 } else { waits as f64 * 100.0 / calls as f64 };
            println!(
                "state lock, {}: {waits} of {calls} calls waited for the Lua state ({share:.1}%)",
                r.config.key()
            );
        }
    }
}

pub fn print_caveat() {
    println!();
    println!(
        "(*) this machine has {} cores shared by the sender (which also runs the receive-side kernel \
         path: veth delivers in the sender's softirq), the sink and the daemon's queue workers; e/c \
         cannot reach 1.6 unless a core is free for each queue worker (see \"cores busy\": with \
         one queue the cores are already nearly all in use).",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "a paced rate passes (counts for the zero-loss limit) only if the sender held it (>= 97%) and \
         nothing was lost; a series stops at its first loss; unpaced, the \
         sender is slowed by the receive path it carries, so there loss shows only where the consumer \
         is slower than that."
    );
    println!(
        "received excludes packets nfluad let pass unevaluated on overflow (fail-open; nfluad's own \
         count through the accounting rule `hook add` prints); nfq-raw runs without fail-open, so its \
         overflows are lost."
    );
}

/// Where the machine's cores went in the unpaced runs: what bounds the rates (and e/c).
fn print_cores(results: &[Result]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("cores busy while sending, unpaced (medians; of {cores}): sender (with veth's receive path), consumer, sink");
    for r in results {
        let busy = |i: usize| median(r.unpaced.iter().map(|s| s.cores_busy()[i]).collect());
        let (sender, consumer, sink) = (busy(0), busy(1), busy(2));
        let sleeps: Vec<f64> = r.unpaced.iter().filter_map(Sample::sleeps_per_k).collect();
        let sleeps = if sleeps.is_empty() {
            String::new()
        } else {
            format!("; consumer slept {:.0} times per 1000 packets", median(sleeps))
        };
        println!(
            "  {:<4} sender {sender:.2}  consumer {consumer:.2}  sink {sink:.2}  total {:.2}{sleeps}",
            r.config.key(),
            sender + consumer + sink
        );
    }
}

/// Issue 13, point 3: packets decided per CPU second of the consumer, nfluad against the raw
/// batched loop, unpaced (median of the per-round ratios) and paced at `CPU_RATE`.
fn print_per_cpu(size: usize, results: &[Result]) {
    let find = |c: Config| results.iter().find(|r| r.config == c);
    let Some(b) = find(Config::RawBatch) else { return };
    let b_paced = b.paced.iter().find(|p| p.rate == CPU_RATE).and_then(|p| p.per_cpu);
    println!(
        "packets decided per CPU second of the consumer ({size} B; whole process, every thread, user + \
         system, from just before the sender starts to just after the sink is done): b unpaced {}, \
         paced {}k {}",
        b.per_cpu().map_or("-".to_owned(), |p| format!("{:.0}k", p / 1e3)),
        CPU_RATE / 1000,
        b_paced.map_or("-".to_owned(), |p| format!("{:.0}k", p / 1e3)),
    );
    println!("{:<8} {:>9} {:>9} {:>11} {:>11}   target", "ratio", "unpaced", "", "paced", "");
    for (name, config) in
        [("c/b", Config::LuaTrivial), ("c'/b", Config::LuaTarget), ("d/b", Config::LuaFilter)]
    {
        let Some(n) = find(config) else { continue };
        let unpaced = paired_cpu_ratio(n, b);
        let n_paced = n.paced.iter().find(|p| p.rate == CPU_RATE).and_then(|p| p.per_cpu);
        let paced = n_paced.zip(b_paced).map(|(n, b)| n / b);
        let ok = unpaced >= CPU_TARGET && paced.is_some_and(|p| p >= CPU_TARGET);
        println!(
            "{name:<8} {unpaced:>9.2} {:>9} {:>11} {:>11}   per CPU-s >= {CPU_TARGET} unpaced and at {}k: {}",
            n.per_cpu().map_or("-".to_owned(), |p| format!("({:.0}k)", p / 1e3)),
            paced.map_or("-".to_owned(), |p| format!("{p:.2}")),
            n_paced.map_or("-".to_owned(), |p| format!("({:.0}k)", p / 1e3)),
            CPU_RATE / 1000,
            if ok { "met" } else { "MISSED" }
        );
    }
}

/// Issue 13, point 4: with fail-open, nothing passes unevaluated at a paced rate where the raw
/// batched loop is lossless.
fn print_unevaluated(size: usize, results: &[Result]) {
    let Some(b) = results.iter().find(|r| r.config == Config::RawBatch) else { return };
    let lossless: Vec<u64> = b.paced.iter().filter(|p| p.passed()).map(|p| p.rate).collect();
    for r in results.iter().filter(|r| r.config.is_nfluad()) {
        let runs: Vec<String> = r
            .paced
            .iter()
            .map(|p| {
                format!("{}k: {}", p.rate / 1000, p.unevaluated.map_or("-".to_owned(), |u| u.to_string()))
            })
            .collect();
        let missed: Vec<String> = lossless
            .iter()
            .filter(|&&rate| r.paced.iter().find(|p| p.rate == rate).is_none_or(|p| p.unevaluated != Some(0)))
            .map(|rate| format!("{}k", rate / 1000))
            .collect();
        let verdict =
            if missed.is_empty() { "met".to_owned() } else { format!("MISSED at {}", missed.join(", ")) };
        println!(
            "unevaluated ({size} B, fail-open), {:<3} {}; 0 wherever b is lossless: {verdict}",
            r.config.key(),
            runs.join(", ")
        );
    }
}

/// A consumer must not buy rate with CPU burnt while idle: its share of a core with no traffic
/// and at `LOW_RATE`, against the raw loop's.
fn print_low_load(results: &[Result]) {
    let Some(b) = results.iter().find(|r| r.config == Config::RawBatch) else { return };
    let pct = |l: Option<f64>| l.map_or("-".to_owned(), |l| format!("{:.3}%", l * 100.0));
    println!(
        "consumer CPU (share of one core), no traffic and {}k pps (median of the rounds); target: nfluad <= b x {LOAD_FACTOR} + {}% of a core",
        LOW_RATE / 1000,
        LOAD_FLOOR * 100.0
    );
    println!("  {:<4} {:>10} {:>10}", b.config.key(), pct(b.idle_load), pct(b.low_rate_load()));
    let within =
        |n: Option<f64>, b: Option<f64>| n.zip(b).is_some_and(|(n, b)| n <= b * LOAD_FACTOR + LOAD_FLOOR);
    for r in results.iter().filter(|r| r.config.is_nfluad()) {
        // Compared round by round: the share each round's b had, times the factor, plus the
        // floor; the median of those allowances is the bar.
        let allowed: Vec<f64> = r
            .low_rate_loads
            .iter()
            .zip(&b.low_rate_loads)
            .filter_map(|(n, b)| Some(n.as_ref()? - (b.as_ref()? * LOAD_FACTOR + LOAD_FLOOR)))
            .collect();
        let low_met = !allowed.is_empty() && median(allowed) <= 0.0;
        let rounds: Vec<String> = r.low_rate_loads.iter().map(|l| pct(*l)).collect();
        println!(
            "  {:<4} {:>10} {:>10}   no traffic: {}, {}k pps: {} (rounds {})",
            r.config.key(),
            pct(r.idle_load),
            pct(r.low_rate_load()),
            if within(r.idle_load, b.idle_load) { "met" } else { "MISSED" },
            LOW_RATE / 1000,
            if low_met { "met" } else { "MISSED" },
            rounds.join(" "),
        );
    }
    let rounds: Vec<String> = b.low_rate_loads.iter().map(|l| pct(*l)).collect();
    println!("  (b rounds {})", rounds.join(" "));
}
