//! Per-client rate limits on the routes that cost a password hash: login, registration and
//! password change (GCRA, from the `governor` crate).
//!
//! The client is the TCP peer's address, or, when the peer is a configured trusted proxy
//! (`RATATOSKR_TRUSTED_PROXIES`), the address it forwards ([`crate::domain::net`]). Behind a proxy that
//! is not configured as trusted every client is the proxy, so configure it, or turn the limits
//! `off` and limit at the proxy. IPv6 clients are keyed by
//! their /64 network, which is what one subscriber usually gets, so hopping between the
//! addresses of one network does not reset the limit.
//!
//! These limits bound how fast one client can try; the per-name lockout
//! ([`crate::services::accounts::Accounts::authenticate`]) bounds how many guesses one account
//! gets from everyone together, and the hashing pool ([`crate::services::hasher::Hasher`])
//! bounds the work of all of them.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::domain::rate_limit::RateLimit;
use crate::services::error::ServiceError;

/// One per-client limit (or none, when configured `off`).
#[derive(Clone)]
pub struct ClientLimit {
    limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    clock: DefaultClock,
    what: &'static str,
}

impl std::fmt::Debug for ClientLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimit")
            .field("what", &self.what)
            .field("on", &self.limiter.is_some())
            .finish()
    }
}

impl ClientLimit {
    /// A limit of `limit` for the action named `what` (used in the refusal's message).
    pub fn new(limit: RateLimit, what: &'static str) -> Self {
        let limiter = limit.0.map(|(n, per)| {
            let period = (per / n.get()).max(Duration::from_nanos(1));
            let quota = Quota::with_period(period)
                .expect("a period of at least one nanosecond")
                .allow_burst(n);
            Arc::new(RateLimiter::keyed(quota))
        });
        ClientLimit {
            limiter,
            clock: DefaultClock::default(),
            what,
        }
    }

    /// Count one request of `peer`; `Err` with how long to wait when it is over its limit.
    pub fn check(&self, peer: Option<IpAddr>) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&client_key(peer))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// [`check`](Self::check) as the error to answer ([`ServiceError::RateLimited`]).
    pub fn admit(&self, peer: Option<IpAddr>) -> Result<(), ServiceError> {
        self.check(peer).map_err(|wait| {
            metrics::counter!("ratatoskr_app_rate_limited_total", "action" => self.what)
                .increment(1);
            ServiceError::RateLimited(self.what, wait)
        })
    }

    /// Forget clients whose state is back to fresh (keeps the table as small as the set of
    /// recently active clients).
    pub fn forget_idle(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Clients currently remembered.
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// The per-client limits of the application.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `POST /api/login` and `POST /login`.
    pub login: ClientLimit,
    /// `POST /api/register` and `POST /register`.
    pub register: ClientLimit,
    /// `POST /api/password` and `POST /account/password`.
    pub password: ClientLimit,
}

impl Limits {
    /// Limits of `login`, `register` and `password` per client.
    pub fn new(login: RateLimit, register: RateLimit, password: RateLimit) -> Self {
        Limits {
            login: ClientLimit::new(login, "login"),
            register: ClientLimit::new(register, "registration"),
            password: ClientLimit::new(password, "password change"),
        }
    }

    /// Housekeeping: drop idle clients from every limiter.
    pub fn forget_idle(&self) {
        self.login.forget_idle();
        self.register.forget_idle();
        self.password.forget_idle();
    }
}

/// The key a client is limited by: its IPv4 address, or the /64 network of its IPv6 address
/// (an IPv4-mapped IPv6 address counts as the IPv4 address). Without a known peer, every such
/// request shares one key.
pub fn client_key(peer: Option<IpAddr>) -> IpAddr {
    match peer {
        Some(IpAddr::V4(v4)) => IpAddr::V4(v4),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(s: &str) -> ClientLimit {
        ClientLimit::new(s.parse().unwrap(), "test")
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_and_others_are_not_affected() {
        let l = limit("3/1h");
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.check(Some(a)), Ok(()));
        }
        let wait = l.check(Some(a)).unwrap_err();
        assert!(
            wait > Duration::from_secs(1000) && wait <= Duration::from_secs(1200),
            "{wait:?}"
        );
        assert_eq!(l.check(Some(b)), Ok(()));
    }

    #[test]
    fn ipv6_clients_are_limited_per_64_network() {
        let l = limit("1/1h");
        assert!(l.check(Some("2001:db8:1:2::1".parse().unwrap())).is_ok());
        assert!(
            l.check(Some("2001:db8:1:2:ffff::9".parse().unwrap()))
                .is_err()
        );
        assert!(l.check(Some("2001:db8:1:3::1".parse().unwrap())).is_ok());
        assert_eq!(
            client_key(Some("::ffff:192.0.2.7".parse().unwrap())),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn off_never_refuses() {
        let l = limit("off");
        for _ in 0..1000 {
            assert!(l.check(None).is_ok());
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn refusals_say_to_retry_after_at_least_a_second() {
        let l = limit("1/1s");
        assert!(l.admit(None).is_ok());
        match l.admit(None) {
            Err(e @ ServiceError::RateLimited("test", _)) => {
                assert_eq!(e.code(), "rate_limited");
                assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
            }
            other => panic!("{other:?}"),
        }
    }
}
