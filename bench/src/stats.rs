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

pub struct Row {
    name: &'static str,
    samples: Samples,
    ratio: Option<(&'static str, f64)>,
}

impl Row {
    pub fn latency(name: &'static str, samples: Samples) -> Row {
        Row { name, samples, ratio: None }
    }

    /// A rate, optionally compared with a baseline (ratio = ours / baseline).
    pub fn rate(name: &'static str, samples: Samples, baseline: Option<(&'static str, Samples)>) -> Row {
        let ratio = baseline.map(|(label, b)| (label, samples.median() / b.median()));
        Row { name, samples, ratio }
    }
}

pub fn print_table(rows: &[Row]) {
    println!("{:<48} {:>14} {:>30}   ratio", "benchmark", "median", "runs");
    for r in rows {
        let runs: Vec<String> = r.samples.0.iter().map(|v| format!("{v:.0}")).collect();
        let ratio = r.ratio.map_or_else(String::new, |(label, x)| format!("{x:.2} {label}"));
        println!("{:<48} {:>14.1} {:>30}   {}", r.name, r.samples.median(), runs.join(" "), ratio);
    }
}
