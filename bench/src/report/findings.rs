//! "In short": the comparisons the numbers were taken for, and the targets of issue 10, worked
//! out from this run's numbers.

use std::fmt::Write as _;

use super::{Report, Scenario, pct};
use crate::servers::{CONTENDERS, Kind};
use crate::stats::thousands;

impl Report {
    /// The comparisons the numbers were taken for, worked out from this run's numbers.
    pub(super) fn findings(&self) -> String {
        let mut out = String::new();
        let best_peer = |scenario: Scenario| {
            [Kind::TowerSessions, Kind::ActixSession]
                .into_iter()
                .filter_map(|k| {
                    let name = CONTENDERS.iter().find(|c| c.kind == k)?.name;
                    Some((name, self.http_rate(k, scenario)?))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
        };
        let ratio = |a: f64, b: f64| {
            if a >= b {
                format!("{:.2}× ({:+.0} %)", a / b, 100.0 * (a / b - 1.0))
            } else {
                format!("{:.2}× ({:.0} %)", a / b, 100.0 * (a / b - 1.0))
            }
        };
        let mut lines = Vec::new();
        let bare = self.http_rate(Kind::BareAxum, Scenario::Read);
        if let (Some(tiered), Some((peer, p))) = (
            self.http_rate(Kind::RatatoskrTiered, Scenario::Read),
            best_peer(Scenario::Read),
        ) {
            let mut l = format!(
                "**Reads**: Ratatoskr tiered (near cache) serves {}/s, {} the best peer's \
                 ({peer}, {}/s)",
                thousands(tiered),
                ratio(tiered, p),
                thousands(p)
            );
            if let Some(b) = bare {
                let _ = write!(
                    l,
                    ", {} of the bare axum handler ({}/s)",
                    pct(tiered, b),
                    thousands(b)
                );
            }
            if let Some(r) = self.http_rate(Kind::RatatoskrRedis, Scenario::Read) {
                let _ = write!(
                    l,
                    ". Redis only (near cache, no database) it serves {}/s, {} the best peer's",
                    thousands(r),
                    ratio(r, p)
                );
            }
            l.push('.');
            lines.push(l);
        }
        if let Some((peer, p)) = best_peer(Scenario::Write) {
            let mut parts = Vec::new();
            for (kind, what) in [
                (Kind::RatatoskrRedis, "Ratatoskr Redis-only"),
                (
                    Kind::RatatoskrTiered,
                    "Ratatoskr tiered (durable in SQLite before it answers)",
                ),
                (
                    Kind::RatatoskrTieredPostgres,
                    "Ratatoskr tiered (durable in PostgreSQL before it answers)",
                ),
            ] {
                if let Some(r) = self.http_rate(kind, Scenario::Write) {
                    parts.push(format!(
                        "{what} {}/s, {} the best peer's",
                        thousands(r),
                        ratio(r, p)
                    ));
                }
            }
            if !parts.is_empty() {
                lines.push(format!(
                    "**Writes**: {} (the best peer: {peer}, {}/s).",
                    parts.join("; "),
                    thousands(p)
                ));
            }
        }
        if let Some(redis) = self.store_rate("store-redis") {
            let mut parts = Vec::new();
            for (id, what) in [
                ("store-tiered-sqlite", "Redis + SQLite"),
                ("store-tiered-pg", "Redis + PostgreSQL"),
            ] {
                if let Some(t) = self.store_rate(id) {
                    parts.push(format!(
                        "{what} {}/s ({} of it)",
                        thousands(t),
                        pct(t, redis)
                    ));
                }
            }
            if !parts.is_empty() {
                lines.push(format!(
                    "**Durability** (store level, no HTTP): the Redis store alone takes {}/s \
                     writes; the tiered store {}.",
                    thousands(redis),
                    parts.join(", ")
                ));
            }
        }
        if let Some((peer, p)) = best_peer(Scenario::Login) {
            let parts: Vec<String> = [
                (Kind::RatatoskrRedis, "Ratatoskr Redis-only"),
                (Kind::RatatoskrTiered, "Ratatoskr tiered (SQLite)"),
                (
                    Kind::RatatoskrTieredPostgres,
                    "Ratatoskr tiered (PostgreSQL)",
                ),
            ]
            .into_iter()
            .filter_map(|(kind, what)| {
                let r = self.http_rate(kind, Scenario::Login)?;
                Some(format!(
                    "{what} {}/s, {} the best peer's",
                    thousands(r),
                    ratio(r, p)
                ))
            })
            .collect();
            if !parts.is_empty() {
                lines.push(format!(
                    "**Logins** (a visit that creates a session, then the login that rotates \
                     it): {} (the best peer: {peer}, {}/s).",
                    parts.join("; "),
                    thousands(p)
                ));
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(out, "## In short\n");
            for l in lines {
                let _ = writeln!(out, "- {l}");
            }
            let _ = writeln!(out);
        }
        out.push_str(&self.targets());
        out
    }

    /// The targets of issue 10, each with this run's figure and whether it was met.
    fn targets(&self) -> String {
        let actix = |s: Scenario| self.http_rate(Kind::ActixSession, s);
        let mut rows: Vec<(String, String, Option<f64>, f64)> = Vec::new();
        let mut ratio_row =
            |what: &str, mine: Option<f64>, of: Option<f64>, goal: f64, of_name: &str| {
                let value = mine.zip(of).map(|(m, o)| m / o);
                rows.push((
                    what.to_owned(),
                    match (mine, of) {
                        (Some(m), Some(o)) => {
                            format!("{}/s vs {of_name} {}/s", thousands(m), thousands(o))
                        }
                        _ => "not measured".to_owned(),
                    },
                    value,
                    goal,
                ));
            };
        let read = self.http_rate(Kind::RatatoskrTiered, Scenario::Read);
        ratio_row(
            "read, near cache (tiered) ≥ 1.5× actix-session",
            read,
            actix(Scenario::Read),
            1.5,
            "actix-session",
        );
        ratio_row(
            "read, near cache (tiered) ≥ 0.85× bare axum",
            read,
            self.http_rate(Kind::BareAxum, Scenario::Read),
            0.85,
            "bare axum",
        );
        for (kind, what, goal) in [
            (
                Kind::RatatoskrRedis,
                "write, Redis alone ≥ 1.3× actix-session",
                1.3,
            ),
            (
                Kind::RatatoskrTiered,
                "write, tiers with SQLite ≥ 0.8× actix-session",
                0.8,
            ),
            (
                Kind::RatatoskrTieredPostgres,
                "write, tiers with PostgreSQL ≥ 0.5× actix-session",
                0.5,
            ),
        ] {
            ratio_row(
                what,
                self.http_rate(kind, Scenario::Write),
                actix(Scenario::Write),
                goal,
                "actix-session",
            );
        }
        for (kind, what) in [
            (
                Kind::RatatoskrRedis,
                "login, Redis alone ≥ 1× actix-session",
            ),
            (
                Kind::RatatoskrTiered,
                "login, tiers with SQLite ≥ 1× actix-session",
            ),
        ] {
            ratio_row(
                what,
                self.http_rate(kind, Scenario::Login),
                actix(Scenario::Login),
                1.0,
                "actix-session",
            );
        }
        // p99: the best (lowest) peer p99 over the best Ratatoskr p99 at the same load; ≥ 1 is met.
        for scenario in Scenario::ALL {
            let peer = [Kind::TowerSessions, Kind::ActixSession]
                .into_iter()
                .filter_map(|k| self.http(k, scenario).map(|s| s.p99_us))
                .min();
            for (kind, name) in [
                (Kind::RatatoskrTiered, "tiered"),
                (Kind::RatatoskrRedis, "Redis alone"),
            ] {
                let mine = self.http(kind, scenario).map(|s| s.p99_us);
                rows.push((
                    format!(
                        "p99 of {} ({name}) no worse than the best peer's",
                        scenario.name()
                    ),
                    match (mine, peer) {
                        (Some(m), Some(p)) => {
                            format!("{} vs {}", crate::stats::ms(m), crate::stats::ms(p))
                        }
                        _ => "not measured".into(),
                    },
                    mine.zip(peer).map(|(m, p)| p as f64 / m.max(1) as f64),
                    1.0,
                ));
            }
        }
        for (kind, name) in [
            (Kind::RatatoskrRedis, "Redis alone"),
            (Kind::RatatoskrTiered, "tiered"),
        ] {
            let bytes = self.redis_bytes(kind);
            rows.push((
                format!("Redis bytes per session ({name}) ≤ 250 B"),
                bytes.map_or("not measured".into(), |b| format!("{b:.0} B")),
                bytes.map(|b| 250.0 / b),
                1.0,
            ));
        }
        let mut out = String::from(
            "## Targets (issue 10)\n\nEach target as a ratio of this run's figures (for p99 and \
             bytes: the goal over Ratatoskr's figure), met when it reaches the goal.\n\n\
             | target | figures | ratio | goal | |\n|---|---|---:|---:|---|\n",
        );
        for (what, figures, value, goal) in rows {
            let (cell, verdict) = match value {
                Some(v) if v >= goal => (format!("{v:.2}"), "met".to_owned()),
                Some(v) => (
                    format!("{v:.2}"),
                    format!("missed by {:.0} %", 100.0 * (1.0 - v / goal)),
                ),
                None => ("–".into(), "not measured".into()),
            };
            let _ = writeln!(
                out,
                "| {what} | {figures} | {cell} | {goal:.2} | {verdict} |"
            );
        }
        out.push('\n');
        out
    }
}
