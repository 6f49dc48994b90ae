//! Users: their id, their login name (validated once, here), the user row, and the password
//! rules.

use serde::{Deserialize, Serialize};

use crate::domain::invalid::Invalid;
use crate::domain::time::Timestamp;

/// A user's numeric id; its decimal form is the session's user id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl UserId {
    /// The form sessions carry as their user id.
    pub fn session_user_id(self) -> String {
        self.0.to_string()
    }

    /// The id a session names, if it names one of ours.
    pub fn from_session_user_id(s: &str) -> Option<Self> {
        s.parse().ok().map(UserId)
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A login name: 3–32 of `a-z 0-9 _ . -`, starting with a letter or digit, folded to
/// lowercase. Only [`UserName::parse`] makes one (and the database, which holds only those).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    /// Validate and normalize (trimmed, lowercase).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim().to_ascii_lowercase();
        let ok = (3..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(UserName(name))
        } else {
            Err(Invalid::Username)
        }
    }

    /// A name read back from the database (written through [`UserName::parse`]).
    pub(crate) fn from_stored(name: String) -> Self {
        UserName(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for UserName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A user (never with the password hash).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct User {
    /// Numeric id.
    pub id: UserId,
    /// Login name.
    pub username: UserName,
    /// Administrator.
    pub is_admin: bool,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
    /// When the account was created.
    pub created_at: Timestamp,
}

/// Check a new password: 8 to 128 characters (any characters; length is what counts).
pub fn check_new_password(raw: &str) -> Result<(), Invalid> {
    let n = raw.chars().count();
    if n < 8 {
        Err(Invalid::WeakPassword)
    } else if n > 128 {
        Err(Invalid::PasswordTooLong)
    } else {
        Ok(())
    }
}

/// Whether a password offered at login can be right at all (longer ones are not worth hashing).
pub fn plausible_password(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_validated_and_folded() {
        assert_eq!(UserName::parse(" Alice ").unwrap().as_str(), "alice");
        for bad in [
            "al",
            "_alice",
            "alice smith",
            &"a".repeat(33),
            "",
            "ali\u{e9}",
        ] {
            assert_eq!(UserName::parse(bad), Err(Invalid::Username), "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_judged_by_length() {
        assert_eq!(check_new_password("short"), Err(Invalid::WeakPassword));
        assert_eq!(
            check_new_password(&"x".repeat(129)),
            Err(Invalid::PasswordTooLong)
        );
        assert!(check_new_password("eight ch").is_ok());
        assert!(!plausible_password(""));
        assert!(!plausible_password(&"x".repeat(1025)));
    }

    #[test]
    fn session_user_ids_round_trip() {
        assert_eq!(UserId(42).session_user_id(), "42");
        assert_eq!(UserId::from_session_user_id("42"), Some(UserId(42)));
        assert_eq!(UserId::from_session_user_id("x"), None);
    }
}
