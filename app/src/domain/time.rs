//! Points in time as [`Timestamp`]s (milliseconds since the Unix epoch, what the stores keep),
//! lengths of time as [`std::time::Duration`]: the two are never the same type, so an instant
//! cannot be passed where a duration is meant. Calendar dates come from the `time` crate.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch, UTC. Serialized as that number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// One hour.
pub const HOUR: Duration = Duration::from_secs(3600);

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Timestamp {
    /// The epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// Now (the session library's clock, which tests may freeze).
    pub fn now() -> Self {
        Timestamp(ratatoskr_core::now_ms())
    }

    /// From milliseconds since the epoch (what the stores and the session library keep).
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `d` later (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(millis(d)))
    }

    /// `d` earlier (saturating).
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(millis(d)))
    }

    /// How long after `earlier` this is (zero when it is not after it).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// The start of the hour this falls in.
    pub fn hour_start(self) -> Self {
        let h = millis(HOUR);
        Timestamp(self.0 - self.0.rem_euclid(h))
    }

    /// `2026-11-28 04:35 UTC`.
    pub fn datetime(self) -> String {
        match time::UtcDateTime::from_unix_timestamp(self.0.div_euclid(1000)) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            ),
            Err(_) => "(out of range)".into(),
        }
    }

    /// `04:35`: the time of day in UTC.
    pub fn time_of_day(self) -> String {
        match time::UtcDateTime::from_unix_timestamp(self.0.div_euclid(1000)) {
            Ok(t) => format!("{:02}:{:02}", t.hour(), t.minute()),
            Err(_) => "--:--".into(),
        }
    }
}

/// `3 minutes ago` for an age.
pub fn ago(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..=59 => "just now".into(),
        60..=119 => "1 minute ago".into(),
        120..=3599 => format!("{} minutes ago", s / 60),
        3600..=7199 => "1 hour ago".into(),
        7200..=86_399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// Whole seconds, rounded up: how long to tell a client to wait.
pub fn whole_seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_utc_calendar_dates() {
        assert_eq!(Timestamp::EPOCH.datetime(), "1970-01-01 00:00 UTC");
        assert_eq!(
            Timestamp::from_millis(1_709_210_096_000).datetime(),
            "2024-02-29 12:34 UTC"
        );
        assert_eq!(
            Timestamp::from_millis(-1).datetime(),
            "1969-12-31 23:59 UTC"
        );
        assert_eq!(
            Timestamp::from_millis(1_709_210_096_000).time_of_day(),
            "12:34"
        );
        assert_eq!(
            Timestamp::from_millis(i64::MAX).datetime(),
            "(out of range)"
        );
    }

    #[test]
    fn ages_read_as_words() {
        assert_eq!(ago(Duration::from_secs(30)), "just now");
        assert_eq!(ago(Duration::from_secs(5 * 60)), "5 minutes ago");
        assert_eq!(ago(Duration::from_secs(3 * 86_400)), "3 days ago");
    }

    #[test]
    fn arithmetic_keeps_instants_and_durations_apart() {
        let t = Timestamp::from_millis(10_000);
        assert_eq!(t.plus(Duration::from_secs(5)).as_millis(), 15_000);
        assert_eq!(t.minus(Duration::from_secs(5)).as_millis(), 5_000);
        assert_eq!(
            t.since(Timestamp::from_millis(4_000)),
            Duration::from_secs(6)
        );
        assert_eq!(Timestamp::from_millis(4_000).since(t), Duration::ZERO);
        assert_eq!(
            Timestamp::from_millis(3 * 3_600_000 + 42).hour_start(),
            Timestamp::from_millis(3 * 3_600_000)
        );
        assert_eq!(whole_seconds_up(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds_up(Duration::from_secs(3)), 3);
    }
}
