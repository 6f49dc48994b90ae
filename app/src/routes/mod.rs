//! HTTP routes, one module per route family.

pub mod health;
