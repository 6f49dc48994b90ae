//! Counters, through the `metrics` facade (the application installs the exporter).
//!
//! | name | labels | counts |
//! |---|---|---|
//! | `ratatoskr_session_loads_total` | `result` = `hit`, `miss`, `error` | store loads of a cookie's session |
//! | `ratatoskr_session_cookies_refused_total` | `reason` = `malformed`, `not_text`, `ambiguous` | cookies refused before any store call |
//! | `ratatoskr_sessions_created_total` | | new sessions (first write, or login without one) |
//! | `ratatoskr_session_saves_total` | `result` = `ok`, `error` | delta writes |
//! | `ratatoskr_session_rotations_total` | `cause` = `login`, `privilege` | token rotations |
//! | `ratatoskr_sessions_ended_total` | `cause` = `logout`, `fingerprint`, `revoked_by_user`, `revoked_all`, `revoked_by_admin`, `evicted` | sessions ended by the layer |
//! | `ratatoskr_session_errors_total` | `code` | [`SessionError`](crate::SessionError) responses |
//! | `ratatoskr_csrf_refusals_total` | `reason` = the refusal code | refused unsafe requests |
//! | `ratatoskr_fingerprint_mismatches_total` | `policy` = `log`, `revoke` | fingerprint mismatches |
//!
//! Each counter's key is a `static` for every label value listed here (the `metrics` macros
//! build a key from literals once; from a variable they allocate its label list on every call,
//! which was an allocation per request on the read path). A value not listed still counts,
//! under the same name and label, through the allocating form.

use metrics::counter;

/// `counter!($name, $label => value).increment($n)`, with a static key for each listed value.
macro_rules! count {
    ($name:literal, $label:literal, $value:expr, $n:expr, [$($known:literal),+ $(,)?]) => {
        match $value {
            $($known => counter!($name, $label => $known).increment($n),)+
            other => counter!($name, $label => other).increment($n),
        }
    };
}

pub(crate) fn load(result: &'static str) {
    count!(
        "ratatoskr_session_loads_total",
        "result",
        result,
        1,
        ["hit", "miss", "error"]
    );
}

pub(crate) fn cookie_refused(reason: &'static str) {
    count!(
        "ratatoskr_session_cookies_refused_total",
        "reason",
        reason,
        1,
        ["malformed", "not_text", "ambiguous"]
    );
}

pub(crate) fn created() {
    counter!("ratatoskr_sessions_created_total").increment(1);
}

pub(crate) fn save(result: &'static str) {
    count!(
        "ratatoskr_session_saves_total",
        "result",
        result,
        1,
        ["ok", "error"]
    );
}

pub(crate) fn rotation(cause: &'static str) {
    count!(
        "ratatoskr_session_rotations_total",
        "cause",
        cause,
        1,
        ["login", "privilege"]
    );
}

pub(crate) fn ended(cause: &'static str, n: u64) {
    count!(
        "ratatoskr_sessions_ended_total",
        "cause",
        cause,
        n,
        [
            "logout",
            "fingerprint",
            "revoked_by_user",
            "revoked_all",
            "revoked_by_admin",
            "evicted"
        ]
    );
}

pub(crate) fn error(code: &'static str) {
    count!(
        "ratatoskr_session_errors_total",
        "code",
        code,
        1,
        [
            "session_store_unavailable",
            "session_ended",
            "session_revoked",
            "session_too_large",
            "session_value_invalid",
            "unauthenticated",
            "session_layer_missing"
        ]
    );
}

pub(crate) fn csrf_refusal(reason: &'static str) {
    count!(
        "ratatoskr_csrf_refusals_total",
        "reason",
        reason,
        1,
        [
            "csrf_token_missing",
            "csrf_token_invalid",
            "cross_site_request",
            "origin_mismatch"
        ]
    );
}

pub(crate) fn fingerprint_mismatch(policy: &'static str) {
    count!(
        "ratatoskr_fingerprint_mismatches_total",
        "policy",
        policy,
        1,
        ["log", "revoke"]
    );
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    /// Counts by `name{label=value}`.
    #[derive(Default)]
    struct Rec(Mutex<HashMap<String, Arc<Cell>>>);

    #[derive(Default)]
    struct Cell(AtomicU64);

    impl metrics::CounterFn for Cell {
        fn increment(&self, v: u64) {
            self.0.fetch_add(v, Ordering::SeqCst);
        }
        fn absolute(&self, v: u64) {
            self.0.store(v, Ordering::SeqCst);
        }
    }

    impl Recorder for Rec {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut map = self.0.lock().unwrap();
            Counter::from_arc(map.entry(name).or_default().clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    impl Rec {
        fn get(&self, name: &str) -> Option<u64> {
            let map = self.0.lock().unwrap();
            map.get(name).map(|c| c.0.load(Ordering::SeqCst))
        }
    }

    #[test]
    fn every_listed_value_counts_under_its_label_and_an_unlisted_one_too() {
        let rec = Rec::default();
        metrics::with_local_recorder(&rec, || {
            super::load("hit");
            super::load("hit");
            super::load("miss");
            super::ended("revoked_all", 3);
            super::error("session_value_invalid");
            super::csrf_refusal("origin_mismatch");
            super::fingerprint_mismatch("revoke");
            super::save("error");
            super::rotation("privilege");
            super::cookie_refused("not_text");
            // Not in any list: still counted, under the same label.
            super::load("unlisted");
            super::ended("some_new_cause", 2);
        });
        let expect = |name: &str, n: u64| assert_eq!(rec.get(name), Some(n), "{name}");
        expect("ratatoskr_session_loads_total{result=hit}", 2);
        expect("ratatoskr_session_loads_total{result=miss}", 1);
        expect("ratatoskr_sessions_ended_total{cause=revoked_all}", 3);
        expect(
            "ratatoskr_session_errors_total{code=session_value_invalid}",
            1,
        );
        expect("ratatoskr_csrf_refusals_total{reason=origin_mismatch}", 1);
        expect("ratatoskr_fingerprint_mismatches_total{policy=revoke}", 1);
        expect("ratatoskr_session_saves_total{result=error}", 1);
        expect("ratatoskr_session_rotations_total{cause=privilege}", 1);
        expect(
            "ratatoskr_session_cookies_refused_total{reason=not_text}",
            1,
        );
        expect("ratatoskr_session_loads_total{result=unlisted}", 1);
        expect("ratatoskr_sessions_ended_total{cause=some_new_cause}", 2);
    }
}
