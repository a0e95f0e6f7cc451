//! The raw system calls rustix does not wrap, each wrapped once with the invariant that makes
//! it sound.
//!
//! - `fork`: rustix leaves process creation to the runtime; crashcart needs a plain fork
//!   because the child must `setns` before it creates the next child.
//! - loop-device ioctls (`LOOP_CTL_GET_FREE`, `LOOP_CONFIGURE`, `LOOP_GET_STATUS64`), with the
//!   kernel's structures and numbers from `linux-raw-sys` (rustix has no loop-device API).
//! - `execve` with argument arrays built before the fork, so the exec path allocates nothing.
//! - `close_range`, the signal mask, `signalfd` and signal dispositions.
//! - `fexecve`, to run crashcart again from its sealed in-memory copy.

use std::ffi::{c_char, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::io::Errno;
use rustix::process::Signal;

use linux_raw_sys::loop_device::{
    loop_config, loop_info64, LOOP_CONFIGURE, LOOP_CTL_GET_FREE, LOOP_GET_STATUS64,
};

/// `LO_FLAGS_READ_ONLY`.
pub const LO_FLAGS_READ_ONLY: u32 = linux_raw_sys::loop_device::LO_FLAGS_READ_ONLY as u32;
/// `LO_FLAGS_AUTOCLEAR`: the kernel detaches the device when its last user closes it.
pub const LO_FLAGS_AUTOCLEAR: u32 = linux_raw_sys::loop_device::LO_FLAGS_AUTOCLEAR as u32;

/// `struct loop_info64` from `<linux/loop.h>`, as the kernel's headers declare it.
pub type LoopInfo64 = loop_info64;

/// An all-zero `struct loop_info64`.
fn zeroed_loop_info() -> LoopInfo64 {
    // SAFETY: loop_info64 is plain integers and byte arrays; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn cvt(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(ret)
    }
}

/// Asks `/dev/loop-control` for the number of a free loop device.
pub fn loop_get_free(control: BorrowedFd<'_>) -> Result<u32, Errno> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
    let n = cvt(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) })?;
    Ok(n as u32)
}

/// Binds `backing` to the loop device `dev` with `flags` in one step.
pub fn loop_configure(
    dev: BorrowedFd<'_>,
    backing: BorrowedFd<'_>,
    flags: u32,
) -> Result<(), Errno> {
    let mut info = zeroed_loop_info();
    info.lo_flags = flags;
    let config = loop_config {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info,
        __reserved: [0; 8],
    };
    // SAFETY: `config` is a live, fully initialised `struct loop_config`; the kernel only reads
    // it during the call.
    cvt(unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE as _,
            &config as *const loop_config,
        )
    })?;
    Ok(())
}

/// Reads the status of the loop device `dev` (ENXIO when nothing is attached).
pub fn loop_get_status(dev: BorrowedFd<'_>) -> Result<LoopInfo64, Errno> {
    let mut info = zeroed_loop_info();
    // SAFETY: `info` is a writable `struct loop_info64` that outlives the call; the kernel
    // writes exactly that structure.
    cvt(unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_GET_STATUS64 as _,
            &mut info as *mut LoopInfo64,
        )
    })?;
    Ok(info)
}

/// The two sides of a fork.
pub enum Fork {
    /// In the parent, with the child's PID (in the parent's PID namespace).
    Parent(rustix::process::Pid),
    /// In the child.
    Child,
}

/// Forks the calling process.
///
/// crashcart never starts a thread, so the child is an exact, consistent copy: no lock can be
/// held by a thread that does not exist in the child.
pub fn fork() -> Result<Fork, rustix::io::Errno> {
    // SAFETY: the process is single-threaded (crashcart spawns no threads), so the child
    // inherits no lock held by another thread; both sides continue in safe Rust.
    match unsafe { libc::fork() } {
        -1 => Err(
            rustix::io::Errno::from_io_error(&io::Error::last_os_error())
                .unwrap_or(rustix::io::Errno::AGAIN),
        ),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(
            rustix::process::Pid::from_raw(pid).expect("fork returns a positive PID"),
        )),
    }
}

/// Ends the calling process at once, without running destructors or atexit handlers (a forked
/// child must not flush or free its parent's state).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// Closes every descriptor from `first` up to and including `last`.
pub fn close_range(first: u32, last: u32) {
    if first > last {
        return;
    }
    // SAFETY: close_range only closes descriptors; callers pass ranges that exclude every
    // descriptor they still use. Failure (pre-5.9 kernel) leaves the fds to O_CLOEXEC.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, last, 0u32);
    }
}

/// A NULL-terminated array of C strings for `execve`, built before forking.
pub struct CStringArray {
    _owned: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CStringArray {
    /// Builds the array from owned strings.
    pub fn new(strings: Vec<CString>) -> Self {
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        CStringArray {
            _owned: strings,
            ptrs,
        }
    }
}

/// `execve(path, argv, envp)`; returns only on failure, with the error.
pub fn execve(path: &CString, argv: &CStringArray, envp: &CStringArray) -> Errno {
    // SAFETY: `path` is NUL-terminated; `argv.ptrs` and `envp.ptrs` point into strings owned by
    // the same arrays and end with NULL, and both arrays outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv.ptrs.as_ptr(), envp.ptrs.as_ptr()) };
    last_errno()
}

/// Replaces the calling process with the program in `fd` (an executable memfd), with the
/// current environment; returns only on failure.
pub fn fexecve(fd: BorrowedFd<'_>, argv: &CStringArray) -> io::Error {
    extern "C" {
        static environ: *const *const c_char;
    }
    // SAFETY: `fd` is open; `argv.ptrs` is a NULL-terminated array of NUL-terminated strings that
    // outlives the call; `environ` is libc's current environment array (crashcart is
    // single-threaded, so nothing modifies it concurrently).
    unsafe { libc::fexecve(fd.as_raw_fd(), argv.ptrs.as_ptr(), environ) };
    io::Error::last_os_error()
}

/// Moves the calling process into a copy of its mount namespace (`unshare(CLONE_NEWNS)`).
pub fn unshare_mount_namespace() -> Result<(), Errno> {
    // SAFETY: crashcart is single-threaded, so no other thread shares (or can observe the
    // change of) the filesystem context that CLONE_NEWNS unshares.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
}

/// A set of signals.
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// The set holding `signals`.
    pub fn of(signals: &[i32]) -> Self {
        // SAFETY: sigemptyset initialises the zeroed sigset_t; sigaddset only sets bits in it
        // (invalid numbers are rejected with EINVAL and ignored).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            SignalSet(set)
        }
    }

    /// Blocks this set for the calling (only) thread.
    pub fn block(&self) {
        // SAFETY: `self.0` is an initialised sigset_t; a NULL old set is allowed.
        unsafe { libc::sigprocmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
    }

    /// A non-blocking, close-on-exec descriptor that becomes readable when a signal of this
    /// (blocked) set is pending; [`read_signal`] takes one.
    pub fn signalfd(&self) -> Result<std::os::fd::OwnedFd, Errno> {
        // SAFETY: -1 asks for a new descriptor; `self.0` is an initialised sigset_t. On success
        // the returned descriptor is ours alone.
        let fd =
            cvt(unsafe { libc::signalfd(-1, &self.0, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
        Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    }
}

/// One signal taken from a [`SignalSet::signalfd`] descriptor.
#[derive(Debug, Clone, Copy)]
pub struct SignalInfo {
    /// The signal number.
    pub signo: i32,
    /// The sender's PID, as the kernel reports it.
    pub pid: u32,
    /// `si_code` (`SI_QUEUE` for [`queue_signal`]).
    pub code: i32,
    /// The value sent with [`queue_signal`].
    pub value: i32,
}

/// Takes one pending signal from a [`SignalSet::signalfd`] descriptor, or `None` when none is
/// pending.
pub fn read_signal(fd: BorrowedFd<'_>) -> Option<SignalInfo> {
    // SAFETY: signalfd_siginfo is plain integers; all-zero is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of exactly `size` bytes that outlives the call.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (n == size as isize).then_some(SignalInfo {
        signo: info.ssi_signo as i32,
        pid: info.ssi_pid,
        code: info.ssi_code,
        // The kernel copies the whole sigval into ssi_ptr; queue_signal sends an integer there.
        value: info.ssi_ptr as i32,
    })
}

/// Sends `sig` with the value `value` to `pid` (`sigqueue`).
pub fn queue_signal(pid: i32, sig: i32, value: i32) -> Result<(), Errno> {
    let value = libc::sigval {
        sival_ptr: value as usize as *mut libc::c_void,
    };
    // SAFETY: sigqueue only reads its arguments; the value travels as an integer.
    cvt(unsafe { libc::sigqueue(pid, sig, value) }).map(drop)
}

/// Unblocks every signal and restores the default disposition of those crashcart (or the Rust
/// runtime) changed, so the command starts as if spawned by a shell. Async-signal-safe.
pub fn reset_signals_for_exec(changed: &[Signal]) {
    // SAFETY: an all-empty set unblocks everything; SIG_DFL is always a valid disposition for
    // catchable signals. Both calls are async-signal-safe.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for s in changed {
            libc::signal(s.as_raw(), libc::SIG_DFL);
        }
    }
}

// --- privileges ---
//
// `ptrace` requests that read a target's seccomp filters, and `seccomp(SECCOMP_SET_MODE_FILTER)`;
// rustix wraps neither. All of them are async-signal-safe: no allocation, errno read directly.

/// `PTRACE_SECCOMP_GET_FILTER` from `<linux/ptrace.h>` (Linux 4.4, needs
/// `CONFIG_CHECKPOINT_RESTORE`).
const PTRACE_SECCOMP_GET_FILTER: libc::c_long = 0x420c;

/// The errno of the last failed libc call, without allocating.
fn last_errno() -> rustix::io::Errno {
    rustix::io::Errno::from_raw_os_error(io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// `ptrace(request, pid, addr, data)` for requests that return 0 or -1.
fn ptrace_simple(
    request: libc::c_long,
    pid: i32,
    addr: libc::c_ulong,
    data: libc::c_ulong,
) -> Result<libc::c_long, rustix::io::Errno> {
    // SAFETY: callers pass only requests whose `addr` and `data` are plain integers (SEIZE,
    // INTERRUPT, DETACH) or a pointer they own (SECCOMP_GET_FILTER); the kernel never keeps
    // either after the call returns.
    let ret = unsafe { libc::syscall(libc::SYS_ptrace, request, pid as libc::c_long, addr, data) };
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(ret)
    }
}

/// `PTRACE_SEIZE` without options: becomes `pid`'s tracer without stopping it.
pub fn ptrace_seize(pid: i32) -> Result<(), rustix::io::Errno> {
    ptrace_simple(libc::PTRACE_SEIZE as libc::c_long, pid, 0, 0).map(drop)
}

/// `PTRACE_INTERRUPT`: asks the seized `pid` to enter a ptrace-stop.
pub fn ptrace_interrupt(pid: i32) -> Result<(), rustix::io::Errno> {
    ptrace_simple(libc::PTRACE_INTERRUPT as libc::c_long, pid, 0, 0).map(drop)
}

/// `PTRACE_DETACH`, delivering `signal` (0: none) to the stopped `pid` as it resumes.
pub fn ptrace_detach(pid: i32, signal: i32) -> Result<(), rustix::io::Errno> {
    ptrace_simple(
        libc::PTRACE_DETACH as libc::c_long,
        pid,
        0,
        signal as libc::c_ulong,
    )
    .map(drop)
}

/// `PTRACE_SECCOMP_GET_FILTER`: the number of instructions of the stopped tracee's seccomp
/// filter `index` (0 is the oldest: kernel/seccomp.c `get_nth_filter`), copied into `buf` when
/// it is given and large enough. ENOENT past the newest filter.
pub fn ptrace_seccomp_get_filter(
    pid: i32,
    index: u64,
    buf: Option<&mut [libc::sock_filter]>,
) -> Result<usize, rustix::io::Errno> {
    let ptr = match buf {
        // The kernel writes the whole filter or nothing, so the buffer must hold it.
        Some(buf) => {
            let needed = ptrace_seccomp_get_filter(pid, index, None)?;
            if buf.len() < needed {
                return Err(rustix::io::Errno::NOSPC);
            }
            buf.as_mut_ptr() as libc::c_ulong
        }
        None => 0,
    };
    ptrace_simple(PTRACE_SECCOMP_GET_FILTER, pid, index as libc::c_ulong, ptr).map(|n| n as usize)
}

/// `struct sock_fprog` from `<linux/filter.h>`.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const libc::sock_filter,
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, program)`: adds `program` to the calling thread's
/// filters. Needs `no_new_privs` or `CAP_SYS_ADMIN` in the thread's user namespace.
/// Async-signal-safe.
pub fn seccomp_set_mode_filter(program: &[libc::sock_filter]) -> Result<(), rustix::io::Errno> {
    let Ok(len) = libc::c_ushort::try_from(program.len()) else {
        return Err(rustix::io::Errno::INVAL);
    };
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `len` initialised instructions that outlive the call; the kernel
    // copies them (copy_from_user) and keeps no pointer to our memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &prog as *const SockFprog,
        )
    };
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}
