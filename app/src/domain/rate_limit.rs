//! A rate: `N` requests at once, refilled at one every `per / N`; or none.

use std::time::Duration;

/// A per-client rate limit: `n` requests at once, refilled at one every `per / n`; or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit(pub Option<(std::num::NonZeroU32, Duration)>);

impl std::str::FromStr for RateLimit {
    type Err = String;

    /// `N/DURATION` (`20/1m`, `10/1h`) or `off`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(RateLimit(None));
        }
        let bad = || format!("`{s}` is not a rate limit like 20/1m, 10/1h or off");
        let (n, per) = s.split_once('/').ok_or_else(bad)?;
        let n: std::num::NonZeroU32 = n.trim().parse().map_err(|_| bad())?;
        let per = humantime::parse_duration(per.trim()).map_err(|_| bad())?;
        if per.is_zero() || per > Duration::from_secs(366 * 24 * 3600) {
            return Err(bad());
        }
        Ok(RateLimit(Some((n, per))))
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some((n, per)) => write!(f, "{n}/{}", humantime::format_duration(per)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_as_count_per_duration_or_off() {
        let r: RateLimit = "20/1m".parse().unwrap();
        assert_eq!(
            r.0,
            Some((
                std::num::NonZeroU32::new(20).unwrap(),
                Duration::from_secs(60)
            ))
        );
        assert_eq!("off".parse::<RateLimit>().unwrap(), RateLimit(None));
        for bad in [
            "", "20", "0/1m", "x/1m", "5/soon", "5/0s", "-1/1m", "5/1m/2",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
        assert_eq!(r.to_string(), "20/1m");
    }
}
