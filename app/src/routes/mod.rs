//! HTTP routes, one module per route family.

pub mod admin;
pub mod auth;
pub mod health;
pub mod pages;
pub mod platforms;
pub mod sessions;
