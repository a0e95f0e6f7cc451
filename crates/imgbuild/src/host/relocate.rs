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
///
/// `DF_1_NODEFLIB` is set in a pass of its own: patchelf 0.14 (Debian 12) silently drops
/// `--no-default-lib` when the same run also rewrites the dynamic section for the rpath.
pub fn rewrite_all(batches: &[Rewrite]) -> Result<(), HostError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut flag_pass = Vec::new();
    let mut path_pass = Vec::new();
    for batch in batches {
        let chunk = batch.files.len().div_ceil(cpus).max(1);
        for files in batch.files.chunks(chunk) {
            let mut flag = Command::new("patchelf");
            flag.arg("--no-default-lib").args(files);
            flag_pass.push((flag, files));
            let mut path = Command::new("patchelf");
            if let Some(interp) = &batch.interpreter {
                path.arg("--set-interpreter").arg(interp);
            }
            path.args(["--set-rpath", &batch.rpath, "--force-rpath"])
                .args(files);
            path_pass.push((path, files));
        }
    }
    run_all(flag_pass)?;
    run_all(path_pass)
}

/// Starts every command, waits for all of them (so none outlives a failure), and returns
/// the first failure.
fn run_all(commands: Vec<(Command, &[PathBuf])>) -> Result<(), HostError> {
    let mut running: Vec<(Child, String)> = Vec::new();
    let mut first_error = None;
    for (mut cmd, files) in commands {
        cmd.stdin(Stdio::null())
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
                first_error = Some(HostError::PatchelfMissing(e));
                break;
            }
        }
    }
    for (child, files) in running {
        let error = match child.wait_with_output() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use goblin::elf::dynamic::{DF_1_NODEFLIB, DT_RPATH, DT_RUNPATH};
    use goblin::elf::Elf;

    #[test]
    fn sets_interpreter_rpath_and_nodeflib() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("sh");
        std::fs::copy("/bin/sh", &copy).unwrap();
        rewrite_all(&[Rewrite {
            interpreter: Some("/dev/crashcart/lib/ld.so".into()),
            rpath: "/dev/crashcart/lib".into(),
            files: vec![copy.clone()],
        }])
        .unwrap();
        let bytes = std::fs::read(&copy).unwrap();
        let elf = Elf::parse(&bytes).unwrap();
        assert_eq!(elf.interpreter, Some("/dev/crashcart/lib/ld.so"));
        assert_eq!(elf.rpaths, ["/dev/crashcart/lib"]);
        let dynamic = elf.dynamic.as_ref().unwrap();
        assert!(dynamic.dyns.iter().any(|d| d.d_tag == DT_RPATH));
        assert!(!dynamic.dyns.iter().any(|d| d.d_tag == DT_RUNPATH));
        assert_ne!(dynamic.info.flags_1 & DF_1_NODEFLIB, 0, "DF_1_NODEFLIB set");
    }

    #[test]
    fn patchelf_failure_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("not-elf");
        std::fs::write(&bogus, b"plain text").unwrap();
        let err = rewrite_all(&[Rewrite {
            interpreter: None,
            rpath: "/x".into(),
            files: vec![bogus.clone()],
        }])
        .unwrap_err();
        assert!(
            err.to_string().contains(&bogus.display().to_string()),
            "{err}"
        );
    }
}
