//! Building with the nix installed on this machine, as whoever runs us.
//!
//! The store is a chroot store under the cache root (see `store`), so an unprivileged user
//! needs neither a nix daemon nor a writable `/nix`: nix builds in a user namespace in which
//! the real store appears at the logical store dir.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::run::run_nix;
use super::store::StoreLocation;
use super::{BuiltProfile, NixError};

/// What a build needs to know, whichever way nix is run.
pub struct BuildRequest<'a> {
    /// The directory holding `default.nix` and `pin.json`.
    pub expressions: &'a Path,
    /// The attribute names as a JSON list.
    pub packages_json: &'a str,
    /// `--nixpkgs`, absolute.
    pub nixpkgs: Option<&'a Path>,
    /// A scratch directory that lives as long as the build result is used.
    pub work_dir: &'a Path,
}

/// Builds the profile with the host's `nix-build` into `location`.
pub fn build(location: &StoreLocation, request: &BuildRequest) -> Result<BuiltProfile, NixError> {
    let url = location.url();
    let mut nix_build = Command::new("nix-build");
    nix_build
        .arg(request.expressions)
        .args(["--argstr", "packagesJSON", request.packages_json]);
    if let Some(nixpkgs) = request.nixpkgs {
        nix_build.arg("--argstr").arg("nixpkgs").arg(nixpkgs);
    }
    nix_build
        .args(["--store", &url])
        // Root has no `nixbld` build users here; nix then builds as the calling user.
        .args(["--option", "build-users-group", ""])
        // The out link is a GC root for as long as the image is being written.
        .arg("--out-link")
        .arg(request.work_dir.join("profile"));
    let stdout = run_nix(nix_build, not_installed("nix-build"))?;
    let profile = last_line(&stdout).ok_or_else(|| NixError::NoProfile {
        output: stdout.clone(),
    })?;

    let mut query = Command::new("nix-store");
    query
        .args(["--store", &url, "--query", "--requisites"])
        .arg(&profile);
    let stdout = run_nix(query, not_installed("nix-store"))?;
    Ok(BuiltProfile {
        store_paths: stdout.lines().map(PathBuf::from).collect(),
        profile,
    })
}

/// The last non-empty line of `text`, as a path (nix prints the result last).
pub fn last_line(text: &str) -> Option<PathBuf> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(PathBuf::from)
}

fn not_installed(program: &'static str) -> impl FnOnce() -> NixError {
    move || NixError::NixNotInstalled { program }
}
