//! Nothing to use here: this package runs tower-sessions' own route tests (the `route_tests!`
//! suite in `tests/common/mod.rs` of the tower-sessions release in `Cargo.lock`) over
//! `ratatoskr-tower-sessions`, on every Ratatoskr store. `build.rs` finds that file in the
//! cargo registry through `cargo metadata`; it is never copied into this repository.
