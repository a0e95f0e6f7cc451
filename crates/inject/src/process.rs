//! The target process as `/proc/PID` shows it, pinned by a descriptor of that directory: once
//! opened, lookups through it fail (ESRCH/ENOENT) instead of reaching another process that
//! reused the PID.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use rustix::fs::{open, openat, readlinkat, Mode, OFlags};
use rustix::io::Errno;

/// Why the target process cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The process does not exist (any more).
    #[error("process {0} does not exist or has exited")]
    Gone(u32),
    /// Reading one of its `/proc` files failed.
    #[error("cannot read /proc/{pid}/{file}")]
    Read {
        /// The PID.
        pid: u32,
        /// The file under `/proc/PID`.
        file: &'static str,
        /// Why.
        source: Errno,
    },
}

/// `/proc/PID` of the target, opened.
#[derive(Debug)]
pub struct TargetProcess {
    /// Host PID.
    pub pid: u32,
    dir: OwnedFd,
}

impl TargetProcess {
    /// Opens `/proc/PID`.
    pub fn open(pid: u32) -> Result<TargetProcess, ProcessError> {
        let dir = open(
            format!("/proc/{pid}"),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| ProcessError::Gone(pid))?;
        Ok(TargetProcess { pid, dir })
    }

    /// Maps an error on `/proc/PID/file` to [`ProcessError`]: ENOENT and ESRCH mean the process
    /// exited (a zombie has no namespaces, cwd or environment any more).
    pub fn error(&self, file: &'static str, source: Errno) -> ProcessError {
        match source {
            Errno::NOENT | Errno::SRCH => ProcessError::Gone(self.pid),
            source => ProcessError::Read {
                pid: self.pid,
                file,
                source,
            },
        }
    }

    /// Opens `/proc/PID/<file>` read-only.
    pub fn open_file(&self, file: &'static str) -> Result<OwnedFd, ProcessError> {
        openat(
            self.dir.as_fd(),
            file,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.error(file, e))
    }

    /// The whole content of `/proc/PID/<file>`.
    pub fn read(&self, file: &'static str) -> Result<Vec<u8>, ProcessError> {
        let mut bytes = Vec::new();
        File::from(self.open_file(file)?)
            .read_to_end(&mut bytes)
            .map_err(|e| self.error(file, Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
        Ok(bytes)
    }

    /// The process's root directory (`/proc/PID/root`), as an `O_PATH` descriptor: lookups
    /// from it with `RESOLVE_IN_ROOT` see the container's files as its processes do.
    pub fn root(&self) -> Result<OwnedFd, ProcessError> {
        openat(
            self.dir.as_fd(),
            "root",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.error("root", e))
    }

    /// The working directory as a path inside the container's root, when it is a usable one.
    pub fn cwd(&self) -> Result<Option<PathBuf>, ProcessError> {
        let link =
            readlinkat(self.dir.as_fd(), "cwd", Vec::new()).map_err(|e| self.error("cwd", e))?;
        let bytes = link.into_bytes();
        // Unreachable from the root ("(unreachable)/x") or deleted: no usable directory.
        if !bytes.starts_with(b"/") || bytes.ends_with(b" (deleted)") {
            return Ok(None);
        }
        Ok(Some(PathBuf::from(std::ffi::OsString::from_vec(bytes))))
    }

    /// Whether the process has exited or is exiting (`PF_EXITING` in `/proc/PID/stat`): the
    /// init of a PID namespace stays in that state until the kernel has killed and reaped the
    /// rest of its namespace, before its pidfd reports the exit.
    pub fn is_exiting(&self) -> bool {
        self.read("stat").map_or(true, |stat| {
            stat_says_exiting(&String::from_utf8_lossy(&stat))
        })
    }

    /// The environment, as `NAME=value` entries.
    pub fn environ(&self) -> Result<Vec<Vec<u8>>, ProcessError> {
        Ok(self
            .read("environ")?
            .split(|&b| b == 0)
            .filter(|e| !e.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }
}

/// Whether `/proc/PID/stat` text shows a process that is a zombie, dead, or exiting
/// (`PF_EXITING`). Its `comm` is the process's to choose, so the fields are counted after the
/// last `)`.
fn stat_says_exiting(stat: &str) -> bool {
    /// `PF_EXITING` from `<linux/sched.h>`.
    const PF_EXITING: u64 = 0x4;
    // `PID (comm) state ppid pgrp session tty_nr tpgid flags ...`
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("");
    let flags = fields
        .nth(5)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    matches!(state, "Z" | "X") || flags & PF_EXITING != 0
}

impl AsFd for TargetProcess {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exiting_is_read_after_the_last_parenthesis_of_comm() {
        let running = "42 (sleep) S 0 42 42 0 -1 4194560 80 0 0 0";
        assert!(!stat_says_exiting(running));
        let exiting = "42 (sleep) S 0 42 42 0 -1 4194564 80 0 0 0";
        assert!(stat_says_exiting(exiting));
        assert!(stat_says_exiting("42 (sleep) Z 0 42 42 0 -1 4194560"));
        // A name chosen to look like an exiting process must not fool it, nor one that hides
        // an exiting process.
        assert!(!stat_says_exiting(
            "42 (x) Z 1 1 1 1 1 4 () S 0 42 42 0 -1 4194560"
        ));
        assert!(stat_says_exiting(
            "42 (x) S 1 1 1 1 1 0 () S 0 42 42 0 -1 4194564"
        ));
    }
}
