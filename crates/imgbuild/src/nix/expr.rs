//! The nix expressions of the repository's `nix/` directory, compiled into the binary so an
//! installed `crashcart-imgbuild` needs no checkout; written to a temporary directory that
//! `nix-build` (or the nix container) reads.

use std::path::Path;

use super::NixError;

/// `nix/default.nix`: turns a list of attribute names into one profile.
const DEFAULT_NIX: &str = include_str!("../../../../nix/default.nix");
/// `nix/pin.json`: the nixpkgs revision used when `--nixpkgs` is not given.
const PIN_JSON: &str = include_str!("../../../../nix/pin.json");

/// Writes the expressions into `dir` (which `nix-build dir` then evaluates).
pub fn write_expressions(dir: &Path) -> Result<(), NixError> {
    for (name, text) in [("default.nix", DEFAULT_NIX), ("pin.json", PIN_JSON)] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| NixError::Expressions { path, source })?;
    }
    Ok(())
}
