//! HTTP tests of the application, one module per route family, all through [`helpers::TestApp`].

mod abuse;
mod admin;
mod auth;
mod csrf;
mod health;
mod helpers;
mod pages;
mod platforms;
mod postgres;
mod sessions;
mod tiers;
