//! HTTP tests of the application, one module per route family, all through [`helpers::TestApp`].

mod health;
mod helpers;
