//! The middleware that decides a request's client address ([`crate::domain::net`]) and hands it
//! on as [`ratatoskr_axum::ClientIp`], before the session layer runs, so the session layer and
//! every handler see the same address.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};

use crate::domain::net::TrustedProxies;

/// `axum::middleware::map_request_with_state(proxies, client_address)`.
pub async fn client_address(
    State(proxies): State<Arc<TrustedProxies>>,
    mut request: Request,
) -> Request {
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(peer) = peer {
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().ok());
        let client = proxies.client(peer, forwarded);
        request
            .extensions_mut()
            .insert(ratatoskr_axum::ClientIp(client));
    }
    request
}
