//! `docs/benchmarks.md` and the SVG chart beside it: the rows measured ([`Report`]), the
//! findings and targets worked out from them (`findings`), the Markdown (`markdown`) and the
//! chart (`svg`); `cells` formats table cells.

mod cells;
mod findings;
mod markdown;
mod svg;

use std::time::Duration;

use crate::servers::{Contender, Kind};
use crate::stats::Summary;

pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub redis: String,
    pub postgres: Result<String, String>,
    pub profile: &'static str,
}

impl Machine {
    pub fn probe(redis: String, postgres: Result<String, String>) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            redis,
            postgres,
            profile: if cfg!(debug_assertions) {
                "debug (numbers are not representative)"
            } else {
                "release"
            },
        }
    }
}

/// The HTTP scenarios, in the order of the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Read,
    Write,
    Login,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [Scenario::Read, Scenario::Write, Scenario::Login];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Read => "reads",
            Scenario::Write => "writes",
            Scenario::Login => "logins",
        }
    }
}

#[derive(Clone)]
pub struct HttpRow {
    pub contender: Contender,
    pub read: Result<Summary, String>,
    pub write: Result<Summary, String>,
    pub login: Result<Summary, String>,
    /// Redis bytes per session, everything included (`None`: a contender without sessions).
    pub redis_bytes: Option<Result<f64, String>>,
    /// Server state after the run, and the write check.
    pub notes: Vec<String>,
}

impl HttpRow {
    /// One contender's rounds as one row: the median read and write rounds, all notes.
    pub fn median(rounds: Vec<HttpRow>) -> HttpRow {
        let contender = rounds[0].contender;
        let mut notes: Vec<String> = Vec::new();
        for n in rounds.iter().flat_map(|r| r.notes.iter()) {
            if !notes.contains(n) {
                notes.push(n.clone());
            }
        }
        let mut bytes: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r.redis_bytes.as_ref()?.as_ref().ok().copied())
            .collect();
        bytes.sort_by(f64::total_cmp);
        let redis_bytes = rounds[0].redis_bytes.as_ref().map(|first| match first {
            _ if !bytes.is_empty() => Ok(bytes[bytes.len() / 2]),
            Err(e) => Err(e.clone()),
            Ok(_) => Err("not measured".to_owned()),
        });
        let (mut reads, mut writes, mut logins) = (Vec::new(), Vec::new(), Vec::new());
        for r in rounds {
            reads.push(r.read);
            writes.push(r.write);
            logins.push(r.login);
        }
        HttpRow {
            contender,
            read: crate::stats::median(reads),
            write: crate::stats::median(writes),
            login: crate::stats::median(logins),
            redis_bytes,
            notes,
        }
    }

    pub fn get(&self, scenario: Scenario) -> &Result<Summary, String> {
        match scenario {
            Scenario::Read => &self.read,
            Scenario::Write => &self.write,
            Scenario::Login => &self.login,
        }
    }
}

pub struct StoreRow {
    pub id: &'static str,
    pub name: &'static str,
    pub result: Result<Summary, String>,
}

pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub http: Vec<HttpRow>,
    pub store: Vec<StoreRow>,
    pub elapsed: Duration,
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

fn pct(v: f64, of: f64) -> String {
    if of > 0.0 {
        format!("{:.0} %", 100.0 * v / of)
    } else {
        "–".into()
    }
}

impl Report {
    pub(super) fn http(&self, kind: Kind, scenario: Scenario) -> Option<&Summary> {
        self.http
            .iter()
            .find(|r| r.contender.kind == kind)
            .and_then(|r| r.get(scenario).as_ref().ok())
    }

    pub(super) fn http_rate(&self, kind: Kind, scenario: Scenario) -> Option<f64> {
        self.http(kind, scenario).map(|s| s.per_sec)
    }

    pub(super) fn redis_bytes(&self, kind: Kind) -> Option<f64> {
        self.http
            .iter()
            .find(|r| r.contender.kind == kind)
            .and_then(|r| r.redis_bytes.as_ref()?.as_ref().ok().copied())
    }

    pub(super) fn store_rate(&self, id: &str) -> Option<f64> {
        self.store
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.result.as_ref().ok())
            .map(|s| s.per_sec)
    }
}

/// Today's date and time (UTC), without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}
