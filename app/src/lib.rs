//! The `ratatoskr` reference application: a web app whose users connect fediverse accounts
//! ("platforms") and switch between them, built on the Ratatoskr session crates, plus an admin CLI.
//!
//! Layers, each using only the ones before it (checked by a test, `architecture`):
//!
//! 1. [`domain`]: the application's values and their rules (users, platforms, devices,
//!    instants, URLs, trusted proxies); no I/O.
//! 2. [`configuration`] (flags and environment), [`db`] (the application's tables and their
//!    migrations), [`stores`] (opening the session stores: SQL, Redis, tiered).
//! 3. [`services`]: what the application does, with narrow inputs and its own error type.
//! 4. [`web`]: extractors, the JSON API, pages, templates, charts, errors as HTTP answers.
//! 5. Start-up: [`startup`] (the application), [`analytics`] (the background sampler),
//!    [`telemetry`], [`cli`].

pub mod analytics;
#[cfg(test)]
mod architecture;
pub mod cli;
pub mod configuration;
pub mod db;
pub mod domain;
pub mod services;
pub mod startup;
pub mod stores;
pub mod telemetry;
pub mod web;
