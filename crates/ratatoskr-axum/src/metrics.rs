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

use metrics::counter;

pub(crate) fn load(result: &'static str) {
    counter!("ratatoskr_session_loads_total", "result" => result).increment(1);
}

pub(crate) fn cookie_refused(reason: &'static str) {
    counter!("ratatoskr_session_cookies_refused_total", "reason" => reason).increment(1);
}

pub(crate) fn created() {
    counter!("ratatoskr_sessions_created_total").increment(1);
}

pub(crate) fn save(result: &'static str) {
    counter!("ratatoskr_session_saves_total", "result" => result).increment(1);
}

pub(crate) fn rotation(cause: &'static str) {
    counter!("ratatoskr_session_rotations_total", "cause" => cause).increment(1);
}

pub(crate) fn ended(cause: &'static str, n: u64) {
    counter!("ratatoskr_sessions_ended_total", "cause" => cause).increment(n);
}

pub(crate) fn error(code: &'static str) {
    counter!("ratatoskr_session_errors_total", "code" => code).increment(1);
}

pub(crate) fn csrf_refusal(reason: &'static str) {
    counter!("ratatoskr_csrf_refusals_total", "reason" => reason).increment(1);
}

pub(crate) fn fingerprint_mismatch(policy: &'static str) {
    counter!("ratatoskr_fingerprint_mismatches_total", "policy" => policy).increment(1);
}
