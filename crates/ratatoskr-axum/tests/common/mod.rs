//! Shared test harness: a counting/failing store ([`store`]), the test application ([`app`]),
//! and in-process requests with a browser-like client ([`http`]).
#![allow(dead_code)]

mod app;
mod http;
mod store;

// Not every test binary uses the test application (`save_retry.rs` builds its own).
#[allow(unused_imports)]
pub use app::*;
pub use http::*;
// Not every test binary uses the store directly.
#[allow(unused_imports)]
pub use store::*;

pub const COOKIE: &str = "__Host-ratatoskr";
