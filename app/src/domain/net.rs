//! Which address a request comes from: the TCP peer, unless the peer is a configured trusted
//! proxy, in which case the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
//!
//! Why right-most: every proxy appends the address it received the request from, so the entries
//! on the right were written by our own proxies and the ones further left by whoever came before
//! them, the client included, who can write anything there. Walking from the right and stopping
//! at the first address that is not one of ours gives the last hop we can vouch for; anything
//! left of it is the client's own claim. A header that cannot be read (not text, an entry that is
//! not an address) is ignored in favour of the peer: a client's mistake or forgery never becomes
//! an error, and never an address of its choosing.
//!
//! This address is what the per-client limits key on (login, registration, password change) and
//! what a session records as its login address; the web layer hands it to the session layer too
//! (fingerprints with an IP binding).

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// One trusted proxy: an address (`10.0.0.7`, `::1`) or a network (`10.0.0.0/8`, `fd00::/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedProxy(IpNet);

impl FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(TrustedProxy(IpNet::from(ip.to_canonical())));
        }
        s.parse::<IpNet>()
            .map(|n| TrustedProxy(n.trunc()))
            .map_err(|_| {
                format!(
                    "`{s}` is not an IP address or network like 10.0.0.7, 10.0.0.0/8 or fd00::/8"
                )
            })
    }
}

impl std::fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The configured trusted proxies (none by default: the peer is always the client).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<TrustedProxy>);

impl TrustedProxies {
    /// The proxies in `list`.
    pub fn new(list: &[TrustedProxy]) -> Self {
        TrustedProxies(list.to_vec())
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of them (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|p| p.0.contains(&ip))
    }

    /// The client's address for a request from `peer` carrying these `X-Forwarded-For` header
    /// values (in the order they appear; several header lines count as one comma list).
    ///
    /// `None` for a header line means one that is not valid text. When every entry is a trusted
    /// proxy, the left-most is the client (it is the furthest hop our proxies saw).
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = Option<&'a str>>,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut entries = Vec::new();
        for line in forwarded_for {
            let Some(line) = line else {
                return peer;
            };
            entries.extend(line.split(','));
        }
        let mut leftmost = None;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                // Malformed: nothing to the left of it can be placed; the peer is all we know.
                return peer;
            };
            if !self.contains(ip) {
                return ip;
            }
            leftmost = Some(ip);
        }
        leftmost.unwrap_or(peer)
    }
}

/// One `X-Forwarded-For` entry: an address, also in the `1.2.3.4:port` and `[v6]:port` forms
/// some proxies write.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = e.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    e.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|v6| v6.parse::<Ipv6Addr>().ok())
        .map(|v6| IpAddr::V6(v6).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &str) -> TrustedProxies {
        let parsed: Vec<TrustedProxy> = list.split(',').map(|s| s.parse().unwrap()).collect();
        TrustedProxies::new(&parsed)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("192.0.2.1"), [Some("198.51.100.9")]),
            ip("192.0.2.1")
        );
        let p = proxies("10.0.0.0/8");
        assert_eq!(
            p.client(ip("192.0.2.1"), [Some("198.51.100.9")]),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn a_trusted_peer_is_believed_up_to_the_first_untrusted_entry_from_the_right() {
        let p = proxies("127.0.0.1,10.0.0.0/8");
        // One proxy.
        assert_eq!(
            p.client(ip("127.0.0.1"), [Some("203.0.113.5")]),
            ip("203.0.113.5")
        );
        // Two proxies; the client put a forged address of its own on the left.
        assert_eq!(
            p.client(ip("127.0.0.1"), [Some("6.6.6.6, 203.0.113.5, 10.1.2.3")]),
            ip("203.0.113.5")
        );
        // Several header lines are one list.
        assert_eq!(
            p.client(
                ip("127.0.0.1"),
                [Some("6.6.6.6"), Some("203.0.113.5"), Some("10.1.2.3")]
            ),
            ip("203.0.113.5")
        );
        // Every entry trusted: the left-most.
        assert_eq!(
            p.client(ip("127.0.0.1"), [Some("10.9.9.9, 10.1.2.3")]),
            ip("10.9.9.9")
        );
        // No header: the peer.
        assert_eq!(p.client(ip("127.0.0.1"), []), ip("127.0.0.1"));
    }

    #[test]
    fn a_malformed_header_means_the_peer() {
        let p = proxies("127.0.0.1");
        for bad in ["", "not-an-ip", "203.0.113.5, ", "1.2.3.4.5", "unknown"] {
            assert_eq!(
                p.client(ip("127.0.0.1"), [Some(bad)]),
                ip("127.0.0.1"),
                "{bad:?}"
            );
        }
        assert_eq!(p.client(ip("127.0.0.1"), [None]), ip("127.0.0.1"));
        // Garbage left of the first untrusted entry is never read.
        assert_eq!(
            p.client(ip("127.0.0.1"), [Some("garbage, 203.0.113.5")]),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn entries_with_ports_and_mapped_addresses_are_understood() {
        let p = proxies("::1,10.0.0.0/8");
        assert_eq!(
            p.client(ip("::1"), [Some("203.0.113.5:4711")]),
            ip("203.0.113.5")
        );
        assert_eq!(
            p.client(ip("::1"), [Some("[2001:db8::7]:443")]),
            ip("2001:db8::7")
        );
        assert_eq!(
            p.client(ip("::1"), [Some("[2001:db8::7]")]),
            ip("2001:db8::7")
        );
        // An IPv4-mapped peer is its IPv4 address.
        assert!(p.contains(ip("::ffff:10.1.2.3")));
        assert_eq!(
            p.client(ip("::ffff:10.1.2.3"), [Some("::ffff:203.0.113.5")]),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn proxies_parse_as_addresses_or_networks() {
        assert_eq!(
            "10.0.0.7".parse::<TrustedProxy>().unwrap().to_string(),
            "10.0.0.7/32"
        );
        assert_eq!(
            " 10.1.2.3/8 ".parse::<TrustedProxy>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "fd00::/8".parse::<TrustedProxy>().unwrap().to_string(),
            "fd00::/8"
        );
        for bad in ["", "10.0.0.0/33", "proxy.example", "10.0.0.0/"] {
            assert!(bad.parse::<TrustedProxy>().is_err(), "{bad:?}");
        }
    }
}
