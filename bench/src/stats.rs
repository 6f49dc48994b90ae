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
