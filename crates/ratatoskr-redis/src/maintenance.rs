//! What concerns the whole keyspace rather than one session or one user: `count`, `reap` and
//! the recovery step `begin_epoch`. Each walks every master with `SCAN` (on a cluster, each
//! master in turn), since no key holds a list of all sessions.

use ratatoskr_core::StoreResult;
use redis::Value;

use crate::scripts::SCRIPTS;
use crate::{RedisStore, as_int, backend, conn};

/// A walk over the keyspace of every master (see [`RedisStore::next_batch`]).
struct Scan {
    masters: Vec<(String, u16)>,
    at: usize,
    cursor: u64,
    pattern: Vec<u8>,
    kind: Option<&'static str>,
}

/// Keys per `SCAN` step: each step blocks the server for about this many key visits.
const SCAN_COUNT: usize = 1000;

impl RedisStore {
    /// The store's prefix as a `SCAN MATCH` pattern (glob metacharacters escaped) + `tail`.
    fn pattern(&self, tail: &[u8]) -> Vec<u8> {
        let mut pattern = Vec::with_capacity(self.prefix().len() + tail.len() + 2);
        for &b in self.prefix() {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(b);
        }
        pattern.extend_from_slice(tail);
        pattern
    }

    /// A walk over every key matching `pattern` (and of `kind`, if given) on every master.
    async fn scan(&self, pattern: Vec<u8>, kind: Option<&'static str>) -> StoreResult<Scan> {
        let mut con = self.con.clone();
        let masters = self.call(con.masters()).await?;
        Ok(Scan {
            masters,
            at: 0,
            cursor: 0,
            pattern,
            kind,
        })
    }

    /// The next batch of a walk, `None` at its end. Keys present throughout are seen at least
    /// once; keys created or deleted meanwhile may or may not be.
    async fn next_batch(&self, scan: &mut Scan) -> StoreResult<Option<Vec<Vec<u8>>>> {
        let mut con = self.con.clone();
        while scan.at < scan.masters.len() {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(scan.cursor)
                .arg("MATCH")
                .arg(&scan.pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            if let Some(k) = scan.kind {
                cmd.arg("TYPE").arg(k);
            }
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .call(con.on_master(&scan.masters[scan.at], &cmd))
                .await?;
            if next == 0 {
                scan.at += 1;
            }
            scan.cursor = next;
            if !keys.is_empty() {
                return Ok(Some(keys));
            }
        }
        Ok(None)
    }

    /// The number of sessions: the hashes under the prefix whose name is the prefix and 32
    /// bytes, on every master. No index is kept for it (it would cost memory on every session
    /// and, on a cluster, a slot every create writes to). Exact when nothing changes while it
    /// runs; otherwise sessions created or ended meanwhile may or may not be counted, and a
    /// revoke-all's tombstones (rare: a create caught between its two steps) count as
    /// sessions until their expiry. Its cost is a walk over the whole keyspace.
    pub(crate) async fn count_sessions(&self) -> StoreResult<u64> {
        let want = self.prefix().len() + 32;
        let mut n = 0u64;
        let mut scan = self.scan(self.pattern(b"*"), Some("hash")).await?;
        while let Some(keys) = self.next_batch(&mut scan).await? {
            n += keys.iter().filter(|k| k.len() == want).count() as u64;
        }
        Ok(n)
    }

    /// Prune every user index of its expired entries (each expires with its last entry anyway;
    /// this only speeds up what writes and expiry do by themselves).
    pub(crate) async fn reap_indexes(&self) -> StoreResult<u64> {
        let mut removed = 0u64;
        let mut scan = self.scan(self.pattern(b"{u:*}"), Some("zset")).await?;
        while let Some(keys) = self.next_batch(&mut scan).await? {
            for key in keys {
                let mut inv = SCRIPTS.tidy.prepare_invoke();
                inv.key(key).arg(self.script_arg());
                let mut con = self.con.clone();
                let v: Value = self.call(inv.invoke_async(&mut con)).await?;
                removed += as_int(&v).unwrap_or(0).max(0) as u64;
            }
        }
        Ok(removed)
    }

    /// The server runs holding the data: every master's `run_id`, sorted, comma-separated.
    async fn run_ids(&self) -> StoreResult<String> {
        let mut con = self.con.clone();
        let masters = self.call(con.masters()).await?;
        let mut ids = Vec::with_capacity(masters.len());
        for master in &masters {
            let info: String = self
                .call(con.on_master(master, redis::cmd("INFO").arg("server")))
                .await?;
            let id = info
                .lines()
                .find_map(|l| l.strip_prefix("run_id:"))
                .map(|id| id.trim().to_owned())
                .ok_or_else(|| backend("INFO server names no run_id"))?;
            ids.push(id);
        }
        ids.sort();
        Ok(ids.join(","))
    }

    /// Delete every session copy under this store's prefix, on every master: the hashes, but
    /// not their tombstones, and **never an index entry or a revocation marker**. Other
    /// instances may be writing meanwhile, each a create as two steps (the index entry, then
    /// the hash); a walk that deleted index keys could delete a new entry and miss the hash
    /// written after it passed — a live session no revoke-all could find. Left alone, the
    /// entries of discarded copies are harmless (listings skip missing sessions; they go at
    /// their expiry), and a marker older than the database's revocations only refuses less,
    /// which the database's own check covers. Returns how many copies went.
    async fn discard_all(&self) -> StoreResult<u64> {
        let want = self.prefix().len() + 32;
        let mut removed = 0u64;
        let mut scan = self.scan(self.pattern(b"*"), Some("hash")).await?;
        while let Some(keys) = self.next_batch(&mut scan).await? {
            let gone = self
                .each_key(keys.into_iter().filter(|k| k.len() == want).map(|k| {
                    let mut inv = SCRIPTS.discard.prepare_invoke();
                    inv.key(k).arg(self.script_arg());
                    inv
                }))
                .await?;
            removed += gone.iter().filter_map(as_int).filter(|&n| n > 0).count() as u64;
        }
        Ok(removed)
    }

    /// Two steps, in this order:
    ///
    /// 1. `<prefix>owner` names the server runs (`run_id` of every master) that hold the
    ///    data. A different set — a master restarted and loaded a snapshot, a replica was
    ///    promoted by a failover (Sentinel or Cluster) — may hold copies older than deletions
    ///    and changes the previous run acknowledged, so every session copy under the prefix is
    ///    deleted (on every master; index entries and markers are kept, see `discard_all`)
    ///    before the owner is set to the current runs.
    /// 2. A new write epoch in the fence(s): `<prefix>fence` on one server, one fence per slot
    ///    on a cluster (each script checks the fence of its own slot). From now on the scripts
    ///    that add or change a copy refuse a write that carries an older one; live writers
    ///    learn the new epoch from the refusal and send again.
    ///
    /// The fences must not be evicted: run Redis with `noeviction` or a `volatile-*` policy.
    pub(crate) async fn new_epoch(&self) -> StoreResult<bool> {
        let runs = self.run_ids().await?;
        let owner_key = self.owner_key_name();
        let mut con = self.con.clone();
        let owner: Option<String> = self
            .call(redis::cmd("GET").arg(&owner_key).query_async(&mut con))
            .await?;
        let mut removed = 0;
        if owner.as_deref() != Some(runs.as_str()) {
            removed = self.discard_all().await?;
            self.call(
                redis::cmd("SET")
                    .arg(&owner_key)
                    .arg(&runs)
                    .query_async::<()>(&mut con),
            )
            .await?;
            if removed > 0 {
                tracing::warn!(
                    removed,
                    "Redis runs as a new server (restarted or failed over): discarded the \
                     copies it kept from before"
                );
            }
        }
        // 52 random bits, never 0 (what a store that knows no epoch sends): exact as a Lua
        // number, and no two recoveries pick the same one in practice.
        let epoch = (u64::from_le_bytes(ratatoskr_core::token::random_bytes()) >> 12).max(1);
        if self.con.is_cluster() {
            // 16384 writes: a recovery, not a request, so each batch gets the connect timeout
            // (and at least the response timeout) rather than one request's budget.
            let limit = self
                .config
                .connect_timeout
                .max(self.config.response_timeout);
            for tags in conn::SLOT_TAGS.chunks(512) {
                let sets = tags.iter().map(|tag| {
                    let mut con = self.con.clone();
                    let name = self.prefixed(&["fence{", tag, "}"]);
                    async move {
                        redis::cmd("SET")
                            .arg(name)
                            .arg(epoch)
                            .query_async::<()>(&mut con)
                            .await
                    }
                });
                self.call_within(limit, futures::future::try_join_all(sets))
                    .await?;
            }
        } else {
            self.call(
                redis::cmd("SET")
                    .arg(self.prefixed(&["fence"]))
                    .arg(epoch)
                    .query_async::<()>(&mut con),
            )
            .await?;
        }
        self.epoch
            .store(epoch, std::sync::atomic::Ordering::Release);
        Ok(removed > 0)
    }
}
