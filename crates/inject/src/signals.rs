//! Signals during a session: crashcart blocks the ones it forwards (and SIGCHLD) before it
//! forks, so none is lost or acts on crashcart itself, and takes them from a `signalfd` in the
//! same poll loop that relays the command's streams ([`crate::relay`]). Each is passed to the
//! helper, which passes it to the command.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

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

/// The signal the helper gets when crashcart dies (its parent-death signal): a signal nothing
/// else sends it, so it cannot be mistaken for a forwarded one.
pub const PARENT_DIED: i32 = libc::SIGPWR;

/// The signal the helper sends crashcart, with the command's exit status as its value, as soon
/// as the command has exited: crashcart can then return while the helper ends what is left of
/// the session. Only the helper can send it (crashcart is not visible in the container).
pub fn command_exited() -> i32 {
    libc::SIGRTMIN() + 3
}

/// The forwarded signals, SIGCHLD and [`PARENT_DIED`], blocked, with a descriptor to take them
/// from.
pub struct Forwarding {
    fd: OwnedFd,
}

impl Forwarding {
    /// Blocks the forwarded signals, SIGCHLD, [`PARENT_DIED`] and SIGTTOU (so crashcart can
    /// set the terminal from the background at the end). Children inherit the mask; the
    /// command's process clears it before exec.
    pub fn block() -> std::io::Result<Forwarding> {
        let waited: Vec<i32> = FORWARDED
            .iter()
            .copied()
            .chain([libc::SIGCHLD, PARENT_DIED, command_exited()])
            .collect();
        let waited = SignalSet::of(&waited);
        waited.block();
        SignalSet::of(&[libc::SIGTTOU]).block();
        Ok(Forwarding {
            fd: waited.signalfd()?,
        })
    }

    /// The descriptor that is readable while a blocked signal is pending.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
