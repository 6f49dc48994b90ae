//! What is wrong with an input: one variant per rule, each with a stable code (the API's
//! `error.code`) and a sentence for people (its `Display`).

/// A refused input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not a possible login name.
    #[error(
        "a user name is 3 to 32 letters, digits, '_', '.' or '-', starting with a letter or digit"
    )]
    Username,
    /// A password shorter than 8 characters.
    #[error("a password needs at least 8 characters")]
    WeakPassword,
    /// A password longer than 128 characters.
    #[error("a password may have at most 128 characters")]
    PasswordTooLong,
    /// Neither `pixelfed` nor `mastodon`.
    #[error("the platform type is \"pixelfed\" or \"mastodon\"")]
    PlatformType,
    /// An empty, over-long (longer than the limit given) or control-character display name.
    #[error("the name is 1 to {0} characters without control characters")]
    DisplayName(usize),
    /// Not an account name on an instance (of at most the length given).
    #[error("the account name is 1 to {0} letters, digits, '_', '.' or '-'")]
    Account(usize),
    /// Not an access token (of at most the length given).
    #[error("the access token is 1 to {0} visible ASCII characters")]
    AccessToken(usize),
    /// Not an instance URL; says why.
    #[error("the instance URL must look like https://example.social ({0})")]
    InstanceUrl(UrlProblem),
}

/// Why an instance URL was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    /// Longer than the limit given.
    #[error("at most {0} characters")]
    TooLong(usize),
    /// Not `https://…`.
    #[error("it must start with https://")]
    NotHttps,
    /// Not a URL at all.
    #[error("it is not a URL")]
    Malformed,
    /// With a user name or password.
    #[error("no user name or password in it")]
    Credentials,
    /// With a query or fragment.
    #[error("no query or fragment")]
    QueryOrFragment,
    /// With a path.
    #[error("no path")]
    Path,
    /// Port 0.
    #[error("the port is a number from 1 to 65535")]
    Port,
    /// An address, not a name.
    #[error("a host name, not an IP address")]
    Address,
    /// Not a public-looking DNS name.
    #[error("a host name such as example.social")]
    Host,
}

impl Invalid {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Invalid::Username => "invalid_username",
            Invalid::WeakPassword => "weak_password",
            Invalid::PasswordTooLong => "password_too_long",
            Invalid::PlatformType => "invalid_platform_type",
            Invalid::DisplayName(_) => "invalid_name",
            Invalid::Account(_) => "invalid_account",
            Invalid::AccessToken(_) => "invalid_access_token",
            Invalid::InstanceUrl(_) => "invalid_instance_url",
        }
    }
}
