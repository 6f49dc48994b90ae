//! Domain types and rules: what the application's values are and which are valid. No I/O and
//! nothing from the other layers; every other layer may use these.

pub mod device;
pub mod invalid;
pub mod net;
pub mod platform;
pub mod rate_limit;
pub mod time;
pub mod urls;
pub mod user;
