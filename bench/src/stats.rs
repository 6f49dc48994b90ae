//! Throughput and latency of one measured phase.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Summary {
    /// Successful operations completed inside the measured window.
    pub ok: u64,
    /// Failed operations (non-200 answers, store errors, dropped connections).
    pub errors: u64,
    /// Successful operations per second.
    pub per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: u32,
    /// 99th percentile latency, microseconds.
    pub p99_us: u32,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// The share of the machine's CPU that other processes used meanwhile (see `cpu`).
    pub other_load: Option<f64>,
    /// Lowest and highest throughput over the rounds, when there were several.
    pub range: Option<(f64, f64)>,
}

/// The median round by throughput (the lower middle one for an even count), with the range
/// over the rounds; the first error if no round succeeded.
pub fn median(rounds: Vec<Result<Summary, String>>) -> Result<Summary, String> {
    let n = rounds.len();
    let mut ok: Vec<Summary> = Vec::new();
    let mut first_err = None;
    for r in rounds {
        match r {
            Ok(s) => ok.push(s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if ok.is_empty() {
        return Err(first_err.unwrap_or_else(|| "not run".into()));
    }
    ok.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    let range = (ok[0].per_sec, ok[ok.len() - 1].per_sec);
    let failed = n - ok.len();
    let mut m = ok.swap_remove((ok.len() - 1) / 2);
    if n > 1 {
        m.range = Some(range);
    }
    if failed > 0 {
        m.first_error.get_or_insert_with(|| {
            format!(
                "{failed} of {n} rounds failed: {}",
                first_err.unwrap_or_default()
            )
        });
    }
    Ok(m)
}

impl Summary {
    pub fn new(
        ok: u64,
        errors: u64,
        window: Duration,
        mut latencies_us: Vec<u32>,
        first_error: Option<String>,
    ) -> Summary {
        latencies_us.sort_unstable();
        Summary {
            ok,
            errors,
            per_sec: ok as f64 / window.as_secs_f64(),
            p50_us: percentile(&latencies_us, 0.50),
            p99_us: percentile(&latencies_us, 0.99),
            first_error,
            other_load: None,
            range: None,
        }
    }
}

/// The nearest-rank percentile of sorted values (0 when there are none).
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `12345.6` → `"12,346"`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_round_is_kept_with_the_range() {
        let s = |r: f64| {
            Ok(Summary::new(
                (r * 2.0) as u64,
                0,
                Duration::from_secs(2),
                vec![],
                None,
            ))
        };
        let m = median(vec![s(30.0), s(10.0), s(20.0)]).unwrap();
        assert_eq!(m.per_sec, 20.0);
        assert_eq!(m.range, Some((10.0, 30.0)));
        let m = median(vec![s(30.0), Err("down".into()), s(10.0)]).unwrap();
        assert_eq!(m.per_sec, 10.0);
        assert!(m.first_error.unwrap().contains("1 of 3 rounds failed"));
        assert_eq!(median(vec![s(5.0)]).unwrap().range, None);
        assert_eq!(median(vec![Err("x".into())]).unwrap_err(), "x");
    }

    #[test]
    fn percentiles_and_formatting() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(ms(1250), "1.25 ms");
    }
}
