//! Input rules: user names, passwords, platform fields. Each failure is a `(code, message)`
//! pair the routes answer with 400 (or show in the page).

/// A refusal: stable code and a sentence for people.
pub type Invalid = (&'static str, String);

/// Longest instance URL accepted.
pub const MAX_URL: usize = 200;
/// Longest platform display name.
pub const MAX_NAME: usize = 64;
/// Longest account name on an instance.
pub const MAX_ACCOUNT: usize = 64;
/// Longest access token.
pub const MAX_TOKEN: usize = 512;

/// A login name: 3–32 of `a-z 0-9 _ . -`, starting with a letter or digit; folded to
/// lowercase.
pub fn username(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim().to_ascii_lowercase();
    let ok = (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(name)
    } else {
        Err((
            "invalid_username",
            "a user name is 3 to 32 letters, digits, '_', '.' or '-', starting with a letter or digit"
                .into(),
        ))
    }
}

/// A password: 8 to 128 characters (any characters; length is what counts).
pub fn password(raw: &str) -> Result<(), Invalid> {
    let n = raw.chars().count();
    if n < 8 {
        Err((
            "weak_password",
            "a password needs at least 8 characters".into(),
        ))
    } else if n > 128 {
        Err((
            "password_too_long",
            "a password may have at most 128 characters".into(),
        ))
    } else {
        Ok(())
    }
}

/// `pixelfed` or `mastodon`.
pub fn platform_type(raw: &str) -> Result<&'static str, Invalid> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "pixelfed" => Ok("pixelfed"),
        "mastodon" => Ok("mastodon"),
        _ => Err((
            "invalid_platform_type",
            "the platform type is \"pixelfed\" or \"mastodon\"".into(),
        )),
    }
}

/// A display name: 1–64 characters, no control characters; trimmed.
pub fn display_name(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err((
            "invalid_name",
            format!("the name is 1 to {MAX_NAME} characters without control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// An account name on an instance: 1–64 of `A-Z a-z 0-9 _ . -`, an optional leading `@`
/// dropped.
pub fn account(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim().trim_start_matches('@');
    let ok = (1..=MAX_ACCOUNT).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err((
            "invalid_account",
            format!("the account name is 1 to {MAX_ACCOUNT} letters, digits, '_', '.' or '-'"),
        ))
    }
}

/// An access token: 1–512 visible ASCII characters.
pub fn access_token(raw: &str) -> Result<(), Invalid> {
    if (1..=MAX_TOKEN).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err((
            "invalid_access_token",
            format!("the access token is 1 to {MAX_TOKEN} visible ASCII characters"),
        ))
    }
}

/// An instance URL, normalized to `https://host[:port]`: https only, a DNS name with a dot
/// (IDNs in punycode), no credentials, query or fragment, at most a `/` as path, at most 200
/// characters.
pub fn instance_url(raw: &str) -> Result<String, Invalid> {
    let bad = |why: &str| -> Invalid {
        (
            "invalid_instance_url",
            format!("the instance URL must look like https://example.social ({why})"),
        )
    };
    let raw = raw.trim();
    if raw.len() > MAX_URL {
        return Err(bad(&format!("at most {MAX_URL} characters")));
    }
    let lower = raw.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("https://") else {
        return Err(bad("it must start with https://"));
    };
    if rest.contains('@') {
        return Err(bad("no user name or password in it"));
    }
    if rest.contains('#') || rest.contains('?') {
        return Err(bad("no query or fragment"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err(bad("no path"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p.parse().map_err(|_| bad("the port is a number"))?;
            if port == 0 {
                return Err(bad("the port is a number from 1 to 65535"));
            }
            (h, Some(port))
        }
        None => (authority, None),
    };
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(bad("a host name such as example.social"));
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("a host name, not an IP address"));
    }
    Ok(match port {
        Some(p) if p != 443 => format!("https://{host}:{p}"),
        _ => format!("https://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_urls() {
        assert_eq!(
            instance_url("https://Mastodon.Social/").unwrap(),
            "https://mastodon.social"
        );
        assert_eq!(
            instance_url("https://pix.example:8443").unwrap(),
            "https://pix.example:8443"
        );
        assert_eq!(
            instance_url("https://pix.example:443").unwrap(),
            "https://pix.example"
        );
        assert_eq!(
            instance_url("https://xn--bcher-kva.example").unwrap(),
            "https://xn--bcher-kva.example"
        );
        for bad in [
            "http://mastodon.social",
            "mastodon.social",
            "https://",
            "https://localhost",
            "https://user:pw@mastodon.social",
            "https://mastodon.social/#x",
            "https://mastodon.social/?a=b",
            "https://mastodon.social/path",
            "https://127.0.0.1",
            "https://-bad.example",
            "https://bad_host.example",
            "https://mastodon.social:0",
            "https://mastodon.social:99999",
            "https://bücher.example",
            "javascript:alert(1)",
        ] {
            assert!(instance_url(bad).is_err(), "{bad}");
        }
        let long = format!("https://{}.example", "a".repeat(200));
        assert!(instance_url(&long).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(username(" Alice ").unwrap(), "alice");
        assert!(username("al").is_err());
        assert!(username("_alice").is_err());
        assert!(username("alice smith").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert_eq!(account("@alice").unwrap(), "alice");
        assert!(account("al ice").is_err());
        assert!(display_name("").is_err());
        assert!(display_name("a\u{7}").is_err());
        assert!(display_name(&"x".repeat(65)).is_err());
        assert!(password("short").is_err());
        assert!(password(&"x".repeat(129)).is_err());
        assert!(access_token("has space").is_err());
        assert!(access_token(&"x".repeat(513)).is_err());
        assert_eq!(platform_type("Mastodon").unwrap(), "mastodon");
        assert!(platform_type("twitter").is_err());
    }
}
