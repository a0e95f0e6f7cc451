//! Building with the nix installed on this machine, as whoever runs us.
//!
//! The store is a chroot store under the cache root (see `store`), so an unprivileged user
//! needs neither a nix daemon nor a writable `/nix`. nix is asked only to realise the
//! packages' outputs: substituted from a binary cache they need no namespace at all; built,
//! they need nix's sandbox (a user namespace that may mount), which nix sets up where the
//! machine allows it. The profile is worked out afterwards without nix (`profile`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::info::{parse_dump_db, parse_plan};
use super::run::run_nix;
use super::store::StoreLocation;
use super::{NixError, Realised};

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

impl BuildRequest<'_> {
    /// `EXPR -A ATTR --argstr packagesJSON ... [--argstr nixpkgs PATH]`.
    fn select(&self, command: &mut Command, attribute: &str) {
        command.arg(self.expressions).args(["-A", attribute]).args([
            "--argstr",
            "packagesJSON",
            self.packages_json,
        ]);
        if let Some(nixpkgs) = self.nixpkgs {
            command.arg("--argstr").arg("nixpkgs").arg(nixpkgs);
        }
    }
}

/// Realises the packages' outputs with the host's nix into `location`.
pub fn build(location: &StoreLocation, request: &BuildRequest) -> Result<Realised, NixError> {
    let url = location.url();

    // The plan: which outputs each package installs. `--read-write-mode` lets a pinned
    // nixpkgs be fetched into the store while evaluating.
    let mut eval = Command::new("nix-instantiate");
    eval.args(["--eval", "--strict", "--json", "--read-write-mode"]);
    request.select(&mut eval, "plan");
    eval.args(["--store", &url]);
    let packages = parse_plan(&run_nix(eval, not_installed("nix-instantiate"))?)?;

    let mut realise = Command::new("nix-build");
    request.select(&mut realise, "outputs");
    realise
        .args(["--store", &url])
        // Root has no `nixbld` build users here; nix then builds as the calling user.
        .args(["--option", "build-users-group", ""])
        // The out links are GC roots for as long as the image is being written.
        .arg("--out-link")
        .arg(request.work_dir.join("result"));
    run_nix(realise, not_installed("nix-build"))?;

    let outputs: Vec<&PathBuf> = packages.iter().flat_map(|p| &p.outputs).collect();
    let mut query = Command::new("nix-store");
    query
        .args(["--store", &url, "--query", "--requisites"])
        .args(&outputs);
    let store_paths: Vec<PathBuf> = run_nix(query, not_installed("nix-store"))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();

    let mut dump = Command::new("nix-store");
    dump.args(["--store", &url, "--dump-db"]).args(&store_paths);
    let infos = parse_dump_db(&run_nix(dump, not_installed("nix-store"))?)?;
    Ok(Realised {
        packages,
        store_paths,
        infos,
    })
}

fn not_installed(program: &'static str) -> impl FnOnce() -> NixError {
    move || NixError::NixNotInstalled { program }
}
