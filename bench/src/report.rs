//! `docs/benchmarks.md` and the SVG chart beside it.

use std::fmt::Write as _;
use std::time::Duration;

use crate::options::Options;
use crate::servers::{CONTENDERS, Contender, Kind};
use crate::stats::{Summary, ms, thousands};

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

#[derive(Clone)]
pub struct HttpRow {
    pub contender: Contender,
    pub read: Result<Summary, String>,
    pub write: Result<Summary, String>,
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
        let (reads, writes): (Vec<_>, Vec<_>) =
            rounds.into_iter().map(|r| (r.read, r.write)).unzip();
        HttpRow {
            contender,
            read: crate::stats::median(reads),
            write: crate::stats::median(writes),
            notes,
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
    fn bare_axum(&self, write: bool) -> Option<f64> {
        self.http
            .iter()
            .find(|r| r.contender.id == "bare-axum")
            .and_then(|r| if write { &r.write } else { &r.read }.as_ref().ok())
            .map(|s| s.per_sec)
    }

    fn http_rate(&self, kind: Kind, write: bool) -> Option<f64> {
        self.http
            .iter()
            .find(|r| r.contender.kind == kind)
            .and_then(|r| if write { &r.write } else { &r.read }.as_ref().ok())
            .map(|s| s.per_sec)
    }

    fn store_rate(&self, id: &str) -> Option<f64> {
        self.store
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.result.as_ref().ok())
            .map(|s| s.per_sec)
    }

    /// The comparisons the numbers were taken for, worked out from this run's numbers.
    fn findings(&self) -> String {
        let mut out = String::new();
        let best_peer = |write: bool| {
            [Kind::TowerSessions, Kind::ActixSession]
                .into_iter()
                .filter_map(|k| {
                    let name = CONTENDERS.iter().find(|c| c.kind == k)?.name;
                    Some((name, self.http_rate(k, write)?))
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
        let bare = self.http_rate(Kind::BareAxum, false);
        if let (Some(tiered), Some((peer, p))) = (
            self.http_rate(Kind::RatatoskrTiered, false),
            best_peer(false),
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
            if let Some(r) = self.http_rate(Kind::RatatoskrRedis, false) {
                let _ = write!(
                    l,
                    ". Without the near cache (Redis only) it serves {}/s, {} the best peer's",
                    thousands(r),
                    ratio(r, p)
                );
            }
            l.push('.');
            lines.push(l);
        }
        if let Some((peer, p)) = best_peer(true) {
            let mut parts = Vec::new();
            for (kind, what) in [
                (Kind::RatatoskrRedis, "Ratatoskr Redis-only"),
                (
                    Kind::RatatoskrTiered,
                    "Ratatoskr tiered (durable in SQLite before it answers)",
                ),
            ] {
                if let Some(r) = self.http_rate(kind, true) {
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
        if !lines.is_empty() {
            let _ = writeln!(out, "## In short\n");
            for l in lines {
                let _ = writeln!(out, "- {l}");
            }
            let _ = writeln!(out);
        }
        out
    }

    pub fn markdown(&self, o: &Options, svg_name: &str) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Written by the benchmark harness in `bench/` on {} (the run took {:.0} s). Do not \
             edit by hand; to reproduce, run:\n\n```sh\n{}\n```\n",
            self.date,
            self.elapsed.as_secs_f64(),
            o.command()
        );
        if o.tiny {
            let _ = writeln!(
                md,
                "> **`--tiny` run**: a check of the harness, not a measurement.\n"
            );
        }
        let _ = writeln!(
            md,
            "![Requests and writes per second, per contender]({svg_name})\n"
        );

        md.push_str(&self.findings());
        let _ = writeln!(md, "## Machine and parameters\n");
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| CPU | {} cores, {} |", m.cores, m.cpu);
        let _ = writeln!(md, "| OS | {} |", m.kernel);
        let _ = writeln!(
            md,
            "| Redis | `{}`, a private instance started for the run on a free loopback port \
             (`--save \"\" --appendonly no`), stopped at the end |",
            m.redis
        );
        let _ = writeln!(
            md,
            "| PostgreSQL | {} |",
            match &m.postgres {
                Ok(v) => format!("{v}, on 127.0.0.1:5432, a scratch schema dropped at the end"),
                Err(e) => format!("not used: {e}"),
            }
        );
        let _ = writeln!(
            md,
            "| SQLite | a fresh file in a temporary directory per contender (WAL, group commit) |"
        );
        let _ = writeln!(md, "| build | {} |", m.profile);
        let _ = writeln!(
            md,
            "| HTTP load | {} keep-alive HTTP/1.1 connections, one logged-in session each, one \
             request in flight per connection (no pipelining); {} warm-up, then {} measured, \
             per scenario |",
            o.connections,
            secs(o.warmup),
            secs(o.duration)
        );
        let _ = writeln!(
            md,
            "| threads | each server: {} worker threads (Tokio runtime, or actix-web workers); \
             load generator: {} threads in the same process; Redis, PostgreSQL and all of \
             them share the {} cores |",
            o.server_threads, o.client_threads, m.cores
        );
        let _ = writeln!(
            md,
            "| store level | {} concurrent writers, each applying a one-attribute delta to a \
             session of its own; {} warm-up, then {} measured |",
            o.store_tasks,
            secs(o.warmup),
            secs(o.duration)
        );
        if o.rounds > 1 {
            let _ = writeln!(
                md,
                "| rounds | {} rounds, the contenders interleaved (every contender once per \
                 round, in the order of the tables); each row is the contender's median round \
                 by throughput, with that round's latencies, and the range over all rounds |",
                o.rounds
            );
        }
        let _ = writeln!(
            md,
            "| latency | per request, from writing the request to reading the whole response \
             (p50, p99 nearest rank) |"
        );
        let _ = writeln!(
            md,
            "| other load | the share of the machine's CPU used meanwhile by processes other \
             than the bench, its Redis and PostgreSQL (from `/proc`): near 0 % means a quiet \
             machine{} |\n",
            if o.wait_quiet.is_zero() {
                String::new()
            } else {
                format!(
                    "; each scenario waited up to {} for it to fall below 10 %, and one that \
                     went above was measured again (3 times at most; the least disturbed \
                     measurement is shown)",
                    secs(o.wait_quiet)
                )
            }
        );

        for (write, title, what) in [
            (
                false,
                "HTTP: session read",
                "`GET /read`: the handler reads one attribute (`name`) of the connection's \
                 logged-in session and answers it.",
            ),
            (
                true,
                "HTTP: session write",
                "`POST /write`: the handler increments a counter attribute of the session and \
                 answers its new value. Ratatoskr also checks `Sec-Fetch-Site` and a masked CSRF \
                 token on every such request (the load generator sends both; the peers ignore \
                 them).",
            ),
        ] {
            let _ = writeln!(md, "## {title}\n\n{what}\n");
            let _ = writeln!(
                md,
                "| contender | requests/s | vs bare axum | p50 | p99 | errors | other load |{}\n\
                 |---|---:|---:|---:|---:|---:|---:|{}",
                range_head(o),
                range_rule(o)
            );
            let ceiling = self.bare_axum(write);
            for row in &self.http {
                let r = if write { &row.write } else { &row.read };
                let name = if row.contender.is_ratatoskr() {
                    format!("**{}**", row.contender.name)
                } else {
                    row.contender.name.to_owned()
                };
                match r {
                    Ok(s) => {
                        let _ = writeln!(
                            md,
                            "| {name} | {} | {} | {} | {} | {} | {} |{}",
                            thousands(s.per_sec),
                            ceiling.map_or("–".into(), |c| pct(s.per_sec, c)),
                            ms(s.p50_us),
                            ms(s.p99_us),
                            s.errors,
                            load(s),
                            range_cell(o, s)
                        );
                    }
                    Err(e) => {
                        let _ =
                            writeln!(md, "| {name} | not measured: {} | | | | | |", one_line(e));
                    }
                }
            }
            let _ = writeln!(md);
        }

        let _ = writeln!(md, "## Store level: write throughput (no HTTP)\n");
        let _ = writeln!(
            md,
            "What durability costs. The tiered store writes the database first (the request is \
             answered only once the change is durable) and then Redis; \"Redis only\" is the \
             Redis store alone. The SQL stores alone are there for reference.\n"
        );
        let _ = writeln!(
            md,
            "| store | writes/s | vs Redis only | p50 | p99 | errors | other load |{}\n\
             |---|---:|---:|---:|---:|---:|---:|{}",
            range_head(o),
            range_rule(o)
        );
        let redis_only = self
            .store
            .iter()
            .find(|r| r.id == "store-redis")
            .and_then(|r| r.result.as_ref().ok())
            .map(|s| s.per_sec);
        for row in &self.store {
            match &row.result {
                Ok(s) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} |{}",
                        row.name,
                        thousands(s.per_sec),
                        redis_only.map_or("–".into(), |c| pct(s.per_sec, c)),
                        ms(s.p50_us),
                        ms(s.p99_us),
                        s.errors,
                        load(s),
                        range_cell(o, s)
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        md,
                        "| {} | not measured: {} | | | | | |",
                        row.name,
                        one_line(e)
                    );
                }
            }
        }
        let _ = writeln!(md);

        let _ = writeln!(md, "## Checks made during the run\n");
        for row in &self.http {
            for n in &row.notes {
                let _ = writeln!(md, "- {}: {}", row.contender.name, n);
            }
        }
        let _ = writeln!(
            md,
            "- Store level: after each writer stopped, its session was loaded back and had to \
             hold the writer's last value (a contender failing this is reported as not \
             measured)."
        );
        let errors: Vec<String> = self
            .http
            .iter()
            .flat_map(|r| {
                [("read", &r.read), ("write", &r.write)]
                    .into_iter()
                    .filter_map(move |(what, s)| {
                        let s = s.as_ref().ok()?;
                        let e = s.first_error.as_ref()?;
                        Some(format!(
                            "{} ({what}): {} errors, first: {}",
                            r.contender.name,
                            s.errors,
                            one_line(e)
                        ))
                    })
            })
            .chain(self.store.iter().filter_map(|r| {
                let s = r.result.as_ref().ok()?;
                let e = s.first_error.as_ref()?;
                Some(format!(
                    "{}: {} errors, first: {}",
                    r.name,
                    s.errors,
                    one_line(e)
                ))
            }))
            .collect();
        for e in errors {
            let _ = writeln!(md, "- Error seen: {e}");
        }
        let _ = writeln!(md);
        md.push_str(NOTES);
        md
    }

    /// Three horizontal bar panels: reads, writes, store-level writes.
    pub fn svg(&self, o: &Options) -> String {
        let reads: Vec<Bar> = self
            .http
            .iter()
            .map(|r| Bar::new(r.contender.name, &r.read, colour(&r.contender)))
            .collect();
        let writes: Vec<Bar> = self
            .http
            .iter()
            .map(|r| Bar::new(r.contender.name, &r.write, colour(&r.contender)))
            .collect();
        let store: Vec<Bar> = self
            .store
            .iter()
            .map(|r| {
                let c = if r.id.contains("tiered") {
                    RATATOSKR
                } else if r.id == "store-redis" {
                    RATATOSKR_LIGHT
                } else {
                    REFERENCE
                };
                Bar::new(r.name, &r.result, c)
            })
            .collect();
        let panels = [
            ("HTTP session reads (GET /read), requests/s", reads),
            ("HTTP session writes (POST /write), requests/s", writes),
            ("Store-level writes, no HTTP, writes/s", store),
        ];
        let width = 960.0;
        let label_w = 330.0;
        let bar_max = width - label_w - 130.0;
        let row_h = 26.0;
        let mut y = 100.0;
        let mut body = String::new();
        let _ = writeln!(
            body,
            r#"<text x="16" y="24" class="t">Ratatoskr and its peers: throughput (higher is better)</text>"#
        );
        let _ = writeln!(
            body,
            r#"<text x="16" y="44" class="s">{}; {} cores; {} HTTP connections, {} store writers; {} per scenario{}; {}</text>"#,
            esc(&self.date),
            self.machine.cores,
            o.connections,
            o.store_tasks,
            secs(o.duration),
            if o.rounds > 1 {
                format!(", median of {} rounds", o.rounds)
            } else {
                String::new()
            },
            if o.tiny {
                "--tiny run: not a measurement"
            } else {
                self.machine.profile
            }
        );
        for (title, bars) in &panels {
            let _ = writeln!(
                body,
                r#"<text x="16" y="{:.0}" class="h">{}</text>"#,
                y,
                esc(title)
            );
            y += 14.0;
            let max = bars.iter().filter_map(|b| b.value).fold(0.0_f64, f64::max);
            for b in bars {
                let ty = y + row_h * 0.5 + 4.0;
                let _ = writeln!(
                    body,
                    r#"<text x="{:.0}" y="{ty:.0}" class="l" text-anchor="end">{}</text>"#,
                    label_w - 10.0,
                    esc(b.label)
                );
                match b.value {
                    Some(v) if max > 0.0 => {
                        let w = (v / max * bar_max).max(1.0);
                        let _ = writeln!(
                            body,
                            r#"<rect x="{label_w:.0}" y="{:.1}" width="{w:.1}" height="{:.0}" rx="2" fill="{}"/>"#,
                            y + 4.0,
                            row_h - 8.0,
                            b.colour
                        );
                        let _ = writeln!(
                            body,
                            r#"<text x="{:.1}" y="{ty:.0}" class="v">{}</text>"#,
                            label_w + w + 6.0,
                            thousands(v)
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            body,
                            r#"<text x="{label_w:.0}" y="{ty:.0}" class="n">not measured</text>"#
                        );
                    }
                }
                y += row_h;
            }
            y += 30.0;
        }
        let height = y;
        let legend_y = 66.0;
        let legend = [
            (RATATOSKR, "Ratatoskr"),
            (RATATOSKR_LIGHT, "Ratatoskr, Redis only"),
            (PEER, "peers"),
            (REFERENCE, "no sessions / reference"),
        ];
        let mut lg = String::new();
        let mut x = 16.0;
        for (c, name) in legend {
            let _ = writeln!(
                lg,
                r#"<rect x="{x:.0}" y="{:.0}" width="12" height="12" fill="{c}"/><text x="{:.0}" y="{legend_y:.0}" class="l">{name}</text>"#,
                legend_y - 10.0,
                x + 17.0
            );
            x += 34.0 + name.len() as f64 * 7.0;
        }
        format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<style>.t{{font-size:17px;font-weight:bold;fill:#111}} .s{{font-size:12px;fill:#555}} .h{{font-size:15px;font-weight:bold;fill:#222}} .l{{font-size:12.5px;fill:#333}} .v{{font-size:12px;fill:#222}} .n{{font-size:12px;fill:#a33;font-style:italic}}</style>
<rect width="100%" height="100%" fill="#fff"/>
{lg}{body}</svg>
"##
        )
    }
}

const RATATOSKR: &str = "#1f6fb2";
const RATATOSKR_LIGHT: &str = "#6fa8dc";
const PEER: &str = "#e08a2c";
const REFERENCE: &str = "#b0b0b0";

fn colour(c: &Contender) -> &'static str {
    match c.kind {
        Kind::RatatoskrTiered => RATATOSKR,
        Kind::RatatoskrRedis => RATATOSKR_LIGHT,
        Kind::TowerSessions | Kind::ActixSession => PEER,
        Kind::BareAxum | Kind::BareActix => REFERENCE,
    }
}

struct Bar {
    label: &'static str,
    value: Option<f64>,
    colour: &'static str,
}

impl Bar {
    fn new(label: &'static str, r: &Result<Summary, String>, colour: &'static str) -> Bar {
        Bar {
            label,
            value: r.as_ref().ok().map(|s| s.per_sec),
            colour,
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn range_head(o: &Options) -> &'static str {
    if o.rounds > 1 {
        " rounds: min – max |"
    } else {
        ""
    }
}

fn range_rule(o: &Options) -> &'static str {
    if o.rounds > 1 { "---:|" } else { "" }
}

fn range_cell(o: &Options, s: &Summary) -> String {
    match s.range {
        Some((lo, hi)) if o.rounds > 1 => format!(" {} – {} |", thousands(lo), thousands(hi)),
        _ if o.rounds > 1 => " – |".into(),
        _ => String::new(),
    }
}

fn load(s: &Summary) -> String {
    s.other_load
        .map_or("–".into(), |l| format!("{:.0} %", l * 100.0))
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = s.replace('|', "/");
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
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

const NOTES: &str = "\
## What each contender does per request

| contender | read (`GET /read`) | write (`POST /write`) |
|---|---|---|
| bare axum / bare actix-web | nothing: a constant answer, the ceiling of each framework on this machine | the same |
| Ratatoskr tiered (Redis + SQLite, near cache) | the decoded session from the in-process near cache, kept correct by Redis `CLIENT TRACKING` notices: no network round trip once warm | load (near cache, else one Redis round trip), then the delta: one SQLite transaction (group commit) and then one Redis script call; the near-cache entry is dropped |
| Ratatoskr, Redis only | one round trip (`HGETALL` + `PEXPIRETIME`, pipelined) | load (one round trip), then the delta as one Redis script call (`EVALSHA`): two round trips |
| tower-sessions + Redis | one `GET` (MessagePack record), fred pool of 6 clients as in the store's example | `GET`, then `SET … XX EXAT` of the whole record: two round trips |
| actix-session + Redis | one `GET` (JSON state), redis-rs `ConnectionManager` | `GET`, then `SET … XX EX` of the whole state: two round trips |

Every contender runs the same three routes with the same handlers' logic and default settings
(secure cookies; Ratatoskr's default `SessionConfig`, so its CSRF and `Sec-Fetch-Site` checks run
on every write). Idle expiry is not extended on these reads by any contender (Ratatoskr writes a
touch at most once a minute per session; tower-sessions and actix-session, with their default
expiry settings, do not touch on reads).

Threads: each axum server runs on a Tokio multi-thread runtime of its own with `--server-threads`
workers (the Redis clients' connection tasks included); actix-web runs `--server-threads` workers,
each a single-threaded runtime, and actix-session's Redis connection task lives on the actix
`System` thread, as in any actix-web application that builds its store before `HttpServer::new`.

Caveats: one machine, load generator in the same process as the server, Redis and the databases
on the same cores; the absolute numbers depend on all of it, the ratios between rows much less.
`vs bare axum` is against the bare axum handler measured in the same run. On a shared virtual
machine the speed drifts even when no other process is visible (see the range over rounds): that
is why contenders are interleaved in rounds and compared within one run, never across runs.
";
