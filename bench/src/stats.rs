//! Medians and the printed table.

/// Repeated measurements of one figure.
#[derive(Debug, Clone)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
}

/// What a figure should reach: a bound on the median, or on the ratio to the row's baseline.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    RatioAtLeast(f64),
}

impl Target {
    fn check(self, median: f64, ratio: Option<f64>) -> String {
        let (what, sign, bound, value) = match self {
            Target::AtLeast(b) => ("", ">=", b, Some(median)),
            Target::AtMost(b) => ("", "<=", b, Some(median)),
            Target::RatioAtLeast(b) => ("ratio ", ">=", b, ratio),
        };
        let ok = value.is_some_and(|v| if sign == ">=" { v >= bound } else { v <= bound });
        format!("target {what}{sign} {}: {}", compact(bound), if ok { "met" } else { "MISSED" })
    }
}

/// 1500000 as "1.5M", 40960 as "40960", 0.8 as "0.8".
fn compact(x: f64) -> String {
    if x >= 1e6 {
        format!("{}M", x / 1e6)
    } else {
        format!("{x}")
    }
}

pub struct Row {
    name: &'static str,
    samples: Samples,
    ratio: Option<(&'static str, f64)>,
    target: Option<Target>,
}

impl Row {
    pub fn latency(name: &'static str, samples: Samples) -> Row {
        Row { name, samples, ratio: None, target: None }
    }

    /// A rate, optionally compared with a baseline (ratio = ours / baseline).
    pub fn rate(name: &'static str, samples: Samples, baseline: Option<(&'static str, Samples)>) -> Row {
        let ratio = baseline.map(|(label, b)| (label, samples.median() / b.median()));
        Row { name, samples, ratio, target: None }
    }

    pub fn with_target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self
    }
}

pub fn print_table(rows: &[Row]) {
    println!("{:<52} {:>12} {:>30}   ratio; target", "benchmark", "median", "runs");
    for r in rows {
        let runs: Vec<String> = r.samples.0.iter().map(|v| format!("{v:.0}")).collect();
        let mut notes: Vec<String> = r.ratio.iter().map(|(label, x)| format!("{x:.2} {label}")).collect();
        if let Some(t) = r.target {
            notes.push(t.check(r.samples.median(), r.ratio.map(|(_, x)| x)));
        }
        println!("{:<52} {:>12.1} {:>30}   {}", r.name, r.samples.median(), runs.join(" "), notes.join("; "));
    }
}
