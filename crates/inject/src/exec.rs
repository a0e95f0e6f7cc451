//! The command's process between fork and exec (async-signal-safe only: everything it needs is
//! built before the fork), and how its failure is reported to its parent.
//!
//! The parent learns why the command did not start through a close-on-exec pipe: if `execve`
//! succeeds the pipe just closes; otherwise the child writes which step failed and the errno.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use rustix::io::Errno;
use rustix::process::{set_parent_process_death_signal, Signal};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::environment::Environment;
use crate::privileges::{ApplyStep, Privileges};
use crate::sys::{self, CStringArray};

/// Exit status when the command exists but cannot be run.
pub const EXIT_CANNOT_RUN: u8 = 126;
/// Exit status when the command is not found.
pub const EXIT_NOT_FOUND: u8 = 127;

/// Signals whose disposition crashcart (or the Rust runtime: SIGPIPE) changes, restored to the
/// default before exec.
pub const CHANGED_SIGNALS: [Signal; 2] = [Signal::PIPE, Signal::TTOU];

/// Why the command's process did not reach the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `execve` of every candidate failed.
    Exec,
    /// `setns` into the user namespace.
    UserNamespace,
    /// Taking the profile's identity, capabilities, filters or label.
    Privileges(ApplyStep),
}

/// Privilege steps are reported as this plus their own number.
const PRIVILEGE_STAGE_BASE: u32 = 100;

impl Stage {
    fn to_u32(self) -> u32 {
        match self {
            Stage::Exec => 0,
            Stage::UserNamespace => 1,
            Stage::Privileges(step) => PRIVILEGE_STAGE_BASE + step as u32,
        }
    }

    fn from_u32(v: u32) -> Stage {
        match v {
            1 => Stage::UserNamespace,
            v if v > PRIVILEGE_STAGE_BASE => {
                ApplyStep::from_u32(v - PRIVILEGE_STAGE_BASE).map_or(Stage::Exec, Stage::Privileges)
            }
            _ => Stage::Exec,
        }
    }
}

/// Why a command could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// An argument holds a NUL byte.
    #[error("the command has an argument with a NUL byte: {0:?}")]
    Nul(OsString),
}

/// Everything the command's process needs, built before the fork.
pub struct Command {
    /// The program as the user typed it (for messages).
    pub program: String,
    argv: CStringArray,
    envp: CStringArray,
    /// Paths to try in order (one if the program has a `/`, else each `PATH` directory).
    candidates: Vec<CString>,
}

impl Command {
    /// Prepares `args` (program first) to run with `env`.
    pub fn new(args: &[OsString], env: &Environment) -> Result<Command, CommandError> {
        let argv = args
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| CommandError::Nul(a.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let program = args[0].as_bytes();
        let candidates = if program.contains(&b'/') {
            vec![argv[0].clone()]
        } else {
            let path = env.get(b"PATH").unwrap_or_default();
            path.split(|&b| b == b':')
                .map(|dir| {
                    let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
                    CString::new([dir, b"/", program].concat())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| CommandError::Nul(args[0].clone()))?
        };
        let envp = env
            .entries()
            .into_iter()
            .filter_map(|e| CString::new(e).ok())
            .collect();
        Ok(Command {
            program: args[0].to_string_lossy().into_owned(),
            argv: CStringArray::new(argv),
            envp: CStringArray::new(envp),
            candidates,
        })
    }
}

impl Command {
    /// Whether the program was named by a path (it has a `/`) rather than looked up on `PATH`.
    pub fn is_path(&self) -> bool {
        self.program.contains('/')
    }

    /// The first candidate that exists in the current root (a symlink counts, even dangling):
    /// when `execve` said ENOENT for a file that is there, what is missing is its interpreter
    /// or loader, not the program.
    pub fn existing_candidate(&self) -> Option<&std::ffi::CStr> {
        self.candidates.iter().map(CString::as_c_str).find(|c| {
            rustix::fs::statat(rustix::fs::CWD, *c, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
        })
    }
}

/// The descriptors the command's process keeps until exec besides its 0, 1 and 2 (the
/// container-side streams the helper made its own); every other one is closed first.
pub struct ChildFds<'a> {
    /// Write end (close-on-exec) of the failure report.
    pub report: BorrowedFd<'a>,
    /// The target's user namespace, when it differs.
    pub user_ns: Option<BorrowedFd<'a>>,
    /// Whether 0/1/2 are a terminal, to become the command's controlling terminal.
    pub terminal: bool,
}

/// The command's process: drops every other descriptor, becomes its own (foreground) process
/// group, enters the user namespace, takes the profile's identity, capabilities and filters
/// ([`Privileges::apply`]) and execs. Never returns.
pub fn run_command(cmd: &Command, privileges: &Privileges, fds: ChildFds<'_>) -> ! {
    // Die with the helper.
    let _ = set_parent_process_death_signal(Some(Signal::KILL));
    close_all_except(&[
        fds.report.as_raw_fd(),
        fds.user_ns.map_or(-1, |f| f.as_raw_fd()),
    ]);
    // A process group of its own in the helper's session; with a terminal (the container pty
    // the helper made its controlling terminal), the foreground one. SIGTTOU is still blocked
    // here, so taking the foreground from the background is allowed. The helper, in the same
    // session, keeps the group from being orphaned, so Ctrl-Z stops it like any job.
    let _ = rustix::process::setpgid(None, None);
    if fds.terminal {
        let _ = rustix::termios::tcsetpgrp(rustix::stdio::stdin(), rustix::process::getpid());
    }
    let in_user_ns = fds.user_ns.is_some();
    if let Some(user_ns) = fds.user_ns {
        if let Err(e) = move_into_link_name_space(user_ns, Some(LinkNameSpaceType::User)) {
            fail(fds.report, Stage::UserNamespace, e.raw_os_error(), 125);
        }
        sys::close_range(user_ns.as_raw_fd() as u32, user_ns.as_raw_fd() as u32);
    }
    if let Err(e) = privileges.apply(in_user_ns) {
        fail(fds.report, Stage::Privileges(e.step), e.errno, 125);
    }
    // Changing credentials clears the parent-death signal; set it again.
    let _ = set_parent_process_death_signal(Some(Signal::KILL));
    sys::reset_signals_for_exec(&CHANGED_SIGNALS);

    let mut saw_eacces = false;
    let mut last = Errno::NOENT;
    for path in &cmd.candidates {
        match sys::execve(path, &cmd.argv, &cmd.envp) {
            Errno::NOENT | Errno::NOTDIR => {}
            Errno::ACCESS => saw_eacces = true,
            other => {
                last = other;
                break;
            }
        }
    }
    let errno = if saw_eacces && last == Errno::NOENT {
        Errno::ACCESS
    } else {
        last
    };
    let code = if errno == Errno::NOENT {
        EXIT_NOT_FOUND
    } else {
        EXIT_CANNOT_RUN
    };
    let errno = errno.raw_os_error();
    fail(fds.report, Stage::Exec, errno, code)
}

/// Writes the failure report and exits with `code`.
fn fail(report: BorrowedFd<'_>, stage: Stage, errno: i32, code: u8) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&stage.to_u32().to_le_bytes());
    msg[4..].copy_from_slice(&errno.to_le_bytes());
    let _ = rustix::io::write(report, &msg);
    sys::exit_now(code.into())
}

/// Closes every descriptor above 2 except those in `keep` (negative entries ignored), without
/// allocating (the command's process calls it between fork and exec).
pub fn close_all_except(keep: &[RawFd]) {
    const MAX: usize = 64;
    let mut sorted = [-1; MAX];
    let mut n = 0;
    for &fd in keep.iter().filter(|&&fd| fd > 2).take(MAX) {
        // Insertion sort: tiny inputs, no allocation.
        let mut i = n;
        while i > 0 && sorted[i - 1] > fd {
            sorted[i] = sorted[i - 1];
            i -= 1;
        }
        sorted[i] = fd;
        n += 1;
    }
    let mut next: u32 = 3;
    for &fd in &sorted[..n] {
        if fd < next as i32 {
            continue;
        }
        sys::close_range(next, fd as u32 - 1);
        next = fd as u32 + 1;
    }
    sys::close_range(next, u32::MAX);
}

/// Reads the failure report of the command's process: `None` when it exec'd (EOF).
pub fn read_report(report: BorrowedFd<'_>) -> Option<(Stage, i32)> {
    let mut msg = [0u8; 8];
    let mut got = 0;
    while got < msg.len() {
        match rustix::io::read(report, &mut msg[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    if got < msg.len() {
        return None;
    }
    let stage = u32::from_le_bytes(msg[..4].try_into().expect("4 bytes"));
    let errno = i32::from_le_bytes(msg[4..].try_into().expect("4 bytes"));
    Some((Stage::from_u32(stage), errno))
}

/// Maps a wait status like a shell: the exit code, or 128+N on signal N (125 otherwise).
pub fn exit_code(status: rustix::process::WaitStatus) -> u8 {
    if let Some(code) = status.exit_status() {
        code as u8
    } else if let Some(sig) = status.terminating_signal() {
        (128 + sig) as u8
    } else {
        125
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_args(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn env_with_path(path: &str) -> Environment {
        let mut env = Environment::default();
        env.set(b"PATH", path.as_bytes());
        env
    }

    #[test]
    fn path_search_candidates() {
        let env = env_with_path("/dev/crashcart/bin::/bin");
        let cmd = Command::new(&os_args(&["ls", "-l"]), &env).unwrap();
        let got: Vec<&str> = cmd.candidates.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(got, ["/dev/crashcart/bin/ls", "./ls", "/bin/ls"]);
        let cmd = Command::new(&os_args(&["./x"]), &env).unwrap();
        assert_eq!(cmd.candidates.len(), 1);
        assert!(Command::new(&[OsString::from("a\0b")], &env).is_err());
    }
}
