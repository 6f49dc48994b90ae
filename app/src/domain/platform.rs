//! Platform connections: a user's account on a fediverse instance, with the rules for each field.

use serde::{Deserialize, Serialize};

use crate::domain::invalid::Invalid;
use crate::domain::time::Timestamp;
use crate::domain::urls::InstanceUrl;

/// Longest platform display name.
pub const MAX_NAME: usize = 64;
/// Longest account name on an instance.
pub const MAX_ACCOUNT: usize = 64;
/// Longest access token.
pub const MAX_TOKEN: usize = 512;

/// A platform connection's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlatformId(pub i64);

/// The kinds of instance the application connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformType {
    /// A Pixelfed instance.
    Pixelfed,
    /// A Mastodon instance.
    Mastodon,
}

impl PlatformType {
    /// Case-insensitive, trimmed.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "pixelfed" => Ok(PlatformType::Pixelfed),
            "mastodon" => Ok(PlatformType::Mastodon),
            _ => Err(Invalid::PlatformType),
        }
    }

    /// `pixelfed` or `mastodon` (as stored).
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformType::Pixelfed => "pixelfed",
            PlatformType::Mastodon => "mastodon",
        }
    }
}

/// A validated display name: 1–64 characters, no control characters, trimmed.
pub fn display_name(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Invalid::DisplayName(MAX_NAME));
    }
    Ok(name.to_owned())
}

/// A validated account name on an instance: 1–64 of `A-Z a-z 0-9 _ . -`, an optional leading
/// `@` dropped.
pub fn account(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim().trim_start_matches('@');
    let ok = (1..=MAX_ACCOUNT).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(Invalid::Account(MAX_ACCOUNT))
    }
}

/// Check an access token: 1–512 visible ASCII characters.
pub fn check_access_token(raw: &str) -> Result<(), Invalid> {
    if (1..=MAX_TOKEN).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Invalid::AccessToken(MAX_TOKEN))
    }
}

/// A platform connection, as shown (the sealed token stays in the database).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Platform {
    /// Id.
    pub id: PlatformId,
    /// Its type.
    pub platform_type: PlatformType,
    /// The user's name for it.
    pub name: String,
    /// The instance.
    pub instance_url: InstanceUrl,
    /// The account on the instance.
    pub username: String,
    /// Inactive connections cannot be switched to.
    pub active: bool,
    /// When it was added.
    pub created_at: Timestamp,
}

/// A new connection's fields, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPlatform {
    /// Its type.
    pub platform_type: PlatformType,
    /// Display name.
    pub name: String,
    /// The instance.
    pub instance_url: InstanceUrl,
    /// The account on the instance.
    pub username: String,
}

/// What the session keeps about its active platform: the id (checked against the database on
/// every read) and the type (for analytics without a database query per session).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveRef {
    /// The platform's id.
    pub id: PlatformId,
    /// Its type.
    pub platform_type: PlatformType,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_fields_follow_their_rules() {
        assert_eq!(account("@alice").unwrap(), "alice");
        assert_eq!(account("al ice"), Err(Invalid::Account(MAX_ACCOUNT)));
        assert_eq!(display_name(""), Err(Invalid::DisplayName(MAX_NAME)));
        assert_eq!(display_name("a\u{7}"), Err(Invalid::DisplayName(MAX_NAME)));
        assert_eq!(
            display_name(&"x".repeat(65)),
            Err(Invalid::DisplayName(MAX_NAME))
        );
        assert_eq!(
            check_access_token("has space"),
            Err(Invalid::AccessToken(MAX_TOKEN))
        );
        assert_eq!(
            check_access_token(&"x".repeat(513)),
            Err(Invalid::AccessToken(MAX_TOKEN))
        );
        assert_eq!(PlatformType::parse("Mastodon"), Ok(PlatformType::Mastodon));
        assert_eq!(PlatformType::parse("twitter"), Err(Invalid::PlatformType));
        assert_eq!(
            serde_json::to_value(PlatformType::Pixelfed).unwrap(),
            "pixelfed"
        );
    }
}
