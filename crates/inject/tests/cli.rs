//! The command line without root: help, version, generated completions and man page, usage
//! errors.
//!
//! This file also has a build role: a package's own integration tests make `cargo test
//! --workspace` build its binary into `target/<profile>/` (for `CARGO_BIN_EXE_crashcart`), which
//! is where the end-to-end tests in the root `tests/` package find it.

use std::process::{Command, Output};

fn crashcart(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crashcart"))
        .args(args)
        .output()
        .expect("run crashcart")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version() {
    let help = crashcart(&["--help"]);
    assert!(help.status.success());
    assert!(
        text(&help.stdout).contains("Usage: crashcart [OPTIONS] TARGET [--] [COMMAND [ARG...]]")
    );
    let version = crashcart(&["--version"]);
    assert_eq!(
        text(&version.stdout).trim(),
        format!("crashcart {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let bash = crashcart(&["--generate", "completions-bash"]);
    assert!(bash.status.success());
    assert!(text(&bash.stdout).contains("--unmount"));
    let man = crashcart(&["--generate", "man"]);
    assert!(man.status.success());
    assert!(text(&man.stdout).contains(".TH crashcart 1"));
}

#[test]
fn usage_errors_are_one_line_and_exit_125() {
    for args in [
        &["-m", "-u", "web-1"][..],
        &[],
        &["--user", "bob:", "web-1"],
        &["--user", "99999999999", "web-1"],
        &["--no-such-flag", "web-1"],
        &["-m", "web-1", "ls"],
    ] {
        let out = crashcart(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("crashcart: "), "{args:?}: {err}");
    }
}
