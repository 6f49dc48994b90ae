//! What a store keeps about a session, and what a request changes.
//!
//! A session is a [`Record`]: a [`Meta`] part that is fixed for the life of one key (user, creation
//! time, timeouts, version, fingerprint), a `last_seen` time that a touch moves, and
//! named attributes whose values are opaque bytes (the axum layer puts JSON there).
//!
//! A request never writes a whole record back. It sends a [`Delta`]: the attributes it set and the
//! ones it removed. Two requests that change different attributes therefore never clobber each
//! other, and a delta against a session that was destroyed meanwhile is refused instead of
//! recreating it.
//!
//! Deadlines are derived, not stored: the idle deadline is `last_seen + idle_timeout`, capped by
//! the absolute deadline, which is fixed at creation.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current time in [`Millis`]: the system clock, unless a test froze it with
/// [`test_clock`].
pub fn now_ms() -> Millis {
    let frozen = test_clock::FROZEN.load(std::sync::atomic::Ordering::Relaxed);
    if frozen != test_clock::OFF {
        return frozen;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A process-wide controlled clock for deterministic tests of deadlines.
///
/// Every time Ratatoskr decides with — creation, touch, expiry checks, the times SQL statements
/// and Redis scripts compare against — comes from [`now_ms`]. A model-based test freezes it
/// here and moves it in steps (to just before a deadline, across it), so whether a session is
/// alive is decided by the test, not by how fast the machine runs. Production code never calls
/// this: while nothing is frozen, `now_ms` costs one relaxed atomic load more than the system
/// clock. Redis still expires keys by its own clock; that only ever removes copies earlier
/// (a frozen clock ahead of the real one makes Redis keep keys longer, and every read checks
/// the deadline against [`now_ms`] itself).
#[doc(hidden)]
pub mod test_clock {
    use super::Millis;
    use std::sync::atomic::{AtomicI64, Ordering};

    pub(super) const OFF: Millis = Millis::MIN;
    pub(super) static FROZEN: AtomicI64 = AtomicI64::new(OFF);

    /// Freeze the clock at `at` (`None`: back to the system clock).
    pub fn set(at: Option<Millis>) {
        FROZEN.store(at.unwrap_or(OFF), Ordering::SeqCst);
    }

    /// Move a frozen clock forward by `ms` (nothing when the clock is not frozen).
    pub fn advance(ms: Millis) {
        let _ = FROZEN.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
            (t != OFF).then(|| t.saturating_add(ms))
        });
    }
}

/// A [`Duration`] in milliseconds, saturating.
pub fn duration_ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The part of a session that is fixed for the life of one session key.
///
/// Rotation creates a new key with a new `Meta` (new version, possibly a new user) and the same
/// attributes. The CSRF secret is not here: it is derived from the token
/// ([`Token::csrf_secret`](crate::Token::csrf_secret)), so a new key has a new one and no store
/// holds it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Meta {
    /// The authenticated user, if any. Anonymous sessions have none.
    pub user_id: Option<String>,
    /// When the session was first created (kept across rotation).
    pub created_at: Millis,
    /// How long the session may sit unused.
    pub idle_timeout: Millis,
    /// When the session ends no matter what.
    pub absolute_deadline: Millis,
    /// Incremented by every whole-record operation (rotation).
    pub version: u64,
    /// A hash of the client's User-Agent (and optionally IP prefix) recorded at creation.
    pub fingerprint: Option<[u8; 8]>,
}

impl Meta {
    /// The idle deadline for a given `last_seen`, never past the absolute deadline.
    pub fn idle_deadline(&self, last_seen: Millis) -> Millis {
        last_seen
            .saturating_add(self.idle_timeout)
            .min(self.absolute_deadline)
    }
}

/// A whole session as a store returns it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// The fixed part.
    pub meta: Meta,
    /// When the session was last used (moved by touch).
    pub last_seen: Millis,
    /// Named attributes with opaque values.
    pub attrs: BTreeMap<String, Vec<u8>>,
}

impl Record {
    /// A fresh record: created and last seen `now`, no attributes, version 1.
    pub fn new(
        user_id: Option<String>,
        now: Millis,
        idle_timeout: Duration,
        absolute_timeout: Duration,
    ) -> Self {
        Record {
            meta: Meta {
                user_id,
                created_at: now,
                idle_timeout: duration_ms(idle_timeout),
                absolute_deadline: now.saturating_add(duration_ms(absolute_timeout)),
                version: 1,
                fingerprint: None,
            },
            last_seen: now,
            attrs: BTreeMap::new(),
        }
    }

    /// When this session expires: the nearer of the idle and absolute deadlines.
    pub fn expires_at(&self) -> Millis {
        self.meta.idle_deadline(self.last_seen)
    }

    /// Whether the session has expired at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        now >= self.expires_at()
    }

    /// Apply a delta in place (what every store does, in its own way, on the stored copy).
    /// An attribute that is already there keeps its name and its buffer (overwritten in
    /// place): only new attributes allocate.
    pub fn apply(&mut self, delta: &Delta) {
        for name in &delta.remove {
            self.attrs.remove(name);
        }
        for (name, value) in &delta.set {
            match self.attrs.get_mut(name) {
                Some(stored) => stored.clone_from(value),
                None => {
                    self.attrs.insert(name.clone(), value.clone());
                }
            }
        }
    }

    /// [`apply`](Self::apply) a delta that is no longer needed: its names and values move
    /// into the record instead of being copied.
    pub fn apply_owned(&mut self, delta: Delta) {
        for name in &delta.remove {
            self.attrs.remove(name);
        }
        for (name, value) in delta.set {
            match self.attrs.get_mut(&name) {
                Some(stored) => *stored = value,
                None => {
                    self.attrs.insert(name, value);
                }
            }
        }
    }
}

/// The changes one request made to a session's attributes.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Delta {
    /// Attributes set to a new value.
    pub set: Vec<(String, Vec<u8>)>,
    /// Attributes removed.
    pub remove: Vec<String>,
}

impl Delta {
    /// Whether the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Builder: set one attribute.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.set.push((name.into(), value.into()));
        self
    }

    /// Builder: remove one attribute.
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        self.remove.push(name.into());
        self
    }
}

/// One line of a user's session list.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SessionSummary {
    /// The storage key (for revocation by the library; never shown).
    pub key: crate::token::SessionKey,
    /// The public handle.
    pub handle: crate::token::Handle,
    /// The fixed part.
    pub meta: Meta,
    /// When it was last used.
    pub last_seen: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline_is_capped_by_absolute_deadline() {
        let r = Record::new(
            None,
            1_000,
            Duration::from_millis(500),
            Duration::from_millis(800),
        );
        assert_eq!(r.expires_at(), 1_500);
        assert_eq!(r.meta.idle_deadline(1_400), 1_800);
        assert!(!r.is_expired(1_499));
        assert!(r.is_expired(1_500));
    }

    #[test]
    fn apply_removes_then_sets() {
        let mut r = Record::new(None, 0, Duration::from_secs(1), Duration::from_secs(2));
        r.attrs.insert("a".into(), b"1".to_vec());
        r.attrs.insert("b".into(), b"2".to_vec());
        r.apply(&Delta::default().remove("a").set("c", b"3".to_vec()));
        assert_eq!(r.attrs.keys().collect::<Vec<_>>(), ["b", "c"]);
    }
}
