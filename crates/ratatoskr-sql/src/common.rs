//! What the two backends share: size accounting, delta normalisation, row assembly.

use std::collections::BTreeMap;

use ratatoskr_core::codec::{self, CodecError, Limits};
use ratatoskr_core::store::log_undecodable;
use ratatoskr_core::{Delta, Meta, Millis, SessionKey, SessionSummary, StoreError};

/// A delta reduced to what it does: the names it removes (and does not set again) and the last
/// value it sets for each name. `Record::apply` removes first and then sets, so a name in both
/// lists ends up set; a name set twice ends up with the later value. Owned, so a write can be
/// handed to the store's writer task.
pub struct Normalized {
    pub remove: Vec<String>,
    pub set: BTreeMap<String, Vec<u8>>,
}

pub(crate) fn normalize(delta: &Delta) -> Normalized {
    let mut set = BTreeMap::new();
    for (name, value) in &delta.set {
        set.insert(name.clone(), value.clone());
    }
    let mut remove: Vec<String> = delta
        .remove
        .iter()
        .filter(|n| !set.contains_key(n.as_str()))
        .cloned()
        .collect();
    remove.sort_unstable();
    remove.dedup();
    Normalized { remove, set }
}

/// Check a delta's attribute names before touching the database.
pub(crate) fn check_names(delta: &Delta, limits: &Limits) -> Result<(), CodecError> {
    for (name, _) in &delta.set {
        codec::check_attr_name(name, limits)?;
    }
    Ok(())
}

/// [`codec::record_size`] computed from attribute name and value *lengths*, so a store can
/// check a delta against the limit without fetching the stored values. The codec's size is
/// linear in those lengths; the constants are taken from the codec itself, and a unit test
/// checks that both agree.
pub(crate) fn record_size_from_lengths(
    meta_len: usize,
    attrs: impl IntoIterator<Item = (usize, usize)>,
) -> usize {
    let empty: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let base = codec::record_size(meta_len, &empty);
    let one: BTreeMap<String, Vec<u8>> = [(String::new(), Vec::new())].into_iter().collect();
    let per_attr = codec::record_size(meta_len, &one) - base;
    attrs.into_iter().fold(base, |acc, (name_len, value_len)| {
        acc + name_len + value_len + per_attr
    })
}

/// Check a record that would result from `current` attributes (name, value length) after
/// `delta`, with a stored meta of `meta_len` bytes.
pub(crate) fn check_size_after(
    meta_len: usize,
    current: impl IntoIterator<Item = (String, usize)>,
    delta: &Normalized,
    limits: &Limits,
) -> Result<(), CodecError> {
    let mut sizes: BTreeMap<String, usize> = current.into_iter().collect();
    for name in &delta.remove {
        sizes.remove(name);
    }
    for (name, value) in &delta.set {
        sizes.insert(name.clone(), value.len());
    }
    check_size(meta_len, sizes.iter().map(|(n, l)| (n.len(), *l)), limits)
}

/// Check a record of `meta_len` bytes of meta and the given (name length, value length)
/// attributes against the limit.
pub(crate) fn check_size(
    meta_len: usize,
    attrs: impl IntoIterator<Item = (usize, usize)>,
    limits: &Limits,
) -> Result<(), CodecError> {
    let size = record_size_from_lengths(meta_len, attrs);
    if size > limits.max_record_bytes {
        return Err(CodecError::TooLarge {
            size,
            limit: limits.max_record_bytes,
        });
    }
    Ok(())
}

/// A key as the database returned it; `None` (and a warning) if it is not 32 bytes.
pub(crate) fn key_from_db(backend: &'static str, bytes: &[u8]) -> Option<SessionKey> {
    let key = SessionKey::from_slice(bytes);
    if key.is_none() {
        tracing::warn!(
            backend,
            len = bytes.len(),
            "a stored session key is not 32 bytes; skipping it"
        );
    }
    key
}

/// Decode a stored meta blob; an undecodable one is logged by handle and treated as absent.
pub(crate) fn decode_meta(backend: &'static str, key: &SessionKey, blob: &[u8]) -> Option<Meta> {
    match codec::decode_meta(blob) {
        Ok(meta) => Some(meta),
        Err(e) => {
            log_undecodable(backend, key, &e);
            None
        }
    }
}

/// One line of a list, if the row decodes.
pub(crate) fn summary(
    backend: &'static str,
    key_bytes: &[u8],
    meta: &[u8],
    last_seen: Millis,
) -> Option<SessionSummary> {
    let key = key_from_db(backend, key_bytes)?;
    let meta = decode_meta(backend, &key, meta)?;
    Some(SessionSummary {
        key,
        handle: key.handle(),
        meta,
        last_seen,
    })
}

/// Sort a user's sessions the way the contract lists them: oldest first, then by handle.
pub(crate) fn sort_summaries(list: &mut [SessionSummary]) {
    list.sort_by_key(|s| (s.meta.created_at, s.handle));
}

/// A length the database reported, as `usize`; a negative one is a backend fault.
pub(crate) fn len_from_db(backend: &'static str, n: i64) -> Result<usize, StoreError> {
    usize::try_from(n).map_err(|_| StoreError::backend(backend, "negative length from database"))
}

/// Whether a sqlx error is a unique-constraint violation (a key collision).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// Map a sqlx error to a store error: a unique violation is a collision, anything else is the
/// backend's fault.
pub(crate) fn map_err(backend: &'static str, err: sqlx::Error) -> StoreError {
    if is_unique_violation(&err) {
        StoreError::Collision
    } else {
        StoreError::backend(backend, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unique-constraint violation (two writers racing to one new key) is a collision, which
    /// the manager answers with a new key; any other database error is the backend's fault.
    #[tokio::test]
    async fn a_unique_violation_is_a_collision_and_other_errors_are_the_backends() {
        use sqlx::Connection;
        let mut con = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .execute(&mut con)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut con)
            .await
            .unwrap();
        let dup = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut con)
            .await
            .unwrap_err();
        assert!(is_unique_violation(&dup));
        assert!(matches!(map_err("sqlite", dup), StoreError::Collision));
        let other = sqlx::query("INSERT INTO missing VALUES (1)")
            .execute(&mut con)
            .await
            .unwrap_err();
        assert!(!is_unique_violation(&other));
        assert!(map_err("sqlite", other).is_backend());
    }

    #[test]
    fn size_from_lengths_matches_the_codec() {
        let mut attrs = BTreeMap::new();
        for (i, n) in [0usize, 1, 17, 300, 5000].into_iter().enumerate() {
            attrs.insert(format!("attr-{i}-{}", "x".repeat(i)), vec![7u8; n]);
        }
        for meta_len in [0, 40, 49] {
            assert_eq!(
                record_size_from_lengths(meta_len, attrs.iter().map(|(k, v)| (k.len(), v.len()))),
                codec::record_size(meta_len, &attrs)
            );
        }
        assert_eq!(
            record_size_from_lengths(10, []),
            codec::record_size(10, &BTreeMap::new())
        );
    }

    #[test]
    fn normalize_removes_then_sets_and_last_set_wins() {
        let d = Delta::default()
            .remove("a")
            .set("a", b"1".to_vec())
            .set("b", b"1".to_vec())
            .set("b", b"2".to_vec())
            .remove("c")
            .remove("c");
        let n = normalize(&d);
        assert_eq!(n.remove, ["c"]);
        assert_eq!(n.set.get("a").map(Vec::as_slice), Some(&b"1"[..]));
        assert_eq!(n.set.get("b").map(Vec::as_slice), Some(&b"2"[..]));
    }

    #[test]
    fn size_after_counts_replacements_once() {
        let limits = Limits {
            max_record_bytes: 100,
            ..Limits::default()
        };
        let d = Delta::default().set("a", vec![0; 60]);
        let n = normalize(&d);
        // "a" currently holds 60 bytes; replacing it must not count it twice.
        assert!(check_size_after(10, [("a".to_owned(), 60)], &n, &limits).is_ok());
        let d = Delta::default().set("b", vec![0; 60]);
        let n = normalize(&d);
        assert!(matches!(
            check_size_after(10, [("a".to_owned(), 60)], &n, &limits),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
