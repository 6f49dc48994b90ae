//! [`SessionStore`] for [`RedisStore`]: each operation as the scripts of `scripts.rs` — on a
//! cluster in the order the two-slot layout needs (the user's index first when a session is
//! added, last when one goes; see `docs/redis.md`, "Two slots, two steps"), on one server as
//! one script ("On one server, one step").

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::future::try_join_all;
use ratatoskr_core::codec::{self, CodecError};
use ratatoskr_core::store::log_undecodable;
use ratatoskr_core::{
    Delta, Meta, Millis, Record, SessionKey, SessionStore, SessionSummary, StoreError, StoreResult,
    now_ms,
};
use redis::Value;

use crate::scripts::SCRIPTS;
use crate::{
    BACKEND, COLLISION, NOT_FOUND, OK, REVOKED, RedisStore, TOO_LARGE, as_bytes, as_int, backend,
    decode_hash, duration_ms, hash_pairs, key_slot, last_seen, status, unexpected,
};

/// Index scores count seconds from here (2025-01-01), see `scripts.rs`.
const SCORE_EPOCH_S: i64 = 1_735_689_600;

/// An index score: the expiry in whole seconds since [`SCORE_EPOCH_S`], rounded up (never
/// before the session's expiry).
fn score(expiry_ms: Millis) -> i64 {
    expiry_ms.div_euclid(1000) + i64::from(expiry_ms.rem_euclid(1000) != 0) - SCORE_EPOCH_S
}

/// The user a `{code, user or false}` reply names.
fn reply_user(v: &Value) -> Option<String> {
    match v {
        Value::Array(items) => items
            .get(1)
            .and_then(as_bytes)
            .map(|u| String::from_utf8_lossy(u).into_owned()),
        _ => None,
    }
}

impl RedisStore {
    /// File `raw` in `user`'s index (user slot), after checking the revocation marker against
    /// `cutoff` (refused: [`StoreError::Revoked`]); with `only_raise`, just move an existing
    /// entry's expiry later (a touch).
    async fn index_add(
        &self,
        user: &str,
        raw: &[u8],
        expiry: Millis,
        cutoff: Option<Millis>,
        only_raise: bool,
    ) -> StoreResult<()> {
        let index = self.user_index_key_name(user);
        let marker = self.revocation_key_name(user);
        let fence = self.fence_key_name(&index);
        let reply = self
            .invoke_fenced("index_add", |arg| {
                let mut inv = SCRIPTS.index_add.prepare_invoke();
                inv.key(index.as_slice())
                    .key(marker.as_slice())
                    .key(fence.as_slice())
                    .arg(arg)
                    .arg(raw)
                    .arg(score(expiry))
                    .arg(cutoff.map(|c| c.to_string()).unwrap_or_default())
                    .arg(if only_raise { "XX" } else { "" });
                inv
            })
            .await?;
        match status("index_add", &reply)?.0 {
            OK => Ok(()),
            REVOKED => Err(StoreError::Revoked),
            _ => Err(unexpected("index_add", &reply)),
        }
    }

    /// Take sessions that are gone out of `user`'s index (user slot).
    async fn index_del(&self, user: &str, raws: &[&[u8]]) -> StoreResult<()> {
        let mut inv = SCRIPTS.index_del.prepare_invoke();
        inv.key(self.user_index_key_name(user))
            .arg(self.script_arg());
        for raw in raws {
            inv.arg(*raw);
        }
        let mut con = self.con.clone();
        let _: Value = self.call(inv.invoke_async(&mut con)).await?;
        Ok(())
    }

    /// Run a one-key script on each of these invocations at once (a cluster spreads them over
    /// its masters), bounded as one call.
    pub(crate) async fn each_key(
        &self,
        raws: impl Iterator<Item = redis::ScriptInvocation<'static>>,
    ) -> StoreResult<Vec<Value>> {
        let calls = raws.map(|inv| {
            let mut con = self.con.clone();
            async move { inv.invoke_async::<Value>(&mut con).await }
        });
        self.call(try_join_all(calls)).await
    }

    /// Rotation when the two keys are in different slots (a cluster): check the new key is
    /// free, take the old session (checked and deleted in one step), write it under the new
    /// key. Returns the old session's user.
    async fn rotate_across_slots(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        encoded: &[u8],
        now: Millis,
    ) -> StoreResult<Option<String>> {
        let mut con = self.con.clone();
        let new_name = self.session_key_name(new);
        let exists: bool = self
            .call(redis::cmd("EXISTS").arg(&new_name).query_async(&mut con))
            .await?;
        if exists {
            return Err(StoreError::Collision);
        }
        let mut inv = SCRIPTS.take.prepare_invoke();
        inv.key(self.session_key_name(old))
            .arg(self.script_arg())
            .arg(encoded.len())
            .arg(self.config.limits.max_record_bytes);
        let taken: Value = self.call(inv.invoke_async(&mut con)).await?;
        let items = match status("rotate", &taken)? {
            (OK, _) => match &taken {
                Value::Array(items) => items,
                _ => return Err(unexpected("rotate", &taken)),
            },
            (NOT_FOUND, _) => return Err(StoreError::NotFound),
            (TOO_LARGE, Some(size)) => return Err(self.too_large(size)),
            _ => return Err(unexpected("rotate", &taken)),
        };
        let old_user = reply_user(&taken);
        let attrs: Vec<(&[u8], &[u8])> = items[2..]
            .chunks_exact(2)
            .filter_map(|p| Some((as_bytes(&p[0])?, as_bytes(&p[1])?)))
            .collect();
        let reply = self
            .invoke_fenced("rotate", |arg| {
                self.create_invocation(&SCRIPTS.create, new, encoded, now, &attrs, arg)
            })
            .await?;
        match status("rotate", &reply)?.0 {
            OK => Ok(old_user),
            COLLISION => Err(StoreError::Collision),
            REVOKED => Err(StoreError::Revoked),
            _ => Err(unexpected("rotate", &reply)),
        }
    }

    /// `create`, on the tracked connection if `tracked`; whether it ran there.
    async fn create_sent(
        &self,
        key: &SessionKey,
        record: &Record,
        tracked: bool,
    ) -> StoreResult<bool> {
        // Boxed: the nested futures of a create (write_new, the one-server script, the fenced
        // send) are otherwise deep enough that a clean build of this crate overflows rustc's
        // query depth computing their layout.
        match Box::pin(self.write_new("create", key, record, true, tracked)).await? {
            (OK, on_tracked) => Ok(on_tracked),
            (COLLISION, _) => Err(StoreError::Collision),
            (REVOKED, _) => Err(StoreError::Revoked),
            (other, _) => Err(backend(format_args!("unexpected reply to create: {other}"))),
        }
    }

    /// `create` and `restore`: the user's index entry first (with the revocation check for a
    /// create), then the session.
    async fn write_new(
        &self,
        op: &'static str,
        key: &SessionKey,
        record: &Record,
        check_revocation: bool,
        tracked: bool,
    ) -> StoreResult<(i64, bool)> {
        codec::check_record(record, &self.config.limits)?;
        let meta = codec::encode_meta(&record.meta, &self.config.limits)?;
        let attrs: Vec<(&[u8], &[u8])> = record
            .attrs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_slice()))
            .collect();
        if let Some(user) = &record.meta.user_id {
            let expiry = record.meta.idle_deadline(record.last_seen);
            let cutoff = check_revocation.then_some(record.meta.created_at);
            if !self.con.is_cluster() {
                return self
                    .write_new_one_server(op, key, record, user, &meta, &attrs, cutoff, tracked)
                    .await;
            }
            self.index_add(user, key.as_bytes(), expiry, cutoff, false)
                .await?;
        }
        let script = if check_revocation {
            &SCRIPTS.create
        } else {
            &SCRIPTS.restore
        };
        let name = self.session_key_name(key);
        let (reply, on_tracked) = self
            .send_fenced(op, tracked.then_some(name.as_slice()), |arg| {
                self.create_invocation(script, key, &meta, record.last_seen, &attrs, arg)
            })
            .await?;
        Ok((status(op, &reply)?.0, on_tracked))
    }

    /// [`invoke_fenced`](RedisStore::invoke_fenced), sent on the tracked connection serving
    /// `tracked` (a full key name) when there is one: a script that ends with a read of that
    /// key then leaves it tracked, its own change not announced back (`NOLOOP`). Returns the
    /// reply and whether the tracked connection ran it; one it certainly did not run (no
    /// connection, `MOVED`…) is sent on the write connection instead.
    async fn send_fenced(
        &self,
        op: &'static str,
        tracked: Option<&[u8]>,
        build: impl Fn(Vec<u8>) -> redis::ScriptInvocation<'static>,
    ) -> StoreResult<(Value, bool)> {
        let (Some(t), Some(name)) = (&self.tracking, tracked) else {
            return Ok((self.invoke_fenced(op, build).await?, false));
        };
        let started = std::time::Instant::now();
        let limit = self.config.response_timeout;
        for _ in 0..3 {
            let inv = build(self.script_arg());
            let left = limit.saturating_sub(started.elapsed());
            let sent = t
                .attempt_for(name, left, move |mut c| async move {
                    inv.invoke_async::<Value>(&mut c).await
                })
                .await;
            let reply = match sent {
                Ok(reply) => reply,
                Err(f) if !f.not_run => return Err(f.into_error()),
                Err(_) => return Ok((self.invoke_fenced(op, build).await?, false)),
            };
            if !self.took_newer_epoch(op, &reply) {
                return Ok((reply, true));
            }
        }
        Err(crate::epoch_kept_changing(op))
    }

    /// `write_new` of a user's session on one server: index entry and session in one script
    /// (`one_create` / `one_restore`). `cutoff` is the revocation check of a create.
    #[allow(clippy::too_many_arguments)]
    async fn write_new_one_server(
        &self,
        op: &'static str,
        key: &SessionKey,
        record: &Record,
        user: &str,
        meta: &[u8],
        attrs: &[(&[u8], &[u8])],
        cutoff: Option<Millis>,
        tracked: bool,
    ) -> StoreResult<(i64, bool)> {
        let script = if cutoff.is_some() {
            &SCRIPTS.one_create
        } else {
            &SCRIPTS.one_restore
        };
        let name = self.session_key_name(key);
        let fence = self.fence_key_name(&name);
        let index = self.user_index_key_name(user);
        let marker = self.revocation_key_name(user);
        let expiry = score(record.meta.idle_deadline(record.last_seen));
        let cutoff = cutoff.map(|c| c.to_string()).unwrap_or_default();
        let (reply, on_tracked) = self
            .send_fenced(op, tracked.then_some(name.as_slice()), |arg| {
                let mut inv = script.prepare_invoke();
                inv.key(name.as_slice())
                    .key(fence.as_slice())
                    .key(index.as_slice())
                    .key(marker.as_slice())
                    .arg(arg)
                    .arg(meta)
                    .arg(record.last_seen)
                    .arg(key.as_bytes().as_slice())
                    .arg(expiry)
                    .arg(cutoff.as_str());
                for &(name, value) in attrs {
                    inv.arg(name).arg(value);
                }
                inv
            })
            .await?;
        Ok((status(op, &reply)?.0, on_tracked))
    }

    /// A rotation on one server, the index entries with it, in one script (`one_rotate`);
    /// with `list`, the new session's user's sessions as they are right after it. `None` when
    /// no list was asked for, the session has no user, or the index is too long to walk in
    /// one script.
    async fn rotate_one_server(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
        list: bool,
    ) -> StoreResult<Option<Vec<SessionSummary>>> {
        let encoded = codec::encode_meta(meta, &self.config.limits)?;
        let (old_name, new_name) = (self.session_key_name(old), self.session_key_name(new));
        let fence = self.fence_key_name(&new_name);
        let user = meta.user_id.as_deref();
        let user_keys = user.map(|u| (self.user_index_key_name(u), self.revocation_key_name(u)));
        let reply = self
            .invoke_fenced("rotate", |arg| {
                let mut inv = SCRIPTS.one_rotate.prepare_invoke();
                inv.key(old_name.as_slice())
                    .key(new_name.as_slice())
                    .key(fence.as_slice());
                if let Some((index, marker)) = &user_keys {
                    inv.key(index.as_slice()).key(marker.as_slice());
                }
                inv.arg(arg)
                    .arg(&encoded)
                    .arg(now)
                    .arg(self.config.limits.max_record_bytes)
                    .arg(self.prefix())
                    .arg(old.as_bytes().as_slice())
                    .arg(new.as_bytes().as_slice())
                    .arg(score(meta.idle_deadline(now)))
                    .arg(if list { "1" } else { "" });
                inv
            })
            .await?;
        match status("rotate", &reply)? {
            (OK, _) => {}
            (NOT_FOUND, _) => return Err(StoreError::NotFound),
            (COLLISION, _) => return Err(StoreError::Collision),
            (REVOKED, _) => return Err(StoreError::Revoked),
            (TOO_LARGE, Some(size)) => return Err(self.too_large(size)),
            _ => return Err(unexpected("rotate", &reply)),
        }
        match (&reply, user) {
            (Value::Array(items), Some(user)) if items.get(2).and_then(as_int) == Some(1) => {
                Ok(Some(self.summaries(user, &items[3..])?))
            }
            _ => Ok(None),
        }
    }

    /// `destroy`; where no live session is found, a tombstone for `tombstone_ms` (0: none).
    async fn destroy_leaving(&self, key: &SessionKey, tombstone_ms: u64) -> StoreResult<bool> {
        let mut con = self.con.clone();
        let one_server = !self.con.is_cluster();
        let mut inv = if one_server {
            SCRIPTS.one_destroy.prepare_invoke()
        } else {
            SCRIPTS.destroy.prepare_invoke()
        };
        inv.key(self.session_key_name(key)).arg(self.script_arg());
        if one_server {
            inv.arg(self.prefix()).arg(key.as_bytes().as_slice());
        }
        inv.arg(tombstone_ms);
        let reply: Value = self.call(inv.invoke_async(&mut con)).await?;
        if !one_server && let Some(user) = reply_user(&reply) {
            self.index_del(&user, &[key.as_bytes()]).await?;
        }
        match status("destroy", &reply)?.0 {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(unexpected("destroy", &reply)),
        }
    }

    /// The sessions of `user_id` in a one-server listing (`raw, meta, last_seen, expiry` per
    /// session), oldest first: those the application's clock still considers live and that
    /// name this user. An entry that does not parse is an unexpected reply; a fixed part that
    /// does not decode is logged and skipped.
    fn summaries(&self, user_id: &str, rows: &[Value]) -> StoreResult<Vec<SessionSummary>> {
        let mut parsed = Vec::with_capacity(rows.len() / 4);
        for row in rows.chunks(4) {
            let fields = (|| {
                let [raw, meta, seen, exp] = row else {
                    return None;
                };
                let key = SessionKey::from_slice(as_bytes(raw)?)?;
                Some((key, as_bytes(meta)?, as_bytes(seen)?, as_int(exp)?))
            })();
            parsed
                .push(fields.ok_or_else(|| unexpected("list_user", &Value::Array(row.to_vec())))?);
        }
        Ok(summaries_of(user_id, parsed))
    }
}

/// Decode and keep the live sessions of `user_id` among (key, fixed part, last_seen field,
/// expiry) rows, oldest first (ties by handle).
fn summaries_of<'a>(
    user_id: &str,
    rows: impl IntoIterator<Item = (SessionKey, &'a [u8], &'a [u8], i64)>,
) -> Vec<SessionSummary> {
    let now = now_ms();
    let mut out = Vec::new();
    for (key, meta, seen, expire_at) in rows {
        let decoded = codec::decode_meta(meta)
            .and_then(|meta| Ok((last_seen(&meta, Some(seen), expire_at)?, meta)));
        match decoded {
            Ok((last_seen, meta))
                if meta.idle_deadline(last_seen) > now
                    && meta.user_id.as_deref() == Some(user_id) =>
            {
                out.push(SessionSummary {
                    key,
                    handle: key.handle(),
                    meta,
                    last_seen,
                });
            }
            Ok(_) => {}
            Err(e) => log_undecodable(BACKEND, &key, &e),
        }
    }
    out.sort_by_key(|s| (s.meta.created_at, s.handle));
    out
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> StoreResult<()> {
        self.create_sent(key, record, false).await.map(|_| ())
    }

    /// In tracking mode the session is written on the tracked connection and read after (the
    /// script's last step), so the key is tracked from its first moment: `true` when the
    /// tracked connection ran it. A create it certainly did not run goes through the write
    /// connection: written, but untracked (`false`).
    async fn create_cacheable(&self, key: &SessionKey, record: &Record) -> StoreResult<bool> {
        self.create_sent(key, record, true).await
    }

    /// Like `create` without the revocation check: written only if the key is absent and the
    /// copy has not expired by the server's clock, with the same index entry as `create`.
    async fn restore(&self, key: &SessionKey, record: &Record) -> StoreResult<bool> {
        match Box::pin(self.write_new("restore", key, record, false, false))
            .await?
            .0
        {
            OK => Ok(true),
            0 | COLLISION | REVOKED => Ok(false),
            other => Err(backend(format_args!(
                "unexpected reply to restore: {other}"
            ))),
        }
    }

    async fn load(&self, key: &SessionKey) -> StoreResult<Option<Record>> {
        let name = self.session_key_name(key);
        let mut con = self.con.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HGETALL")
            .arg(&name)
            .cmd("PEXPIRETIME")
            .arg(&name);
        let (fields, expire_at): (Value, Value) = match &self.tracking {
            None => self.call(pipe.query_async(&mut con)).await?,
            Some(t) => {
                t.run_for(&name, self.config.response_timeout, |mut c| async move {
                    pipe.query_async(&mut c).await
                })
                .await?
            }
        };
        let pairs = hash_pairs(&fields).ok_or_else(|| unexpected("HGETALL", &fields))?;
        // Absent, or a revoke-all's tombstone (no fixed part, only reserved fields).
        if pairs.iter().all(|(n, _)| matches!(n, [b] if *b >= 0x80))
            && !pairs.iter().any(|(n, _)| *n == crate::META_FIELD)
        {
            return Ok(None);
        }
        let expire_at = as_int(&expire_at).ok_or_else(|| unexpected("PEXPIRETIME", &expire_at))?;
        match decode_hash(&pairs, expire_at) {
            // The store's clock guard: Redis may not have expired a key the application's
            // clock already considers dead.
            Ok(record) => Ok(Some(record).filter(|r| !r.is_expired(now_ms()))),
            Err(e) => {
                log_undecodable(BACKEND, key, &e);
                Ok(None)
            }
        }
    }

    async fn apply(&self, key: &SessionKey, delta: &Delta) -> StoreResult<()> {
        let limits = &self.config.limits;
        for (name, _) in &delta.set {
            codec::check_attr_name(name, limits)?;
        }
        // Refuse without a round trip what cannot fit whatever is stored: the attributes set
        // (last value per name) alone, plus the record's fixed overhead. The exact size, with
        // the stored meta and attributes, is checked by the script.
        let set: BTreeMap<&str, usize> = delta
            .set
            .iter()
            .map(|(n, v)| (n.as_str(), v.len()))
            .collect();
        let at_least = 12 + set.iter().map(|(n, v)| n.len() + v + 4).sum::<usize>();
        if at_least > limits.max_record_bytes {
            return Err(StoreError::Codec(CodecError::TooLarge {
                size: at_least,
                limit: limits.max_record_bytes,
            }));
        }
        let mut inv = SCRIPTS.apply.prepare_invoke();
        inv.key(self.session_key_name(key))
            .arg(self.script_arg())
            .arg(limits.max_record_bytes)
            .arg(delta.remove.len());
        for name in &delta.remove {
            inv.arg(name.as_bytes());
        }
        for (name, value) in &delta.set {
            inv.arg(name.as_bytes()).arg(value.as_slice());
        }
        // On the tracked connection in tracking mode: no notice of its own comes back, and the
        // script's last read keeps the key tracked (see `tracking.rs`).
        let reply = self
            .write_on_tracked(&self.session_key_name(key), &inv)
            .await?;
        match status("apply", &reply)? {
            (OK, _) => Ok(()),
            (NOT_FOUND, _) => Err(StoreError::NotFound),
            (TOO_LARGE, Some(size)) => Err(self.too_large(size)),
            _ => Err(unexpected("apply", &reply)),
        }
    }

    /// The stored fixed part is authoritative for the session's deadlines; `meta` names the
    /// user whose index entry is moved first (only an existing entry, only later).
    async fn touch(&self, key: &SessionKey, meta: &Meta, last_seen: Millis) -> StoreResult<bool> {
        if let Some(user) = &meta.user_id {
            let expiry = meta.idle_deadline(last_seen);
            self.index_add(user, key.as_bytes(), expiry, None, true)
                .await?;
        }
        let mut inv = SCRIPTS.touch.prepare_invoke();
        inv.key(self.session_key_name(key))
            .arg(self.script_arg())
            .arg(last_seen);
        let mut con = self.con.clone();
        let reply: Value = self.call(inv.invoke_async(&mut con)).await?;
        match status("touch", &reply)?.0 {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(unexpected("touch", &reply)),
        }
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<()> {
        if !self.con.is_cluster() {
            self.rotate_one_server(old, new, meta, now, false).await?;
            return Ok(());
        }
        let encoded = codec::encode_meta(meta, &self.config.limits)?;
        if let Some(user) = &meta.user_id {
            self.index_add(
                user,
                new.as_bytes(),
                meta.idle_deadline(now),
                Some(now),
                false,
            )
            .await?;
        }
        let (old_name, new_name) = (self.session_key_name(old), self.session_key_name(new));
        let old_user = if !self.con.is_cluster() || key_slot(&old_name) == key_slot(&new_name) {
            let fence = self.fence_key_name(&new_name);
            let reply = self
                .invoke_fenced("rotate", |arg| {
                    let mut inv = SCRIPTS.rotate.prepare_invoke();
                    inv.key(old_name.as_slice())
                        .key(new_name.as_slice())
                        .key(fence.as_slice())
                        .arg(arg)
                        .arg(&encoded)
                        .arg(now)
                        .arg(self.config.limits.max_record_bytes);
                    inv
                })
                .await?;
            match status("rotate", &reply)? {
                (OK, _) => reply_user(&reply),
                (NOT_FOUND, _) => return Err(StoreError::NotFound),
                (COLLISION, _) => return Err(StoreError::Collision),
                (REVOKED, _) => return Err(StoreError::Revoked),
                (TOO_LARGE, Some(size)) => return Err(self.too_large(size)),
                _ => return Err(unexpected("rotate", &reply)),
            }
        } else {
            self.rotate_across_slots(old, new, &encoded, now).await?
        };
        if let Some(user) = old_user {
            self.index_del(&user, &[old.as_bytes()]).await?;
        }
        Ok(())
    }

    /// On one server, the rotation and the list are one script: the list is read in the same
    /// atomic step, after the rotation. On a cluster, the rotation's steps, then the list.
    async fn rotate_and_list_user(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<Vec<SessionSummary>> {
        if self.con.is_cluster() {
            self.rotate(old, new, meta, now).await?;
        } else if let Some(listed) = self.rotate_one_server(old, new, meta, now, true).await? {
            return Ok(listed);
        }
        match &meta.user_id {
            Some(user) => self.list_user(user).await,
            None => Ok(Vec::new()),
        }
    }

    async fn destroy(&self, key: &SessionKey) -> StoreResult<bool> {
        self.destroy_leaving(key, 0).await
    }

    /// `destroy`, and where no live copy was found a tombstone for a while, so that a copy
    /// whose write is still in flight (a tier writes Redis after its database) cannot land
    /// after this removal: `create` and `restore` refuse a tombstone. It lasts ten response
    /// timeouts, at least a minute: a write later than that met a Redis that did not answer
    /// for so long that the tiered store saw an outage, and writes from before an outage are
    /// refused by the write epoch that the recovery begins.
    async fn discard_copy(&self, key: &SessionKey) -> StoreResult<bool> {
        let ttl = (self.config.response_timeout * 10).max(std::time::Duration::from_secs(60));
        self.destroy_leaving(key, duration_ms(ttl)).await
    }

    /// The index (user slot), then each indexed session (its own slot). Entries whose session
    /// is missing are skipped, not removed: one may be a create between its two steps.
    async fn list_user(&self, user_id: &str) -> StoreResult<Vec<SessionSummary>> {
        if !self.con.is_cluster() {
            let mut inv = SCRIPTS.one_list.prepare_invoke();
            inv.key(self.user_index_key_name(user_id))
                .arg(self.script_arg())
                .arg(self.prefix());
            let mut con = self.con.clone();
            let reply: Value = self.call(inv.invoke_async(&mut con)).await?;
            match &reply {
                Value::Array(items) if items.first().and_then(as_int) == Some(1) => {
                    return self.summaries(user_id, &items[1..]);
                }
                Value::Array(items) if items.first().and_then(as_int) == Some(0) => {}
                _ => return Err(unexpected("list_user", &reply)),
            }
        }
        let mut inv = SCRIPTS.index_list.prepare_invoke();
        inv.key(self.user_index_key_name(user_id))
            .arg(self.script_arg());
        let mut con = self.con.clone();
        let reply: Value = self.call(inv.invoke_async(&mut con)).await?;
        let Value::Array(raws) = &reply else {
            return Err(unexpected("list_user", &reply));
        };
        let keys: Vec<SessionKey> = raws
            .iter()
            .filter_map(|r| SessionKey::from_slice(as_bytes(r)?))
            .collect();
        let rows = self
            .each_key(keys.iter().map(|k| {
                let mut inv = SCRIPTS.summary.prepare_invoke();
                inv.key(self.session_key_name(k)).arg(self.script_arg());
                inv
            }))
            .await?;
        let mut parsed = Vec::with_capacity(rows.len());
        for (key, row) in keys.into_iter().zip(&rows) {
            let fields = match row {
                Value::Array(f) if f.len() == 3 => {
                    (|| Some((as_bytes(&f[0])?, as_bytes(&f[1])?, as_int(&f[2])?)))()
                }
                Value::Nil | Value::Boolean(false) => continue,
                _ => None,
            };
            let Some((meta, seen, expire_at)) = fields else {
                return Err(unexpected("list_user", row));
            };
            parsed.push((key, meta, seen, expire_at));
        }
        Ok(summaries_of(user_id, parsed))
    }

    /// Three steps: raise the marker and read the index (user slot); end each indexed session
    /// (its slot; one not written yet gets a tombstone its create refuses); take them out of
    /// the index. A create that passed its index step before the marker is in the list; one
    /// after it is refused by the marker.
    async fn destroy_user(&self, user_id: &str, except: Option<&SessionKey>) -> StoreResult<u64> {
        let mut inv = SCRIPTS.revoke_mark.prepare_invoke();
        inv.key(self.user_index_key_name(user_id))
            .key(self.revocation_key_name(user_id))
            .arg(self.script_arg())
            .arg(now_ms())
            .arg(duration_ms(self.config.revocation_ttl))
            .arg(except.map_or(&[][..], |k| &k.as_bytes()[..]));
        let mut con = self.con.clone();
        let reply: Value = self.call(inv.invoke_async(&mut con)).await?;
        let Value::Array(items) = &reply else {
            return Err(unexpected("destroy_user", &reply));
        };
        let entries: Vec<(&[u8], i64)> = items
            .chunks_exact(2)
            .filter_map(|p| Some((as_bytes(&p[0])?, as_int(&p[1])?)))
            .collect();
        let ended = self
            .each_key(entries.iter().map(|&(raw, score)| {
                let mut name = self.prefix().to_vec();
                name.extend_from_slice(raw);
                let mut inv = SCRIPTS.revoke_one.prepare_invoke();
                inv.key(name).arg(self.script_arg()).arg(score).arg(user_id);
                inv
            }))
            .await?;
        let raws: Vec<&[u8]> = entries.iter().map(|&(raw, _)| raw).collect();
        for chunk in raws.chunks(1000) {
            self.index_del(user_id, chunk).await?;
        }
        Ok(ended
            .iter()
            .filter_map(as_int)
            .map(|n| n.max(0) as u64)
            .sum())
    }

    async fn count(&self) -> StoreResult<u64> {
        self.count_sessions().await
    }

    /// Prunes every user index of its expired entries (session hashes are expired by Redis
    /// itself). Returns how many entries were removed.
    async fn reap(&self) -> StoreResult<u64> {
        self.reap_indexes().await
    }

    async fn begin_epoch(&self) -> StoreResult<bool> {
        self.new_epoch().await
    }

    /// Pings the write connection and, in tracking mode, the tracked one (connecting it if
    /// needed; the first ping after it was lost fails, like any first call after a loss).
    async fn ping(&self) -> StoreResult<()> {
        let mut con = self.con.clone();
        self.call(redis::cmd("PING").query_async::<()>(&mut con))
            .await?;
        if let Some(t) = &self.tracking {
            Box::pin(t.ping_all(self.config.response_timeout)).await?;
        }
        Ok(())
    }
}
