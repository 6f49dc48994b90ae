//! URLs, parsed by the `url` crate in one place: instance URLs (validated and normalized) and
//! the redaction of connection URLs for logs and messages.

use serde::Serialize;
use url::{Host, Url};

use crate::domain::invalid::{Invalid, UrlProblem};

/// Longest instance URL accepted.
pub const MAX_URL: usize = 200;

/// A fediverse instance's address, normalized to `https://host[:port]`: https only, a DNS name
/// with a dot (IDNs in punycode), no credentials, query, fragment or path, the default port
/// left out.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct InstanceUrl(String);

impl InstanceUrl {
    /// Validate and normalize what a user typed.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let bad = |p| Err(Invalid::InstanceUrl(p));
        let raw = raw.trim();
        if raw.len() > MAX_URL {
            return bad(UrlProblem::TooLong(MAX_URL));
        }
        let url = match Url::parse(raw) {
            Ok(url) => url,
            Err(url::ParseError::InvalidPort) => return bad(UrlProblem::Port),
            Err(_) if raw.to_ascii_lowercase().starts_with("https://") => {
                return bad(UrlProblem::Host);
            }
            Err(_) => return bad(UrlProblem::NotHttps),
        };
        if url.scheme() != "https" {
            return bad(UrlProblem::NotHttps);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return bad(UrlProblem::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return bad(UrlProblem::QueryOrFragment);
        }
        if url.path() != "/" {
            return bad(UrlProblem::Path);
        }
        let host = match url.host() {
            Some(Host::Domain(d)) => d,
            Some(Host::Ipv4(_) | Host::Ipv6(_)) => return bad(UrlProblem::Address),
            None => return bad(UrlProblem::Host),
        };
        if !is_dns_name(host) {
            return bad(UrlProblem::Host);
        }
        Ok(InstanceUrl(match url.port() {
            Some(0) => return bad(UrlProblem::Port),
            Some(p) => format!("https://{host}:{p}"),
            None => format!("https://{host}"),
        }))
    }

    /// A URL read back from the database (written through [`InstanceUrl::parse`]).
    pub(crate) fn from_stored(url: String) -> Self {
        InstanceUrl(url)
    }

    /// The normalized URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// At least two labels of `a-z 0-9 -` (not starting or ending with `-`), the last not all
/// digits, at most 253 characters.
fn is_dns_name(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(label_ok)
        && !labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// A connection URL (`postgres://user:password@host/db`, `redis://…`) fit for logs and error
/// messages: any password replaced by `***`. One that does not parse is not shown at all
/// when it might hold credentials.
pub fn redact(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            // Only fails for URLs that cannot have credentials, which this one has.
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) if raw.contains('@') => "(a URL that does not parse; not shown)".to_owned(),
        Err(_) => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        InstanceUrl::parse(s).unwrap().to_string()
    }

    #[test]
    fn instance_urls_are_normalized() {
        assert_eq!(norm("https://Mastodon.Social/"), "https://mastodon.social");
        assert_eq!(norm("https://pix.example:8443"), "https://pix.example:8443");
        assert_eq!(norm("https://pix.example:443"), "https://pix.example");
        assert_eq!(
            norm("https://xn--bcher-kva.example"),
            "https://xn--bcher-kva.example"
        );
        // An internationalized name is kept in its punycode form, which is what is shown.
        assert_eq!(
            norm("https://bücher.example"),
            "https://xn--bcher-kva.example"
        );
    }

    #[test]
    fn instance_urls_are_refused_with_the_reason() {
        let why = |s: &str| match InstanceUrl::parse(s) {
            Err(Invalid::InstanceUrl(p)) => p,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(why("http://mastodon.social"), UrlProblem::NotHttps);
        assert_eq!(why("mastodon.social"), UrlProblem::NotHttps);
        assert_eq!(why("javascript:alert(1)"), UrlProblem::NotHttps);
        assert_eq!(why("https://"), UrlProblem::Host);
        assert_eq!(why("https://localhost"), UrlProblem::Host);
        assert_eq!(why("https://bad host.example"), UrlProblem::Host);
        assert_eq!(why("https://-bad.example"), UrlProblem::Host);
        assert_eq!(why("https://bad_host.example"), UrlProblem::Host);
        assert_eq!(
            why("https://user:pw@mastodon.social"),
            UrlProblem::Credentials
        );
        assert_eq!(
            why("https://mastodon.social/#x"),
            UrlProblem::QueryOrFragment
        );
        assert_eq!(
            why("https://mastodon.social/?a=b"),
            UrlProblem::QueryOrFragment
        );
        assert_eq!(why("https://mastodon.social/path"), UrlProblem::Path);
        assert_eq!(why("https://127.0.0.1"), UrlProblem::Address);
        assert_eq!(why("https://[::1]"), UrlProblem::Address);
        assert_eq!(why("https://mastodon.social:0"), UrlProblem::Port);
        assert_eq!(why("https://mastodon.social:99999"), UrlProblem::Port);
        let long = format!("https://{}.example", "a".repeat(200));
        assert_eq!(why(&long), UrlProblem::TooLong(MAX_URL));
    }

    #[test]
    fn passwords_are_redacted_from_connection_urls() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("redis://:secret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://./data/x.db"), "sqlite://./data/x.db");
        assert!(!redact("postgres://u:sec ret@h:x/db").contains("sec"));
    }
}
