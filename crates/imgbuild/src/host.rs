//! `--host PROG`: bundle the host's own binaries, with their loader and libraries, into a
//! tree that runs from `/dev/crashcart` in any container.
//!
//! Seam with the image writer: the CLI flattens [`HostArgs`]; when programs are given, the
//! builder creates an empty staging directory, calls [`bundle`], then adds that directory to
//! the image exactly like a `--dir` source, and records [`HostBundle::programs`] and
//! [`HostBundle::env`] in the manifest.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Command-line flags owned by this module (flattened into the builder's CLI).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HostArgs {
    /// Bundle a host program (a name looked up on PATH, or a path) with its loader and
    /// libraries. Repeatable.
    #[arg(long = "host", value_name = "PROG")]
    pub programs: Vec<OsString>,
}

/// One program placed in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundledProgram {
    /// Name under `bin/` in the image.
    pub name: String,
    /// Where it came from on the host.
    pub host_path: PathBuf,
    /// Owning package, when the host's package manager knows it.
    pub package: Option<String>,
    /// That package's version.
    pub version: Option<String>,
}

/// What [`bundle`] produced besides the files in the staging tree.
#[derive(Debug, Clone, Default)]
pub struct HostBundle {
    /// The bundled programs, for the manifest.
    pub programs: Vec<BundledProgram>,
    /// Environment the tools need in the session (e.g. `TERMINFO_DIRS`); crashcart sets it
    /// and `.crashcartrc` exports it.
    pub env: Vec<(String, String)>,
}

/// Errors from bundling host programs.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Placeholder until the bundler lands.
    #[error("--host is not implemented yet")]
    NotImplemented,
}

/// Fills the empty directory `staging` with `programs` and everything they need.
pub fn bundle(programs: &[OsString], staging: &Path) -> Result<HostBundle, HostError> {
    let _ = (programs, staging);
    Err(HostError::NotImplemented)
}
