//! The behaviours every store must show, one function each.
//!
//! Each function takes a fresh [`Harness`] and panics with a message naming the broken
//! behaviour. Timing-based cases leave wide margins (at least 2x) around each deadline.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use ratatoskr_core::codec::CodecError;
use ratatoskr_core::manager::Login;
use ratatoskr_core::{
    Delta, Handle, ManagerConfig, Meta, Millis, Record, SessionKey, SessionManager, SessionStore,
    SessionSummary, StoreError, StoreResult, Token, now_ms, token::random_bytes,
};
use tracing::instrument::WithSubscriber;

use crate::Harness;

const MINUTE: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn record(user: Option<&str>, idle: Duration, absolute: Duration) -> Record {
    let mut r = Record::new(user.map(str::to_owned), now_ms(), idle, absolute);
    r.meta.fingerprint = Some(random_bytes());
    r
}

fn key() -> SessionKey {
    Token::generate().key()
}

async fn create(
    store: &dyn SessionStore,
    user: Option<&str>,
    idle: Duration,
    abs: Duration,
) -> (SessionKey, Record) {
    let k = key();
    let r = record(user, idle, abs);
    store.create(&k, &r).await.expect("create");
    (k, r)
}

async fn sleep(n: u64) {
    tokio::time::sleep(ms(n)).await;
}

/// Sleep until the wall clock (`now_ms`) reaches `at`.
async fn sleep_until(at: i64) {
    let left = at - now_ms();
    if left > 0 {
        sleep(left as u64).await;
    }
}

/// The machine stalled across a deadline the case needed to observe from one side: the answer
/// proves nothing either way, and the case starts over.
struct Stalled;

/// Ask the store whether `k` is alive before `deadline` (ms): answered before it, the session
/// must be alive (a panic with `what` otherwise); answered after it, the observation is
/// [`Stalled`].
async fn alive_before(
    s: &dyn SessionStore,
    k: &SessionKey,
    deadline: i64,
    what: &str,
) -> Result<(), Stalled> {
    let alive = s.load(k).await.unwrap().is_some();
    if now_ms() < deadline {
        assert!(alive, "{what}");
        Ok(())
    } else {
        Err(Stalled)
    }
}

/// Touch `k` at `now_ms()` and require it to succeed unless the clock had already passed
/// `deadline` (then [`Stalled`]). Returns the touch time.
async fn touch_before(
    s: &dyn SessionStore,
    k: &SessionKey,
    meta: &ratatoskr_core::Meta,
    deadline: i64,
    what: &str,
) -> Result<i64, Stalled> {
    let t = now_ms();
    let touched = s.touch(k, meta, t).await.unwrap();
    if now_ms() < deadline {
        assert!(touched, "{what}");
        Ok(t)
    } else {
        Err(Stalled)
    }
}

/// Run a timing case up to three times while the machine stalls across its deadlines; a
/// store that breaks the rule fails on the first attempt.
async fn retrying_stalls<F: AsyncFnMut() -> Result<(), Stalled>>(what: &str, mut case: F) {
    for attempt in 1..=3 {
        if case().await.is_ok() {
            return;
        }
        eprintln!("{what}: the machine stalled across a deadline (attempt {attempt}); again");
    }
    panic!("{what}: the machine stalled across a deadline three times in a row");
}

/// A stored session loads back exactly as written.
pub async fn create_then_load_returns_the_same_record(h: &impl Harness) {
    let s = h.store();
    let k = key();
    let mut r = record(Some("user-1"), MINUTE, 10 * MINUTE);
    r.attrs.insert("counter".into(), b"1".to_vec());
    r.attrs.insert("empty".into(), Vec::new());
    r.attrs.insert("binary".into(), vec![0, 255, 1, 254]);
    s.create(&k, &r).await.unwrap();
    assert_eq!(s.load(&k).await.unwrap(), Some(r.clone()));

    let anon = key();
    let a = record(None, MINUTE, 10 * MINUTE);
    s.create(&anon, &a).await.unwrap();
    assert_eq!(s.load(&anon).await.unwrap(), Some(a));
}

/// Creating a session under a key that exists fails with `Collision` and changes nothing.
pub async fn create_refuses_an_existing_key(h: &impl Harness) {
    let s = h.store();
    let (k, r) = create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    let other = record(Some("someone-else"), MINUTE, 10 * MINUTE);
    match s.create(&k, &other).await {
        Err(StoreError::Collision) => {}
        other => panic!("expected Collision, got {other:?}"),
    }
    assert_eq!(s.load(&k).await.unwrap(), Some(r));
}

/// An unknown key is absent, not an error.
pub async fn unknown_keys_load_as_absent(h: &impl Harness) {
    let s = h.store();
    assert_eq!(s.load(&key()).await.unwrap(), None);
    assert!(!s.destroy(&key()).await.unwrap());
}

/// A session not used for longer than its idle timeout is gone.
pub async fn idle_timeout_expires_an_unused_session(h: &impl Harness) {
    let s = h.store();
    let idle = 600;
    retrying_stalls("idle timeout", async || {
        let (k, r) = create(&*s, Some("u"), ms(idle), MINUTE).await;
        sleep(150).await;
        let deadline = r.meta.created_at + idle as i64;
        alive_before(&*s, &k, deadline, "alive before the idle deadline").await?;
        sleep_until(deadline + 400).await;
        assert!(
            s.load(&k).await.unwrap().is_none(),
            "gone after the idle deadline"
        );
        assert!(
            s.list_user("u").await.unwrap().is_empty(),
            "not listed after expiry"
        );
        Ok(())
    })
    .await;
}

/// Touching keeps the idle deadline away, but the absolute deadline still ends the session: it
/// is gone right after the absolute deadline although its last touch was recent enough to keep
/// it alive for longer.
pub async fn absolute_timeout_expires_a_session_in_constant_use(h: &impl Harness) {
    let s = h.store();
    let (idle, absolute) = (800_i64, 1_200_i64);
    retrying_stalls("absolute timeout", async || {
        let (k, r) = create(&*s, None, ms(idle as u64), ms(absolute as u64)).await;
        let abs = r.meta.absolute_deadline;
        // Touch every 200 ms until shortly before the absolute deadline: each touch must land.
        let mut last = r.meta.created_at;
        while now_ms() + 200 < abs - 150 {
            sleep(200).await;
            let deadline = (last + idle).min(abs);
            last = touch_before(&*s, &k, &r.meta, deadline, "alive while in use").await?;
        }
        assert!(
            last > r.meta.created_at + idle / 2,
            "used for a while (last touch {} ms in)",
            last - r.meta.created_at
        );
        sleep_until(abs + 100).await;
        if now_ms() >= last + idle {
            return Err(Stalled); // the last touch alone would have let it lapse by now
        }
        assert!(
            s.load(&k).await.unwrap().is_none(),
            "gone after the absolute deadline despite a touch {} ms ago",
            now_ms() - last
        );
        assert!(!s.touch(&k, &r.meta, now_ms()).await.unwrap());
        Ok(())
    })
    .await;
}

/// A touch moves `last_seen` and the idle deadline.
pub async fn touch_extends_the_idle_deadline(h: &impl Harness) {
    let s = h.store();
    let idle = 1_000_i64;
    retrying_stalls("touch", async || {
        let (k, r) = create(&*s, None, ms(idle as u64), MINUTE).await;
        sleep(600).await;
        let original = r.meta.created_at + idle;
        let t = touch_before(&*s, &k, &r.meta, original, "a live session is touched").await?;
        let loaded = s.load(&k).await.unwrap().expect("alive after touch");
        assert_eq!(loaded.last_seen, t, "touch records last_seen");
        // Past the original idle deadline, before the one the touch set.
        sleep_until(original + 50).await;
        alive_before(&*s, &k, t + idle, "the touch extended the idle deadline").await?;
        sleep_until(t + idle + 400).await;
        assert!(
            s.load(&k).await.unwrap().is_none(),
            "gone one idle timeout after the touch"
        );
        Ok(())
    })
    .await;
}

/// A touch near the end of a session's life extends it only to the absolute deadline.
pub async fn touch_never_extends_past_the_absolute_deadline(h: &impl Harness) {
    let s = h.store();
    retrying_stalls("touch near the absolute deadline", async || {
        let (k, r) = create(&*s, None, ms(2_000), ms(1_000)).await;
        sleep(500).await;
        let abs = r.meta.absolute_deadline;
        let t = touch_before(&*s, &k, &r.meta, abs, "a live session is touched").await?;
        // Past the absolute deadline, well before the idle one the touch would set uncapped.
        sleep_until(abs + 300).await;
        if now_ms() >= t + 2_000 {
            return Err(Stalled); // past the uncapped deadline too: proves nothing
        }
        assert!(s.load(&k).await.unwrap().is_none());
        Ok(())
    })
    .await;
}

/// Touching a key that does not exist reports it and creates nothing.
pub async fn touch_of_a_missing_session_creates_nothing(h: &impl Harness) {
    let s = h.store();
    let k = key();
    let r = record(Some("u"), MINUTE, MINUTE);
    assert!(!s.touch(&k, &r.meta, now_ms()).await.unwrap());
    assert!(s.load(&k).await.unwrap().is_none());
    assert_eq!(h.index_entries("u").await, 0);
}

/// A touch carries only time; attributes written in between survive it.
pub async fn touch_does_not_rewrite_attributes(h: &impl Harness) {
    let s = h.store();
    let (k, r) = create(&*s, None, MINUTE, 10 * MINUTE).await;
    s.apply(&k, &Delta::default().set("a", b"1".to_vec()))
        .await
        .unwrap();
    // The touch comes from a request that loaded the session before "a" was set.
    assert!(s.touch(&k, &r.meta, now_ms()).await.unwrap());
    let loaded = s.load(&k).await.unwrap().unwrap();
    assert_eq!(loaded.attrs.get("a").map(Vec::as_slice), Some(&b"1"[..]));
}

/// A delta sets and removes only the attributes it names.
pub async fn delta_writes_only_what_changed(h: &impl Harness) {
    let s = h.store();
    let k = key();
    let mut r = record(Some("u"), MINUTE, 10 * MINUTE);
    r.attrs.insert("keep".into(), b"k".to_vec());
    r.attrs.insert("drop".into(), b"d".to_vec());
    r.attrs.insert("change".into(), b"old".to_vec());
    s.create(&k, &r).await.unwrap();
    s.apply(
        &k,
        &Delta::default()
            .remove("drop")
            .set("change", b"new".to_vec())
            .set("add", b"a".to_vec()),
    )
    .await
    .unwrap();
    let got = s.load(&k).await.unwrap().unwrap();
    let want: BTreeMap<String, Vec<u8>> = [("keep", "k"), ("change", "new"), ("add", "a")]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.as_bytes().to_vec()))
        .collect();
    assert_eq!(got.attrs, want);
    assert_eq!(got.meta, r.meta, "a delta leaves the fixed part alone");
    // Removing an attribute that is not there is not an error.
    s.apply(&k, &Delta::default().remove("never-was"))
        .await
        .unwrap();
}

/// A delta against a destroyed session fails with `NotFound` and does not bring it back.
pub async fn delta_after_destroy_is_refused_and_resurrects_nothing(h: &impl Harness) {
    let s = h.store();
    let (k, _) = create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    assert!(s.destroy(&k).await.unwrap());
    match s
        .apply(&k, &Delta::default().set("late", b"write".to_vec()))
        .await
    {
        Err(StoreError::NotFound) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(s.load(&k).await.unwrap().is_none(), "no resurrection");
    assert!(s.list_user("u").await.unwrap().is_empty());
}

/// A delta against an expired session fails with `NotFound`.
pub async fn delta_after_expiry_is_refused(h: &impl Harness) {
    let s = h.store();
    let (k, _) = create(&*s, None, ms(300), MINUTE).await;
    sleep(700).await;
    match s
        .apply(&k, &Delta::default().set("late", b"write".to_vec()))
        .await
    {
        Err(StoreError::NotFound) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(s.load(&k).await.unwrap().is_none());
}

/// Fifty concurrent requests, each setting its own attribute, leave all fifty.
pub async fn fifty_parallel_deltas_on_different_attributes_all_land(h: &impl Harness) {
    let s = h.store();
    let (k, _) = create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    let writes = (0..50).map(|i| {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            s.apply(
                &k,
                &Delta::default().set(format!("attr-{i}"), i.to_string().into_bytes()),
            )
            .await
        })
    });
    for r in join_all(writes).await {
        r.expect("task").expect("delta");
    }
    let got = s.load(&k).await.unwrap().unwrap();
    assert_eq!(got.attrs.len(), 50, "every attribute landed");
    for i in 0..50 {
        assert_eq!(got.attrs[&format!("attr-{i}")], i.to_string().into_bytes());
    }
}

/// Rotation moves the data to the new key; the old key is dead for every operation.
pub async fn rotation_keeps_data_and_kills_the_old_key(h: &impl Harness) {
    let s = h.store();
    let (old, r) = create(&*s, None, MINUTE, 10 * MINUTE).await;
    s.apply(&old, &Delta::default().set("cart", b"3 items".to_vec()))
        .await
        .unwrap();
    let new = key();
    let mut meta = r.meta.clone();
    meta.user_id = Some("alice".into());
    meta.version += 1;
    let now = now_ms();
    s.rotate(&old, &new, &meta, now).await.unwrap();

    let got = s.load(&new).await.unwrap().expect("new key live");
    assert_eq!(got.meta, meta);
    assert_eq!(got.last_seen, now);
    assert_eq!(got.attrs["cart"], b"3 items");
    assert!(s.load(&old).await.unwrap().is_none(), "old key dead");
    assert!(matches!(
        s.apply(&old, &Delta::default().set("x", b"y".to_vec()))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(!s.touch(&old, &r.meta, now_ms()).await.unwrap());
    let listed = s.list_user("alice").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, new);
}

/// Rotating a session that is gone fails with `NotFound` and creates nothing.
pub async fn rotation_of_a_missing_session_fails(h: &impl Harness) {
    let s = h.store();
    let r = record(Some("u"), MINUTE, MINUTE);
    let new = key();
    assert!(matches!(
        s.rotate(&key(), &new, &r.meta, now_ms()).await,
        Err(StoreError::NotFound)
    ));
    assert!(s.load(&new).await.unwrap().is_none());
}

/// Rotating onto a key that exists fails with `Collision` and leaves both sessions as they were.
pub async fn rotation_onto_an_existing_key_is_a_collision(h: &impl Harness) {
    let s = h.store();
    let (a, ra) = create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    let (b, rb) = create(&*s, Some("v"), MINUTE, 10 * MINUTE).await;
    assert!(matches!(
        s.rotate(&a, &b, &ra.meta, now_ms()).await,
        Err(StoreError::Collision)
    ));
    assert_eq!(s.load(&a).await.unwrap(), Some(ra));
    assert_eq!(s.load(&b).await.unwrap(), Some(rb));
}

/// Once destroyed, a session stays destroyed.
pub async fn destroy_is_final(h: &impl Harness) {
    let s = h.store();
    let (k, r) = create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    assert!(s.destroy(&k).await.unwrap());
    assert!(s.load(&k).await.unwrap().is_none());
    assert!(
        !s.destroy(&k).await.unwrap(),
        "second destroy reports nothing was there"
    );
    assert!(!s.touch(&k, &r.meta, now_ms()).await.unwrap());
    assert!(s.load(&k).await.unwrap().is_none());
    assert!(s.list_user("u").await.unwrap().is_empty());
}

/// A user's sessions are listed with their handles, oldest first; others' are not.
pub async fn list_user_returns_live_sessions_with_handles_oldest_first(h: &impl Harness) {
    let s = h.store();
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(create(&*s, Some("me"), MINUTE, 10 * MINUTE).await.0);
        sleep(5).await;
    }
    create(&*s, Some("you"), MINUTE, 10 * MINUTE).await;
    create(&*s, None, MINUTE, 10 * MINUTE).await;
    let listed = s.list_user("me").await.unwrap();
    assert_eq!(listed.iter().map(|x| x.key).collect::<Vec<_>>(), mine);
    for x in &listed {
        assert_eq!(x.handle, x.key.handle());
        assert_eq!(x.meta.user_id.as_deref(), Some("me"));
    }
    assert!(s.destroy(&mine[1]).await.unwrap());
    assert_eq!(s.list_user("me").await.unwrap().len(), 2);
    assert!(s.list_user("nobody").await.unwrap().is_empty());
}

/// Sessions of one user created in the same millisecond are listed in handle order (the
/// contract's tie-break), whatever order they were created or stored in.
pub async fn list_user_breaks_ties_in_creation_time_by_handle(h: &impl Harness) {
    let s = h.store();
    let created_at = now_ms();
    let mut keys: Vec<SessionKey> = (0..6).map(|_| key()).collect();
    let mut expected = keys.clone();
    expected.sort_by_key(|k| k.handle());
    // Six random keys are in handle order by chance once in 720 runs; create them in another
    // order, so that a store listing in creation order fails.
    if expected == keys {
        keys.reverse();
    }
    for k in &keys {
        let mut r = record(Some("tie"), MINUTE, 10 * MINUTE);
        r.meta.created_at = created_at;
        s.create(k, &r).await.expect("create");
    }
    let listed = s.list_user("tie").await.unwrap();
    assert_eq!(listed.iter().map(|x| x.key).collect::<Vec<_>>(), expected);
}

/// Revoking a user destroys all of that user's sessions and nobody else's.
pub async fn destroy_user_destroys_every_session_of_that_user_only(h: &impl Harness) {
    let s = h.store();
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(create(&*s, Some("me"), MINUTE, 10 * MINUTE).await.0);
    }
    let (yours, _) = create(&*s, Some("you"), MINUTE, 10 * MINUTE).await;
    assert_eq!(s.destroy_user("me", None).await.unwrap(), 3);
    for k in &mine {
        assert!(s.load(k).await.unwrap().is_none());
    }
    assert!(s.list_user("me").await.unwrap().is_empty());
    assert!(s.load(&yours).await.unwrap().is_some());
    assert_eq!(s.destroy_user("nobody", None).await.unwrap(), 0);
}

/// "Log out other sessions" keeps the current one.
pub async fn destroy_user_can_spare_the_current_session(h: &impl Harness) {
    let s = h.store();
    let (current, _) = create(&*s, Some("me"), MINUTE, 10 * MINUTE).await;
    let (other, _) = create(&*s, Some("me"), MINUTE, 10 * MINUTE).await;
    assert_eq!(s.destroy_user("me", Some(&current)).await.unwrap(), 1);
    assert!(s.load(&current).await.unwrap().is_some());
    assert!(s.load(&other).await.unwrap().is_none());
    let listed = s.list_user("me").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, current);
}

/// Sessions whose creation began before a revoke-all, but which land during or after it, do
/// not survive: each is destroyed by the revoke or refused with `Revoked`.
pub async fn no_session_created_during_a_revoke_all_survives_it(h: &impl Harness) {
    let s = h.store();
    for _ in 0..5 {
        create(&*s, Some("victim"), MINUTE, 10 * MINUTE).await;
    }
    // Records built (creation begun) before the revoke starts.
    let pending: Vec<(SessionKey, Record)> = (0..40)
        .map(|_| (key(), record(Some("victim"), MINUTE, 10 * MINUTE)))
        .collect();
    sleep(3).await;
    let creates = pending.iter().cloned().map(|(k, r)| {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            // Spread the creates around the revoke.
            tokio::time::sleep(ms(u64::from(k.as_bytes()[0] % 20))).await;
            s.create(&k, &r).await
        })
    });
    let revoke = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            tokio::time::sleep(ms(8)).await;
            s.destroy_user("victim", None).await
        })
    };
    let results = join_all(creates).await;
    revoke.await.unwrap().expect("revoke-all");
    for r in results {
        match r.unwrap() {
            Ok(()) | Err(StoreError::Revoked) => {}
            Err(e) => panic!("unexpected create error {e:?}"),
        }
    }
    for (k, _) in &pending {
        assert!(
            s.load(k).await.unwrap().is_none(),
            "a session created during revoke-all survived"
        );
    }
    assert!(s.list_user("victim").await.unwrap().is_empty());
}

/// A revoke-all is not a ban: sessions begun after it are created normally.
pub async fn sessions_created_after_a_revoke_all_are_allowed(h: &impl Harness) {
    let s = h.store();
    create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    s.destroy_user("u", None).await.unwrap();
    sleep(5).await;
    let (k, _) = create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    assert!(s.load(&k).await.unwrap().is_some());
    // Rotation into the user (a login) after the revoke also works.
    let (anon, r) = create(&*s, None, MINUTE, 10 * MINUTE).await;
    let mut meta = r.meta.clone();
    meta.user_id = Some("u".into());
    let new = key();
    s.rotate(&anon, &new, &meta, now_ms()).await.unwrap();
    assert_eq!(s.list_user("u").await.unwrap().len(), 2);
}

/// A rotation into a user dated before that user's last revoke-all (`now` earlier than the
/// revocation: a login that raced a revoke-all of the same user) is refused with `Revoked`, and
/// writes nothing under the new key. A rotation dated after it is allowed (above).
pub async fn a_rotation_dated_before_its_users_revoke_all_is_refused(h: &impl Harness) {
    let s = h.store();
    let before = now_ms() - 10_000;
    let (anon, r) = create(&*s, None, MINUTE, 10 * MINUTE).await;
    create(&*s, Some("late"), MINUTE, 10 * MINUTE).await;
    sleep(5).await;
    s.destroy_user("late", None).await.unwrap();
    let mut meta = r.meta.clone();
    meta.user_id = Some("late".into());
    meta.version += 1;
    let new = key();
    match s.rotate(&anon, &new, &meta, before).await {
        Err(StoreError::Revoked) => {}
        other => panic!("a rotation dated before the revoke-all: {other:?}"),
    }
    assert!(
        s.load(&new).await.unwrap().is_none(),
        "nothing under the new key"
    );
    assert!(s.list_user("late").await.unwrap().is_empty());
}

/// `count` counts live sessions only.
pub async fn count_counts_live_sessions(h: &impl Harness) {
    let s = h.store();
    assert_eq!(s.count().await.unwrap(), 0);
    let (a, _) = create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    create(&*s, None, MINUTE, 10 * MINUTE).await;
    create(&*s, None, ms(300), MINUTE).await;
    assert_eq!(s.count().await.unwrap(), 3);
    s.destroy(&a).await.unwrap();
    sleep(700).await;
    assert_eq!(s.count().await.unwrap(), 1);
}

/// `reap` clears expired sessions and their index entries.
pub async fn reap_removes_expired_sessions_and_prunes_the_index(h: &impl Harness) {
    let s = h.store();
    for _ in 0..3 {
        create(&*s, Some("u"), ms(300), MINUTE).await;
    }
    let (live, _) = create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    tokio::time::sleep(ms(700) + h.index_lag()).await;
    s.reap().await.unwrap();
    assert_eq!(
        h.index_entries("u").await,
        1,
        "index pruned to the live session"
    );
    assert_eq!(s.count().await.unwrap(), 1);
    assert_eq!(s.list_user("u").await.unwrap()[0].key, live);
}

/// Without any reaping, a user who keeps creating sessions that expire has an index no larger
/// than the sessions alive now (plus the few whose expiry has not been noticed yet).
pub async fn user_index_never_grows_past_live_sessions(h: &impl Harness) {
    let s = h.store();
    for _ in 0..20 {
        create(&*s, Some("churn"), ms(200), MINUTE).await;
    }
    tokio::time::sleep(ms(500) + h.index_lag()).await;
    let (k, _) = create(&*s, Some("churn"), MINUTE, 10 * MINUTE).await;
    s.list_user("churn").await.unwrap();
    let n = h.index_entries("churn").await;
    assert!(n <= 1, "index holds {n} entries for 1 live session");
    assert!(s.destroy(&k).await.unwrap());
    assert_eq!(
        h.index_entries("churn").await,
        0,
        "destroy removes the index entry"
    );
}

/// A rotation moves the session's index entry: however often a session is rotated (within its
/// user, or to another user), each user's index holds one entry per live session, without a
/// listing to prune it.
pub async fn rotations_leave_no_index_entry_behind(h: &impl Harness) {
    let s = h.store();
    let (mut k, r) = create(&*s, Some("mover"), MINUTE, 10 * MINUTE).await;
    let mut meta = r.meta.clone();
    for _ in 0..6 {
        let new = key();
        meta.version += 1;
        s.rotate(&k, &new, &meta, now_ms()).await.unwrap();
        k = new;
    }
    tokio::time::sleep(h.index_lag()).await;
    assert_eq!(
        h.index_entries("mover").await,
        1,
        "one live session, one entry"
    );
    meta.user_id = Some("other".into());
    meta.version += 1;
    let new = key();
    s.rotate(&k, &new, &meta, now_ms()).await.unwrap();
    tokio::time::sleep(h.index_lag()).await;
    assert_eq!(
        h.index_entries("mover").await,
        0,
        "the old user's entry went"
    );
    assert_eq!(h.index_entries("other").await, 1);
    let listed = s.list_user("other").await.unwrap();
    assert_eq!(listed.iter().map(|l| l.key).collect::<Vec<_>>(), [new]);
}

/// Records over the size limit are refused with `TooLarge`, on create and on delta, and the
/// stored session is unchanged.
pub async fn oversized_records_are_a_typed_error_and_change_nothing(h: &impl Harness) {
    let s = h.store();
    let k = key();
    let mut r = record(Some("u"), MINUTE, MINUTE);
    r.attrs.insert("huge".into(), vec![b'x'; 100 * 1024]);
    assert!(matches!(
        s.create(&k, &r).await,
        Err(StoreError::Codec(CodecError::TooLarge { .. }))
    ));
    assert!(s.load(&k).await.unwrap().is_none());

    let (k, r) = create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    let big = Delta::default().set("huge", vec![b'x'; 100 * 1024]);
    assert!(matches!(
        s.apply(&k, &big).await,
        Err(StoreError::Codec(CodecError::TooLarge { .. }))
    ));
    // Many attributes that are each small but together too big.
    let mut many = Delta::default();
    for i in 0..20 {
        many = many.set(format!("part-{i}"), vec![b'y'; 4 * 1024]);
    }
    assert!(matches!(
        s.apply(&k, &many).await,
        Err(StoreError::Codec(CodecError::TooLarge { .. }))
    ));
    let long_name = Delta::default().set("n".repeat(1000), b"v".to_vec());
    assert!(matches!(
        s.apply(&k, &long_name).await,
        Err(StoreError::Codec(CodecError::NameTooLong { .. }))
    ));
    assert_eq!(
        s.load(&k).await.unwrap(),
        Some(r),
        "nothing partial was written"
    );
}

/// A rotation whose new fixed part would take the record over the size limit (a login that
/// adds a long user id to a nearly full session) is refused with a typed error, writes nothing
/// under the new key and leaves the old session as it was.
pub async fn a_rotation_over_the_size_limit_is_refused_and_changes_nothing(h: &impl Harness) {
    let s = h.store();
    let k = key();
    let mut r = record(None, MINUTE, 10 * MINUTE);
    r.attrs.insert("fill".into(), vec![b'f'; 65_400]);
    s.create(&k, &r).await.unwrap();
    let mut meta = r.meta.clone();
    meta.user_id = Some("u".repeat(250));
    meta.version += 1;
    let new = key();
    match s.rotate(&k, &new, &meta, now_ms()).await {
        Err(StoreError::Codec(CodecError::TooLarge { .. })) => {}
        other => panic!("a rotation over the size limit: {other:?}"),
    }
    assert!(
        s.load(&new).await.unwrap().is_none(),
        "nothing under the new key"
    );
    let kept = s.load(&k).await.unwrap().expect("the old session lives on");
    assert_eq!((kept.meta, kept.attrs), (r.meta, r.attrs));
}

/// A stored record that does not decode is treated as absent (not an error for the client) and
/// logged with the session's handle.
pub async fn undecodable_records_are_absent_and_logged_by_handle(h: &impl Harness) {
    let s = h.store();
    let (k, _) = create(&*s, Some("u"), MINUTE, 10 * MINUTE).await;
    h.corrupt(&k).await;
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = Arc::clone(&logs);
            move || LogWriter(Arc::clone(&logs))
        })
        .with_ansi(false)
        .finish();
    let loaded = s.load(&k).with_subscriber(subscriber).await;
    assert!(
        matches!(loaded, Ok(None)),
        "undecodable record loads as absent: {loaded:?}"
    );
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains(&k.handle().to_string()),
        "log names the handle: {text:?}"
    );
    assert!(
        !text.contains(&k.to_hex()),
        "log does not show the storage key"
    );
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Another instance over the same backend sees sessions, deltas and destroys.
///
/// Stores with a per-process near cache (the tiered store) learn of another instance's change by
/// a notice from Redis, so visibility may take a moment: the case allows one second, and the
/// tiered store's fault tests measure the actual propagation time (sub-millisecond typically).
pub async fn a_second_instance_sees_the_same_sessions(h: &impl Harness) {
    let a = h.store();
    let b = h.other_instance().await;
    let (k, r) = create(&*a, Some("u"), MINUTE, 10 * MINUTE).await;
    assert_eq!(b.load(&k).await.unwrap(), Some(r));
    // `a` reads it too, so a near cache (if any) holds it when `b` changes it.
    assert!(a.load(&k).await.unwrap().is_some());
    b.apply(&k, &Delta::default().set("from-b", b"1".to_vec()))
        .await
        .unwrap();
    eventually("b's delta to reach a", async || {
        a.load(&k).await.unwrap().unwrap().attrs.get("from-b") == Some(&b"1".to_vec())
    })
    .await;
    assert!(b.destroy(&k).await.unwrap());
    eventually("b's destroy to reach a", async || {
        a.load(&k).await.unwrap().is_none()
    })
    .await;
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "{what} took over 1 s");
        sleep(1).await;
    }
}

/// A small seeded generator (xorshift64*) for the generated cases: no dependency, and the seed a
/// failing run prints replays the same plan (the interleaving is the machine's).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that every seed (0 too) gives a well-mixed, non-zero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `lo..=hi` (a modulo's bias does not matter here).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// A whole number from the environment (`CONFORMANCE_SEED`, `CONFORMANCE_ROUNDS`), if set.
fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
    )
}

/// How one generated login reaches its session.
#[derive(Clone, Copy, Debug)]
enum LoginKind {
    /// `login` of an anonymous session carrying an attribute: created up front (before the
    /// user's earlier sessions, so that the rotated session, which keeps its creation time, is
    /// the user's oldest) or at the start of the login itself.
    Rotate { early: bool },
    /// `login_fresh`.
    Fresh,
    /// `login_fresh_with` an attribute.
    FreshWith,
}

impl LoginKind {
    fn generate(rng: &mut Rng) -> Self {
        match rng.range(0, 2) {
            0 => LoginKind::Rotate { early: rng.coin() },
            1 => LoginKind::Fresh,
            _ => LoginKind::FreshWith,
        }
    }
}

/// One planned login: how, through which of the two managers, after how many yields.
#[derive(Clone, Copy, Debug)]
struct PlannedLogin {
    kind: LoginKind,
    on_b: bool,
    yields: usize,
}

impl std::fmt::Display for PlannedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            LoginKind::Rotate { early: true } => "login(early anonymous)",
            LoginKind::Rotate { early: false } => "login",
            LoginKind::Fresh => "login_fresh",
            LoginKind::FreshWith => "login_fresh_with",
        };
        let on = if self.on_b { 'b' } else { 'a' };
        write!(f, "{kind}@{on}+{}", self.yields)
    }
}

/// A store that yields to the scheduler a random 0..=3 times before each call it passes on, so
/// that the logins' store calls interleave even over a store that answers without waiting (the
/// in-memory one). Every call goes to the inner store's own method, overrides included.
struct Jittered(Arc<dyn SessionStore>);

impl Jittered {
    async fn jitter(&self) {
        for _ in 0..random_bytes::<1>()[0] % 4 {
            tokio::task::yield_now().await;
        }
    }
}

#[async_trait]
impl SessionStore for Jittered {
    fn backend_name(&self) -> &'static str {
        self.0.backend_name()
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> StoreResult<()> {
        self.jitter().await;
        self.0.create(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> StoreResult<Option<Record>> {
        self.jitter().await;
        self.0.load(key).await
    }
    async fn apply(&self, key: &SessionKey, delta: &Delta) -> StoreResult<()> {
        self.jitter().await;
        self.0.apply(key, delta).await
    }
    async fn touch(&self, key: &SessionKey, meta: &Meta, last_seen: Millis) -> StoreResult<bool> {
        self.jitter().await;
        self.0.touch(key, meta, last_seen).await
    }
    async fn touch_with_deadline(
        &self,
        key: &SessionKey,
        meta: &Meta,
        last_seen: Millis,
        expires_at: Millis,
    ) -> StoreResult<bool> {
        self.jitter().await;
        self.0
            .touch_with_deadline(key, meta, last_seen, expires_at)
            .await
    }
    async fn touch_many(&self, touches: &[(SessionKey, Meta, Millis)]) -> StoreResult<()> {
        self.jitter().await;
        self.0.touch_many(touches).await
    }
    async fn restore(&self, key: &SessionKey, record: &Record) -> StoreResult<bool> {
        self.jitter().await;
        self.0.restore(key, record).await
    }
    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<()> {
        self.jitter().await;
        self.0.rotate(old, new, meta, now).await
    }
    async fn rotate_and_list_user(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<Vec<SessionSummary>> {
        self.jitter().await;
        self.0.rotate_and_list_user(old, new, meta, now).await
    }
    async fn destroy(&self, key: &SessionKey) -> StoreResult<bool> {
        self.jitter().await;
        self.0.destroy(key).await
    }
    async fn list_user(&self, user_id: &str) -> StoreResult<Vec<SessionSummary>> {
        self.jitter().await;
        self.0.list_user(user_id).await
    }
    async fn destroy_user(&self, user_id: &str, except: Option<&SessionKey>) -> StoreResult<u64> {
        self.jitter().await;
        self.0.destroy_user(user_id, except).await
    }
    async fn count(&self) -> StoreResult<u64> {
        self.0.count().await
    }
    async fn reap(&self) -> StoreResult<u64> {
        self.0.reap().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.0.ping().await
    }
    async fn begin_epoch(&self) -> StoreResult<bool> {
        self.0.begin_epoch().await
    }
}

/// A login as it ran: the pre-login session it rotated (if any), what it answered, and the
/// attributes its session must hold.
struct RanLogin {
    plan: PlannedLogin,
    pre_login: Option<SessionKey>,
    login: Login,
    attrs: BTreeMap<String, Vec<u8>>,
}

/// One of the user's sessions in a round, as the model knows it.
struct KnownSession {
    key: SessionKey,
    /// The list order: creation time, then handle.
    order: (i64, Handle),
    attrs: BTreeMap<String, Vec<u8>>,
    what: String,
}

/// Run one planned login: the anonymous session of a `login` is `anon` if it was created up
/// front, else created here.
async fn run_login(
    m: SessionManager,
    user: String,
    i: usize,
    plan: PlannedLogin,
    anon: Option<Token>,
    start: Arc<tokio::sync::Barrier>,
) -> RanLogin {
    let attr = |name: &str| -> BTreeMap<String, Vec<u8>> {
        [(name.to_owned(), format!("login-{i}").into_bytes())].into()
    };
    start.wait().await;
    for _ in 0..plan.yields {
        tokio::task::yield_now().await;
    }
    match plan.kind {
        LoginKind::Rotate { .. } => {
            let token = match anon {
                Some(t) => t,
                None => {
                    m.create_with(None, None, attr("cart"))
                        .await
                        .expect("create")
                        .0
                }
            };
            let login = m.login(&token, &user).await.expect("login");
            RanLogin {
                plan,
                pre_login: Some(token.key()),
                login,
                attrs: attr("cart"),
            }
        }
        LoginKind::Fresh => RanLogin {
            plan,
            pre_login: None,
            login: m.login_fresh(&user, None).await.expect("login_fresh"),
            attrs: BTreeMap::new(),
        },
        LoginKind::FreshWith => RanLogin {
            plan,
            pre_login: None,
            login: m
                .login_fresh_with(&user, Some([7; 8]), attr("from"))
                .await
                .expect("login_fresh_with"),
            attrs: attr("from"),
        },
    }
}

/// Concurrent logins of one user, through two application instances, never leave the user over
/// the session limit, and every session that ends is reported by exactly one login.
///
/// Each generated round (seeded: `CONFORMANCE_SEED` replays a plan, `CONFORMANCE_ROUNDS` sets how
/// many) gives a fresh user 0..=limit earlier sessions, then starts 2..=6 logins of that user at
/// once, each a `login` (rotation of an anonymous session), `login_fresh` or `login_fresh_with`
/// through either instance's manager, with a limit of 2 or 3. Once all have answered, it checks
/// only what holds for every interleaving, since each login lists the user's sessions after its
/// own write landed and evicts the oldest of the others beyond the limit:
///
/// - the user has at most `limit` sessions (the login that listed last saw every session the
///   round wrote and left at most `limit` of them);
/// - the user's sessions are exactly those of the round that no login reported evicted, no
///   handle is reported twice, each login reports oldest first, and every reported session is
///   gone on both instances (nothing ends unreported);
/// - the `limit - 1` newest sessions of the round survive (each is among the newest
///   `limit - 1` of whatever list it appears in, which no login evicts), so at least one does;
/// - each surviving session is the user's and holds its login's attributes; each rotated
///   pre-login session is gone;
/// - a login started after all of them had answered leaves exactly `min(limit, n + 1)` sessions,
///   its own among them, evicting exactly the oldest of the `n` there were.
pub async fn concurrent_logins_of_one_user_never_exceed_the_limit(h: &impl Harness) {
    let (store_a, store_b) = (h.store(), h.other_instance().await);
    let seed = env_number("CONFORMANCE_SEED").unwrap_or_else(|| u64::from_le_bytes(random_bytes()));
    let rounds = env_number("CONFORMANCE_ROUNDS").unwrap_or(24) as usize;
    // Shown by the test runner if the case fails; the interleaving itself is not replayable.
    eprintln!("concurrent logins: CONFORMANCE_SEED={seed} CONFORMANCE_ROUNDS={rounds}");
    let mut rng = Rng::new(seed);

    // Bystanders: another user's session and an anonymous one, never to be touched.
    let (other_user, _) = create(&*store_a, Some("bystander"), MINUTE, 10 * MINUTE).await;
    let (anonymous, _) = create(&*store_a, None, MINUTE, 10 * MINUTE).await;

    for round in 0..rounds {
        let limit = rng.range(2, 3);
        let config = ManagerConfig {
            max_sessions_per_user: Some(limit),
            ..ManagerConfig::default()
        };
        let managers = [
            SessionManager::new(Arc::new(Jittered(Arc::clone(&store_a))), config.clone()),
            SessionManager::new(Arc::new(Jittered(Arc::clone(&store_b))), config),
        ];
        let user = format!("crowd-{round}");
        let earlier = rng.range(0, limit);
        let plans: Vec<PlannedLogin> = (0..rng.range(2, 6))
            .map(|_| PlannedLogin {
                kind: LoginKind::generate(&mut rng),
                on_b: rng.coin(),
                yields: rng.range(0, 3),
            })
            .collect();
        let final_kind = LoginKind::generate(&mut rng);
        let shown: Vec<String> = plans.iter().map(ToString::to_string).collect();
        let ctx = format!(
            "seed {seed}, round {round}: limit {limit}, {earlier} earlier session(s), \
             logins [{}]",
            shown.join(", ")
        );
        let m = |on_b: bool| &managers[usize::from(on_b)];

        // Anonymous sessions created up front are no newer than the user's earlier sessions.
        let mut anons: Vec<Option<Token>> = Vec::new();
        for (i, p) in plans.iter().enumerate() {
            anons.push(match p.kind {
                LoginKind::Rotate { early: true } => {
                    let attrs = [("cart".to_owned(), format!("login-{i}").into_bytes())].into();
                    Some(m(p.on_b).create_with(None, None, attrs).await.unwrap().0)
                }
                _ => None,
            });
        }
        let mut known: Vec<KnownSession> = Vec::new();
        for e in 0..earlier {
            let (t, r) = m(rng.coin())
                .create(Some(user.clone()), None)
                .await
                .unwrap();
            known.push(KnownSession {
                key: t.key(),
                order: (r.meta.created_at, t.key().handle()),
                attrs: BTreeMap::new(),
                what: format!("earlier session {e}"),
            });
        }

        let start = Arc::new(tokio::sync::Barrier::new(plans.len()));
        let tasks = plans.iter().zip(anons).enumerate().map(|(i, (p, anon))| {
            tokio::spawn(run_login(
                m(p.on_b).clone(),
                user.clone(),
                i,
                *p,
                anon,
                Arc::clone(&start),
            ))
        });
        let ran: Vec<RanLogin> = join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.expect("login task"))
            .collect();

        for (i, r) in ran.iter().enumerate() {
            let key = r.login.token.key();
            known.push(KnownSession {
                key,
                order: (r.login.record.meta.created_at, key.handle()),
                attrs: r.attrs.clone(),
                what: format!("login {i} ({})", r.plan),
            });
        }
        let order_of = |h: &Handle| known.iter().find(|k| &k.key.handle() == h).map(|k| k.order);

        // What the logins reported: each handle once, a session of this round's user, oldest
        // first within a login, never the login's own.
        let mut evicted: HashSet<Handle> = HashSet::new();
        for (i, r) in ran.iter().enumerate() {
            let mut previous = None;
            for h in &r.login.evicted {
                assert!(evicted.insert(*h), "{ctx}: {h} reported evicted twice");
                let order = order_of(h)
                    .unwrap_or_else(|| panic!("{ctx}: login {i} evicted {h}, not the user's"));
                assert_ne!(
                    *h,
                    r.login.token.key().handle(),
                    "{ctx}: login {i} evicted itself"
                );
                assert!(
                    previous < Some(order),
                    "{ctx}: login {i} reported its evictions out of order: {:?}",
                    r.login.evicted
                );
                previous = Some(order);
            }
        }

        // The user's sessions are exactly the round's sessions no login reported evicted.
        let listed = store_a.list_user(&user).await.unwrap();
        let live: HashSet<Handle> = listed.iter().map(|s| s.handle).collect();
        assert!(
            listed.len() <= limit,
            "{ctx}: the user has {} sessions, over the limit",
            listed.len()
        );
        for k in &known {
            let h = k.key.handle();
            assert!(
                live.contains(&h) || evicted.contains(&h),
                "{ctx}: {} ({h}) ended without any login reporting it",
                k.what
            );
            assert!(
                !(live.contains(&h) && evicted.contains(&h)),
                "{ctx}: {} ({h}) was reported evicted but is still listed",
                k.what
            );
        }
        for h in &live {
            assert!(
                order_of(h).is_some(),
                "{ctx}: listed {h} is no session of the round"
            );
        }
        let listed_b: HashSet<Handle> = store_b
            .list_user(&user)
            .await
            .unwrap()
            .iter()
            .map(|s| s.handle)
            .collect();
        assert_eq!(
            listed_b, live,
            "{ctx}: the two instances list different sessions"
        );

        // The newest `limit - 1` of the round are among the newest of any list they are in.
        let mut newest: Vec<&KnownSession> = known.iter().collect();
        newest.sort_by_key(|k| std::cmp::Reverse(k.order));
        for k in newest.iter().take(limit - 1) {
            assert!(
                live.contains(&k.key.handle()),
                "{ctx}: {} is among the {} newest sessions but did not survive",
                k.what,
                limit - 1
            );
        }

        // Survivors load as the user's, with their attributes; the ended are gone everywhere.
        for k in &known {
            if live.contains(&k.key.handle()) {
                let r = store_a.load(&k.key).await.unwrap();
                let r =
                    r.unwrap_or_else(|| panic!("{ctx}: {} is listed but does not load", k.what));
                assert_eq!(
                    r.meta.user_id.as_deref(),
                    Some(user.as_str()),
                    "{ctx}: {}",
                    k.what
                );
                assert_eq!(r.attrs, k.attrs, "{ctx}: {} lost its attributes", k.what);
            } else {
                gone_on_both(
                    &*store_a,
                    &*store_b,
                    &k.key,
                    &format!("{ctx}: {}, reported evicted and no longer listed,", k.what),
                )
                .await;
            }
        }
        for (i, r) in ran.iter().enumerate() {
            if let Some(pre) = &r.pre_login {
                let what = format!("{ctx}: login {i}'s pre-login session, rotated,");
                gone_on_both(&*store_a, &*store_b, pre, &what).await;
            }
        }

        // A login after all of them: exactly the oldest beyond the limit go, its own stays.
        listed_in_order_check(&listed, &ctx);
        let before: Vec<Handle> = listed.iter().map(|s| s.handle).collect();
        let last = run_login(
            m(false).clone(),
            user.clone(),
            plans.len(),
            PlannedLogin {
                kind: final_kind,
                on_b: false,
                yields: 0,
            },
            None,
            Arc::new(tokio::sync::Barrier::new(1)),
        )
        .await;
        let excess = (before.len() + 1).saturating_sub(limit);
        assert_eq!(
            last.login.evicted,
            before[..excess],
            "{ctx}: a later {final_kind:?} login over {} sessions",
            before.len()
        );
        let mut want: HashSet<Handle> = before[excess..].iter().copied().collect();
        want.insert(last.login.token.key().handle());
        let after: HashSet<Handle> = store_a
            .list_user(&user)
            .await
            .unwrap()
            .iter()
            .map(|s| s.handle)
            .collect();
        assert_eq!(after, want, "{ctx}: after a later {final_kind:?} login");
        assert_eq!(after.len(), limit.min(before.len() + 1), "{ctx}");
    }

    assert!(
        store_a.load(&other_user).await.unwrap().is_some(),
        "another user's session"
    );
    assert!(
        store_a.load(&anonymous).await.unwrap().is_some(),
        "an anonymous session"
    );
    assert_eq!(store_a.list_user("bystander").await.unwrap().len(), 1);
}

/// The list is oldest first (creation time, then handle): the evictions rely on it.
fn listed_in_order_check(listed: &[SessionSummary], ctx: &str) {
    let order: Vec<(i64, Handle)> = listed
        .iter()
        .map(|s| (s.meta.created_at, s.handle))
        .collect();
    assert!(
        order.is_sorted(),
        "{ctx}: list_user is not oldest first: {order:?}"
    );
}

/// `key` does not load on either instance (within a second: a near cache hears of another
/// instance's destroy by a notice).
async fn gone_on_both(a: &dyn SessionStore, b: &dyn SessionStore, key: &SessionKey, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let on_a = a.load(key).await.unwrap().is_some();
        let on_b = b.load(key).await.unwrap().is_some();
        if !on_a && !on_b {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} ({}) still loads 1 s later (on instance a: {on_a}, on instance b: {on_b})",
            key.handle()
        );
        sleep(1).await;
    }
}
