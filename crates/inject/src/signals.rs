//! Signals during a session: crashcart blocks the ones it forwards (and SIGCHLD) before it
//! forks, so none is lost or acts on crashcart itself, then takes them one at a time with
//! `sigwaitinfo` and passes them to the command through a pidfd (which cannot reach another
//! process that later reuses the PID).

use std::os::fd::OwnedFd;

use rustix::process::{pidfd_send_signal, waitpid, Pid, Signal, WaitOptions, WaitStatus};

use crate::sys::SignalSet;

/// Signals crashcart forwards to the command.
pub const FORWARDED: [i32; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// The forwarded signals and SIGCHLD, blocked.
pub struct Forwarding {
    waited: SignalSet,
}

impl Forwarding {
    /// Blocks the forwarded signals, SIGCHLD and SIGTTOU (so crashcart can take the terminal
    /// back from the background at the end). Children inherit the mask; the command's process
    /// clears it before exec.
    pub fn block() -> Forwarding {
        let waited: Vec<i32> = FORWARDED.iter().copied().chain([libc::SIGCHLD]).collect();
        let waited = SignalSet::of(&waited);
        waited.block();
        SignalSet::of(&[libc::SIGTTOU]).block();
        Forwarding { waited }
    }

    /// Forwards signals to `command` until `helper` exits; returns the helper's status. Before
    /// there is a command (`None`), a terminating signal aborts the session by killing the
    /// helper.
    pub fn until_exit(&self, helper: Pid, command: Option<&OwnedFd>) -> Option<WaitStatus> {
        loop {
            let sig = self.waited.wait();
            if sig == libc::SIGCHLD {
                match waitpid(Some(helper), WaitOptions::NOHANG) {
                    Ok(Some((_, status))) => return Some(status),
                    Ok(None) => continue,
                    Err(_) => return None,
                }
            }
            match (command, Signal::from_named_raw(sig)) {
                (Some(command), Some(signal)) => {
                    let _ = pidfd_send_signal(command, signal);
                }
                (None, Some(signal)) if signal != Signal::WINCH => {
                    let _ = rustix::process::kill_process(helper, Signal::KILL);
                }
                _ => {}
            }
        }
    }
}
