//! A steady load on a store, with a model of what the store acknowledged, for the failover
//! tests: several tasks create sessions, read them, write a counter into them, destroy them and
//! revoke their users; each remembers, per session, what the store said yes to. Afterwards
//! [`verify`] reads every session back and counts the sessions lost (acknowledged alive, now
//! missing or behind their last acknowledged counter) and resurrected (acknowledged destroyed,
//! now back).
//!
//! A call that failed is in doubt: it may have happened or not, so both outcomes are accepted
//! for it (and it counts as an error at the moment it failed, for the error window).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use ratatoskr_core::{Delta, Record, SessionKey, SessionStore, StoreError, Token, now_ms};

/// What the store acknowledged about one session.
#[derive(Clone, Debug)]
enum Acked {
    /// Created (or created in doubt), with the last acknowledged counter and the values of
    /// writes that failed since (any of which may have landed).
    Live {
        counter: u64,
        doubt: Vec<u64>,
        created_in_doubt: bool,
    },
    /// A destroy or a revoke-all was acknowledged.
    Destroyed,
    /// A destroy or a revoke-all failed (or a create in doubt turned out not to have
    /// happened): gone or still there, either is fine.
    DestroyInDoubt { counter: u64, doubt: Vec<u64> },
    /// Acknowledged alive, then found missing by a read, a write or a destroy: lost.
    Missing,
}

#[derive(Clone, Debug)]
struct Tracked {
    key: SessionKey,
    user: String,
    acked: Acked,
    /// What was asked and answered, with the time since the start of the run (printed for a
    /// session found lost or resurrected).
    history: Vec<(Duration, String)>,
}

/// Counters shared by the workers.
#[derive(Default)]
pub struct Tally {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that failed (a backend error).
    pub errors: AtomicU64,
    /// Milliseconds since the start of the run of the first and last failure.
    first_error_ms: AtomicU64,
    last_error_ms: AtomicU64,
    /// Acknowledged live sessions that a read, a write or a destroy found missing during the
    /// run (each counted once).
    pub missing_during_run: AtomicU64,
    /// Acknowledged operations.
    pub acked: AtomicU64,
}

impl Tally {
    fn error(&self, epoch: Instant) {
        self.errors.fetch_add(1, SeqCst);
        let at = epoch.elapsed().as_millis() as u64 + 1;
        self.first_error_ms
            .compare_exchange(0, at, SeqCst, SeqCst)
            .ok();
        self.last_error_ms.fetch_max(at, SeqCst);
    }

    /// When the first and the last failure happened, from the start of the run.
    pub fn error_span(&self) -> Option<(Duration, Duration)> {
        let first = self.first_error_ms.load(SeqCst);
        (first > 0).then(|| {
            (
                Duration::from_millis(first - 1),
                Duration::from_millis(self.last_error_ms.load(SeqCst) - 1),
            )
        })
    }
}

/// A running load; [`Load::stop`] ends it and hands back the model.
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<Tracked>>>,
    /// Shared counters.
    pub tally: Arc<Tally>,
    /// When the load started (error times are relative to it).
    pub epoch: Instant,
}

/// The sessions the workers tracked.
pub struct Model(Vec<Tracked>);

fn record(user: &str) -> Record {
    let mut r = Record::new(
        Some(user.into()),
        now_ms(),
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    );
    r.attrs.insert("counter".into(), b"0".to_vec());
    r
}

fn counter_of(r: &Record) -> Option<u64> {
    std::str::from_utf8(r.attrs.get("counter")?)
        .ok()?
        .parse()
        .ok()
}

fn is_backend(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend { .. })
}

impl Load {
    /// Start `workers` tasks on `store`, each first creating `initial` sessions.
    pub async fn start(store: Arc<dyn SessionStore>, workers: u64, initial: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let epoch = Instant::now();
        let mut handles = Vec::new();
        for w in 0..workers {
            let mut tracked = Vec::new();
            for i in 0..initial {
                let user = format!("w{w}-u{i}");
                let key = Token::generate().key();
                store.create(&key, &record(&user)).await.expect("create");
                tracked.push(Tracked {
                    key,
                    user,
                    acked: Acked::Live {
                        counter: 0,
                        doubt: vec![],
                        created_in_doubt: false,
                    },
                    history: vec![(epoch.elapsed(), "create: Ok".into())],
                });
            }
            let (store, stop, tally) = (store.clone(), stop.clone(), tally.clone());
            handles.push(tokio::spawn(async move {
                work(w, store, tracked, stop, tally, epoch).await
            }));
        }
        Load {
            stop,
            workers: handles,
            tally,
            epoch,
        }
    }

    /// Stop the workers and collect what they tracked. Every store call has a deadline of
    /// its own (a second at most here), so a worker that has not stopped 30 s after being told
    /// is stuck in a call without one: that fails the test instead of hanging it.
    pub async fn stop(self) -> Model {
        self.stop.store(true, SeqCst);
        let mut all = Vec::new();
        for (i, w) in self.workers.into_iter().enumerate() {
            match tokio::time::timeout(std::time::Duration::from_secs(30), w).await {
                Ok(done) => all.extend(done.expect("worker")),
                Err(_) => {
                    panic!("load worker {i} did not stop within 30 s: a store call never returned")
                }
            }
        }
        Model(all)
    }
}

async fn work(
    w: u64,
    store: Arc<dyn SessionStore>,
    mut tracked: Vec<Tracked>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    epoch: Instant,
) -> Vec<Tracked> {
    let mut rng = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut created = tracked.len();
    while !stop.load(SeqCst) {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let dice = (rng >> 33) % 100;
        let live: Vec<usize> = (0..tracked.len())
            .filter(|&i| matches!(tracked[i].acked, Acked::Live { .. }))
            .collect();
        tally.calls.fetch_add(1, SeqCst);
        if dice < 10 || live.is_empty() {
            let user = format!("w{w}-u{created}");
            created += 1;
            let key = Token::generate().key();
            let outcome = store.create(&key, &record(&user)).await;
            let history = vec![(epoch.elapsed(), format!("create: {outcome:?}"))];
            let created_in_doubt = match outcome {
                Ok(()) => false,
                Err(e) if is_backend(&e) => {
                    tally.error(epoch);
                    true
                }
                Err(e) => panic!("create: {e}"),
            };
            if !created_in_doubt {
                tally.acked.fetch_add(1, SeqCst);
            }
            tracked.push(Tracked {
                key,
                user,
                acked: Acked::Live {
                    counter: 0,
                    doubt: vec![],
                    created_in_doubt,
                },
                history,
            });
            continue;
        }
        let i = live[((rng >> 17) as usize) % live.len()];
        let t = &mut tracked[i];
        let Acked::Live {
            mut counter,
            mut doubt,
            created_in_doubt,
        } = t.acked.clone()
        else {
            unreachable!("picked among the live");
        };
        // Whether the store found the session (None: it failed, so we cannot tell), and
        // whether a revocation was acknowledged.
        let (found, revoked) = match dice {
            // Reads.
            10..60 => {
                let outcome = store.load(&t.key).await;
                let counter = outcome.as_ref().map(|r| r.as_ref().and_then(counter_of));
                t.history
                    .push((epoch.elapsed(), format!("load: counter {counter:?}")));
                match outcome {
                    Ok(r) => (Some(r.is_some()), false),
                    Err(_) => (None, false),
                }
            }
            // Writes.
            60..95 => {
                let value = counter + 1 + doubt.len() as u64;
                let delta = Delta::default().set("counter", value.to_string().into_bytes());
                let outcome = store.apply(&t.key, &delta).await;
                t.history
                    .push((epoch.elapsed(), format!("apply {value}: {outcome:?}")));
                match outcome {
                    Ok(()) => {
                        counter = value;
                        doubt.clear();
                        (Some(true), false)
                    }
                    Err(StoreError::NotFound) => (Some(false), false),
                    Err(e) if is_backend(&e) => {
                        doubt.push(value);
                        (None, false)
                    }
                    Err(e) => panic!("apply: {e}"),
                }
            }
            // Revocations: one session, or every session of its user (one each here).
            _ => {
                let outcome = if dice < 98 {
                    store.destroy(&t.key).await
                } else {
                    store.destroy_user(&t.user, None).await.map(|n| n > 0)
                };
                let op = if dice < 98 { "destroy" } else { "destroy_user" };
                t.history
                    .push((epoch.elapsed(), format!("{op}: {outcome:?}")));
                match outcome {
                    Ok(existed) => (Some(existed), true),
                    Err(e) if is_backend(&e) => (None, true),
                    Err(e) => panic!("destroy: {e}"),
                }
            }
        };
        let in_doubt = Acked::DestroyInDoubt {
            counter,
            doubt: doubt.clone(),
        };
        t.acked = match (found, revoked) {
            (None, _) => {
                tally.error(epoch);
                if revoked {
                    in_doubt
                } else {
                    Acked::Live {
                        counter,
                        doubt,
                        created_in_doubt,
                    }
                }
            }
            // Found: the create surely happened.
            (Some(true), false) => {
                tally.acked.fetch_add(1, SeqCst);
                Acked::Live {
                    counter,
                    doubt,
                    created_in_doubt: false,
                }
            }
            (Some(true), true) => {
                tally.acked.fetch_add(1, SeqCst);
                Acked::Destroyed
            }
            // Not there, but its create failed: it did not happen (or not yet), either is fine.
            (Some(false), _) if created_in_doubt => in_doubt,
            (Some(false), _) => {
                tally.missing_during_run.fetch_add(1, SeqCst);
                Acked::Missing
            }
        };
    }
    tracked
}

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Sessions checked (printed).
    #[allow(dead_code)]
    pub sessions: usize,
    /// Acknowledged alive, but missing (now, or already during the run).
    pub lost: usize,
    /// Present, but behind their last acknowledged counter (a lost write).
    pub lost_writes: usize,
    /// Acknowledged destroyed, but present.
    pub resurrected: usize,
    /// Reads that failed during the check.
    pub unreadable: usize,
    /// The history of the first few sessions found wrong, for the report.
    #[allow(dead_code)]
    pub examples: Vec<String>,
}

impl Verdict {
    /// Whether nothing was lost or resurrected.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.lost_writes == 0 && self.resurrected == 0 && self.unreadable == 0
    }
}

/// Read back every tracked session through `store` and compare with what was acknowledged.
pub async fn verify(store: &dyn SessionStore, model: &Model) -> Verdict {
    let mut v = Verdict {
        sessions: model.0.len(),
        ..Verdict::default()
    };
    for t in &model.0 {
        let found = match store.load(&t.key).await {
            Ok(r) => r,
            Err(_) => {
                v.unreadable += 1;
                continue;
            }
        };
        let wrong_before = v.lost + v.lost_writes + v.resurrected;
        let now = found.as_ref().map(counter_of);
        match (&t.acked, &found) {
            (Acked::Missing, _) => v.lost += 1,
            (Acked::Destroyed, Some(_)) => v.resurrected += 1,
            (Acked::Destroyed, None) | (Acked::DestroyInDoubt { .. }, None) => {}
            (
                Acked::Live {
                    created_in_doubt: true,
                    ..
                },
                None,
            ) => {}
            (Acked::Live { .. }, None) => v.lost += 1,
            (
                Acked::Live { counter, doubt, .. } | Acked::DestroyInDoubt { counter, doubt },
                Some(r),
            ) => {
                let got = counter_of(r).unwrap_or(0);
                if got != *counter && !doubt.contains(&got) {
                    v.lost_writes += 1;
                }
            }
        }
        if v.lost + v.lost_writes + v.resurrected > wrong_before && v.examples.len() < 3 {
            v.examples.push(format!(
                "session of {} ({:?}), read back: counter {now:?}; history: {:?}",
                t.user, t.acked, t.history
            ));
        }
    }
    v
}
