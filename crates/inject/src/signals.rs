//! Signals during a session: crashcart blocks the ones it forwards (and SIGCHLD) before it
//! forks, so none is lost or acts on crashcart itself, and takes them from a `signalfd` in the
//! same poll loop that relays the command's streams ([`crate::relay`]). Each is passed to the
//! helper, which passes it to the command.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::process::Signal;

use crate::sys::SignalSet;

/// Signals crashcart forwards to the command.
pub const FORWARDED: [Signal; 7] = [
    Signal::INT,
    Signal::TERM,
    Signal::HUP,
    Signal::QUIT,
    Signal::USR1,
    Signal::USR2,
    Signal::WINCH,
];

/// The signal the helper gets when crashcart dies (its parent-death signal): a signal nothing
/// else sends it, so it cannot be mistaken for a forwarded one.
pub const PARENT_DIED: Signal = Signal::POWER;

/// The signal the helper sends crashcart, with the command's exit status as its value, as soon
/// as the command has exited: crashcart can then return while the helper ends what is left of
/// the session. Only the helper can send it (crashcart is not visible in the container).
pub fn command_exited() -> i32 {
    libc::SIGRTMIN() + 3
}

/// The signals the helper waits for: the forwarded ones, SIGCHLD and [`PARENT_DIED`].
pub fn waited_by_helper() -> Vec<i32> {
    FORWARDED
        .iter()
        .chain(&[Signal::CHILD, PARENT_DIED])
        .map(|s| s.as_raw())
        .collect()
}

/// The signals crashcart waits for: the helper's and [`command_exited`].
fn waited_by_crashcart() -> Vec<i32> {
    let mut waited = waited_by_helper();
    waited.push(command_exited());
    waited
}

/// The forwarded signals, SIGCHLD, [`PARENT_DIED`] and [`command_exited`], blocked, with a
/// descriptor to take them from.
pub struct Forwarding {
    fd: OwnedFd,
}

impl Forwarding {
    /// Blocks the forwarded signals, SIGCHLD, [`PARENT_DIED`] and SIGTTOU (so crashcart can
    /// set the terminal from the background at the end). Children inherit the mask; the
    /// command's process clears it before exec.
    pub fn block() -> Result<Forwarding, rustix::io::Errno> {
        let waited = SignalSet::of(&waited_by_crashcart());
        waited.block();
        SignalSet::of(&[Signal::TTOU.as_raw()]).block();
        Ok(Forwarding {
            fd: waited.signalfd()?,
        })
    }

    /// The descriptor that is readable while a blocked signal is pending.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
