//! Services: what the application does, independent of how it is asked (JSON API, HTML forms,
//! CLI). Each takes only what it needs (borrowed: the database, the hashing pool, the session
//! manager…), never the web layer's state, and answers with [`error::ServiceError`], never an
//! HTTP status.

pub mod accounts;
pub mod analytics;
pub mod audit;
pub mod error;
pub mod hasher;
pub mod health;
pub mod limits;
pub mod platforms;
pub mod preferences;
pub mod sessions;
pub mod tokens;
