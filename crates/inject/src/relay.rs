//! The command's standard streams, and crashcart's side of them.
//!
//! The caller's descriptors never enter the container: a terminal handed to a container process
//! can be written to with `TIOCSTI` (typing into the admin's host shell), and any host file
//! descriptor can be reopened through `/proc/PID/fd/N` by a container process allowed to
//! ptrace it. So the command always gets streams of its own and crashcart copies bytes:
//!
//! - **A terminal**, when crashcart's stdin is one: a new pty allocated in the container's own
//!   devpts instance (`/dev/pts/ptmx` reached through the target's root, never following a
//!   symlink, checked to be devpts), as `docker exec -t` does. The command sees `/dev/pts/N`
//!   of the container; crashcart holds the master, puts the caller's terminal in raw mode,
//!   passes window size changes on, and restores the terminal on every way out.
//! - **Pipes** otherwise: one each for stdin, stdout and stderr.
//!
//! crashcart's loop ([`Relay::run`]) also forwards signals to the helper and follows its state:
//! when the command stops (Ctrl-Z on the pty stops it like any job), the helper stops itself,
//! and crashcart gives the terminal back and stops its own job, so the shell that started it
//! regains the terminal; `fg` continues crashcart, which continues the helper, which continues
//! the command.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::{fstat, fstatfs, openat, openat2, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};
use rustix::pty::{ioctl_tiocgptpeer, unlockpt, OpenptFlags};
use rustix::termios::{isatty, tcgetattr, tcgetwinsize, tcsetattr, tcsetwinsize, OptionalActions};

use crate::process::TargetProcess;
use crate::signals::Forwarding;
use crate::step;
use crate::sys;

/// `DEVPTS_SUPER_MAGIC` from `<linux/magic.h>`.
const DEVPTS_SUPER_MAGIC: rustix::fs::FsWord = 0x1cd1;

/// Why the command's streams could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A pipe could not be made.
    #[error("cannot create a pipe for the command")]
    Pipe(#[source] Errno),
    /// The pty could not be allocated.
    #[error("cannot allocate a terminal in the container's /dev/pts")]
    Pty(#[source] Errno),
    /// The caller's terminal could not be switched to raw mode.
    #[error("cannot put the terminal in raw mode")]
    RawMode(#[source] Errno),
}

/// The command's ends of its streams, moved into the helper (which makes them its own 0, 1
/// and 2, so the command inherits exactly them).
pub struct CommandStreams {
    /// stdin, stdout, stderr (the same pty slave three times, or three pipe ends).
    pub fds: [OwnedFd; 3],
    /// Whether they are a terminal (the command then makes it its controlling terminal).
    pub terminal: bool,
}

/// crashcart's ends.
enum Ends {
    Pty {
        master: OwnedFd,
        /// False once the master reported that every slave descriptor is closed.
        output_open: bool,
    },
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
}

/// crashcart's side of the command's streams.
pub struct Relay {
    ends: Ends,
}

/// Sets up the command's streams: a pty of the container's devpts when crashcart's stdin is a
/// terminal (pipes when the container has no usable devpts), else pipes.
pub fn open(target: &TargetProcess) -> Result<(Relay, CommandStreams), RelayError> {
    let stdin = std::io::stdin();
    if isatty(&stdin) {
        match open_container_pty(target) {
            Ok((master, slave)) => {
                if let Ok(size) = tcgetwinsize(&stdin) {
                    let _ = tcsetwinsize(&master, size);
                }
                let fds = [
                    rustix::io::dup(&slave).map_err(RelayError::Pty)?,
                    rustix::io::dup(&slave).map_err(RelayError::Pty)?,
                    slave,
                ];
                let relay = Relay {
                    ends: Ends::Pty {
                        master,
                        output_open: true,
                    },
                };
                return Ok((
                    relay,
                    CommandStreams {
                        fds,
                        terminal: true,
                    },
                ));
            }
            Err(e) => step!("no terminal in the container ({e}); using pipes"),
        }
    }
    let pipe = || pipe_with(PipeFlags::CLOEXEC).map_err(RelayError::Pipe);
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    Ok((
        Relay {
            ends: Ends::Pipes {
                stdin: Some(in_w),
                stdout: Some(out_r),
                stderr: Some(err_r),
            },
        },
        CommandStreams {
            fds: [in_r, out_w, err_w],
            terminal: false,
        },
    ))
}

/// Opens `/dev/pts/ptmx` of the target's root (every symlink refused, `..` kept inside the
/// root), checks it is devpts's multiplexer, and returns a new master and its slave.
fn open_container_pty(target: &TargetProcess) -> Result<(OwnedFd, OwnedFd), Errno> {
    let root = openat(
        target.as_fd(),
        "root",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // O_NONBLOCK: a container that replaced the file with a FIFO cannot make us wait.
    let master = openat2(
        &root,
        "dev/pts/ptmx",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let st = fstat(&master)?;
    let on_devpts = fstatfs(&master).is_ok_and(|fs| fs.f_type == DEVPTS_SUPER_MAGIC);
    if FileType::from_raw_mode(st.st_mode) != FileType::CharacterDevice || !on_devpts {
        return Err(Errno::NODEV);
    }
    unlockpt(&master)?;
    let slave = ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )?;
    Ok((master, slave))
}

/// The caller's terminal in raw mode; restored when dropped.
struct RawTerminal {
    saved: rustix::termios::Termios,
    raw: rustix::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Result<RawTerminal, RelayError> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).map_err(RelayError::RawMode)?;
        let mut raw = saved.clone();
        raw.make_raw();
        let terminal = RawTerminal { saved, raw };
        terminal.make_raw().map_err(RelayError::RawMode)?;
        Ok(terminal)
    }

    fn make_raw(&self) -> Result<(), Errno> {
        tcsetattr(std::io::stdin(), OptionalActions::Now, &self.raw)
    }

    fn restore(&self) {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        self.restore();
    }
}

impl Relay {
    /// Copies bytes between the caller and the command, forwards signals to the helper and
    /// follows it until the command's status is in (the helper reports it, or exits with it)
    /// and its output is copied. Returns that status, `None` when it could not be learnt.
    pub fn run(self, helper: Pid, forwarding: &Forwarding) -> Result<Option<u8>, RelayError> {
        let terminal = match &self.ends {
            Ends::Pty { .. } => Some(RawTerminal::enter()?),
            Ends::Pipes { .. } => None,
        };
        let result = self.pump(helper, forwarding, terminal.as_ref());
        drop(terminal);
        Ok(result)
    }

    fn pump(
        mut self,
        helper: Pid,
        forwarding: &Forwarding,
        terminal: Option<&RawTerminal>,
    ) -> Option<u8> {
        let signals = forwarding.fd();
        let stdin = std::io::stdin();
        let mut stdin_open = true;
        // Bytes read from crashcart's stdin but not yet taken by the command.
        let mut pending: Vec<u8> = Vec::new();
        // Set once the helper reports the command's exit status: from then on only the rest of
        // its output is copied, for as long as it keeps coming.
        let mut reported: Option<u8> = None;
        for fd in self.child_input_and_outputs() {
            let _ = rustix::fs::fcntl_setfl(
                fd,
                rustix::fs::fcntl_getfl(fd).unwrap_or(OFlags::empty()) | OFlags::NONBLOCK,
            );
        }
        loop {
            // The command has exited and all of its output is copied: done, while the helper
            // ends the rest of the session.
            if reported.is_some() && self.outputs().is_empty() {
                break;
            }
            let input = self.input();
            let outputs = self.outputs();
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(6);
            fds.push(PollFd::new(&signals, PollFlags::IN));
            let stdin_slot = (stdin_open && pending.is_empty() && input.is_some()).then(|| {
                fds.push(PollFd::new(&stdin, PollFlags::IN));
                fds.len() - 1
            });
            let input_slot = match input {
                Some(fd) if !pending.is_empty() => {
                    fds.push(PollFd::from_borrowed_fd(fd, PollFlags::OUT));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            let first_output = fds.len();
            for (_, fd) in &outputs {
                fds.push(PollFd::from_borrowed_fd(*fd, PollFlags::IN));
            }
            let timeout = reported.map(|_| rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            });
            match poll(&mut fds, timeout.as_ref()) {
                Ok(0) if reported.is_some() => break,
                Ok(_) | Err(Errno::INTR) => {}
                Err(_) => break,
            }
            let ready = |slot: usize| !fds[slot].revents().is_empty();
            let signals_ready = ready(0);
            let stdin_ready = stdin_slot.is_some_and(ready);
            let input_ready = input_slot.is_some_and(ready);
            let outputs_ready: Vec<(usize, bool)> = outputs
                .iter()
                .enumerate()
                .map(|(i, (slot, _))| (*slot, ready(first_output + i)))
                .collect();
            drop((fds, outputs));

            for (slot, is_ready) in outputs_ready {
                if is_ready && !self.copy_output(slot) {
                    self.close_output(slot);
                }
            }
            if stdin_ready {
                let mut buf = [0u8; 4096];
                match rustix::io::read(&stdin, &mut buf) {
                    Ok(0) | Err(Errno::IO) => {
                        stdin_open = false;
                        self.close_input();
                        if matches!(self.ends, Ends::Pty { .. }) {
                            // The caller's terminal hung up (raw mode reads 0 bytes only
                            // then): the command gets the hangup, as over ssh.
                            let _ = kill_process(helper, Signal::HUP);
                        }
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(Errno::INTR | Errno::AGAIN) => {}
                    Err(_) => {
                        stdin_open = false;
                        self.close_input();
                    }
                }
            }
            if (input_ready || stdin_ready) && !pending.is_empty() {
                if let Some(fd) = self.input() {
                    match rustix::io::write(fd, &pending) {
                        Ok(n) => {
                            pending.drain(..n);
                        }
                        Err(Errno::AGAIN | Errno::INTR) => {}
                        Err(_) => {
                            pending.clear();
                            stdin_open = false;
                            self.close_input();
                        }
                    }
                }
            }
            if signals_ready {
                while let Some(info) = sys::read_signal(signals.as_fd()) {
                    match info.signo {
                        s if s == Signal::CHILD.as_raw() => {}
                        s if s == Signal::WINCH.as_raw() => self.pass_window_size(),
                        s if s == crate::signals::command_exited() => {
                            let from_helper = info.pid == helper.as_raw_nonzero().get() as u32
                                && info.code == libc::SI_QUEUE;
                            if from_helper {
                                reported = Some(info.value as u8);
                            }
                        }
                        s => {
                            if let Some(signal) = Signal::from_named_raw(s) {
                                let _ = kill_process(helper, signal);
                            }
                        }
                    }
                }
                match waitpid(Some(helper), WaitOptions::NOHANG | WaitOptions::UNTRACED) {
                    Ok(Some((_, status))) if status.stopped() => {
                        stop_like_a_job(helper, terminal);
                        self.pass_window_size();
                    }
                    Ok(Some((_, status))) => {
                        self.drain();
                        return reported.or(Some(crate::exec::exit_code(status)));
                    }
                    Ok(None) => {}
                    Err(Errno::INTR) => {}
                    Err(_) => break,
                }
            }
        }
        self.drain();
        reported
    }

    /// Where bytes from crashcart's stdin go.
    fn input(&self) -> Option<BorrowedFd<'_>> {
        match &self.ends {
            Ends::Pty { master, .. } => Some(master.as_fd()),
            Ends::Pipes { stdin, .. } => stdin.as_ref().map(|f| f.as_fd()),
        }
    }

    fn close_input(&mut self) {
        if let Ends::Pipes { stdin, .. } = &mut self.ends {
            *stdin = None;
        }
    }

    /// What the command writes, with where it goes: (0, master or stdout pipe), (1, stderr
    /// pipe), for those still open.
    fn outputs(&self) -> Vec<(usize, BorrowedFd<'_>)> {
        match &self.ends {
            Ends::Pty {
                master,
                output_open: true,
            } => vec![(0, master.as_fd())],
            Ends::Pty { .. } => Vec::new(),
            Ends::Pipes { stdout, stderr, .. } => [stdout, stderr]
                .into_iter()
                .enumerate()
                .filter_map(|(i, f)| f.as_ref().map(|f| (i, f.as_fd())))
                .collect(),
        }
    }

    fn child_input_and_outputs(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds: Vec<BorrowedFd<'_>> = self.outputs().into_iter().map(|(_, fd)| fd).collect();
        if let Ends::Pipes {
            stdin: Some(fd), ..
        } = &self.ends
        {
            fds.push(fd.as_fd());
        }
        fds
    }

    /// Copies what output `slot` has now to crashcart's stdout (slot 0) or stderr (slot 1);
    /// false at its end.
    fn copy_output(&mut self, slot: usize) -> bool {
        let outputs = self.outputs();
        let Some((_, fd)) = outputs.iter().find(|(s, _)| *s == slot) else {
            return false;
        };
        let mut buf = [0u8; 16384];
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => false,
            Ok(n) => {
                // A closed stdout (`crashcart ... | head`) ends nothing: keep draining, so the
                // command sees its own SIGPIPE-free end of the pipe.
                let _ = if slot == 1 {
                    std::io::stderr().write_all(&buf[..n])
                } else {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&buf[..n]).and_then(|()| out.flush())
                };
                true
            }
            Err(Errno::AGAIN | Errno::INTR) => true,
            // EIO on the master: every slave descriptor is closed.
            Err(_) => false,
        }
    }

    fn close_output(&mut self, slot: usize) {
        match &mut self.ends {
            Ends::Pty { output_open, .. } => *output_open = false,
            Ends::Pipes { stdout, stderr, .. } => match slot {
                0 => *stdout = None,
                _ => *stderr = None,
            },
        }
    }

    /// Copies whatever output is already there, without waiting for writers that may never
    /// close (a container process can hold the command's streams open).
    fn drain(&mut self) {
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        for _ in 0..4096 {
            let ready: Vec<usize> = {
                let outputs = self.outputs();
                let mut fds: Vec<PollFd<'_>> = outputs
                    .iter()
                    .map(|(_, fd)| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
                    .collect();
                if fds.is_empty() || poll(&mut fds, Some(&zero)).unwrap_or(0) == 0 {
                    break;
                }
                outputs
                    .iter()
                    .zip(&fds)
                    .filter(|(_, fd)| !fd.revents().is_empty())
                    .map(|((slot, _), _)| *slot)
                    .collect()
            };
            for slot in ready {
                if !self.copy_output(slot) {
                    self.close_output(slot);
                }
            }
        }
    }

    fn pass_window_size(&self) {
        if let Ends::Pty { master, .. } = &self.ends {
            if let Ok(size) = tcgetwinsize(std::io::stdin()) {
                let _ = tcsetwinsize(master, size);
            }
        }
    }
}

/// The helper stopped because the command did (Ctrl-Z on its terminal): give the caller's
/// terminal back, stop crashcart's own job as a shell's job stops, and once continued (`fg`),
/// take the terminal again and continue the helper, which continues the command.
fn stop_like_a_job(helper: Pid, terminal: Option<&RawTerminal>) {
    if let Some(t) = terminal {
        t.restore();
    }
    let _ = rustix::process::kill_current_process_group(Signal::TSTP);
    if let Some(t) = terminal {
        let _ = t.make_raw();
    }
    let _ = kill_process(helper, Signal::CONT);
}
