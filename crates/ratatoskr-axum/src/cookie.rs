//! Finding the session cookie in a request, and writing `Set-Cookie` headers.
//!
//! [`find_session_cookie`] is a pure function over the raw bytes of every `Cookie` header: the
//! layer calls it, the fuzz target (`fuzz/fuzz_targets/cookie_parse.rs`) calls it, and a unit test
//! loops random input through it. Whatever it is given, it answers, and only a value that
//! [`Token::parse`] accepts can ever reach a store.

use ratatoskr_core::Token;
use ratatoskr_core::token::TokenError;

/// What the request's `Cookie` headers say about the session cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum CookieLookup {
    /// No cookie of that name: a cookieless request.
    Absent,
    /// Exactly one well-formed token (possibly repeated with the same value).
    Token(Token),
    /// The cookie is present but its value could never have been issued.
    Malformed(TokenError),
    /// The value is not ASCII text at all.
    NotText,
    /// Two or more session cookies with different values (cookie tossing, or a stale cookie at
    /// another path): none of them is trusted.
    Ambiguous,
}

impl CookieLookup {
    /// A short stable name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            CookieLookup::Absent => "absent",
            CookieLookup::Token(_) => "token",
            CookieLookup::Malformed(_) => "malformed",
            CookieLookup::NotText => "not_text",
            CookieLookup::Ambiguous => "ambiguous",
        }
    }
}

/// Find the cookie called `name` in the raw values of all `Cookie` headers of a request.
///
/// Pairs are separated by `;`, optional whitespace around each pair is ignored, and a pair
/// without `=` is skipped. Names compare exactly (cookie names are case-sensitive). A value that
/// appears more than once with the same spelling is one cookie; different values are
/// [`CookieLookup::Ambiguous`].
///
/// ```
/// use ratatoskr_axum::cookie::{find_session_cookie, CookieLookup};
/// let token = ratatoskr_core::Token::generate();
/// let header = format!("theme=dark; __Host-ratatoskr={}", token.as_cookie_value());
/// assert_eq!(
///     find_session_cookie([header.as_bytes()], "__Host-ratatoskr"),
///     CookieLookup::Token(token)
/// );
/// assert_eq!(find_session_cookie([&b"a=b"[..]], "__Host-ratatoskr"), CookieLookup::Absent);
/// ```
pub fn find_session_cookie<'a, I>(headers: I, name: &str) -> CookieLookup
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let name = name.as_bytes();
    let mut found: Option<&[u8]> = None;
    for header in headers {
        for pair in header.split(|&b| b == b';') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim(&pair[..eq]) != name {
                continue;
            }
            let value = trim(&pair[eq + 1..]);
            match found {
                Some(prev) if prev != value => return CookieLookup::Ambiguous,
                _ => found = Some(value),
            }
        }
    }
    let Some(value) = found else {
        return CookieLookup::Absent;
    };
    let Ok(text) = std::str::from_utf8(value) else {
        return CookieLookup::NotText;
    };
    match Token::parse(text) {
        Ok(token) => CookieLookup::Token(token),
        Err(e) => CookieLookup::Malformed(e),
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The attributes every session cookie carries; built once from the configuration.
#[derive(Clone, Debug)]
pub(crate) struct CookieSpec {
    pub name: String,
    /// `"; Path=/; Secure; HttpOnly; SameSite=Lax"` (without `Secure` in insecure dev mode).
    pub attrs: String,
}

impl CookieSpec {
    /// `Set-Cookie` for a live token. `max_age_secs`: `None` for a browser-session cookie.
    pub fn set(&self, token: &Token, max_age_secs: Option<i64>) -> String {
        let mut s = format!("{}={}{}", self.name, token.as_cookie_value(), self.attrs);
        if let Some(age) = max_age_secs {
            s.push_str(&format!("; Max-Age={}", age.max(0)));
        }
        s
    }

    /// `Set-Cookie` that deletes the cookie: same name and attributes, empty value, expired.
    pub fn removal(&self) -> String {
        format!(
            "{}={}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            self.name, self.attrs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "__Host-ratatoskr";

    fn lookup(headers: &[&[u8]]) -> CookieLookup {
        find_session_cookie(headers.iter().copied(), NAME)
    }

    #[test]
    fn finds_the_cookie_among_others_and_across_headers() {
        let t = Token::generate();
        let v = t.as_cookie_value();
        let h = format!("a=1;{NAME}={v} ; b=2");
        assert_eq!(lookup(&[h.as_bytes()]), CookieLookup::Token(t.clone()));
        let h2 = format!("{NAME}={v}");
        assert_eq!(
            lookup(&[b"x=y", h2.as_bytes()]),
            CookieLookup::Token(t.clone())
        );
        // The same value twice is still one cookie.
        assert_eq!(
            lookup(&[h2.as_bytes(), h2.as_bytes()]),
            CookieLookup::Token(t)
        );
    }

    #[test]
    fn two_different_session_cookies_are_ambiguous() {
        let a = format!("{NAME}={}", Token::generate().as_cookie_value());
        let b = format!("{NAME}={}", Token::generate().as_cookie_value());
        let both = format!("{a}; {b}");
        assert_eq!(lookup(&[both.as_bytes()]), CookieLookup::Ambiguous);
        assert_eq!(
            lookup(&[a.as_bytes(), b.as_bytes()]),
            CookieLookup::Ambiguous
        );
    }

    #[test]
    fn names_are_exact_and_case_sensitive() {
        let v = Token::generate().as_cookie_value();
        for h in [
            format!("__host-ratatoskr={v}"),
            format!("__Host-ratatoskrX={v}"),
            format!("X__Host-ratatoskr={v}"),
            format!("{NAME}{v}"),
        ] {
            assert_eq!(lookup(&[h.as_bytes()]), CookieLookup::Absent, "{h}");
        }
    }

    #[test]
    fn bad_values_are_malformed_or_not_text() {
        assert!(matches!(
            lookup(&[format!("{NAME}=short").as_bytes()]),
            CookieLookup::Malformed(_)
        ));
        assert!(matches!(
            lookup(&[format!("{NAME}=\"{}\"", "A".repeat(43)).as_bytes()]),
            CookieLookup::Malformed(_)
        ));
        let mut raw = format!("{NAME}=").into_bytes();
        raw.extend_from_slice(&[0xff; 43]);
        assert_eq!(lookup(&[&raw]), CookieLookup::NotText);
    }

    /// The same function the fuzz target calls, over pseudo-random input: it must answer for
    /// anything, and anything it accepts must be a token that spells back to the cookie value.
    #[test]
    fn random_inputs_never_panic_and_only_real_tokens_are_accepted() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: &[u8] = b"AZaz09-_=; \t\"\\,\x00\xff\xc3\xa9_Host-ratatoskr";
        let real = Token::generate().as_cookie_value();
        for i in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut buf: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if i % 3 == 0 {
                let at = (next() as usize) % (buf.len() + 1);
                let ins = format!("{NAME}={real}");
                buf.splice(at..at, ins.bytes());
            }
            match lookup(&[&buf]) {
                CookieLookup::Token(t) => {
                    let v = t.as_cookie_value();
                    assert!(
                        buf.windows(v.len()).any(|w| w == v.as_bytes()),
                        "accepted a token that is not in the input"
                    );
                }
                CookieLookup::Absent
                | CookieLookup::Malformed(_)
                | CookieLookup::NotText
                | CookieLookup::Ambiguous => {}
            }
        }
    }

    #[test]
    fn set_and_removal_cookies_have_the_same_attributes() {
        let spec = CookieSpec {
            name: NAME.into(),
            attrs: "; Path=/; Secure; HttpOnly; SameSite=Lax".into(),
        };
        let t = Token::generate();
        assert_eq!(
            spec.set(&t, None),
            format!(
                "{NAME}={}; Path=/; Secure; HttpOnly; SameSite=Lax",
                t.as_cookie_value()
            )
        );
        assert!(spec.set(&t, Some(60)).ends_with("; Max-Age=60"));
        assert_eq!(
            spec.removal(),
            format!(
                "{NAME}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
            )
        );
    }

    #[test]
    fn lookup_names_are_stable() {
        let t = Token::generate();
        let names: Vec<&str> = [
            CookieLookup::Absent,
            CookieLookup::Token(t),
            CookieLookup::Malformed(TokenError::Alphabet),
            CookieLookup::NotText,
            CookieLookup::Ambiguous,
        ]
        .iter()
        .map(CookieLookup::as_str)
        .collect();
        assert_eq!(
            names,
            ["absent", "token", "malformed", "not_text", "ambiguous"]
        );
    }

    #[test]
    fn spaces_and_tabs_around_pairs_names_and_values_are_ignored_and_nothing_else_is() {
        let t = Token::generate();
        let v = t.as_cookie_value();
        for h in [
            format!(" \t{NAME} \t= \t{v} \t; other=1"),
            format!("{NAME}={v}"),
            format!("a=b;{NAME}={v}"),
            format!(";;{NAME}={v};;"),
            format!("noequals; {NAME}={v}"),
        ] {
            assert_eq!(
                lookup(&[h.as_bytes()]),
                CookieLookup::Token(t.clone()),
                "{h:?}"
            );
        }
        // The value starts right after the first `=`: a second `=` is part of the value.
        assert!(matches!(
            lookup(&[format!("{NAME}=={v}").as_bytes()]),
            CookieLookup::Malformed(TokenError::Length(44))
        ));
        assert!(matches!(
            lookup(&[format!("{NAME}=\n{v}").as_bytes()]),
            CookieLookup::Malformed(TokenError::Length(44))
        ));
        assert_eq!(lookup(&[]), CookieLookup::Absent);
        assert_eq!(lookup(&[b"", b";", b"="]), CookieLookup::Absent);
        assert!(matches!(
            lookup(&[format!("{NAME}=").as_bytes()]),
            CookieLookup::Malformed(TokenError::Length(0))
        ));
    }

    #[test]
    fn a_malformed_duplicate_makes_the_lookup_ambiguous_not_a_token() {
        let v = Token::generate().as_cookie_value();
        let h = format!("{NAME}={v}; {NAME}=garbage");
        assert_eq!(lookup(&[h.as_bytes()]), CookieLookup::Ambiguous);
        let h = format!("{NAME}=garbage; {NAME}={v}");
        assert_eq!(lookup(&[h.as_bytes()]), CookieLookup::Ambiguous);
        // Identical after trimming: still one cookie.
        let h = format!("{NAME}={v}; {NAME}= {v}\t");
        assert!(matches!(lookup(&[h.as_bytes()]), CookieLookup::Token(_)));
    }

    #[test]
    fn max_age_is_never_negative() {
        let spec = CookieSpec {
            name: NAME.into(),
            attrs: "; Path=/".into(),
        };
        let t = Token::generate();
        assert!(spec.set(&t, Some(-5)).ends_with("; Path=/; Max-Age=0"));
        assert!(!spec.set(&t, None).contains("Max-Age"));
    }
}
