//! Platform access tokens sealed with XChaCha20-Poly1305.
//!
//! The key is derived from `RATATOSKR_SECRET_KEY` (SHA-256 with a purpose label), or, when that
//! is unset, read from a key file that is generated on first start (32 random bytes, base64url,
//! created with mode 0600 and never overwritten). A sealed token is
//! `version (1) || nonce (24) || ciphertext+tag`; the associated data binds it to its owner,
//! platform type, instance and account, so a sealed token copied into another row does not
//! open. Plain tokens exist only in the request that receives one and in [`TokenCipher::open`]'s
//! caller; they are never cached, logged or returned.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ratatoskr_core::token::random_bytes;
use sha2::{Digest, Sha256};

use crate::domain::platform::PlatformType;
use crate::domain::urls::InstanceUrl;
use crate::domain::user::UserId;

const SEAL_VERSION: u8 = 1;

/// Seals and opens platform access tokens.
#[derive(Clone)]
pub struct TokenCipher {
    key: [u8; 32],
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCipher(<key redacted>)")
    }
}

/// Where the key came from (printed at start-up, never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `RATATOSKR_SECRET_KEY`.
    Environment,
    /// An existing key file.
    File(std::path::PathBuf),
    /// A key file generated just now.
    Generated(std::path::PathBuf),
}

impl TokenCipher {
    /// A cipher from configured key material (any text of 32+ characters).
    pub fn from_secret(secret: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"ratatoskr.platform-token-key.v1\0");
        h.update(secret.as_bytes());
        TokenCipher {
            key: h.finalize().into(),
        }
    }

    /// The configured key, or the key file's (generated with mode 0600 when missing).
    pub fn load(secret: Option<&str>, key_file: &Path) -> anyhow::Result<(Self, KeySource)> {
        if let Some(s) = secret {
            return Ok((Self::from_secret(s), KeySource::Environment));
        }
        match std::fs::read_to_string(key_file) {
            Ok(text) => {
                let text = text.trim();
                anyhow::ensure!(
                    text.len() >= 32,
                    "the key file {} is too short; delete it only if no platform tokens were sealed with it",
                    key_file.display()
                );
                Ok((
                    Self::from_secret(text),
                    KeySource::File(key_file.to_owned()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = key_file.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let key: [u8; 32] = random_bytes();
                let text = URL_SAFE_NO_PAD.encode(key);
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(key_file) {
                    Ok(mut f) => {
                        f.write_all(text.as_bytes())?;
                        f.write_all(b"\n")?;
                        f.sync_all()?;
                        Ok((
                            Self::from_secret(&text),
                            KeySource::Generated(key_file.to_owned()),
                        ))
                    }
                    // Another instance created it at the same moment: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load(None, key_file)
                    }
                    Err(e) => Err(anyhow::anyhow!(
                        "cannot create the key file {}: {e}",
                        key_file.display()
                    )),
                }
            }
            Err(e) => Err(anyhow::anyhow!(
                "cannot read the key file {}: {e}",
                key_file.display()
            )),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.key.into())
    }

    /// Seal `token` for the row described by `aad`.
    pub fn seal(&self, token: &str, aad: &[u8]) -> Vec<u8> {
        let nonce: [u8; 24] = random_bytes();
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: token.as_bytes(),
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message of this size");
        let mut out = Vec::with_capacity(1 + 24 + sealed.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Open a sealed token; `None` when it was sealed under another key or for another row.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<String> {
        let (&version, rest) = sealed.split_first()?;
        if version != SEAL_VERSION || rest.len() < 24 + 16 {
            return None;
        }
        let (nonce, ct) = rest.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().ok()?;
        let plain = self
            .cipher()
            .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad })
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

/// The associated data that binds a sealed token to its row.
pub fn token_aad(
    user_id: UserId,
    platform_type: PlatformType,
    instance_url: &InstanceUrl,
    username: &str,
) -> Vec<u8> {
    let t = platform_type.as_str();
    format!("ratatoskr.platform.v1\0{user_id}\0{t}\0{instance_url}\0{username}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_tokens_open_only_with_the_same_key_and_row() {
        let c = TokenCipher::from_secret("a secret of at least thirty-two characters");
        let aad = token_aad(UserId(1), PlatformType::Mastodon, &url(), "alice");
        let sealed = c.seal("tok-123", &aad);
        assert!(!sealed.windows(7).any(|w| w == b"tok-123"));
        assert_eq!(c.open(&sealed, &aad).as_deref(), Some("tok-123"));
        let other_row = token_aad(UserId(2), PlatformType::Mastodon, &url(), "alice");
        assert_eq!(c.open(&sealed, &other_row), None);
        let other_key = TokenCipher::from_secret("another secret of at least thirty-two chars");
        assert_eq!(other_key.open(&sealed, &aad), None);
        assert_eq!(c.open(&sealed[..10], &aad), None);
        // Two seals of one token differ (fresh nonces).
        assert_ne!(sealed, c.seal("tok-123", &aad));
    }

    #[test]
    fn the_key_file_is_generated_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!(
            "ratatoskr-key-{}",
            URL_SAFE_NO_PAD.encode(random_bytes::<6>())
        ));
        let file = dir.join("secret.key");
        let (a, src) = TokenCipher::load(None, &file).unwrap();
        assert_eq!(src, KeySource::Generated(file.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (b, src) = TokenCipher::load(None, &file).unwrap();
        assert_eq!(src, KeySource::File(file.clone()));
        let aad = b"row";
        assert_eq!(b.open(&a.seal("x", aad), aad).as_deref(), Some("x"));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn url() -> InstanceUrl {
        InstanceUrl::parse("https://example.social").unwrap()
    }

    #[test]
    fn the_associated_data_is_what_earlier_versions_sealed_under() {
        // Tokens sealed before the typed fields must still open.
        assert_eq!(
            token_aad(UserId(7), PlatformType::Pixelfed, &url(), "bob"),
            b"ratatoskr.platform.v1\x007\x00pixelfed\x00https://example.social\x00bob".to_vec()
        );
    }
}
