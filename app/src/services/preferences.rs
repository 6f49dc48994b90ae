//! A session's preferences: one JSON object of at most [`MAX_PREFS`] keys, kept as one session
//! attribute and written whole, so no interleaving of writes can store more.

use ratatoskr_axum::{Session, SessionError};
use ratatoskr_core::SessionManager;
use serde_json::{Map, Value};

use crate::domain::user::UserId;
use crate::services::error::{ServiceError, ServiceResult};

/// The session attribute holding the preferences.
pub const PREFS_ATTR: &str = "app.prefs";
/// Most preferences per session.
pub const MAX_PREFS: usize = 16;
/// Largest preference value, serialized.
pub const MAX_PREF_BYTES: usize = 1024;

/// What preference changes need: the session manager (to read what the store holds now) and
/// the per-session write locks.
#[derive(Clone, Copy)]
pub struct Preferences<'a> {
    /// Session policy over the session store.
    pub manager: &'a SessionManager,
    /// Serializes preference writes per session in this process.
    pub locks: &'a Stripes,
}

/// A preference key: 1 to 32 of `a-z 0-9 _ -`.
pub fn key(raw: &str) -> ServiceResult<&str> {
    let ok = (1..=32).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(raw)
    } else {
        Err(ServiceError::InvalidPreferenceKey)
    }
}

/// A preferences object as stored (undecodable means none).
fn decode(raw: Option<&[u8]>) -> Map<String, Value> {
    raw.and_then(|v| serde_json::from_slice(v).ok())
        .unwrap_or_default()
}

impl Preferences<'_> {
    /// The preferences as this request's session has them.
    pub async fn get(&self, session: &Session) -> ServiceResult<Map<String, Value>> {
        Ok(decode(session.get_raw(PREFS_ATTR).await?.as_deref()))
    }

    /// Set `key` to `value`.
    pub async fn put(
        &self,
        user: UserId,
        session: &Session,
        key: &str,
        value: Value,
    ) -> ServiceResult<()> {
        let bytes = serde_json::to_vec(&value).map_err(|e| ServiceError::Internal(e.into()))?;
        if bytes.len() > MAX_PREF_BYTES {
            return Err(ServiceError::PreferenceTooLarge(MAX_PREF_BYTES));
        }
        self.update(user, session, |prefs| {
            if !prefs.contains_key(key) && prefs.len() >= MAX_PREFS {
                return Err(ServiceError::TooManyPreferences(MAX_PREFS));
            }
            prefs.insert(key.to_owned(), value);
            Ok(true)
        })
        .await
    }

    /// Remove `key`.
    pub async fn delete(&self, user: UserId, session: &Session, key: &str) -> ServiceResult<()> {
        self.update(user, session, |prefs| Ok(prefs.remove(key).is_some()))
            .await
    }

    /// The session's preferences as the store has them now (not as this request loaded them:
    /// another request may have changed them since).
    async fn stored(&self, user: UserId, session: &Session) -> ServiceResult<Map<String, Value>> {
        let Some(handle) = session.handle().await? else {
            return Ok(Map::new());
        };
        let list = self.manager.list_user(&user.session_user_id()).await?;
        let Some(me) = list.into_iter().find(|s| s.handle == handle) else {
            return Ok(Map::new());
        };
        let record = self.manager.store().load(&me.key).await?;
        Ok(decode(
            record
                .as_ref()
                .and_then(|r| r.attrs.get(PREFS_ATTR))
                .map(Vec::as_slice),
        ))
    }

    /// Read, change and write the session's preferences as one step: `change` gets the stored
    /// object and says whether to write it back. Writes to one session are serialized in this
    /// process (so none is lost), and the object is one attribute, so whatever the interleaving
    /// (other instances included) a session never holds more than [`MAX_PREFS`].
    async fn update(
        &self,
        user: UserId,
        session: &Session,
        change: impl FnOnce(&mut Map<String, Value>) -> ServiceResult<bool>,
    ) -> ServiceResult<()> {
        let Some(handle) = session.handle().await? else {
            return Err(SessionError::Unauthenticated.into());
        };
        let _turn = self.locks.lock(&handle.to_string()).await;
        let mut prefs = self.stored(user, session).await?;
        let before = prefs.len();
        if !change(&mut prefs)? {
            return Ok(());
        }
        if prefs.len() > MAX_PREFS && prefs.len() > before {
            // The bound is checked on what is written, whatever `change` did.
            return Err(ServiceError::TooManyPreferences(MAX_PREFS));
        }
        let bytes = serde_json::to_vec(&prefs).map_err(|e| ServiceError::Internal(e.into()))?;
        session.insert_raw(PREFS_ATTR, bytes).await?;
        session.save().await?;
        Ok(())
    }
}

/// Async locks by name, striped: a fixed set of mutexes, each name always taking the same one
/// (two names may share one; that only makes them wait for each other).
pub struct Stripes(Box<[tokio::sync::Mutex<()>]>);

impl Default for Stripes {
    fn default() -> Self {
        Stripes((0..64).map(|_| tokio::sync::Mutex::new(())).collect())
    }
}

impl Stripes {
    /// Wait for `name`'s turn.
    pub async fn lock(&self, name: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher as _, Hasher as _};
        static SEED: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        let mut h = SEED.get_or_init(std::hash::RandomState::new).build_hasher();
        h.write(name.as_bytes());
        let i = usize::try_from(h.finish() % self.0.len() as u64).unwrap_or(0);
        self.0[i].lock().await
    }
}
