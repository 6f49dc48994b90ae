//! Cross-instance revocation, measured: a session is made warm in every instance's near cache,
//! revoked through one instance (logout, "log out my other sessions", an administrator's
//! revoke), and every instance is polled until it refuses the cookie. The time is from the
//! revoking request's answer to the end of each instance's first refusing answer (so it
//! includes that request's own round trip: an upper bound).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::browser::{Browser, authenticated, http_from};
use crate::deployment::Deployment;

/// How long a poller waits for a refusal before the test fails (far past any bound: this
/// only keeps a broken build from hanging).
const GIVE_UP: Duration = Duration::from_secs(10);

/// The three ways a user's session ends from elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `POST /api/logout` by the session itself.
    Logout,
    /// `POST /api/sessions/revoke-others` from another session of the user.
    RevokeOthers,
    /// `DELETE /api/admin/users/{name}/sessions` by an administrator.
    Admin,
}

/// One instance's refusal of one revoked session.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// How the session was ended.
    pub kind: Kind,
    /// The instance polled.
    pub instance: usize,
    /// Whether it is the instance the revocation went through.
    pub revoker: bool,
    /// The instance the revocation went through.
    pub via: usize,
    /// Until its first refusing answer ended.
    pub took: Duration,
    /// Answers it gave (the last one refusing).
    pub polls: u32,
}

/// Every sample of a run.
pub struct Report {
    /// One per (revocation, instance).
    pub samples: Vec<Sample>,
    /// The whole run's wall time.
    pub elapsed: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

impl Report {
    fn sorted(&self, keep: impl Fn(&Sample) -> bool) -> Vec<Duration> {
        let mut v: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.took)
            .collect();
        v.sort();
        v
    }

    /// The `p` quantile over every sample.
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.sorted(|_| true), p)
    }

    /// Samples where the revoking instance itself still served the session once.
    pub fn revoker_late(&self) -> Vec<Sample> {
        self.samples
            .iter()
            .filter(|s| s.revoker && s.polls > 1)
            .copied()
            .collect()
    }

    /// `docs/architecture.md`: a revocation through an instance is immediate on that instance.
    pub fn revoker_refused_at_once(&self) -> bool {
        self.revoker_late().is_empty()
    }

    /// Print p50/p99/max overall, for the other instances alone, and per kind.
    pub fn print(&self) {
        let line = |what: &str, v: Vec<Duration>| {
            eprintln!(
                "{what}: n={} p50={:.2?} p99={:.2?} max={:.2?}",
                v.len(),
                percentile(&v, 0.5),
                percentile(&v, 0.99),
                v.last().copied().unwrap_or_default()
            );
        };
        eprintln!(
            "revocations: {} samples in {:.1?}",
            self.samples.len(),
            self.elapsed
        );
        line("  every instance", self.sorted(|_| true));
        line("  other instances", self.sorted(|s| !s.revoker));
        line("  revoking instance", self.sorted(|s| s.revoker));
        for kind in [Kind::Logout, Kind::RevokeOthers, Kind::Admin] {
            line(&format!("  {kind:?}"), self.sorted(|s| s.kind == kind));
        }
        for i in 0..3 {
            line(&format!("  app{}", i + 1), self.sorted(|s| s.instance == i));
        }
        let polls: u32 = self.samples.iter().map(|s| s.polls).sum();
        eprintln!("  answers polled: {polls}");
        // Where an instance still served the session after the revocation was answered.
        for s in self.samples.iter().filter(|s| s.polls > 1) {
            eprintln!(
                "  served after the revocation: {:?} via app{}, app{} refused after {:.2?} and {} answers",
                s.kind,
                s.via + 1,
                s.instance + 1,
                s.took,
                s.polls
            );
        }
    }
}

/// Poll every instance at once until each refuses `cookie`.
async fn refusals(
    urls: &[String],
    cookie: &str,
    kind: Kind,
    revoker: usize,
    since: Instant,
) -> Vec<Sample> {
    let pollers: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(instance, url)| {
            let (url, cookie) = (url.clone(), cookie.to_owned());
            tokio::spawn(async move {
                let http = http_from([127, 0, 0, 1].into());
                let mut polls = 0;
                loop {
                    polls += 1;
                    if !authenticated(&http, &url, &cookie).await {
                        return Sample {
                            kind,
                            instance,
                            revoker: instance == revoker,
                            via: revoker,
                            took: since.elapsed(),
                            polls,
                        };
                    }
                    assert!(
                        since.elapsed() < GIVE_UP,
                        "app{} still serves a {kind:?}-revoked session after {GIVE_UP:?}",
                        instance + 1
                    );
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for p in pollers {
        out.push(p.await.expect("poller"));
    }
    out
}

/// Make `cookie` warm in every instance's near cache (each reads it once and must accept it).
async fn warm(urls: &[String], cookie: &str) {
    let http = http_from([127, 0, 0, 1].into());
    for url in urls {
        assert!(authenticated(&http, url, cookie).await, "a live session");
    }
}

fn revoked(answer: &(u16, Value), at_least: u64) {
    assert_eq!(answer.0, 200, "{answer:?}");
    let n = answer.1["revoked"].as_u64().expect("revoked");
    assert!(n >= at_least, "{answer:?}");
}

/// `rounds` revocations of each kind (3 × rounds in all), each through the next instance in
/// turn; the sessions are created through the proxy.
pub async fn measure(d: &Deployment, rounds: usize) -> Report {
    let started = Instant::now();
    let proxy = d.proxy.url();
    let urls: Vec<String> = d.instances.iter().map(|i| i.url()).collect();
    for name in ["leaver", "juggler", "victim"] {
        assert_eq!(Browser::new().register(&proxy, name).await, 201);
    }
    d.add_user("root", true);
    let mut admin = Browser::new();
    admin.login(&proxy, "root").await;
    let mut juggler = Browser::new();
    juggler.login(&proxy, "juggler").await;

    let mut samples = Vec::new();
    for round in 0..rounds {
        for (k, kind) in [Kind::Logout, Kind::RevokeOthers, Kind::Admin]
            .into_iter()
            .enumerate()
        {
            let via = (round * 3 + k) % urls.len();
            let (cookie, since) = match kind {
                Kind::Logout => {
                    let mut b = Browser::new();
                    b.login(&proxy, "leaver").await;
                    let cookie = b.cookie.clone().expect("cookie");
                    warm(&urls, &cookie).await;
                    let (status, body) = b
                        .send(&urls[via], Method::POST, "/api/logout", None, &[])
                        .await;
                    assert_eq!(status, 204, "logout: {body}");
                    (cookie, Instant::now())
                }
                Kind::RevokeOthers => {
                    let old = juggler.cookie.clone().expect("cookie");
                    let mut next = Browser::new();
                    next.login(&proxy, "juggler").await;
                    warm(&urls, &old).await;
                    let answer = next
                        .send(
                            &urls[via],
                            Method::POST,
                            "/api/sessions/revoke-others",
                            None,
                            &[],
                        )
                        .await;
                    let since = Instant::now();
                    revoked(&answer, 1);
                    juggler = next;
                    (old, since)
                }
                Kind::Admin => {
                    let mut b = Browser::new();
                    b.login(&proxy, "victim").await;
                    let cookie = b.cookie.clone().expect("cookie");
                    warm(&urls, &cookie).await;
                    let path = "/api/admin/users/victim/sessions";
                    let answer = admin
                        .send(&urls[via], Method::DELETE, path, None, &[])
                        .await;
                    let since = Instant::now();
                    revoked(&answer, 1);
                    (cookie, since)
                }
            };
            samples.extend(refusals(&urls, &cookie, kind, via, since).await);
        }
    }
    Report {
        samples,
        elapsed: started.elapsed(),
    }
}
