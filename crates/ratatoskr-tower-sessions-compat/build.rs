//! Finds tower-sessions' `tests/common/mod.rs` in the published crate that `Cargo.lock` pins,
//! through `cargo metadata`, and hands its path to the tests as `TOWER_SESSIONS_ROUTE_TESTS`.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&manifest_dir)
        .args(["metadata", "--format-version", "1", "--locked"]);
    if let Ok(target) = std::env::var("TARGET") {
        cmd.args(["--filter-platform", &target]);
    }
    let out = cmd.output().expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let found: Vec<_> = packages
        .iter()
        .filter(|p| p["name"] == "tower-sessions")
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one tower-sessions in Cargo.lock, found {}",
        found.len()
    );
    let manifest = PathBuf::from(found[0]["manifest_path"].as_str().expect("manifest_path"));
    let suite = manifest.parent().unwrap().join("tests/common/mod.rs");
    assert!(
        suite.is_file(),
        "{} is missing: the published tower-sessions {} should ship its tests",
        suite.display(),
        found[0]["version"]
    );
    println!(
        "cargo:rustc-env=TOWER_SESSIONS_ROUTE_TESTS={}",
        suite.display()
    );
    println!(
        "cargo:rustc-env=TOWER_SESSIONS_VERSION={}",
        found[0]["version"].as_str().unwrap_or("?")
    );
    println!("cargo:rerun-if-changed={}", suite.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../../Cargo.lock").display()
    );
    println!("cargo:rerun-if-changed=build.rs");
}
