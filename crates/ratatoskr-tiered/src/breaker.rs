//! A circuit breaker for the fast tier.
//!
//! A sick Redis must cost at most one timeout per detection window, not one per request. The
//! breaker is **closed** while Redis answers. A failure (error or timeout) opens it at once:
//! for `open_for`, every request skips Redis and goes to the database. Then it is **half-open**:
//! exactly one request probes Redis; the others keep skipping it. A successful probe does not
//! close the breaker directly: it moves to **recovering**, in which the tiered store replays the
//! outage journal; only then is the breaker closed and Redis read again.
//!
//! ```
//! use std::time::Duration;
//! use ratatoskr_tiered::breaker::{Breaker, BreakerState};
//!
//! let b = Breaker::new(Duration::from_millis(100));
//! assert!(b.try_acquire().is_some());
//! b.on_failure();
//! assert_eq!(b.state(), BreakerState::Open);
//! assert!(b.try_acquire().is_none(), "open: Redis is skipped");
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The breaker's state, as reported in health and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Redis is used.
    Closed,
    /// Redis is skipped until the window ends.
    Open,
    /// One probe may go to Redis.
    HalfOpen,
    /// Redis answered again; the journal is being replayed before Redis is read again.
    Recovering,
}

impl BreakerState {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Recovering => "recovering",
        }
    }

    /// A number for the `ratatoskr_breaker_state` gauge: 0 closed, 1 open, 2 half-open,
    /// 3 recovering.
    pub fn as_gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
            BreakerState::Recovering => 3.0,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
    Recovering,
}

/// Permission to call Redis once. Report the outcome with [`Breaker::on_success`] or
/// [`Breaker::on_failure`].
#[derive(Debug)]
#[must_use]
pub struct Permit {
    /// Whether this call is the half-open probe.
    pub probe: bool,
}

/// The breaker. Cheap to consult: one uncontended mutex.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    open_for: Duration,
    transitions: AtomicU64,
}

impl Breaker {
    /// A closed breaker that stays open for `open_for` after a failure.
    pub fn new(open_for: Duration) -> Self {
        Breaker {
            inner: Mutex::new(Inner::Closed),
            open_for,
            transitions: AtomicU64::new(0),
        }
    }

    /// A breaker that starts in `Recovering`: a new instance must replay the journal before it
    /// reads Redis, since it cannot know what happened while it was not running.
    pub fn recovering(open_for: Duration) -> Self {
        let b = Breaker::new(open_for);
        *b.lock() = Inner::Recovering;
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state (Open turns into HalfOpen once its window has passed).
    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } if Instant::now() < *until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
            Inner::Recovering => BreakerState::Recovering,
        }
    }

    /// How many state transitions happened so far.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    fn set(&self, g: &mut Inner, next: Inner) {
        let from = state_name(g);
        *g = next;
        let to = state_name(g);
        if from != to {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ratatoskr_breaker_transitions_total", "from" => from, "to" => to)
                .increment(1);
            tracing::info!(from, to, "Redis circuit breaker changed state");
        }
    }

    /// May this request use Redis for reads and writes? `None`: skip Redis.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut g = self.lock();
        match &*g {
            Inner::Closed => Some(Permit { probe: false }),
            Inner::Open { until } if Instant::now() < *until => None,
            Inner::Open { .. } => {
                self.set(&mut g, Inner::HalfOpen { probing: true });
                Some(Permit { probe: true })
            }
            Inner::HalfOpen { probing: false } => {
                *g = Inner::HalfOpen { probing: true };
                Some(Permit { probe: true })
            }
            Inner::HalfOpen { probing: true } | Inner::Recovering => None,
        }
    }

    /// Redis answered. A successful probe moves to `Recovering` (the caller replays the journal
    /// and then calls [`recovered`](Self::recovered)). Returns whether replay is now due.
    pub fn on_success(&self, permit: Permit) -> bool {
        if !permit.probe {
            return false;
        }
        let mut g = self.lock();
        if matches!(*g, Inner::HalfOpen { .. }) {
            self.set(&mut g, Inner::Recovering);
            return true;
        }
        false
    }

    /// Redis failed or timed out: open (again) for the window.
    pub fn on_failure(&self) {
        let mut g = self.lock();
        let until = Instant::now() + self.open_for;
        self.set(&mut g, Inner::Open { until });
    }

    /// The journal was replayed: close.
    pub fn recovered(&self) {
        let mut g = self.lock();
        if matches!(*g, Inner::Recovering) {
            self.set(&mut g, Inner::Closed);
        }
    }

    /// Another instance journalled changes: stop reading Redis until they are replayed.
    pub fn begin_recovery(&self) {
        let mut g = self.lock();
        if matches!(*g, Inner::Closed) {
            self.set(&mut g, Inner::Recovering);
        }
    }

    /// The journal could not be replayed: open again and retry after the window.
    pub fn recovery_failed(&self) {
        self.on_failure();
    }
}

fn state_name(g: &Inner) -> &'static str {
    match g {
        Inner::Closed => "closed",
        Inner::Open { .. } => "open",
        Inner::HalfOpen { .. } => "half_open",
        Inner::Recovering => "recovering",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Poll (with a deadline, not a fixed sleep) until the window has ended; when it was seen.
    fn wait_half_open(b: &Breaker) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.state() != BreakerState::HalfOpen {
            assert!(Instant::now() < deadline, "the window never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
        Instant::now()
    }

    #[test]
    fn a_failed_replay_opens_the_breaker_again_and_a_replayed_journal_closes_it() {
        let b = Breaker::recovering(Duration::from_secs(60));
        assert_eq!(b.state(), BreakerState::Recovering);
        b.recovery_failed();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "Redis is skipped until the window ends"
        );
        assert!(b.try_acquire().is_none());
        let b = Breaker::recovering(Duration::from_secs(60));
        b.recovered();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn the_state_gauge_has_one_value_per_state() {
        let values: Vec<f64> = [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Recovering,
        ]
        .into_iter()
        .map(BreakerState::as_gauge)
        .collect();
        assert_eq!(values, [0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn an_open_breaker_skips_redis_for_the_whole_window() {
        // A window no scheduler delay can outlast: what is checked is the state, not a clock.
        let b = Breaker::new(Duration::from_secs(60));
        let p = b.try_acquire().unwrap();
        assert!(!p.probe);
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Open);
        for _ in 0..1_000 {
            assert!(b.try_acquire().is_none());
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(
            !b.on_success(p),
            "a late success of a normal call closes nothing"
        );
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn the_window_lasts_at_least_open_for_then_one_probe_is_let_through() {
        let window = Duration::from_millis(30);
        let b = Breaker::new(window);
        let failed = Instant::now();
        b.on_failure();
        let ended = wait_half_open(&b);
        assert!(
            ended - failed >= window,
            "half-open after {:?}",
            ended - failed
        );
        let probe = b.try_acquire().expect("half-open lets one probe through");
        assert!(probe.probe);
        assert!(b.try_acquire().is_none(), "only one probe at a time");
        assert!(b.on_success(probe), "replay is due after a good probe");
        assert_eq!(b.state(), BreakerState::Recovering);
        assert!(
            b.try_acquire().is_none(),
            "no Redis reads until the journal is replayed"
        );
        b.recovered();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = Breaker::new(Duration::from_millis(20));
        b.on_failure();
        wait_half_open(&b);
        let _probe = b.try_acquire().unwrap();
        let reopened = Instant::now();
        b.on_failure();
        // The inner state, so that a stall after the failure cannot turn Open into HalfOpen.
        assert!(
            matches!(*b.lock(), Inner::Open { until } if until >= reopened + Duration::from_millis(20)),
            "{:?}",
            *b.lock()
        );
        assert_eq!(b.transitions(), 3, "closed -> open -> half-open -> open");
    }

    #[test]
    fn a_new_instance_starts_recovering() {
        let b = Breaker::recovering(Duration::from_millis(20));
        assert_eq!(b.state(), BreakerState::Recovering);
        assert!(b.try_acquire().is_none());
        b.recovered();
        assert!(b.try_acquire().is_some());
    }
}
