//! A crashcart run, from target to exit status. Process structure of a session:
//!
//! ```text
//! crashcart (host; sealed copy)  ── fork ──▶ helper (host PID namespace, own session)
//!   relays the command's streams      stdio := the command's pty or pipes; closes all else
//!   forwards signals to the helper    setns(mnt), private copy, session /dev, setns(uts..pid),
//!   follows the helper (Ctrl-Z)       joins the target's cgroups itself
//!                                     ── fork ──▶ command (target's PID namespace)
//!                                     forwards signals     setsid, controlling pty,
//!                                     waits; then kills    setns(user), profile, execve
//!                                     every process left
//!                                     in the session
//! ```
//!
//! The helper stays outside the container's PID namespace, so no container process can see or
//! ptrace it, and it is the one process that holds anything of the host. It survives crashcart
//! (which it learns of by its parent-death signal) so that it can end the session whatever
//! ends crashcart. The command's process is created with nothing of the host: its 0/1/2 are
//! container-side streams, and the only other descriptors it briefly holds are its exec-report
//! pipe and the target's user namespace.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::{openat2, statat, AtFlags, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{
    getpid, getppid, pidfd_open, set_dumpable_behavior, set_parent_process_death_signal, waitpid,
    DumpableBehavior, Pid, PidfdFlags, Signal, WaitOptions,
};
use rustix::termios::isatty;

use crate::cgroup::{CgroupError, CgroupProcs};
use crate::cli::EXIT_CRASHCART;
use crate::devdir::{self, DevError, HomeOwner};
use crate::environment::Environment;
use crate::exec::{self, ChildFds, Command, CommandError, Stage};
use crate::image::{self, Image, ImageError, Manifest};
use crate::loopdev::{self, LoopError};
use crate::mount::{self, MountError};
use crate::namespaces::{Kind, NamespaceError, Namespaces};
use crate::preload::{self, PreloadError};
use crate::privileges::{self, PrivilegeError, Privileges, Profile, TargetCredentials};
use crate::process::{ProcessError, TargetProcess};
use crate::relay::{self, CommandStreams, RelayError};
use crate::request::{self, Request};
use crate::resolve::{self, ResolveError, Runtime, Target};
use crate::sealed::{self, SealError};
use crate::signals::{Forwarding, PARENT_DIED};
use crate::step;
use crate::sys::{self, Fork, SignalSet};
use crate::user::{self, UserError, UserSpec};
use crashcart_layout as layout;

/// Arguments of the default command when it is bash and stdin is a terminal: POSIX mode,
/// because then bash reads only `$ENV` at startup — never the container's `/etc/bash.bashrc`
/// or `/etc/bashrc`, which an interactive bash reads even with `--rcfile`. The image's rc file
/// leaves POSIX mode. When stdin is not a terminal (commands piped in), bash runs
/// non-interactively, without arguments: it then reads only `$BASH_ENV` (the rc file), and
/// prints no prompts and no job-control warnings into the output.
const BASH_ARGS: [&str; 2] = ["--posix", "-i"];

impl SessionError {
    /// What to add to the one-line error when the likely cause is not in the error itself: a
    /// container the runtime's state names but crashcart cannot see running, while crashcart
    /// runs in a PID namespace of its own (a debugging pod without `hostPID`), where none of
    /// the runtime's PIDs are.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SessionError::Resolve(ResolveError::NotRunning(_) | ResolveError::PodNotRunning(_))
                if in_nested_pid_namespace() =>
            {
                Some(
                    "crashcart runs in a PID namespace of its own: if the runtime runs outside \
                     it, its PIDs are not seen here (from a pod: hostPID: true)",
                )
            }
            _ => None,
        }
    }
}

/// True when crashcart's PID namespace is not the initial one. Kernel threads live only in the
/// initial one: there PID 2 is `kthreadd`, whose parent is 0. (`NSpid` does not tell: a
/// container's `/proc` counts from the container's own namespace.)
fn in_nested_pid_namespace() -> bool {
    let kthreadd = std::fs::read_to_string("/proc/2/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .is_some_and(|ppid| ppid.trim() == "0")
    });
    !kthreadd
}

/// Why a crashcart run failed (exit status 125).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Not running as root.
    #[error("must run as root (it attaches a loop device and enters namespaces)")]
    NotRoot,
    /// The sealed copy could not be made.
    #[error(transparent)]
    Seal(#[from] SealError),
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
    /// The command's streams.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The profile's privileges could not be worked out.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// `--user` names no user or group of the container, or its files cannot be read.
    #[error(transparent)]
    User(#[from] UserError),
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
    #[error("cannot {what}")]
    Sys {
        /// The step.
        what: &'static str,
        /// Why.
        source: Errno,
    },
    /// `--list` could not write its output.
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
    /// `docker exec` could not be started.
    #[error("cannot run docker exec")]
    DockerExec(#[source] std::io::Error),
}

fn sys_err(what: &'static str) -> impl FnOnce(Errno) -> SessionError {
    move |source| SessionError::Sys { what, source }
}

/// Carries out `request`; returns the exit status.
pub fn run(request: &Request) -> Result<u8, SessionError> {
    if !rustix::process::geteuid().is_root() {
        return Err(SessionError::NotRoot);
    }
    let mut resolver = resolve::Resolver::from_env();
    if let Some(endpoint) = &request.cri_endpoint {
        resolver.cri_endpoint = Some(endpoint.clone());
    }
    if request.mode == request::Mode::List {
        let listings = resolve::list(&resolver)?;
        let table = std::io::IsTerminal::is_terminal(&std::io::stdout());
        return match crate::log::stdout_bytes(resolve::render(&listings, table).as_bytes()) {
            Ok(()) => Ok(0),
            Err(e) => Err(SessionError::Stdout(e)),
        };
    }
    sealed::ensure()?;
    let exe = sealed::original_exe();
    let spec = request.target.as_str();
    let target = resolver.resolve_or_suggest(spec)?;
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
    if matches!(request.mode, request::Mode::DockerExec { .. }) && target.runtime != Runtime::Docker
    {
        return Err(SessionError::ExecNeedsDocker(spec.to_string()));
    }
    let process = TargetProcess::open(target.pid)?;
    if request.mode == request::Mode::Unmount {
        let ours = loopdev::crashcart_devices();
        return in_mount_namespace(&process, move |dev| devdir::unmount_persistent(dev, &ours));
    }

    let image_path = image::choose(request.image.as_deref(), exe.as_deref())?;
    let image = Image::open(&image_path)?;
    let (image_mount, manifest) = mount_image(&image)?;
    drop(image);
    let shell = image_shell(image_mount.as_fd());
    let interactive = isatty(std::io::stdin());
    // The command as asked, else the image's shell (an error when it has none).
    let command_or_shell = |command: &Vec<OsString>| match (command.is_empty(), &shell) {
        (false, _) => Ok(command.clone()),
        (true, Some(shell)) => Ok(default_command(shell, interactive)),
        (true, None) => Err(SessionError::NoShell(image_path.clone())),
    };
    match &request.mode {
        request::Mode::Mount => {
            let user_ns = Namespaces::open(&process)?.differs(Kind::User);
            let code = mount_in_container(&process, image_mount, &manifest)?;
            if code == 0 && !request.quiet {
                crate::log::stderr_text(&mount_hint(spec, &target, shell.as_deref(), user_ns));
            }
            Ok(code)
        }
        request::Mode::DockerExec { command } => {
            let command = command_or_shell(command)?;
            let code = mount_in_container(&process, image_mount, &manifest)?;
            if code != 0 {
                return Ok(code);
            }
            docker_exec(&target, &process, &command, request.user.as_ref())
        }
        request::Mode::Session { command } => {
            let plan = SessionPlan {
                profile: request.profile,
                user: request.user.clone(),
                default_shell: command.is_empty(),
                interactive,
                command: command_or_shell(command)?,
                shell,
            };
            session(&process, image_mount, &manifest, plan)
        }
        request::Mode::Unmount | request::Mode::List => {
            unreachable!("handled before the image is opened")
        }
    }
}

/// `-m` (and the first half of `-e`): the image mounted at `/dev/crashcart` in the container's
/// own mount namespace, with the store alias.
fn mount_in_container(
    process: &TargetProcess,
    image_mount: OwnedFd,
    manifest: &Manifest,
) -> Result<u8, SessionError> {
    let alias = manifest.store_alias.clone();
    in_mount_namespace(process, move |dev| {
        devdir::mount_persistent(dev, image_mount, alias.as_deref())
    })
}

/// After `-m`: how to use the mount (`docker exec` for a Docker container, else `nsenter`)
/// and how to remove it.
fn mount_hint(spec: &str, target: &Target, shell: Option<&str>, user_ns: bool) -> String {
    let command = match shell {
        Some(bash) if bash.ends_with("/bash") => {
            format!("{bash} --rcfile {} -i", layout::IMAGE_RC)
        }
        Some(sh) => sh.to_string(),
        None => format!("{}/...", layout::IMAGE_BIN),
    };
    let enter = match (&target.runtime, &target.id) {
        (Runtime::Docker, Some(id)) => {
            let container = target
                .name
                .clone()
                .unwrap_or_else(|| id.chars().take(12).collect());
            format!("docker exec -it {container} {command}")
        }
        _ => format!(
            "nsenter -t {} -m -u -i -n -p{} {command}",
            target.pid,
            if user_ns { " -U" } else { "" }
        ),
    };
    format!(
        "crashcart: the image is mounted at {} in {spec}; use it with\n  {enter}\n\
         and remove it with\n  crashcart -u {spec}\n",
        layout::IMAGE_ROOT
    )
}

/// What a session runs, and with what privileges.
struct SessionPlan {
    profile: Profile,
    user: Option<UserSpec>,
    command: Vec<OsString>,
    /// The image's shell, for `SHELL`.
    shell: Option<String>,
    /// Whether `command` is the default shell (it then gets `ENV`, or `BASH_ENV` when not
    /// interactive, = the image's rc file).
    default_shell: bool,
    /// Whether crashcart's stdin is a terminal (the command then gets a pty).
    interactive: bool,
}

/// Attaches the image and mounts it (detached) while holding the image lock, then reads its
/// manifest.
fn mount_image(image: &Image) -> Result<(OwnedFd, Manifest), SessionError> {
    let mount = {
        let lock = loopdev::lock(image)?;
        let device = loopdev::attach_read_only(image, &lock)?;
        // The mount holds the device from here on; dropping our descriptor (and the lock)
        // leaves autoclear to the mounts.
        mount::mount_image_detached(&device.mount_source())?
    };
    let manifest = Manifest::read(mount.as_fd(), &image.path)?;
    Ok((mount, manifest))
}

/// The image's shell, `bin/bash`, else `bin/sh`, as the container sees it. The final component
/// may be an absolute symlink meant to resolve inside the container (nix images): its presence
/// is enough.
fn image_shell(image_root: BorrowedFd<'_>) -> Option<String> {
    let bin = openat2(
        image_root,
        layout::BIN_DIR,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    ["bash", "sh"]
        .into_iter()
        .find(|name| statat(&bin, *name, AtFlags::SYMLINK_NOFOLLOW).is_ok())
        .map(|name| format!("{}/{name}", layout::IMAGE_BIN))
}

/// The default command: the image's `shell`, bash reading only the image's rc file (in POSIX
/// mode and interactive on a terminal, see [`BASH_ARGS`]), or plain sh.
fn default_command(shell: &str, interactive: bool) -> Vec<OsString> {
    let mut args = vec![OsString::from(shell)];
    if shell.ends_with("/bash") && interactive {
        args.extend(BASH_ARGS.iter().map(OsString::from));
    }
    args
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
            let result = harden(parent, Signal::KILL)
                .and_then(|()| Ok(namespaces.enter(Kind::Mnt)?))
                .and_then(|()| Ok(devdir::open_dev()?))
                .and_then(|dev| Ok(work(dev.as_fd())?));
            sys::exit_now(match result {
                Ok(()) => 0,
                Err(e) => {
                    crate::log::say(format_args!("{}", crate::log::chain(&e)));
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

/// Makes the calling (forked) process undumpable and tied to `parent`'s life by `death`.
fn harden(parent: Pid, death: Signal) -> Result<(), SessionError> {
    // Not dumpable: container processes cannot ptrace us or open /proc/<us>/fd (runc does the
    // same); exec resets it for the command.
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(sys_err("set not dumpable"))?;
    set_parent_process_death_signal(Some(death)).map_err(sys_err("set the parent-death signal"))?;
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
    user: Option<&UserSpec>,
) -> Result<u8, SessionError> {
    let id = target.id.clone().unwrap_or_default();
    let environ = process.environ()?;
    let env = Environment::for_command(&environ, None, None, devdir::SESSION_HOME, &[]);
    let mut docker = std::process::Command::new("docker");
    docker.arg("exec").arg("-i");
    if isatty(std::io::stdin()) {
        docker.arg("-t");
    }
    let mut path = OsString::from("PATH=");
    path.push(std::ffi::OsStr::from_bytes(
        env.get(b"PATH").unwrap_or_default(),
    ));
    // docker exec resolves names in the container's passwd and group files itself.
    if let Some(user) = user {
        docker.arg("--user").arg(user.to_string());
    }
    docker.arg("-e").arg(path).arg(&id).args(command);
    step!("exec: {docker:?}");
    Err(SessionError::DockerExec(docker.exec()))
}

/// A session: the command runs in the target with the image at /dev/crashcart, visible only
/// to it.
fn session(
    process: &TargetProcess,
    image_mount: OwnedFd,
    manifest: &Manifest,
    plan: SessionPlan,
) -> Result<u8, SessionError> {
    let namespaces = Namespaces::open(process)?;
    let cgroups = CgroupProcs::open(process)?;
    let cwd = process.cwd()?;
    let environ = process.environ()?;
    let mut env = Environment::for_command(
        &environ,
        std::env::var_os("TERM").as_deref(),
        plan.shell.as_deref(),
        devdir::SESSION_HOME,
        &manifest.env,
    );
    if plan.default_shell {
        // The container's ENV and BASH_ENV are dropped; this is the image's rc file.
        let rc_var: &[u8] = if plan.interactive {
            b"ENV"
        } else {
            b"BASH_ENV"
        };
        env.set(rc_var, layout::IMAGE_RC.as_bytes());
    }
    let command = Command::new(&plan.command, &env)?;
    let identity = match &plan.user {
        Some(spec) => {
            let identity = user::resolve_in_container(spec, process.root()?.as_fd())?;
            step!(
                "--user {spec}: uid {} gid {} groups {:?}",
                identity.uid,
                identity.gid,
                identity.groups
            );
            Some(identity)
        }
        None => None,
    };
    let (privileges, home) = session_privileges(
        plan.profile,
        process,
        identity.as_ref(),
        !namespaces.differs(Kind::Net),
    )?;
    if let Some(warning) = privileges.warning() {
        crate::log::stderr_text(&format!("{warning}\n"));
    }
    let (relay, streams) = relay::open(process)?;
    let forwarding = Forwarding::block().map_err(sys_err("block signals"))?;

    let parent = getpid();
    let helper_args = Helper {
        parent,
        pid: process.pid,
        namespaces,
        cgroups,
        image_mount,
        store_alias: manifest.store_alias.clone(),
        ignores: manifest.ignores.clone(),
        cwd,
        command,
        privileges,
        home,
        streams,
    };
    match sys::fork().map_err(sys_err("fork"))? {
        Fork::Child => {
            let code = helper_args.run().unwrap_or_else(|e| {
                crate::log::say(format_args!("{}", crate::log::chain(&e)));
                EXIT_CRASHCART
            });
            sys::exit_now(code.into())
        }
        Fork::Parent(helper) => {
            // Our copies would keep the session's mount (and so the loop device) alive, and
            // the command's ends of its streams open.
            drop(helper_args);
            let code = relay.run(helper, &forwarding)?.unwrap_or(EXIT_CRASHCART);
            // The helper has said why when it failed (125); otherwise say why it ended.
            if process.is_exiting() && code != EXIT_CRASHCART {
                crate::log::say(format_args!(
                    "target pid {} exited; the session ended",
                    process.pid
                ));
            }
            Ok(code)
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
    ignores: Vec<String>,
    cwd: Option<PathBuf>,
    command: Command,
    privileges: Privileges,
    home: HomeOwner,
    streams: CommandStreams,
}

impl Helper {
    /// The helper: takes the command's streams as its own, drops every other descriptor of
    /// crashcart's, enters the target, starts the command, supervises it, ends the session.
    fn run(self) -> Result<u8, SessionError> {
        let Helper {
            parent,
            pid,
            mut namespaces,
            cgroups,
            image_mount,
            store_alias,
            ignores,
            cwd,
            command,
            privileges,
            home,
            streams,
        } = self;
        // Its own session and process group: no controlling terminal for anything started
        // from here, and the caller's terminal signals reach crashcart alone.
        rustix::process::setsid().map_err(sys_err("start a session"))?;
        harden(parent, PARENT_DIED)?;
        let terminal = streams.terminal;
        rustix::stdio::dup2_stdin(&streams.fds[0]).map_err(sys_err("set up stdin"))?;
        rustix::stdio::dup2_stdout(&streams.fds[1]).map_err(sys_err("set up stdout"))?;
        rustix::stdio::dup2_stderr(&streams.fds[2]).map_err(sys_err("set up stderr"))?;
        drop(streams);
        if terminal {
            // The container pty becomes this session's controlling terminal, so the command,
            // in a process group of this session, gets job control on it.
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())
                .map_err(sys_err("take the terminal"))?;
        }
        let mut keep: Vec<RawFd> = namespaces.raw_fds();
        keep.extend(cgroups.raw_fds());
        keep.push(image_mount.as_raw_fd());
        exec::close_all_except(&keep);

        namespaces.enter(Kind::Mnt)?;
        mount::enter_private_copy()?;
        let dev = devdir::open_dev()?;
        devdir::build_session_dev(dev.as_fd(), image_mount, store_alias.as_deref(), home)?;
        drop(dev);
        preload::cover_preload_files(&ignores)?;
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
        // The command inherits the cgroups: joined here, no cgroup file reaches it.
        cgroups.join(getpid().as_raw_nonzero().get())?;
        drop(cgroups);
        let user_ns = namespaces.take(Kind::User);
        drop(namespaces);

        let (report_r, report_w) =
            pipe_with(PipeFlags::CLOEXEC).map_err(sys_err("create a pipe"))?;
        let child = match sys::fork() {
            Ok(Fork::Child) => exec::run_command(
                &command,
                &privileges,
                ChildFds {
                    report: report_w.as_fd(),
                    user_ns: user_ns.as_ref().map(|f| f.as_fd()),
                    terminal,
                },
            ),
            Ok(Fork::Parent(child)) => {
                // Both sides set the group, so it is in place whichever runs first.
                let _ = rustix::process::setpgid(Some(child), Some(child));
                child
            }
            // fork into a PID namespace whose init has died fails with ENOMEM.
            Err(Errno::NOMEM) => return Err(SessionError::TargetExited(pid)),
            Err(e) => return Err(sys_err("fork")(e)),
        };
        drop((report_w, user_ns));

        let code = supervise(parent, child, pid, terminal);
        let _ = rustix::fs::fcntl_setfl(&report_r, OFlags::NONBLOCK);
        if let Some(code) = code {
            // The command is gone: say why it did not start, if it did not, then let crashcart
            // return with its status while this process ends the rest of the session. Our
            // stdio is closed first, so crashcart sees the end of the command's output.
            report_failure(&command, pid, report_r.as_fd());
            sys::close_range(0, 2);
            let _ = sys::queue_signal(
                parent.as_raw_nonzero().get(),
                crate::signals::command_exited(),
                code.into(),
            );
        }
        // Whatever ended the session, nothing of it may outlive it.
        if let Err(e) = crate::sweep::kill_mount_namespace_peers() {
            crate::log::say(format_args!(
                "warning: cannot end the session's remaining processes: {e}"
            ));
        }
        let code = code.unwrap_or_else(|| {
            let _ = rustix::process::kill_process(child, Signal::KILL);
            let code = wait_exit_code(child);
            report_failure(&command, pid, report_r.as_fd());
            code
        });
        Ok(code)
    }
}

/// The helper's watch over the running command: passes signals from crashcart on, follows
/// Ctrl-Z, and returns the command's exit status when it ends; `None` when the session must end
/// without it (crashcart died, or the target did).
fn supervise(parent: Pid, command: Pid, target: u32, terminal: bool) -> Option<u8> {
    let Ok(signals) = SignalSet::of(&crate::signals::waited_by_helper()).signalfd() else {
        return Some(wait_exit_code(command));
    };
    let target = Pid::from_raw(target as i32).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok());
    let wait_flags = if terminal {
        WaitOptions::NOHANG | WaitOptions::UNTRACED
    } else {
        WaitOptions::NOHANG
    };
    loop {
        let mut fds = vec![PollFd::new(&signals, PollFlags::IN)];
        if let Some(t) = &target {
            fds.push(PollFd::new(t, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => return None,
        }
        let target_ended = fds.get(1).is_some_and(|f| !f.revents().is_empty());
        drop(fds);
        while let Some(info) = sys::read_signal(signals.as_fd()) {
            match info.signo {
                s if s == Signal::CHILD.as_raw() => {}
                s if s == PARENT_DIED.as_raw() => {
                    if getppid() != Some(parent) {
                        step!("crashcart is gone; ending the session");
                        return None;
                    }
                }
                s => {
                    if let Some(signal) = Signal::from_named_raw(s) {
                        let _ = rustix::process::kill_process(command, signal);
                    }
                }
            }
        }
        match waitpid(Some(command), wait_flags) {
            Ok(Some((_, status))) if status.stopped() => {
                // Stop ourselves: crashcart sees it, gives the caller's terminal back and stops
                // its job; when continued, it continues us, and we the command's job.
                let _ = rustix::process::kill_process(getpid(), Signal::STOP);
                let _ = rustix::termios::tcsetpgrp(rustix::stdio::stdin(), command);
                let _ = rustix::process::kill_process_group(command, Signal::CONT);
            }
            Ok(Some((_, status))) => return Some(exec::exit_code(status)),
            Ok(None) | Err(Errno::INTR) => {}
            Err(_) => return None,
        }
        if target_ended {
            step!("target pid exited; ending the session");
            return None;
        }
    }
}

/// Prints why the command did not start, when its process reported a failure.
fn report_failure(command: &Command, pid: u32, report: BorrowedFd<'_>) {
    let Some((stage, errno)) = exec::read_report(report) else {
        return;
    };
    let why = Errno::from_raw_os_error(errno);
    let program = &command.program;
    match stage {
        Stage::Exec if why == Errno::NOENT => match command.existing_candidate() {
            Some(found) => crate::log::say(format_args!(
                "cannot run {}: its interpreter or loader is missing ({why})",
                found.to_string_lossy()
            )),
            None if command.is_path() => crate::log::say(format_args!(
                "cannot run {program}: no such file in the container"
            )),
            None => crate::log::say(format_args!(
                "`{program}` is neither in the image nor on the container's PATH"
            )),
        },
        Stage::Exec => crate::log::say(format_args!("cannot run {program}: {why}")),
        Stage::UserNamespace => crate::log::say(format_args!(
            "cannot enter the user namespace of pid {pid}: {why}"
        )),
        Stage::Privileges(step) => crate::log::say(format_args!(
            "cannot {} for the command: {why}",
            step.describe()
        )),
    }
}

/// Works out, before anything is forked, what the command may do under `profile`: reads the
/// target's credentials (and, for `target`, copies its seccomp filters by ptrace). Also who
/// owns the session's `HOME`: the command's user and group, as host IDs.
fn session_privileges(
    profile: Profile,
    process: &TargetProcess,
    user: Option<&user::Identity>,
    shares_host_network: bool,
) -> Result<(Privileges, HomeOwner), SessionError> {
    let credentials = TargetCredentials::read(process)?;
    let filters = if profile == Profile::Target && credentials.status.seccomp == 2 {
        privileges::target_seccomp_filters(process.pid)?
    } else {
        Vec::new()
    };
    step!("profile {profile:?}");
    let privileges = Privileges::new(profile, &credentials, user, shares_host_network, filters)?;
    // An ID the namespace does not map cannot be taken by the command either (it fails to
    // start); root then owns the directory.
    let (uid, gid) = privileges.ids();
    let home = HomeOwner {
        uid: privileges::namespace_to_host_id(uid, &credentials.uid_map).unwrap_or(0),
        gid: privileges::namespace_to_host_id(gid, &credentials.gid_map).unwrap_or(0),
    };
    Ok((privileges, home))
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

/// Waits for `pid` and maps its status like a shell: the exit code, or 128+N on signal N.
fn wait_exit_code(pid: Pid) -> u8 {
    loop {
        match waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return exec::exit_code(status),
            Err(Errno::INTR) => continue,
            _ => return EXIT_CRASHCART,
        }
    }
}
