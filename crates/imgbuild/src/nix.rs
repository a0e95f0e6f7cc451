//! `--packages FILE`: build the tool set with nix (rootless) and hand its closure to the
//! image writer.
//!
//! Seam with the image writer: the CLI flattens [`NixArgs`]; when `--packages` is given the
//! builder calls [`build`] and writes the returned [`NixClosure`] exactly as it writes a
//! `--closure` input: every store path under `store/` of the image, bytes read from
//! `real_root` joined with the logical path, `profile` pointing at the profile, and when
//! [`NixClosure::relocate`] is set every occurrence of `from` in file contents and symlink
//! targets replaced with the equal-length `to`, which is also recorded in the manifest as
//! `store_alias` (crashcart makes that path resolve to `/dev/crashcart/store`).

use std::path::PathBuf;

/// How store paths are made to work from inside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StoreMode {
    /// Build with `/nix/store`, rewrite it to an equal-length alias while writing the image.
    #[default]
    Relocated,
    /// Build with store dir `/dev/crashcart/store`: no rewriting, seed-compatible layout.
    Native,
}

/// Command-line flags owned by this module (flattened into the builder's CLI).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NixArgs {
    /// Build the nixpkgs attributes listed in FILE (one per line, `#` comments) with nix.
    #[arg(long, value_name = "FILE")]
    pub packages: Option<PathBuf>,
    /// A nixpkgs-like expression to build from (`import PATH {}`); default: the pin in nix/.
    #[arg(long, value_name = "PATH", requires = "packages")]
    pub nixpkgs: Option<PathBuf>,
    /// How the store is made to work inside the image.
    #[arg(long, value_enum, default_value_t, requires = "packages")]
    pub store_mode: StoreMode,
}

/// Replace `from` with `to` (same length) in contents and symlink targets while writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocation {
    /// The store directory the closure was built for, e.g. `/nix/store`.
    pub from: String,
    /// The equal-length path crashcart makes resolve to `/dev/crashcart/store`.
    pub to: String,
}

/// A built closure, ready for the image writer.
pub struct NixClosure {
    /// Store paths as nix prints them (logical paths under the store dir).
    pub store_paths: Vec<PathBuf>,
    /// The environment whose `bin`/`sbin` the user gets.
    pub profile: PathBuf,
    /// Where the bytes live: the logical path is read at `real_root` + path (`/` for a
    /// store at its logical location).
    pub real_root: PathBuf,
    /// Set in relocated mode.
    pub relocate: Option<Relocation>,
    /// Kept alive until the image is written (e.g. a temporary GC root or store).
    pub keep: Vec<Box<dyn std::any::Any>>,
}

/// Errors from building the tool set with nix.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    /// Placeholder until the nix builder lands.
    #[error("--packages is not implemented yet")]
    NotImplemented,
}

/// Builds the packages named in `args` and returns their closure.
pub fn build(args: &NixArgs) -> Result<NixClosure, NixError> {
    let _ = args;
    Err(NixError::NotImplemented)
}
