//! The command line without root or inputs: help, version, a usage error.
//!
//! This file also has a build role: a package's own integration tests make `cargo test
//! --workspace` build its binary into `target/<profile>/` (for
//! `CARGO_BIN_EXE_crashcart-imgbuild`), which is where the end-to-end tests in the root `tests/`
//! package find it. Without a test here, a clean `cargo test --workspace` leaves
//! `crashcart-imgbuild` unbuilt.

use std::process::{Command, Output};

fn imgbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crashcart-imgbuild"))
        .args(args)
        .output()
        .expect("run crashcart-imgbuild")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version() {
    let help = imgbuild(&["--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("Usage: crashcart-imgbuild"));
    let version = imgbuild(&["--version"]);
    assert_eq!(
        text(&version.stdout).trim(),
        format!("crashcart-imgbuild {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_missing_output_is_a_usage_error() {
    let out = imgbuild(&["--dir", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--output"), "{err}");
}
