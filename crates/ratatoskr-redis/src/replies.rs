//! Reading the scripts' replies: status codes, integers, byte strings, and the session hash
//! decoded back into a [`Record`].

use std::collections::BTreeMap;
use std::time::Duration;

use ratatoskr_core::codec::{self, CodecError};
use ratatoskr_core::{Meta, Millis, Record, StoreError, StoreResult};
use redis::Value;

use crate::{LAST_SEEN_FIELD, META_FIELD, backend};

/// Script status codes (see `scripts.rs`).
pub(crate) const OK: i64 = 1;
pub(crate) const NOT_FOUND: i64 = -1;
pub(crate) const COLLISION: i64 = -2;
pub(crate) const REVOKED: i64 = -3;
pub(crate) const TOO_LARGE: i64 = -4;
/// A write sent in an older write epoch (see `stale_epoch` in the scripts).
pub(crate) const STALE_EPOCH: i64 = -5;

pub(crate) fn unexpected(what: &str, v: &Value) -> StoreError {
    backend(format_args!("unexpected reply to {what}: {v:?}"))
}

pub(crate) fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A status array `{code, detail?}` from a script.
pub(crate) fn status(what: &str, v: &Value) -> StoreResult<(i64, Option<i64>)> {
    match v {
        Value::Array(items) if !items.is_empty() => {
            let code = as_int(&items[0]).ok_or_else(|| unexpected(what, v))?;
            Ok((code, items.get(1).and_then(as_int)))
        }
        other => as_int(other)
            .map(|c| (c, None))
            .ok_or_else(|| unexpected(what, v)),
    }
}

/// The field/value pairs of an `HGETALL` reply (RESP2 flat array or RESP3 map).
pub(crate) fn hash_pairs(v: &Value) -> Option<Vec<(&[u8], &[u8])>> {
    match v {
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks_exact(2)
            .map(|p| Some((as_bytes(&p[0])?, as_bytes(&p[1])?)))
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| Some((as_bytes(k)?, as_bytes(v)?)))
            .collect(),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// `last_seen`: the stored field if present, else the expiry minus the idle timeout.
pub(crate) fn last_seen(
    meta: &Meta,
    seen: Option<&[u8]>,
    expire_at: i64,
) -> Result<Millis, CodecError> {
    match seen {
        Some(s) if !s.is_empty() => std::str::from_utf8(s)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(CodecError::Malformed("last seen is not an integer")),
        _ if expire_at >= 0 => Ok(expire_at.saturating_sub(meta.idle_timeout)),
        _ => Err(CodecError::Malformed("the session key has no expiry")),
    }
}

/// Rebuild a record from its hash fields and the key's expiry.
pub(crate) fn decode_hash(pairs: &[(&[u8], &[u8])], expire_at: i64) -> Result<Record, CodecError> {
    let mut meta = None;
    let mut seen = None;
    let mut attrs = BTreeMap::new();
    for &(name, value) in pairs {
        match name {
            META_FIELD => meta = Some(value),
            LAST_SEEN_FIELD => seen = Some(value),
            // Other single non-UTF-8 bytes are reserved for the store's future use.
            [b] if *b >= 0x80 => {}
            _ => {
                let name = std::str::from_utf8(name)
                    .map_err(|_| CodecError::Malformed("attribute name is not UTF-8"))?;
                attrs.insert(name.to_owned(), value.to_vec());
            }
        }
    }
    let meta = codec::decode_meta(meta.ok_or(CodecError::Malformed("no fixed part"))?)?;
    let last_seen = last_seen(&meta, seen, expire_at)?;
    Ok(Record {
        meta,
        last_seen,
        attrs,
    })
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
