//! Rewriting copied ELF objects with `patchelf` so they load only from the image.
//!
//! Each object gets:
//! - `PT_INTERP` → the image's loader (programs only);
//! - `DT_RPATH` (not `DT_RUNPATH`) → the image's `lib/`: `DT_RPATH` is searched before
//!   `LD_LIBRARY_PATH`, so a container that sets `LD_LIBRARY_PATH` cannot substitute its
//!   libraries, and it also applies to libraries dlopened by an object's dependents;
//! - `DF_1_NODEFLIB`: glibc then skips its default directories, and `ld.so.cache` entries in
//!   them, for this object's dependencies and dlopen calls — so a name missing from the image
//!   fails instead of loading the container's copy built against another libc.
//!
//! patchelf takes many files per run; the files are split over one run per CPU.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::HostError;

/// One batch of files rewritten the same way.
pub struct Rewrite {
    /// New `PT_INTERP`, for programs.
    pub interpreter: Option<String>,
    /// New `DT_RPATH`.
    pub rpath: String,
    /// The files, in the staging tree.
    pub files: Vec<PathBuf>,
}

/// Runs patchelf over every batch, in parallel, and fails if any run fails.
pub fn rewrite_all(batches: &[Rewrite]) -> Result<(), HostError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut running: Vec<(Child, String)> = Vec::new();
    let mut first_error = None;
    for batch in batches {
        let chunk = batch.files.len().div_ceil(cpus).max(1);
        for files in batch.files.chunks(chunk) {
            let mut cmd = Command::new("patchelf");
            if let Some(interp) = &batch.interpreter {
                cmd.arg("--set-interpreter").arg(interp);
            }
            cmd.args([
                "--set-rpath",
                &batch.rpath,
                "--force-rpath",
                "--no-default-lib",
            ])
            .args(files)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
            let names = files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" ");
            match cmd.spawn() {
                Ok(child) => running.push((child, names)),
                Err(e) => {
                    first_error.get_or_insert(HostError::PatchelfMissing(e));
                    break;
                }
            }
        }
    }
    // Wait for every child even after a failure, so none outlives the build.
    for (child, files) in running {
        let result = child.wait_with_output();
        let error = match result {
            Ok(out) if out.status.success() => continue,
            Ok(out) => HostError::Patchelf {
                files,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            },
            Err(e) => HostError::Patchelf {
                files,
                stderr: e.to_string(),
            },
        };
        first_error.get_or_insert(error);
    }
    first_error.map_or(Ok(()), Err)
}
