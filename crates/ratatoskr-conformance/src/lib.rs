//! # ratatoskr-conformance
//!
//! One behaviour suite, run against every session store. A backend crate implements [`Harness`]
//! (how to make a fresh, isolated store; how to corrupt a stored record; how big its per-user index
//! is) and invokes [`store_conformance!`] in an integration test; it then gets one `#[tokio::test]`
//! per behaviour, named after the behaviour.
//!
//! ```ignore
//! // crates/ratatoskr-foo/tests/conformance.rs
//! async fn harness() -> MyHarness { MyHarness::fresh().await }
//! ratatoskr_conformance::store_conformance!(harness);
//! ```
//!
//! The cases use short timeouts (hundreds of milliseconds) with generous margins, so they test
//! real expiry on real backends without being flaky on a loaded machine.

#![warn(missing_docs)]

use std::sync::Arc;

use async_trait::async_trait;
use ratatoskr_core::{SessionKey, SessionStore};

pub mod cases;

/// How the suite reaches one backend. Each call of the user's factory must return a harness over
/// fresh, isolated data (its own key prefix, schema, database file…).
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The store under test.
    fn store(&self) -> Arc<dyn SessionStore>;

    /// A second, independent store instance over the same data (another connection pool, as a
    /// second application instance would have).
    async fn other_instance(&self) -> Arc<dyn SessionStore>;

    /// Overwrite the stored fixed part of the session at `key` with bytes that do not decode.
    async fn corrupt(&self, key: &SessionKey);

    /// How many entries the backend's per-user index holds for `user_id`, live or stale.
    async fn index_entries(&self, user_id: &str) -> usize;

    /// How long after its session expires an index entry may still be held (the index's time
    /// granularity): the cases that expect expired entries pruned wait this much longer.
    /// Default zero (the index prunes to the millisecond).
    fn index_lag(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Expand to one `#[tokio::test]` per conformance case, each over a fresh harness from
/// `$factory` (an `async fn() -> impl Harness`).
#[macro_export]
macro_rules! store_conformance {
    ($factory:path) => {
        $crate::store_conformance!(@cases $factory;
            create_then_load_returns_the_same_record,
            create_refuses_an_existing_key,
            unknown_keys_load_as_absent,
            idle_timeout_expires_an_unused_session,
            absolute_timeout_expires_a_session_in_constant_use,
            touch_extends_the_idle_deadline,
            touch_never_extends_past_the_absolute_deadline,
            touch_of_a_missing_session_creates_nothing,
            touch_does_not_rewrite_attributes,
            delta_writes_only_what_changed,
            delta_after_destroy_is_refused_and_resurrects_nothing,
            delta_after_expiry_is_refused,
            fifty_parallel_deltas_on_different_attributes_all_land,
            rotation_keeps_data_and_kills_the_old_key,
            rotation_of_a_missing_session_fails,
            rotation_onto_an_existing_key_is_a_collision,
            destroy_is_final,
            list_user_returns_live_sessions_with_handles_oldest_first,
            list_user_breaks_ties_in_creation_time_by_handle,
            destroy_user_destroys_every_session_of_that_user_only,
            destroy_user_can_spare_the_current_session,
            no_session_created_during_a_revoke_all_survives_it,
            sessions_created_after_a_revoke_all_are_allowed,
            a_rotation_dated_before_its_users_revoke_all_is_refused,
            count_counts_live_sessions,
            reap_removes_expired_sessions_and_prunes_the_index,
            user_index_never_grows_past_live_sessions,
            rotations_leave_no_index_entry_behind,
            oversized_records_are_a_typed_error_and_change_nothing,
            a_rotation_over_the_size_limit_is_refused_and_changes_nothing,
            undecodable_records_are_absent_and_logged_by_handle,
            a_second_instance_sees_the_same_sessions,
            concurrent_logins_of_one_user_never_exceed_the_limit,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $factory().await;
                $crate::cases::$case(&harness).await;
            }
        )*
    };
}
