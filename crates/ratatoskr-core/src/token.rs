//! Session tokens, storage keys and public handles.
//!
//! Three names for one session, each with a different audience:
//!
//! | type | who sees it | what it is |
//! |---|---|---|
//! | [`Token`] | the browser only (the cookie) | 256 random bits from the OS CSPRNG, 43 base64url chars |
//! | [`SessionKey`] | the stores only | SHA-256 of the token; a dump of a store exposes no usable token |
//! | [`Handle`] | users, admins, logs | 96 bits derived from the key; names a session in lists and revocation |
//!
//! The token is never stored and never logged: its `Debug` output is redacted. The key cannot be
//! turned back into a token, and the handle cannot be turned back into a key, so the handle is safe
//! to print, to show in a page, and to accept in a revocation API (which then checks ownership).
//!
//! ```
//! use ratatoskr_core::token::{Token, SessionKey};
//!
//! let token = Token::generate();
//! let cookie_value = token.as_cookie_value();
//! assert_eq!(cookie_value.len(), 43);
//!
//! // On the next request: parse before asking any store.
//! let parsed = Token::parse(&cookie_value).unwrap();
//! assert_eq!(parsed.key(), token.key());
//! assert!(Token::parse("not-a-token").is_err());
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Length in characters of a token's cookie form: 32 bytes in unpadded base64url.
pub const TOKEN_CHARS: usize = 43;

/// Why a string is not a token. Each variant is a client mistake, never a server fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The value is not exactly [`TOKEN_CHARS`] characters long.
    #[error("a session token is {TOKEN_CHARS} characters, this one has {0}")]
    Length(usize),
    /// The value holds a character outside the base64url alphabet, or is not canonical base64url.
    #[error("a session token is base64url; this one is not")]
    Alphabet,
}

/// The secret in the cookie. 256 bits from the operating system's CSPRNG.
///
/// Never stored, never logged: `Debug` prints `Token(<redacted>)`.
///
/// Its [`key`](Self::key) is derived on first use and kept: a request asks for it several
/// times (the load, the CSRF check's refusal, the write), and each SHA-256 run is a fifth of a
/// warm read's instructions (`docs/performance.md`).
pub struct Token {
    bytes: [u8; 32],
    key: KeyCache,
}

impl Clone for Token {
    fn clone(&self) -> Self {
        Token {
            bytes: self.bytes,
            key: KeyCache::holding(self.key.get()),
        }
    }
}

/// A token's key once derived: four words and a flag, written at most once with the same
/// value by whoever derives it first (two threads racing write the same bytes), read after the
/// flag. Cheaper than a `OnceLock` (whose `Once` costs about as many instructions again as a
/// cached read saves on a warm read), and without `unsafe`.
struct KeyCache {
    ready: AtomicBool,
    words: [AtomicU64; 4],
}

impl KeyCache {
    fn holding(key: Option<SessionKey>) -> Self {
        let cache = KeyCache {
            ready: AtomicBool::new(false),
            words: Default::default(),
        };
        if let Some(key) = key {
            cache.set(&key);
        }
        cache
    }

    fn get(&self) -> Option<SessionKey> {
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(&self.words) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        Some(SessionKey(bytes))
    }

    fn set(&self, key: &SessionKey) {
        for (chunk, word) in key.0.chunks_exact(8).zip(&self.words) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
        self.ready.store(true, Ordering::Release);
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        // The key is a function of the bytes: whether it was derived yet says nothing.
        self.bytes == other.bytes
    }
}

impl Eq for Token {}

impl Token {
    /// A fresh token from the OS CSPRNG.
    ///
    /// # Panics
    /// Only if the operating system cannot provide randomness at all, in which case no secure
    /// session can be issued and stopping is the right answer.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
        Token::from_secret(bytes)
    }

    fn from_secret(bytes: [u8; 32]) -> Self {
        Token {
            bytes,
            key: KeyCache::holding(None),
        }
    }

    /// Parse a cookie value. Checks length and alphabet before decoding, so no store is ever asked
    /// about a value that could not have been issued.
    pub fn parse(value: &str) -> Result<Self, TokenError> {
        if value.len() != TOKEN_CHARS {
            return Err(TokenError::Length(value.len()));
        }
        let mut bytes = [0u8; 32];
        // The engine is the alphabet check: it refuses every byte outside base64url (`+`, `/`,
        // `=` padding, anything not ASCII — a separate pass over the value first cost a quarter
        // of the parse), and non-canonical trailing bits, so each token has exactly one spelling.
        match URL_SAFE_NO_PAD.decode_slice(value, &mut bytes) {
            Ok(32) => Ok(Token::from_secret(bytes)),
            _ => Err(TokenError::Alphabet),
        }
    }

    /// The cookie form: 43 base64url characters, no padding.
    pub fn as_cookie_value(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.bytes)
    }

    /// The storage key for this token: SHA-256 of it, derived once per `Token` value (a clone
    /// made after the first call keeps it).
    pub fn key(&self) -> SessionKey {
        if let Some(key) = self.key.get() {
            return key;
        }
        let key = SessionKey(Sha256::digest(self.bytes).into());
        self.key.set(&key);
        key
    }

    /// The session's CSRF secret: the first 16 bytes of
    /// `SHA-256("ratatoskr.csrf.v1\0" ‖ token)` (50 bytes hashed: one SHA-256 block, half the
    /// cost of a [`derive`](Self::derive), on every checked request).
    ///
    /// Derived, not stored: no store or cache holds it, a rotation (a new token) renews it, and
    /// the masked tokens pages carry reveal neither it nor the token. Record format 1 (0.1.0)
    /// stored a random secret in the session instead.
    ///
    /// ```
    /// use ratatoskr_core::Token;
    /// let token = Token::generate();
    /// assert_eq!(token.csrf_secret(), token.csrf_secret());
    /// assert_ne!(token.csrf_secret(), Token::generate().csrf_secret());
    /// ```
    pub fn csrf_secret(&self) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(b"ratatoskr.csrf.v1\0");
        h.update(self.bytes);
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&h.finalize()[..16]);
        secret
    }

    /// Derive a per-token secret for a named purpose (for example a signing key), without
    /// revealing the token. Domain-separated SHA-256.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"ratatoskr.derive.v1\0");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(self.bytes);
        h.finalize().into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The key a store files a session under: SHA-256 of the token.
///
/// Not a secret in the way a token is (it cannot be presented as a cookie), but not shown to users
/// either: show the [`Handle`]. `Debug` prints the handle.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// The raw 32 bytes, as stores persist them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuild a key from bytes a store returned.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionKey(bytes)
    }

    /// Rebuild a key from a slice a store returned; `None` unless it is exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(SessionKey)
    }

    /// The public handle of this session.
    pub fn handle(&self) -> Handle {
        let mut h = Sha256::new();
        h.update(b"ratatoskr.handle.v1\0");
        h.update(self.0);
        let digest = h.finalize();
        let mut out = [0u8; 12];
        out.copy_from_slice(&digest[..12]);
        Handle(out)
    }

    /// Lowercase hex, for stores that key by text.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey(handle={})", self.handle())
    }
}

/// A public, non-secret name for a session: 96 bits derived from its key, 16 base64url characters.
///
/// Safe to log, to show to users and to put in URLs. Knowing a handle grants nothing: revocation
/// APIs check that the handle belongs to the caller.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle([u8; 12]);

/// Length in characters of a handle's text form.
pub const HANDLE_CHARS: usize = 16;

impl Handle {
    /// Parse the text form; `None` unless it is 16 base64url characters.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() != HANDLE_CHARS {
            return None;
        }
        let mut out = [0u8; 12];
        match URL_SAFE_NO_PAD.decode_slice(value, &mut out) {
            Ok(12) => Some(Handle(out)),
            _ => None,
        }
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({self})")
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Fill a buffer from the OS CSPRNG.
///
/// # Panics
/// Only if the operating system cannot provide randomness at all.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_43_base64url_chars_and_round_trip() {
        for _ in 0..100 {
            let t = Token::generate();
            let s = t.as_cookie_value();
            assert_eq!(s.len(), TOKEN_CHARS);
            assert_eq!(Token::parse(&s).unwrap(), t);
        }
    }

    #[test]
    fn generated_tokens_differ() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn parse_rejects_wrong_length_alphabet_and_non_canonical_spelling() {
        assert_eq!(Token::parse(""), Err(TokenError::Length(0)));
        assert_eq!(Token::parse(&"A".repeat(42)), Err(TokenError::Length(42)));
        assert_eq!(Token::parse(&"A".repeat(44)), Err(TokenError::Length(44)));
        assert_eq!(
            Token::parse(&"A".repeat(8192)),
            Err(TokenError::Length(8192))
        );
        let mut s = "A".repeat(42);
        s.push('=');
        assert_eq!(Token::parse(&s), Err(TokenError::Alphabet));
        assert_eq!(
            Token::parse(&format!("{}+", "A".repeat(42))),
            Err(TokenError::Alphabet)
        );
        // 43 chars of a multi-byte character: length is counted in bytes, so it is refused.
        assert!(Token::parse(&"é".repeat(43)).is_err());
        // Last char carries 2 padding bits that must be zero: "B" sets one of them.
        assert_eq!(
            Token::parse(&format!("{}B", "A".repeat(42))),
            Err(TokenError::Alphabet)
        );
        assert!(Token::parse(&format!("{}A", "A".repeat(42))).is_ok());
    }

    #[test]
    fn key_is_sha256_of_token_bytes() {
        let t = Token::parse(&"A".repeat(43)).unwrap();
        // SHA-256 of 32 zero bytes.
        assert_eq!(
            t.key().to_hex(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let t = Token::generate();
        let dbg = format!("{t:?} {:?}", t.key());
        assert!(!dbg.contains(&t.as_cookie_value()));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn handles_are_16_chars_and_parse_back() {
        let k = Token::generate().key();
        let h = k.handle();
        let s = h.to_string();
        assert_eq!(s.len(), HANDLE_CHARS);
        assert_eq!(Handle::parse(&s), Some(h));
        assert_eq!(Handle::parse("short"), None);
        assert_eq!(Handle::parse("!!!!!!!!!!!!!!!!"), None);
    }

    #[test]
    fn the_alphabet_check_accepts_dash_and_underscore_and_nothing_else_outside_alphanumerics() {
        // 42 x '-' then 'A' (zero padding bits): the dash and underscore of base64url.
        for c in ['-', '_'] {
            let s = format!("{}A", c.to_string().repeat(42));
            let t = Token::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(t.as_cookie_value(), s, "one spelling per token");
        }
        for c in ['+', '/', '.', ' ', '\0', '~', '%'] {
            let s = format!("{}{c}A", "A".repeat(41));
            assert_eq!(Token::parse(&s), Err(TokenError::Alphabet), "{c:?}");
        }
        // Every ASCII byte outside the alphabet, at the start, the middle and the end (where
        // the padding `=` would go); and non-ASCII characters of a 43-byte value.
        for b in (0u8..128).filter(|b| !b.is_ascii_alphanumeric() && *b != b'-' && *b != b'_') {
            for at in [0, 21, 42] {
                let mut v = vec![b'A'; 43];
                v[at] = b;
                let s = String::from_utf8(v).unwrap();
                assert_eq!(
                    Token::parse(&s),
                    Err(TokenError::Alphabet),
                    "{b:#x} at {at}"
                );
            }
        }
        for c in ['é', 'ß', 'Ā'] {
            let s = format!("{}{c}", "A".repeat(41));
            assert_eq!(s.len(), 43);
            assert_eq!(Token::parse(&s), Err(TokenError::Alphabet), "{c:?}");
        }
    }

    #[test]
    fn derived_secrets_depend_on_token_and_purpose_and_are_stable() {
        let a = Token::parse(&"A".repeat(43)).unwrap();
        let b = Token::parse(&format!("{}E", "A".repeat(42))).unwrap();
        assert_eq!(a.derive("csrf"), a.derive("csrf"), "deterministic");
        assert_ne!(a.derive("csrf"), b.derive("csrf"), "one secret per token");
        assert_ne!(a.derive("csrf"), a.derive("sign"), "one secret per purpose");
        assert_ne!(a.derive("ab"), a.derive("a"), "purpose is length-delimited");
        // Domain-separated: neither the key nor a plain hash of the token.
        assert_ne!(&a.derive(""), a.key().as_bytes());
        // SHA-256("ratatoskr.derive.v1\0" || "csrf" || "\0" || 32 zero bytes).
        let mut want = Sha256::new();
        want.update(b"ratatoskr.derive.v1\0csrf\0");
        want.update([0u8; 32]);
        assert_eq!(a.derive("csrf"), <[u8; 32]>::from(want.finalize()));
    }

    #[test]
    fn the_csrf_secret_is_a_domain_separated_hash_of_the_token() {
        let a = Token::parse(&"A".repeat(43)).unwrap();
        let b = Token::parse(&format!("{}E", "A".repeat(42))).unwrap();
        // SHA-256("ratatoskr.csrf.v1\0" || 32 zero bytes)[..16].
        let mut want = Sha256::new();
        want.update(b"ratatoskr.csrf.v1\0");
        want.update([0u8; 32]);
        assert_eq!(a.csrf_secret()[..], want.finalize()[..16]);
        assert_eq!(a.csrf_secret(), a.csrf_secret());
        assert_ne!(a.csrf_secret(), b.csrf_secret());
        assert_ne!(a.csrf_secret(), [0; 16]);
        // Not a slice of the key (which stores see) nor of another purpose's secret.
        assert_ne!(a.csrf_secret()[..], a.key().as_bytes()[..16]);
        assert_ne!(a.csrf_secret()[..], a.derive("csrf")[..16]);
    }

    #[test]
    fn keys_rebuild_from_exactly_32_bytes() {
        let k = Token::generate().key();
        assert_eq!(SessionKey::from_slice(k.as_bytes()), Some(k));
        assert_eq!(SessionKey::from_bytes(*k.as_bytes()), k);
        assert_eq!(SessionKey::from_slice(&k.as_bytes()[..31]), None);
        assert_eq!(SessionKey::from_slice(&[0u8; 33]), None);
        assert_eq!(SessionKey::from_slice(&[]), None);
        let t = Token::parse(&"A".repeat(43)).unwrap();
        assert_eq!(
            t.key().as_bytes(),
            &<[u8; 32]>::from(Sha256::digest([0u8; 32]))
        );
    }

    #[test]
    fn the_key_is_derived_once_and_equality_ignores_whether_it_was() {
        let t = Token::parse(&"A".repeat(43)).unwrap();
        let fresh = t.clone();
        let want = SessionKey(Sha256::digest([0u8; 32]).into());
        assert_eq!(t.key(), want);
        assert_eq!(t.key.get(), Some(want), "kept after the first call");
        assert_eq!(t.key(), want, "and answered from there");
        assert!(fresh.key.get().is_none(), "a clone made before has its own");
        assert_eq!(t, fresh, "equal whether derived or not");
        assert_eq!(
            t.clone().key.get(),
            Some(want),
            "a clone made after keeps it"
        );
        assert_ne!(t, Token::parse(&format!("{}E", "A".repeat(42))).unwrap());
    }

    #[test]
    fn threads_deriving_the_key_at_once_all_see_the_one_key() {
        for _ in 0..50 {
            let t = Token::generate();
            let want = SessionKey(Sha256::digest(t.bytes).into());
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..3 {
                            assert_eq!(t.key(), want);
                            assert_eq!(t.clone().key(), want);
                        }
                    });
                }
            });
        }
    }

    #[test]
    fn debug_forms_are_exact_and_redacted() {
        let t = Token::parse(&"A".repeat(43)).unwrap();
        let k = t.key();
        let h = k.handle();
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(format!("{h:?}"), format!("Handle({h})"));
        assert_eq!(format!("{k:?}"), format!("SessionKey(handle={h})"));
        // The handle is the first 12 bytes of SHA-256("ratatoskr.handle.v1\0" || key).
        let mut d = Sha256::new();
        d.update(b"ratatoskr.handle.v1\0");
        d.update(k.as_bytes());
        assert_eq!(h.to_string(), URL_SAFE_NO_PAD.encode(&d.finalize()[..12]));
        assert!(!format!("{k:?}").contains(&k.to_hex()));
    }

    #[test]
    fn handle_parse_requires_16_base64url_chars() {
        let h = Token::generate().key().handle();
        let s = h.to_string();
        assert_eq!(Handle::parse(&format!("{s}A")), None);
        assert_eq!(Handle::parse(&s[..15]), None);
        assert_eq!(Handle::parse(&"_".repeat(16)), Some(Handle([0xff; 12])));
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xf0, 0xa5, 0xff]), "000ff0a5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn random_bytes_are_not_constant() {
        let a: [u8; 32] = random_bytes();
        let b: [u8; 32] = random_bytes();
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
    }
}
