//! crashcart runs from a sealed, in-memory copy of itself.
//!
//! Every process of a session starts as a fork of crashcart, and the command's process is
//! visible in the container between its fork and its `execve`. A container process allowed to
//! ptrace it could open `/proc/PID/exe` then, and once the session is over write through that
//! descriptor into the host's crashcart binary (runc's CVE-2019-5736). So before doing anything
//! in a container crashcart re-executes itself from a memfd copy sealed against writing,
//! growing and shrinking, as runc does: `/proc/PID/exe` of every session process is that copy,
//! and no one can change it.
//!
//! The copy costs a couple of milliseconds per run (the binary is copied into memory and
//! executed again). It is skipped when the binary on disk cannot be written anyway: marked
//! immutable (`chattr +i`, which only `CAP_LINUX_IMMUTABLE` in the host's user namespace can
//! undo) or on a read-only mount.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use rustix::fs::{
    fcntl_add_seals, fcntl_get_seals, fstatvfs, memfd_create, statx, AtFlags, MemfdFlags,
    SealFlags, StatVfsMountFlags, StatxAttributes, StatxFlags,
};

use crate::sys::{self, CStringArray};

/// Carries the path of the binary on disk into the sealed copy (for the image found beside
/// it); removed from the environment as soon as it is read.
const ORIGINAL_EXE_VAR: &str = "CRASHCART_ORIGINAL_EXE";

/// The seals that make the copy immutable.
fn seals() -> SealFlags {
    SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE
}

/// Why crashcart could not run from a sealed copy.
#[derive(Debug, thiserror::Error)]
#[error("cannot run crashcart from a sealed copy of itself")]
pub struct SealError(#[source] std::io::Error);

/// Returns when crashcart already runs from a sealed copy; otherwise makes one and executes it
/// with the same arguments and environment (and does not return unless that fails).
pub fn ensure() -> Result<(), SealError> {
    let exe = File::open("/proc/self/exe").map_err(SealError)?;
    if fcntl_get_seals(&exe).is_ok_and(|s| s.contains(seals())) || cannot_be_written(&exe) {
        return Ok(());
    }
    let memfd = memfd_create("crashcart", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| SealError(e.into()))?;
    let mut copy = File::from(memfd);
    std::io::copy(&mut &exe, &mut copy).map_err(SealError)?;
    // Sealing against writes waits for transient references to the copy's pages to go (the
    // copy was just written) and gives up with EBUSY if they do not: try again briefly.
    let mut attempts = 0;
    loop {
        match fcntl_add_seals(&copy, seals()) {
            Ok(()) => break,
            Err(rustix::io::Errno::BUSY) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(SealError(e.into())),
        }
    }
    if let Ok(path) = std::env::current_exe() {
        // SAFETY of the environment change: crashcart is single-threaded here.
        std::env::set_var(ORIGINAL_EXE_VAR, path);
    }
    let args = std::env::args_os()
        .map(|a| CString::new(a.into_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SealError(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    Err(SealError(sys::fexecve(
        copy.as_fd(),
        &CStringArray::new(args),
    )))
}

/// Whether the binary is immutable or on a read-only mount: then no one can write it through
/// `/proc/PID/exe` either.
fn cannot_be_written(exe: &File) -> bool {
    let immutable = statx(exe, "", AtFlags::EMPTY_PATH, StatxFlags::empty()).is_ok_and(|st| {
        st.stx_attributes_mask.contains(StatxAttributes::IMMUTABLE)
            && st.stx_attributes.contains(StatxAttributes::IMMUTABLE)
    });
    let read_only = fstatvfs(exe).is_ok_and(|vfs| vfs.f_flag.contains(StatVfsMountFlags::RDONLY));
    immutable || read_only
}

/// The path crashcart was started from (not the sealed copy's `/memfd:...`).
pub fn original_exe() -> Option<PathBuf> {
    static ORIGINAL: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    ORIGINAL
        .get_or_init(|| match std::env::var_os(ORIGINAL_EXE_VAR) {
            Some(p) => {
                std::env::remove_var(ORIGINAL_EXE_VAR);
                Some(PathBuf::from(p))
            }
            None => std::env::current_exe().ok(),
        })
        .clone()
}
