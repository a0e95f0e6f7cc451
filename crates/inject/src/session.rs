//! A crashcart run, from target to exit status. Process structure of a session:
//!
//! ```text
//! crashcart (host)  ── fork ──▶ helper (stays in the host PID namespace)
//!   forwards signals             setns(mnt), private copy, session /dev, setns(uts..pid)
//!   waits for helper             ── fork ──▶ command (in the target's PID namespace)
//!                                writes its PID       setns(user), waits for "go",
//!                                to cgroup.procs      setuid/setgid, exec
//!                                waits for it
//! ```
//!
//! The helper stays the command's parent so that, if crashcart is SIGKILLed (and the helper
//! with it, by its parent-death signal), the command is reparented to the host's init, not the
//! container's PID 1, which may never reap it. Both are made non-dumpable before they enter
//! anything, so container processes cannot ptrace them or open their descriptors.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use rustix::fs::{openat2, statat, AtFlags, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{
    getpgrp, getpid, getppid, pidfd_open, set_dumpable_behavior, set_parent_process_death_signal,
    setpgid, waitpid, DumpableBehavior, Pid, PidfdFlags, Signal, WaitOptions, WaitStatus,
};
use rustix::termios::{isatty, tcgetpgrp, tcsetpgrp};

use crate::cgroup::{CgroupError, CgroupProcs};
use crate::cli::{Cli, EXIT_CRASHCART};
use crate::devdir::{self, DevError};
use crate::environment::Environment;
use crate::exec::{self, ChildFds, Command, CommandError, Stage};
use crate::image::{self, Image, ImageError, Manifest};
use crate::loopdev::{self, LoopError};
use crate::mount::{self, MountError};
use crate::namespaces::{Kind, NamespaceError, Namespaces};
use crate::preload::{self, PreloadError};
use crate::process::{ProcessError, TargetProcess};
use crate::signals::Forwarding;
use crate::step;
use crate::sys::{self, Fork};
use crate::target::{self, ResolveError, Runtime, Target};

/// The default command when the image has bash.
const BASH: [&str; 4] = [
    "/dev/crashcart/bin/bash",
    "--rcfile",
    "/dev/crashcart/.crashcartrc",
    "-i",
];
/// The default command otherwise.
const SH: [&str; 1] = ["/dev/crashcart/bin/sh"];

/// Why a crashcart run failed (exit status 125).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Not running as root.
    #[error("must run as root (it attaches a loop device and enters namespaces)")]
    NotRoot,
    /// Target resolution failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The target process.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The image.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The loop device.
    #[error(transparent)]
    Loop(#[from] LoopError),
    /// A mount.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// `/dev/crashcart`.
    #[error(transparent)]
    Dev(#[from] DevError),
    /// The container's loader preload file could not be covered.
    #[error(transparent)]
    Preload(#[from] PreloadError),
    /// A namespace.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// A cgroup.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The command line of the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// `-e` with a target that is not a Docker container.
    #[error("-e runs the command with docker exec, but {0} is not a Docker container")]
    ExecNeedsDocker(String),
    /// No COMMAND and no shell in the image.
    #[error("image {} has neither bin/bash nor bin/sh; give a COMMAND", .0.display())]
    NoShell(PathBuf),
    /// The target's PID namespace died before the command could start.
    #[error("pid {0} exited while crashcart was entering it")]
    TargetExited(u32),
    /// A process-management step failed.
    #[error("cannot {what}: {source}")]
    Sys {
        /// The step.
        what: &'static str,
        /// Why.
        source: Errno,
    },
    /// `docker exec` could not be started.
    #[error("cannot run docker exec: {0}")]
    DockerExec(std::io::Error),
}

fn sys_err(what: &'static str) -> impl FnOnce(Errno) -> SessionError {
    move |source| SessionError::Sys { what, source }
}

/// Runs crashcart as the command line asks; returns the exit status.
pub fn run(cli: &Cli) -> Result<u8, SessionError> {
    if !rustix::process::geteuid().is_root() {
        return Err(SessionError::NotRoot);
    }
    let spec = cli.target().unwrap_or_default();
    let target = target::resolve(spec)?;
    step!(
        "target {spec:?} is pid {} ({:?}{})",
        target.pid,
        target.runtime,
        target
            .id
            .as_deref()
            .map(|id| format!(" {id}"))
            .unwrap_or_default()
    );
    if cli.exec && target.runtime != Runtime::Docker {
        return Err(SessionError::ExecNeedsDocker(spec.to_string()));
    }
    let process = TargetProcess::open(target.pid)?;
    if cli.unmount {
        return in_mount_namespace(&process, devdir::unmount_persistent);
    }

    let image = Image::open(&image::choose(cli.image.as_deref())?)?;
    let (image_mount, manifest) = mount_image(&image)?;
    // -m alone runs nothing; otherwise decide the command while the image is at hand.
    let command = if cli.mount && !cli.exec {
        Vec::new()
    } else if cli.command_args().is_empty() {
        default_command(image_mount.as_fd(), &image.path)?
    } else {
        cli.command_args().to_vec()
    };
    if cli.mount || cli.exec {
        let alias = manifest.store_alias.clone();
        let code = in_mount_namespace(&process, move |dev| {
            devdir::mount_persistent(dev, image_mount, alias.as_deref())
        })?;
        if code != 0 {
            return Ok(code);
        }
        if cli.exec {
            return docker_exec(&target, &process, &command, cli.user);
        }
        return Ok(0);
    }
    session(cli, &process, image_mount, &manifest, &command)
}

/// Attaches the image and mounts it (detached) while holding the image lock, then reads its
/// manifest.
fn mount_image(image: &Image) -> Result<(OwnedFd, Manifest), SessionError> {
    let mount = {
        let lock = loopdev::lock(image)?;
        let device = loopdev::attach_read_only(image, &lock)?;
        // The mount holds the device from here on; dropping our descriptor (and the lock)
        // leaves autoclear to the mounts.
        mount::mount_image_detached(&device.path)?
    };
    let manifest = Manifest::read(mount.as_fd(), &image.path)?;
    Ok((mount, manifest))
}

/// bash (with the image's rc file) if the image has `bin/bash`, else its `bin/sh`.
fn default_command(
    image_root: BorrowedFd<'_>,
    image: &Path,
) -> Result<Vec<OsString>, SessionError> {
    let bin = openat2(
        image_root,
        "bin",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|_| SessionError::NoShell(image.to_path_buf()))?;
    // The final component may be an absolute symlink meant to resolve inside the container
    // (nix images): its presence is enough.
    let has = |name: &str| statat(&bin, name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
    let args: &[&str] = if has("bash") {
        &BASH
    } else if has("sh") {
        &SH
    } else {
        return Err(SessionError::NoShell(image.to_path_buf()));
    };
    Ok(exec::os_args(args))
}

/// Runs `work` on the target mount namespace's `/dev` in a forked helper (crashcart itself must
/// stay on the host), for `-m` and `-u`. Returns 0, or the error the helper printed as 125.
fn in_mount_namespace(
    process: &TargetProcess,
    work: impl FnOnce(BorrowedFd<'_>) -> Result<(), DevError>,
) -> Result<u8, SessionError> {
    let mut namespaces = Namespaces::open(process)?;
    let parent = getpid();
    match sys::fork().map_err(sys_err("fork"))? {
        Fork::Child => {
            let result = harden(parent)
                .and_then(|()| Ok(namespaces.enter(Kind::Mnt)?))
                .and_then(|()| Ok(devdir::open_dev()?))
                .and_then(|dev| Ok(work(dev.as_fd())?));
            sys::exit_now(match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("crashcart: {e}");
                    EXIT_CRASHCART.into()
                }
            })
        }
        Fork::Parent(helper) => {
            drop(namespaces);
            Ok(wait_exit_code(helper))
        }
    }
}

/// Makes the calling (forked) process undumpable and tied to `parent`'s life.
fn harden(parent: Pid) -> Result<(), SessionError> {
    // Not dumpable: container processes cannot ptrace us or open /proc/<us>/fd (runc does the
    // same); exec resets it for the command.
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(sys_err("set not dumpable"))?;
    set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(sys_err("set the parent-death signal"))?;
    if getppid() != Some(parent) {
        // crashcart died before the death signal was armed.
        sys::exit_now(EXIT_CRASHCART.into());
    }
    Ok(())
}

/// `-e`: the mount is in place; hand over to `docker exec -i [-t]` with the image on PATH.
fn docker_exec(
    target: &Target,
    process: &TargetProcess,
    command: &[OsString],
    user: Option<(u32, u32)>,
) -> Result<u8, SessionError> {
    let id = target.id.clone().unwrap_or_default();
    let environ = process.environ()?;
    let env = Environment::for_command(&environ, None, &[]);
    let mut docker = std::process::Command::new("docker");
    docker.arg("exec").arg("-i");
    if isatty(std::io::stdin()) {
        docker.arg("-t");
    }
    let mut path = OsString::from("PATH=");
    path.push(std::ffi::OsStr::from_bytes(
        env.get(b"PATH").unwrap_or_default(),
    ));
    if let Some((uid, gid)) = user {
        docker.arg("--user").arg(format!("{uid}:{gid}"));
    }
    docker.arg("-e").arg(path).arg(&id).args(command);
    step!("exec: {docker:?}");
    Err(SessionError::DockerExec(docker.exec()))
}

/// A session: the command runs in the target with the image at /dev/crashcart, visible only
/// to it.
fn session(
    cli: &Cli,
    process: &TargetProcess,
    image_mount: OwnedFd,
    manifest: &Manifest,
    args: &[OsString],
) -> Result<u8, SessionError> {
    let namespaces = Namespaces::open(process)?;
    let cgroups = CgroupProcs::open(process)?;
    let cwd = process.cwd()?;
    let environ = process.environ()?;
    let env =
        Environment::for_command(&environ, std::env::var_os("TERM").as_deref(), &manifest.env);
    let command = Command::new(args, &env, cli.user.unwrap_or((0, 0)))?;
    let stdin = std::io::stdin();
    let job_control = isatty(&stdin) && tcgetpgrp(&stdin).is_ok_and(|pg| pg == getpgrp());

    let forwarding = Forwarding::block();

    let (status_r, status_w) = pipe_with(PipeFlags::CLOEXEC).map_err(sys_err("create a pipe"))?;
    let parent = getpid();
    let helper_args = Helper {
        parent,
        pid: process.pid,
        namespaces,
        cgroups,
        image_mount,
        store_alias: manifest.store_alias.clone(),
        cwd,
        command,
        status: status_w,
        job_control,
    };
    match sys::fork().map_err(sys_err("fork"))? {
        Fork::Child => {
            drop(status_r);
            let code = helper_args.run().unwrap_or_else(|e| {
                eprintln!("crashcart: {e}");
                EXIT_CRASHCART
            });
            sys::exit_now(code.into())
        }
        Fork::Parent(helper) => {
            // Our copies would keep the session's mount (and so the loop device) alive.
            drop(helper_args);
            Ok(supervise(helper, &status_r, job_control, &forwarding))
        }
    }
}

/// What the helper process needs, moved into it at the fork.
struct Helper {
    parent: Pid,
    pid: u32,
    namespaces: Namespaces,
    cgroups: CgroupProcs,
    image_mount: OwnedFd,
    store_alias: Option<String>,
    cwd: Option<PathBuf>,
    command: Command,
    status: OwnedFd,
    job_control: bool,
}

impl Helper {
    /// The helper: enters the target, starts the command, reports its PID, waits for it.
    fn run(self) -> Result<u8, SessionError> {
        let Helper {
            parent,
            pid,
            mut namespaces,
            cgroups,
            image_mount,
            store_alias,
            cwd,
            command,
            status,
            job_control,
        } = self;
        harden(parent)?;
        namespaces.enter(Kind::Mnt)?;
        mount::enter_private_copy()?;
        let dev = devdir::open_dev()?;
        devdir::build_session_dev(dev.as_fd(), image_mount, store_alias.as_deref())?;
        drop(dev);
        preload::cover_preload_file()?;
        enter_cwd(cwd.as_deref());
        for kind in [
            Kind::Uts,
            Kind::Ipc,
            Kind::Net,
            Kind::Cgroup,
            Kind::Time,
            Kind::Pid,
        ] {
            namespaces.enter(kind)?;
        }
        step!("entered the namespaces of pid {pid}");
        let user_ns = namespaces.take(Kind::User);
        drop(namespaces);

        let (go_r, go_w) = pipe_with(PipeFlags::CLOEXEC).map_err(sys_err("create a pipe"))?;
        let (report_r, report_w) =
            pipe_with(PipeFlags::CLOEXEC).map_err(sys_err("create a pipe"))?;
        let child = match sys::fork() {
            Ok(Fork::Child) => exec::run_command(
                &command,
                ChildFds {
                    go: go_r.as_fd(),
                    report: report_w.as_fd(),
                    user_ns: user_ns.as_ref().map(|f| f.as_fd()),
                },
            ),
            Ok(Fork::Parent(child)) => child,
            // fork into a PID namespace whose init has died fails with ENOMEM.
            Err(Errno::NOMEM) => return Err(SessionError::TargetExited(pid)),
            Err(e) => return Err(sys_err("fork")(e)),
        };
        drop((go_r, report_w, user_ns));
        let _ = rustix::io::write(&status, &child.as_raw_nonzero().get().to_le_bytes());
        drop(status);

        let started = cgroups
            .join(child.as_raw_nonzero().get())
            .map_err(SessionError::from);
        drop(cgroups);
        if let Err(e) = started {
            let _ = rustix::process::kill_process(child, Signal::KILL);
            let _ = waitpid(Some(child), WaitOptions::empty());
            return Err(e);
        }
        if job_control {
            // The command gets its own process group in the foreground, like a job a shell
            // starts: Ctrl-C reaches it (and what it runs), not crashcart.
            let _ = setpgid(Some(child), Some(child));
            let _ = tcsetpgrp(std::io::stdin(), child);
        }
        let _ = rustix::io::write(&go_w, &[1]);
        drop(go_w);

        let report = exec::read_report(report_r.as_fd());
        let code = match job_control {
            true => wait_as_foreground_job(child),
            false => wait_exit_code(child),
        };
        if let Some((stage, errno)) = report {
            let why = Errno::from_raw_os_error(errno);
            match stage {
                Stage::Exec if errno == libc::ENOENT => {
                    eprintln!(
                        "crashcart: cannot run {}: not found in the container",
                        command.program
                    )
                }
                Stage::Exec => eprintln!("crashcart: cannot run {}: {why}", command.program),
                Stage::UserNamespace => {
                    eprintln!("crashcart: cannot enter the user namespace of pid {pid}: {why}")
                }
                Stage::Groups | Stage::Gid | Stage::Uid => {
                    eprintln!("crashcart: cannot switch to the requested user/group: {why}")
                }
            }
        }
        Ok(code)
    }
}

/// Changes to the target's working directory, resolved inside the (new) root without letting
/// symlinks lead out of it; `/` when it cannot.
fn enter_cwd(cwd: Option<&Path>) {
    let Some(cwd) = cwd else { return };
    let dir = openat2(
        CWD,
        cwd,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    );
    match dir.and_then(rustix::process::fchdir) {
        Ok(()) => {}
        Err(e) => step!(
            "cannot enter working directory {}: {e}; using /",
            cwd.display()
        ),
    }
}

/// crashcart's side of a session: forwards signals to the command until the helper exits, then
/// takes the terminal back. Returns the helper's exit status (the command's, mapped).
fn supervise(helper: Pid, status: &OwnedFd, job_control: bool, forwarding: &Forwarding) -> u8 {
    let mut buf = [0u8; 4];
    let command = match rustix::io::read(status, &mut buf) {
        Ok(4) => Pid::from_raw(i32::from_le_bytes(buf)),
        _ => None,
    };
    let command = command.and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok());
    let code = forwarding
        .until_exit(helper, command.as_ref())
        .map_or(EXIT_CRASHCART, exit_code);
    if job_control {
        let _ = tcsetpgrp(std::io::stdin(), getpgrp());
    }
    code
}

/// Waits for the command running as the terminal's foreground job. When it is stopped
/// (Ctrl-Z), does what a shell does for a stopped job one level up: takes the terminal back for
/// crashcart's process group and stops that group, so the shell that started crashcart regains
/// the terminal; its `fg` continues us, and we hand the terminal back to the command.
fn wait_as_foreground_job(command: Pid) -> u8 {
    let stdin = std::io::stdin();
    loop {
        match waitpid(Some(command), WaitOptions::UNTRACED) {
            Ok(Some((_, status))) if status.stopped() => {
                // SIGTTOU is blocked (inherited from crashcart): we may take the terminal from
                // the background.
                let _ = tcsetpgrp(&stdin, getpgrp());
                let _ = rustix::process::kill_current_process_group(Signal::TSTP);
                // Continued (by `fg`, which gave our group the terminal).
                let _ = tcsetpgrp(&stdin, command);
                let _ = rustix::process::kill_process_group(command, Signal::CONT);
            }
            Ok(Some((_, status))) => return exit_code(status),
            Err(Errno::INTR) => continue,
            _ => return EXIT_CRASHCART,
        }
    }
}

/// Waits for `pid` and maps its status like a shell: the exit code, or 128+N on signal N.
fn wait_exit_code(pid: Pid) -> u8 {
    loop {
        match waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return exit_code(status),
            Err(Errno::INTR) => continue,
            _ => return EXIT_CRASHCART,
        }
    }
}

fn exit_code(status: WaitStatus) -> u8 {
    if let Some(code) = status.exit_status() {
        code as u8
    } else if let Some(sig) = status.terminating_signal() {
        (128 + sig) as u8
    } else {
        EXIT_CRASHCART
    }
}
