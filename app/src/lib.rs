//! The `ratatoskr` reference application: a web app whose users connect fediverse accounts
//! ("platforms") and switch between them, built on the Ratatoskr session crates, plus an admin CLI.
//!
//! Layout (after zero2prod): [`configuration`] reads flags and environment, [`startup`] builds
//! the stores and the router, [`telemetry`] sets up logs and metrics, [`routes`] has one module
//! per route family.

pub mod analytics;
pub mod audit;
pub mod charts;
pub mod cli;
pub mod configuration;
pub mod crypto;
pub mod db;
pub mod device;
pub mod error;
pub mod extract;
pub mod limits;
pub mod net;
pub mod routes;
pub mod service;
pub mod startup;
pub mod state;
pub mod stores;
pub mod telemetry;
pub mod templates;
pub mod validation;
