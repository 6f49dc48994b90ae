//! The Markdown report.

use std::fmt::Write as _;

use super::cells::{load, one_line, range_cell, range_head, range_rule};
use super::{Report, Scenario, pct, secs};
use crate::options::Options;
use crate::stats::{ms, thousands};

impl Report {
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

        for scenario in Scenario::ALL {
            let (title, what) = match scenario {
                Scenario::Read => (
                    "HTTP: session read",
                    "`GET /read`: the handler reads one attribute (`name`) of the connection's \
                     logged-in session and answers it.",
                ),
                Scenario::Write => (
                    "HTTP: session write",
                    "`POST /write`: the handler increments a counter attribute of the session and \
                     answers its new value. Ratatoskr also checks `Sec-Fetch-Site` and a masked \
                     CSRF token on every such request (the load generator sends both; the peers \
                     ignore them).",
                ),
                Scenario::Login => (
                    "HTTP: login",
                    "A new visitor logs in, as through a login page: `GET /visit` creates an \
                     anonymous session (Ratatoskr answers its CSRF token), then `POST /login/{n}` \
                     with its cookie (and token) rotates it to a new key and sets the user and two \
                     attributes. One login is both requests; the rate is logins per second, the \
                     latency the pair's.",
                ),
            };
            let _ = writeln!(md, "## {title}\n\n{what}\n");
            let _ = writeln!(
                md,
                "| contender | {}/s | vs bare axum | p50 | p99 | errors | other load |{}\n\
                 |---|---:|---:|---:|---:|---:|---:|{}",
                if scenario == Scenario::Login {
                    "logins"
                } else {
                    "requests"
                },
                range_head(o),
                range_rule(o)
            );
            let ceiling = self.http_rate(crate::servers::Kind::BareAxum, scenario);
            for row in &self.http {
                let name = if row.contender.is_ratatoskr() {
                    format!("**{}**", row.contender.name)
                } else {
                    row.contender.name.to_owned()
                };
                match row.get(scenario) {
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

        let _ = writeln!(md, "## Redis memory per session\n");
        let _ = writeln!(
            md,
            "After the connections logged in (one session per user: a user id, a name and a \
             counter) and read once, before the timed phases: `MEMORY USAGE` of every key in \
             the run's Redis (emptied before each contender), divided by the number of sessions. \
             Everything a session costs is in it: the session itself, the indexes and counting \
             structures, and the store's own keys shared out.\n"
        );
        let _ = writeln!(md, "| contender | bytes per session |\n|---|---:|");
        for row in &self.http {
            let Some(bytes) = &row.redis_bytes else {
                continue;
            };
            let cell = match bytes {
                Ok(b) => format!("{b:.0}"),
                Err(e) => format!("not measured: {}", one_line(e)),
            };
            let _ = writeln!(md, "| {} | {cell} |", row.contender.name);
        }
        let _ = writeln!(md);

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
                [("read", &r.read), ("write", &r.write), ("login", &r.login)]
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
}

const NOTES: &str = "\
## What each contender does per request

| contender | read (`GET /read`) | write (`POST /write`) | login (`GET /visit`, `POST /login/{n}`) |
|---|---|---|---|
| bare axum / bare actix-web | nothing: a constant answer, the ceiling of each framework on this machine | the same | the same, twice |
| Ratatoskr tiered (Redis + SQLite or PostgreSQL, near cache) | the decoded session from the in-process near cache, kept correct by Redis `CLIENT TRACKING` notices: no network round trip once warm | load (near cache, else one Redis round trip), then the delta: one database transaction (group commit) and then one Redis script call; the script runs on the tracked connection (`NOLOOP`) and reads the key back, so this process's own change is not announced to it and the written copy is put back into the near cache: the next load costs no round trip (see `docs/performance.md`) | the visit: one create carrying its attribute (database, then Redis); the login: the rotation of the loaded session (database, a run of the batch; the old Redis copy deleted) followed by the list of the user's sessions for the limit (read after the rotation landed) (the oldest beyond 5 destroyed in both tiers), then the two attributes (database, then Redis) |
| Ratatoskr, Redis only (near cache) | as the tiered store's: the near cache in front of Redis (`NearCachedStore`) | load (near cache, else one round trip), then the delta as one Redis script call (`EVALSHA`); the copy as above | the visit: one create script carrying its attribute; the login: the rotation script, then the session-limit list (the user's index, then one summary script per listed session, pipelined), the eviction, then the attributes' delta script |
| tower-sessions + Redis | one `GET` (MessagePack record), fred pool of 6 clients as in the store's example | `GET`, then `SET … XX EXAT` of the whole record: two round trips | `SET` of the visitor's record; then `cycle_id` (delete, new id) and `SET` of the record |
| actix-session + Redis | one `GET` (JSON state), redis-rs `ConnectionManager` | `GET`, then `SET … XX EX` of the whole state: two round trips | `SET` of the visitor's state; then `renew` (delete, new key) and `SET` |

Every contender runs the same four routes with the same handlers' logic and default settings
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
