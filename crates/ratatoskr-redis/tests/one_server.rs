//! On one server (a single Redis, or a Sentinel group's master) every key is on the same
//! server, so an operation that concerns a session and its user's index is one script instead
//! of the cluster's two steps: one round trip, and no moment at which the two disagree. These
//! tests count the scripts Redis ran (`INFO commandstats` of a private `redis-server`, so the
//! counts are ours alone) and check the fallback for a user with more sessions than one
//! script walks.

mod common;

use std::time::Duration;

use common::{OwnRedis, closed_port};
use ratatoskr_core::{Record, SessionKey, SessionStore, StoreError, Token, now_ms};
use ratatoskr_redis::{RedisConfig, RedisStore};

const MINUTE: Duration = Duration::from_secs(60);

fn key() -> SessionKey {
    Token::generate().key()
}

fn record(user: Option<&str>) -> Record {
    Record::new(user.map(str::to_owned), now_ms(), MINUTE, 10 * MINUTE)
}

/// A store over its own `redis-server`, and a plain connection to it.
async fn private() -> (OwnRedis, RedisStore, redis::aio::MultiplexedConnection) {
    let redis = OwnRedis::start(closed_port());
    redis.wait_ready().await;
    let config = RedisConfig {
        url: redis.url(),
        response_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..RedisConfig::default()
    };
    let store = RedisStore::connect(config).await.unwrap();
    let con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (redis, store, con)
}

/// How many scripts the server has run (`EVALSHA` + `EVAL`). The commands a script runs
/// are counted under their own names, so they are not round trips; the store sends no plain
/// command in the operations counted here (the cluster's rotation across slots does).
async fn scripts_run(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .unwrap();
    let mut scripts = 0;
    for line in info.lines() {
        if let Some(rest) = line
            .strip_prefix("cmdstat_evalsha:calls=")
            .or_else(|| line.strip_prefix("cmdstat_eval:calls="))
        {
            scripts += rest.split(',').next().unwrap().parse::<u64>().unwrap();
        }
    }
    scripts
}

/// Runs `op` and returns how many scripts it ran.
async fn cost<T>(
    con: &mut redis::aio::MultiplexedConnection,
    op: impl std::future::Future<Output = T>,
) -> (T, u64) {
    let before = scripts_run(con).await;
    let out = op.await;
    (out, scripts_run(con).await - before)
}

#[tokio::test]
async fn each_operation_on_a_session_of_a_user_is_one_script() {
    let (_redis, store, mut con) = private().await;
    // Warm up: the scripts are loaded (SCRIPT LOAD / a NOSCRIPT retry) on first use.
    let (warm, user) = (key(), "alice");
    store.create(&warm, &record(Some(user))).await.unwrap();
    let anon = key();
    store.create(&anon, &record(None)).await.unwrap();
    let spare = key();
    store
        .rotate(&anon, &spare, &record(Some(user)).meta, now_ms())
        .await
        .unwrap();
    store.list_user(user).await.unwrap();
    store.destroy(&spare).await.unwrap();
    store.restore(&key(), &record(Some(user))).await.unwrap();

    let k = key();
    let (created, c) = cost(&mut con, store.create(&k, &record(Some(user)))).await;
    created.unwrap();
    assert_eq!(c, 1, "create of a user's session");

    let (listed, c) = cost(&mut con, store.list_user(user)).await;
    assert_eq!(listed.unwrap().len(), 3);
    assert_eq!(c, 1, "list_user");

    // A login: an anonymous session rotated to a user, the user's list read with it.
    let anon = key();
    store.create(&anon, &record(None)).await.unwrap();
    let new = key();
    let meta = record(Some(user)).meta;
    let (listed, c) = cost(
        &mut con,
        store.rotate_and_list_user(&anon, &new, &meta, now_ms()),
    )
    .await;
    let listed = listed.unwrap();
    assert_eq!(c, 1, "rotate_and_list_user");
    assert_eq!(
        listed.len(),
        4,
        "the list is read after the rotation: it holds the new key"
    );
    assert!(listed.iter().any(|s| s.key == new));
    assert!(store.load(&anon).await.unwrap().is_none());

    let (destroyed, c) = cost(&mut con, store.destroy(&new)).await;
    assert!(destroyed.unwrap());
    assert_eq!(c, 1, "destroy");
    let listed = store.list_user(user).await.unwrap();
    assert_eq!(
        listed.len(),
        3,
        "the destroyed session left the index with it"
    );

    let restored = key();
    let (r, c) = cost(&mut con, store.restore(&restored, &record(Some(user)))).await;
    assert!(r.unwrap());
    assert_eq!(c, 1, "restore of a user's session");
    assert_eq!(store.list_user(user).await.unwrap().len(), 4);
}

/// A re-login as another user moves the session between the two users' indexes in the same
/// step.
#[tokio::test]
async fn a_rotation_to_another_user_moves_the_index_entry_in_one_step() {
    let (_redis, store, mut con) = private().await;
    let k = key();
    store.create(&k, &record(Some("alice"))).await.unwrap();
    // Warm up: the script is loaded on first use.
    let warm = key();
    store.create(&warm, &record(None)).await.unwrap();
    store
        .rotate_and_list_user(&warm, &key(), &record(None).meta, now_ms())
        .await
        .unwrap();
    let new = key();
    let meta = record(Some("bob")).meta;
    let (listed, c) = cost(
        &mut con,
        store.rotate_and_list_user(&k, &new, &meta, now_ms()),
    )
    .await;
    assert_eq!(c, 1);
    let listed = listed.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, new);
    assert!(store.list_user("alice").await.unwrap().is_empty());
    let alice_index = store.user_index_key_name("alice");
    let left: u64 = redis::cmd("EXISTS")
        .arg(alice_index)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(left, 0, "alice's emptied index is deleted, not left behind");
}

/// The refusals of the one-step rotation change nothing: a revoked user, a missing session, a
/// taken key.
#[tokio::test]
async fn a_refused_one_step_rotation_changes_nothing() {
    let (_redis, store, _con) = private().await;
    let k = key();
    store.create(&k, &record(Some("carol"))).await.unwrap();
    let other = key();
    store.create(&other, &record(Some("carol"))).await.unwrap();
    let meta = record(Some("carol")).meta;
    let now = now_ms();
    assert!(matches!(
        store.rotate_and_list_user(&k, &other, &meta, now).await,
        Err(StoreError::Collision)
    ));
    assert!(matches!(
        store.rotate_and_list_user(&key(), &key(), &meta, now).await,
        Err(StoreError::NotFound)
    ));
    let keep = key();
    store.create(&keep, &record(Some("dave"))).await.unwrap();
    store.destroy_user("dave", None).await.unwrap();
    let dave = key();
    store.create(&dave, &record(None)).await.unwrap();
    let revoked = record(Some("dave")).meta;
    // A revocation at or after `now` refuses the rotation to that user.
    assert!(matches!(
        store
            .rotate_and_list_user(&dave, &key(), &revoked, now - 1)
            .await,
        Err(StoreError::Revoked)
    ));
    assert!(
        store.load(&dave).await.unwrap().is_some(),
        "the refused rotation kept the old key"
    );
    assert!(store.list_user("dave").await.unwrap().is_empty());
    let listed = store.list_user("carol").await.unwrap();
    assert_eq!(listed.len(), 2, "carol's sessions are as they were");
}

/// More entries than one script walks while Redis waits (256): the list is read in steps, and
/// is still complete.
#[tokio::test]
async fn a_user_with_very_many_sessions_is_listed_in_steps_and_completely() {
    let (_redis, store, mut con) = private().await;
    let user = "many";
    for _ in 0..300 {
        store.create(&key(), &record(Some(user))).await.unwrap();
    }
    let (listed, scripts) = cost(&mut con, store.list_user(user)).await;
    assert_eq!(listed.unwrap().len(), 300);
    assert!(scripts > 1, "listed in steps: {scripts} scripts");
    let anon = key();
    store.create(&anon, &record(None)).await.unwrap();
    let new = key();
    let listed = store
        .rotate_and_list_user(&anon, &new, &record(Some(user)).meta, now_ms())
        .await
        .unwrap();
    assert_eq!(listed.len(), 301);
    assert!(listed.iter().any(|s| s.key == new));
}

/// The tombstone a tier's `discard_copy` leaves where no live copy was found lasts ten response
/// timeouts, at least a minute, and refuses a late `create` and `restore` of the key; a plain
/// `destroy` (Redis alone) leaves none.
#[tokio::test]
async fn a_discarded_absent_copy_leaves_a_tombstone_for_ten_response_timeouts_at_least_a_minute() {
    for (timeout, want_s) in [(Duration::from_secs(2), 60), (Duration::from_secs(10), 100)] {
        let redis = OwnRedis::start(closed_port());
        redis.wait_ready().await;
        let config = RedisConfig {
            url: redis.url(),
            response_timeout: timeout,
            connect_timeout: Duration::from_secs(5),
            ..RedisConfig::default()
        };
        let store = RedisStore::connect(config).await.unwrap();
        let mut con = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let pttl = async |con: &mut redis::aio::MultiplexedConnection, k: &SessionKey| -> i64 {
            redis::cmd("PTTL")
                .arg(store.session_key_name(k))
                .query_async(con)
                .await
                .unwrap()
        };

        let k = key();
        assert!(
            !store.discard_copy(&k).await.unwrap(),
            "nothing live was there"
        );
        let left = pttl(&mut con, &k).await;
        assert!(
            left > (want_s - 5) * 1000 && left <= want_s * 1000,
            "{timeout:?}: the tombstone lasts {left} ms, want about {want_s} s"
        );
        assert!(matches!(
            store.create(&k, &record(Some("u"))).await,
            Err(StoreError::Revoked)
        ));
        assert!(!store.restore(&k, &record(None)).await.unwrap());
        assert!(store.load(&k).await.unwrap().is_none());

        // A live copy is simply removed; a plain destroy of an absent key leaves nothing.
        let live = key();
        store.create(&live, &record(None)).await.unwrap();
        assert!(store.discard_copy(&live).await.unwrap());
        assert_eq!(pttl(&mut con, &live).await, -2, "no key left");
        let absent = key();
        assert!(!store.destroy(&absent).await.unwrap());
        assert_eq!(
            pttl(&mut con, &absent).await,
            -2,
            "destroy leaves no tombstone"
        );
        store.create(&absent, &record(None)).await.unwrap();
    }
}
