//! HTTP tests of the application, one module per route family, all through [`helpers::TestApp`].
//!
//! The route families (auth, sessions, platforms, pages, admin, csrf, health) run every body on
//! three backends with [`on_backends!`]: `…::on_sqlite`, `…::on_postgres` (a fresh schema per
//! test) and `…::on_tiers` (a redis-server of the test's own in front of SQLite). What is about
//! one backend stays single: the SQLite file itself, the abuse bench, Redis faults (`tiers`).

mod abuse;
mod admin;
mod auth;
mod csrf;
mod health;
mod helpers;
mod migrations;
mod pages;
mod platforms;
mod postgres;
mod proxies;
mod sessions;
mod tiers;
