//! Client fingerprints: 8 bytes of a domain-separated SHA-256 of the User-Agent and, optionally,
//! a prefix of the client's IP address.
//!
//! The client address comes from a [`ClientIp`] request extension when the application sets one
//! (behind a proxy it knows which forwarded header to believe), else from axum's
//! `ConnectInfo<SocketAddr>`. With neither, only the User-Agent counts.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use sha2::{Digest, Sha256};

use crate::config::IpBinding;

/// The client's address as the application determined it (for example from a trusted proxy's
/// `X-Forwarded-For`). Insert it as a request extension before the session layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The fingerprint of a request.
pub fn of_request<B>(req: &Request<B>, ip: IpBinding) -> [u8; 8] {
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let addr = req.extensions().get::<ClientIp>().map(|c| c.0).or_else(|| {
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    });
    compute(ua, addr, ip)
}

/// The fingerprint of a User-Agent and address under a binding.
pub fn compute(user_agent: &[u8], addr: Option<IpAddr>, ip: IpBinding) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"ratatoskr.fingerprint.v1\0");
    h.update((user_agent.len() as u64).to_be_bytes());
    h.update(user_agent);
    if let (IpBinding::Prefix { v4, v6 }, Some(addr)) = (ip, addr) {
        match addr.to_canonical() {
            IpAddr::V4(a) => {
                h.update([4, v4]);
                h.update(mask(&a.octets(), v4));
            }
            IpAddr::V6(a) => {
                h.update([6, v6]);
                h.update(mask(&a.octets(), v6));
            }
        }
    }
    let digest = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn mask(bytes: &[u8], bits: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let bits = usize::from(bits).min(bytes.len() * 8);
    for (i, b) in out.iter_mut().enumerate() {
        let keep = bits.saturating_sub(i * 8).min(8);
        *b &= !(0xffu16 >> keep) as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: IpBinding = IpBinding::Prefix { v4: 24, v6: 64 };

    #[test]
    fn the_prefix_decides_which_addresses_match() {
        let a = compute(b"UA", Some("192.0.2.1".parse().unwrap()), P);
        assert_eq!(a, compute(b"UA", Some("192.0.2.200".parse().unwrap()), P));
        assert_ne!(a, compute(b"UA", Some("192.0.3.1".parse().unwrap()), P));
        assert_ne!(a, compute(b"UA2", Some("192.0.2.1".parse().unwrap()), P));
        let v6 = compute(b"UA", Some("2001:db8:1:2::1".parse().unwrap()), P);
        assert_eq!(
            v6,
            compute(b"UA", Some("2001:db8:1:2:ffff::9".parse().unwrap()), P)
        );
        assert_ne!(
            v6,
            compute(b"UA", Some("2001:db8:1:3::1".parse().unwrap()), P)
        );
        // Without IP binding only the User-Agent counts.
        assert_eq!(
            compute(b"UA", Some("192.0.2.1".parse().unwrap()), IpBinding::Off),
            compute(b"UA", Some("198.51.100.1".parse().unwrap()), IpBinding::Off)
        );
    }

    #[test]
    fn masks() {
        assert_eq!(mask(&[255, 255, 255, 255], 24), [255, 255, 255, 0]);
        assert_eq!(mask(&[255, 255], 12), [255, 0xf0]);
        assert_eq!(mask(&[255], 0), [0]);
        assert_eq!(mask(&[255], 200), [255]);
    }
}
