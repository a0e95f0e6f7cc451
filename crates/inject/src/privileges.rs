//! What the command may do: its credentials, capability sets, `no_new_privs`, seccomp filters
//! and LSM label, chosen by the session's [`Profile`] and set in the command's process between
//! `setns(user)` and `execve`.
//!
//! The container is the attacker (THREAT-MODEL.md): it can ptrace the command, so whatever the
//! command may do, the container may do through it. The profiles trade power against that:
//!
//! - [`Profile::Debug`] (default): the target's bounding set plus what debuggers need, minus
//!   everything that reaches the host (`SYS_ADMIN`, `SYS_MODULE`, `DAC_READ_SEARCH`, ...), with
//!   `no_new_privs` and a deny-list seccomp filter in the spirit of Docker's default profile.
//! - [`Profile::Target`]: exactly what the target process has (IDs, groups, five capability
//!   sets, `no_new_privs`, seccomp filters copied with `PTRACE_SECCOMP_GET_FILTER`, LSM label),
//!   like `docker exec`.
//! - [`Profile::Sysadmin`]: host root, as before profiles existed; the caller is warned.
//!
//! Everything is computed before the fork ([`Privileges::new`], which may allocate and fail
//! with context); [`Privileges::apply`] only makes system calls, so it is async-signal-safe and
//! reports the failing step with its errno ([`ApplyError`]).
//!
//! Capabilities change across `execve`: the sets set here are those *before* exec. The kernel
//! then computes the command's sets from them (capabilities(7)): root gets its bounding set
//! unless the file says otherwise, a non-root user keeps only its ambient set. A target that
//! came from `execve` and has not changed its sets since is a fixed point of that rule, so the
//! command ends with the same sets as the target.

use std::collections::BTreeMap;

use rustix::fs::{fstatfs, openat2, Mode, OFlags, ResolveFlags, PROC_SUPER_MAGIC};
use rustix::io::Errno;
use rustix::process::{Pid, WaitOptions};
use rustix::thread::{
    clear_ambient_capability_set, configure_capability_in_ambient_set,
    remove_capability_from_bounding_set, set_capabilities, set_keep_capabilities, set_no_new_privs,
    set_thread_groups, set_thread_res_gid, set_thread_res_uid, CapabilitySet, CapabilitySets, Gid,
    Uid,
};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use crate::process::{ProcessError, TargetProcess};
use crate::sys;
use crate::user::Identity;

pub use libc::sock_filter;

/// The privilege profile of a session (`--profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Debugging power without the capabilities and syscalls that reach the host.
    Debug,
    /// Exactly the target process's credentials, capabilities, filters and label.
    Target,
    /// Host root: all capabilities, no `no_new_privs`, no seccomp filter.
    Sysadmin,
}

/// The line printed on stderr when the session runs with [`Profile::Sysadmin`].
pub const SYSADMIN_WARNING: &str = "crashcart: warning: --profile sysadmin: the command runs as \
     host root with every capability and no seccomp filter; a hostile container can take this \
     session over and reach the host through it";

/// Capabilities the debug profile adds to the target's bounding set: Docker's defaults plus
/// what debuggers and network tools need.
const DEBUG_EXTRA: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::AUDIT_WRITE)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SYS_PTRACE)
    .union(CapabilitySet::NET_ADMIN)
    .union(CapabilitySet::IPC_OWNER);

/// Capabilities the debug profile never grants, even when the target has them: each reaches
/// the host (mounts, modules, raw I/O, file handles, BPF, clocks, the kernel log, ...).
const DEBUG_NEVER: CapabilitySet = CapabilitySet::SYS_ADMIN
    .union(CapabilitySet::SYS_MODULE)
    .union(CapabilitySet::SYS_RAWIO)
    .union(CapabilitySet::DAC_READ_SEARCH)
    .union(CapabilitySet::BPF)
    .union(CapabilitySet::PERFMON)
    .union(CapabilitySet::SYS_BOOT)
    .union(CapabilitySet::SYS_TIME)
    .union(CapabilitySet::MAC_ADMIN)
    .union(CapabilitySet::MAC_OVERRIDE)
    .union(CapabilitySet::SYSLOG)
    .union(CapabilitySet::SYS_PACCT)
    .union(CapabilitySet::SYS_TTY_CONFIG)
    .union(CapabilitySet::AUDIT_CONTROL)
    .union(CapabilitySet::AUDIT_READ)
    .union(CapabilitySet::WAKE_ALARM)
    .union(CapabilitySet::BLOCK_SUSPEND)
    .union(CapabilitySet::CHECKPOINT_RESTORE)
    .union(CapabilitySet::SYS_RESOURCE);

/// Why the target's privileges cannot be read, or the command's computed.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// A `/proc/PID` file of the target could not be read.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// `/proc/PID/status` lacks a line or holds one we cannot parse.
    #[error("cannot parse /proc/{pid}/status")]
    Status {
        /// The target's PID.
        pid: u32,
        /// What is wrong with it.
        source: StatusError,
    },
    /// A host ID of the target has no ID in the target's user namespace.
    #[error("{kind} {id} of pid {pid} is not mapped in its user namespace")]
    Unmapped {
        /// The target's PID.
        pid: u32,
        /// `uid` or `gid`.
        kind: &'static str,
        /// The host ID.
        id: u32,
    },
    /// The target is already traced (by a debugger, or by another crashcart), so its seccomp
    /// filters cannot be read.
    #[error(
        "pid {pid} is being traced by pid {tracer}; --profile target needs to read its seccomp \
         filters with ptrace"
    )]
    Traced {
        /// The target's PID.
        pid: u32,
        /// The tracer's PID (as `/proc/PID/status` shows it).
        tracer: u32,
    },
    /// A `ptrace` request on the target failed.
    #[error("cannot read the seccomp filters of pid {pid}: {request}")]
    Ptrace {
        /// The target's PID.
        pid: u32,
        /// The request or step that failed.
        request: &'static str,
        /// Why.
        source: Errno,
    },
    /// The target is in seccomp strict mode, which a new process cannot copy.
    #[error("pid {0} runs in seccomp strict mode; --profile target cannot copy it")]
    StrictSeccomp(u32),
    /// The filters handed to [`Privileges::new`] do not match the target's filter count.
    #[error("pid {pid} has {expected} seccomp filters, {got} were read")]
    FilterCount {
        /// The target's PID.
        pid: u32,
        /// `Seccomp_filters` of the target.
        expected: u32,
        /// Filters given.
        got: usize,
    },
    /// A seccomp filter is empty or longer than the kernel accepts (`BPF_MAXINSNS`).
    #[error("a seccomp filter of pid {pid} has {len} instructions")]
    FilterSize {
        /// The target's PID.
        pid: u32,
        /// Its length.
        len: usize,
    },
    /// The debug profile's seccomp filter could not be compiled.
    #[error("cannot build the debug seccomp filter: {0}")]
    DebugFilter(String),
    /// `/proc/sys/kernel/cap_last_cap` is unreadable.
    #[error("cannot read /proc/sys/kernel/cap_last_cap")]
    CapLastCap(#[source] std::io::Error),
    /// crashcart's own capabilities cannot be read.
    #[error("cannot read crashcart's own capabilities")]
    OwnCapabilities(#[source] Errno),
}

/// A missing or malformed line of `/proc/PID/status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {field:?} is missing or malformed")]
pub struct StatusError {
    /// The field name (`Uid`, `CapEff`, ...).
    pub field: &'static str,
}

/// The credential lines of `/proc/PID/status` (IDs as the reader's user namespace sees them:
/// host IDs when crashcart reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFields {
    /// Real, effective, saved and filesystem user ID.
    pub uid: [u32; 4],
    /// Real, effective, saved and filesystem group ID.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// `CapInh`.
    pub cap_inh: u64,
    /// `CapPrm`.
    pub cap_prm: u64,
    /// `CapEff`.
    pub cap_eff: u64,
    /// `CapBnd`.
    pub cap_bnd: u64,
    /// `CapAmb` (Linux 4.3).
    pub cap_amb: u64,
    /// `NoNewPrivs` (Linux 4.10).
    pub no_new_privs: bool,
    /// `Seccomp`: 0 none, 1 strict, 2 filter.
    pub seccomp: u32,
    /// `Seccomp_filters` (Linux 5.9; `None` on older kernels).
    pub seccomp_filters: Option<u32>,
    /// `TracerPid`: 0 when not traced.
    pub tracer_pid: u32,
}

/// Parses the credential lines of a `/proc/PID/status` text.
pub fn parse_status(text: &str) -> Result<StatusFields, StatusError> {
    let field = |name: &'static str| -> Result<&str, StatusError> {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(str::trim)
            })
            .ok_or(StatusError { field: name })
    };
    let ids = |name: &'static str| -> Result<[u32; 4], StatusError> {
        let bad = StatusError { field: name };
        let values = field(name)?
            .split_whitespace()
            .map(|v| v.parse::<u32>().map_err(|_| bad.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        values.try_into().map_err(|_| bad)
    };
    let hex = |name: &'static str| -> Result<u64, StatusError> {
        u64::from_str_radix(field(name)?, 16).map_err(|_| StatusError { field: name })
    };
    let number = |name: &'static str| -> Result<u32, StatusError> {
        field(name)?
            .parse::<u32>()
            .map_err(|_| StatusError { field: name })
    };
    let groups = field("Groups")?
        .split_whitespace()
        .map(|g| {
            g.parse::<u32>()
                .map_err(|_| StatusError { field: "Groups" })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let no_new_privs = match field("NoNewPrivs") {
        Ok("0") | Err(_) => false,
        Ok("1") => true,
        Ok(_) => {
            return Err(StatusError {
                field: "NoNewPrivs",
            })
        }
    };
    let seccomp_filters = match field("Seccomp_filters") {
        Ok(_) => Some(number("Seccomp_filters")?),
        Err(_) => None,
    };
    Ok(StatusFields {
        uid: ids("Uid")?,
        gid: ids("Gid")?,
        groups,
        cap_inh: hex("CapInh")?,
        cap_prm: hex("CapPrm")?,
        cap_eff: hex("CapEff")?,
        cap_bnd: hex("CapBnd")?,
        cap_amb: hex("CapAmb").unwrap_or(0),
        no_new_privs,
        seccomp: number("Seccomp").unwrap_or(0),
        seccomp_filters,
        tracer_pid: number("TracerPid")?,
    })
}

/// Maps an ID of a user namespace whose `uid_map`/`gid_map` is `map` to the host's ID; `None`
/// when the namespace has no such ID.
pub fn namespace_to_host_id(id: u32, map: &str) -> Option<u32> {
    map.lines().find_map(|line| {
        let mut f = line.split_whitespace().map(|x| x.parse::<u64>().ok());
        let (inside, outside, count) = (f.next()??, f.next()??, f.next()??);
        let id = u64::from(id);
        (inside <= id && id < inside + count)
            .then(|| u32::try_from(outside + (id - inside)).ok())
            .flatten()
    })
}

/// Maps a host ID to the ID it has in a user namespace whose `uid_map`/`gid_map` (read from the
/// initial user namespace) is `map`: lines of "inside outside count".
pub fn host_to_namespace_id(host_id: u32, map: &str) -> Option<u32> {
    map.lines().find_map(|line| {
        let mut fields = line.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(inside)), Some(Ok(outside)), Some(Ok(count))) =
            (fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        let host = u64::from(host_id);
        if host >= outside && host - outside < count {
            u32::try_from(inside + (host - outside)).ok()
        } else {
            None
        }
    })
}

/// The bytes to write to `/proc/self/attr/exec` so that the command runs under the label
/// `current` (the content of `/proc/PID/attr/current`), or `None` when the target is
/// unconfined.
///
/// AppArmor shows `NAME (MODE)` and takes `exec NAME`; SELinux and Smack show the label and
/// take it as it is.
pub fn exec_label(current: &[u8]) -> Option<Vec<u8>> {
    let text = current
        .iter()
        .rposition(|&b| b != 0 && b != b'\n')
        .map_or(&[][..], |end| &current[..=end]);
    if text.is_empty() || text == b"unconfined" {
        return None;
    }
    if text.ends_with(b")") {
        if let Some(open) = text.windows(2).rposition(|w| w == b" (") {
            let name = &text[..open];
            if name == b"unconfined" {
                return None;
            }
            return Some([&b"exec "[..], name].concat());
        }
    }
    Some(text.to_vec())
}

/// What `/proc/PID` says about the target's privileges.
#[derive(Debug, Clone)]
pub struct TargetCredentials {
    /// The target's host PID.
    pub pid: u32,
    /// Its `status` lines.
    pub status: StatusFields,
    /// `uid_map` of its user namespace (identity for the initial one).
    pub uid_map: String,
    /// `gid_map` of its user namespace.
    pub gid_map: String,
    /// What to write to `attr/exec` for its LSM label (see [`exec_label`]); `None` when it is
    /// unconfined or no LSM shows a label.
    pub exec_label: Option<Vec<u8>>,
}

impl TargetCredentials {
    /// Reads `status`, `uid_map`, `gid_map` and `attr/current` of the target.
    pub fn read(process: &TargetProcess) -> Result<Self, PrivilegeError> {
        let pid = process.pid;
        let text = |file| -> Result<String, PrivilegeError> {
            Ok(String::from_utf8_lossy(&process.read(file)?).into_owned())
        };
        let status = parse_status(&text("status")?)
            .map_err(|source| PrivilegeError::Status { pid, source })?;
        let uid_map = text("uid_map")?;
        let gid_map = text("gid_map")?;
        // Without an LSM that shows labels the file is missing (no CONFIG_SECURITY) or reads
        // fail with EINVAL.
        let exec_label = match process.read("attr/current") {
            Ok(current) => exec_label(&current),
            Err(ProcessError::Read {
                source: Errno::INVAL | Errno::NOPROTOOPT | Errno::OPNOTSUPP,
                ..
            }) => None,
            Err(ProcessError::Gone(_)) if process.read("stat").is_ok() => None,
            Err(e) => return Err(e.into()),
        };
        Ok(TargetCredentials {
            pid,
            status,
            uid_map,
            gid_map,
            exec_label,
        })
    }

    fn map_id(&self, kind: &'static str, map: &str, id: u32) -> Result<u32, PrivilegeError> {
        host_to_namespace_id(id, map).ok_or(PrivilegeError::Unmapped {
            pid: self.pid,
            kind,
            id,
        })
    }
}

/// The target's seccomp filters, oldest first, as classic BPF programs.
///
/// Seizes the target with ptrace, interrupts it, copies each filter with
/// `PTRACE_SECCOMP_GET_FILTER` (needs `CAP_SYS_ADMIN` in the initial user namespace and a
/// kernel with `CONFIG_CHECKPOINT_RESTORE`), and always detaches, handing back a signal that
/// arrived meanwhile. Call it only when the target's `Seccomp` is 2, before forking: the caller
/// becomes the tracer for a moment and must not be traced or filtered itself.
pub fn target_seccomp_filters(pid: u32) -> Result<Vec<Vec<sock_filter>>, PrivilegeError> {
    let raw = i32::try_from(pid).map_err(|_| PrivilegeError::Ptrace {
        pid,
        request: "PTRACE_SEIZE",
        source: Errno::SRCH,
    })?;
    let ptrace_err = |request| {
        move |source| PrivilegeError::Ptrace {
            pid,
            request,
            source,
        }
    };
    if let Err(e) = sys::ptrace_seize(raw) {
        if e == Errno::PERM {
            if let Some(tracer) = tracer_of(pid).filter(|&t| t != 0) {
                return Err(PrivilegeError::Traced { pid, tracer });
            }
        }
        return Err(ptrace_err("PTRACE_SEIZE")(e));
    }
    let stopped = sys::ptrace_interrupt(raw)
        .map_err(|e| ("PTRACE_INTERRUPT", e))
        .and_then(|()| wait_for_stop(raw).map_err(|e| ("waitpid", e)));
    let result = match stopped {
        Ok(_) => copy_filters(raw).map_err(ptrace_err("PTRACE_SECCOMP_GET_FILTER")),
        Err((request, source)) => Err(ptrace_err(request)(source)),
    };
    // Detaching needs the tracee stopped; when the wait failed it is running and the kernel
    // detaches it when we exit. A signal-delivery-stop swallowed the signal: hand it back.
    if let Ok(signal) = stopped {
        let _ = sys::ptrace_detach(raw, signal);
    }
    result
}

/// `TracerPid` of `pid`, if readable.
fn tracer_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text).ok().map(|s| s.tracer_pid)
}

/// Waits until the seized `pid` is in a ptrace-stop; returns the signal to deliver when it is
/// detached (non-zero only for a signal-delivery-stop).
fn wait_for_stop(pid: i32) -> Result<i32, Errno> {
    let target = Pid::from_raw(pid).ok_or(Errno::SRCH)?;
    let all = WaitOptions::from_bits_retain(libc::__WALL as u32);
    loop {
        match rustix::process::waitpid(Some(target), all) {
            Ok(Some((_, status))) => {
                let raw = status.as_raw();
                if !libc::WIFSTOPPED(raw) {
                    // Exited or killed: nothing to read, nothing to detach.
                    return Err(Errno::SRCH);
                }
                let event = raw >> 16;
                return Ok(if event == 0 { libc::WSTOPSIG(raw) } else { 0 });
            }
            Ok(None) => continue,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Copies every filter of the stopped tracee `pid`, oldest first.
fn copy_filters(pid: i32) -> Result<Vec<Vec<sock_filter>>, Errno> {
    let mut filters = Vec::new();
    for index in 0.. {
        let len = match sys::ptrace_seccomp_get_filter(pid, index, None) {
            Ok(len) => len,
            Err(Errno::NOENT) => break,
            Err(e) => return Err(e),
        };
        let mut program = vec![
            sock_filter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0,
            };
            len
        ];
        let got = sys::ptrace_seccomp_get_filter(pid, index, Some(&mut program))?;
        program.truncate(got);
        filters.push(program);
    }
    // Index 0 is the oldest filter (kernel/seccomp.c get_nth_filter counts back from the
    // newest; ptrace(2) says the opposite, the code and the tests here agree).
    Ok(filters)
}

/// The step of [`Privileges::apply`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ApplyStep {
    /// `setgroups`.
    Groups = 1,
    /// `setresgid`.
    Gid = 2,
    /// `setresuid`.
    Uid = 3,
    /// `PR_CAPBSET_DROP`.
    Bounding = 4,
    /// `capset` or `PR_SET_KEEPCAPS`.
    Capabilities = 5,
    /// `PR_CAP_AMBIENT`.
    Ambient = 6,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs = 7,
    /// `seccomp(SECCOMP_SET_MODE_FILTER)`.
    Seccomp = 8,
    /// Writing the LSM label to `/proc/thread-self/attr/exec`.
    Lsm = 9,
}

impl ApplyStep {
    /// The step with this `repr(u32)` value (for a report read back from a pipe).
    pub fn from_u32(value: u32) -> Option<ApplyStep> {
        Some(match value {
            1 => ApplyStep::Groups,
            2 => ApplyStep::Gid,
            3 => ApplyStep::Uid,
            4 => ApplyStep::Bounding,
            5 => ApplyStep::Capabilities,
            6 => ApplyStep::Ambient,
            7 => ApplyStep::NoNewPrivs,
            8 => ApplyStep::Seccomp,
            9 => ApplyStep::Lsm,
            _ => return None,
        })
    }

    /// What the step does, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            ApplyStep::Groups => "set the supplementary groups",
            ApplyStep::Gid => "set the group ID",
            ApplyStep::Uid => "set the user ID",
            ApplyStep::Bounding => "drop capabilities from the bounding set",
            ApplyStep::Capabilities => "set the capabilities",
            ApplyStep::Ambient => "set the ambient capabilities",
            ApplyStep::NoNewPrivs => "set no_new_privs",
            ApplyStep::Seccomp => "install the seccomp filter",
            ApplyStep::Lsm => "set the LSM label for exec",
        }
    }
}

/// A failed step of [`Privileges::apply`] and its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyError {
    /// The step.
    pub step: ApplyStep,
    /// The errno (`EXDEV` for an `attr/exec` that is not on procfs).
    pub errno: i32,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot {}: {}",
            self.step.describe(),
            Errno::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for ApplyError {}

/// Capability sets to set, as `CAP_*` bit masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CapabilityPlan {
    /// Capabilities removed from the bounding set.
    drop_from_bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
}

/// The command's privileges, computed before the fork; [`Privileges::apply`] sets them.
#[derive(Debug)]
pub struct Privileges {
    profile: Profile,
    groups: Vec<Gid>,
    /// Real, effective, saved user ID, in the target's user namespace.
    uid: [u32; 3],
    /// Real, effective, saved group ID.
    gid: [u32; 3],
    /// `None` for sysadmin: the capabilities stay as they are.
    capabilities: Option<CapabilityPlan>,
    no_new_privs: bool,
    exec_label: Option<Vec<u8>>,
    /// Installed in this order (oldest first).
    filters: Vec<Vec<sock_filter>>,
}

impl Privileges {
    /// Computes the command's privileges for `profile` from the target's, with `user` (IDs in
    /// the target's user namespace, resolved from `--user`) when the caller gave one: its uid,
    /// gid and supplementary groups replace the profile's in every profile, as `docker exec -u`.
    ///
    /// `shares_host_network`: the target is in the host's network namespace (debug then leaves
    /// out `NET_ADMIN`). `target_filters`: [`target_seccomp_filters`] of the target for
    /// [`Profile::Target`] when its `Seccomp` is 2, else empty.
    pub fn new(
        profile: Profile,
        target: &TargetCredentials,
        user: Option<&Identity>,
        shares_host_network: bool,
        target_filters: Vec<Vec<sock_filter>>,
    ) -> Result<Privileges, PrivilegeError> {
        let (uid, gid) = user.map_or((0, 0), |u| (u.uid, u.gid));
        let user_groups = || -> Vec<Gid> {
            user.map(|u| u.groups.iter().copied().map(Gid::from_raw).collect())
                .unwrap_or_default()
        };
        match profile {
            Profile::Sysadmin => Ok(Privileges {
                profile,
                groups: user_groups(),
                uid: [uid; 3],
                gid: [gid; 3],
                capabilities: None,
                no_new_privs: false,
                exec_label: None,
                filters: Vec::new(),
            }),
            Profile::Debug => {
                let all = all_capabilities()?;
                let own = rustix::thread::capabilities(None)
                    .map_err(PrivilegeError::OwnCapabilities)?
                    .permitted
                    .bits();
                let mut never = DEBUG_NEVER;
                if shares_host_network {
                    never |= CapabilitySet::NET_ADMIN;
                }
                let wanted =
                    (target.status.cap_bnd | DEBUG_EXTRA.bits()) & !never.bits() & own & all;
                Ok(Privileges {
                    profile,
                    groups: user_groups(),
                    uid: [uid; 3],
                    gid: [gid; 3],
                    capabilities: Some(CapabilityPlan {
                        drop_from_bounding: all & !wanted,
                        effective: wanted,
                        permitted: wanted,
                        inheritable: DEBUG_INHERITABLE & wanted,
                        ambient: 0,
                    }),
                    no_new_privs: true,
                    exec_label: None,
                    filters: vec![debug_filter()?],
                })
            }
            Profile::Target => {
                let status = &target.status;
                let pid = target.pid;
                if status.seccomp == 1 {
                    return Err(PrivilegeError::StrictSeccomp(pid));
                }
                let expected = match (status.seccomp, status.seccomp_filters) {
                    (0, _) => 0,
                    (_, Some(n)) => n,
                    // Before Linux 5.9 the count is not shown; trust what was read.
                    (_, None) => target_filters.len() as u32,
                };
                if target_filters.len() != expected as usize {
                    return Err(PrivilegeError::FilterCount {
                        pid,
                        expected,
                        got: target_filters.len(),
                    });
                }
                if let Some(bad) = target_filters
                    .iter()
                    .find(|f| f.is_empty() || f.len() > BPF_MAXINSNS)
                {
                    return Err(PrivilegeError::FilterSize {
                        pid,
                        len: bad.len(),
                    });
                }
                let ids = |kind, map: &str, ids: [u32; 4]| -> Result<[u32; 3], PrivilegeError> {
                    Ok([
                        target.map_id(kind, map, ids[0])?,
                        target.map_id(kind, map, ids[1])?,
                        target.map_id(kind, map, ids[2])?,
                    ])
                };
                let (uid, gid, groups) = match user {
                    Some(_) => ([uid; 3], [gid; 3], user_groups()),
                    None => (
                        ids("uid", &target.uid_map, status.uid)?,
                        ids("gid", &target.gid_map, status.gid)?,
                        // A group without an ID in the namespace came from outside it and can
                        // be neither set nor dropped there.
                        status
                            .groups
                            .iter()
                            .filter_map(|&g| host_to_namespace_id(g, &target.gid_map))
                            .map(Gid::from_raw)
                            .collect(),
                    ),
                };
                let all = all_capabilities()?;
                Ok(Privileges {
                    profile,
                    groups,
                    uid,
                    gid,
                    capabilities: Some(CapabilityPlan {
                        drop_from_bounding: all & !status.cap_bnd,
                        effective: status.cap_eff,
                        permitted: status.cap_prm,
                        inheritable: status.cap_inh,
                        ambient: status.cap_amb,
                    }),
                    no_new_privs: status.no_new_privs,
                    exec_label: target.exec_label.clone(),
                    filters: target_filters,
                })
            }
        }
    }

    /// The effective user and group ID the command gets, in the target's user namespace.
    pub fn ids(&self) -> (u32, u32) {
        (self.uid[1], self.gid[1])
    }

    /// The profile these privileges were computed for.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The line to print on stderr before the session starts, if the profile calls for one.
    pub fn warning(&self) -> Option<&'static str> {
        (self.profile == Profile::Sysadmin).then_some(SYSADMIN_WARNING)
    }

    /// Sets the privileges on the calling thread. Call it in the command's (single-threaded)
    /// process after `fork` and `setns(user)`, with every namespace entered, right before
    /// `execve`. Async-signal-safe: it allocates nothing and takes no lock. It needs no file
    /// descriptor; for a target with an LSM label it opens `/proc/thread-self/attr/exec` of
    /// the procfs mounted at `/proc` in the current mount namespace.
    ///
    /// `in_user_namespace`: the process entered a user namespace, where `setgroups` may be
    /// denied (its `setgroups` file says "deny"); that EPERM is then ignored.
    ///
    /// Order: `PR_SET_KEEPCAPS`; bounding set; LSM label; groups, gid, uid; capset; ambient;
    /// `PR_SET_KEEPCAPS` off; `no_new_privs`; seccomp filters last, so none of our own
    /// syscalls has to pass them. A target without `no_new_privs` got its filters while it
    /// still had `CAP_SYS_ADMIN`; so do we: its filters go in before the IDs change and must
    /// allow the remaining steps, as runc's do (Docker's default profile does).
    pub fn apply(&self, in_user_namespace: bool) -> Result<(), ApplyError> {
        let fail = |step| {
            move |e: Errno| ApplyError {
                step,
                errno: e.raw_os_error(),
            }
        };
        let Some(caps) = self.capabilities else {
            return self.set_ids(in_user_namespace);
        };
        set_keep_capabilities(true).map_err(fail(ApplyStep::Capabilities))?;
        for cap in 0..64 {
            let bit = 1u64 << cap;
            if caps.drop_from_bounding & bit != 0 {
                remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(bit))
                    .map_err(fail(ApplyStep::Bounding))?;
            }
        }
        if let Some(label) = &self.exec_label {
            write_exec_label(label).map_err(fail(ApplyStep::Lsm))?;
        }
        if !self.no_new_privs {
            self.install_filters()?;
        }
        self.set_ids(in_user_namespace)?;
        set_capabilities(
            None,
            CapabilitySets {
                effective: CapabilitySet::from_bits_retain(caps.effective),
                permitted: CapabilitySet::from_bits_retain(caps.permitted),
                inheritable: CapabilitySet::from_bits_retain(caps.inheritable),
            },
        )
        .map_err(fail(ApplyStep::Capabilities))?;
        clear_ambient_capability_set().map_err(fail(ApplyStep::Ambient))?;
        for cap in 0..64 {
            let bit = 1u64 << cap;
            if caps.ambient & bit != 0 {
                configure_capability_in_ambient_set(CapabilitySet::from_bits_retain(bit), true)
                    .map_err(fail(ApplyStep::Ambient))?;
            }
        }
        set_keep_capabilities(false).map_err(fail(ApplyStep::Capabilities))?;
        if self.no_new_privs {
            set_no_new_privs(true).map_err(fail(ApplyStep::NoNewPrivs))?;
            self.install_filters()?;
        }
        Ok(())
    }

    /// `setgroups`, `setresgid`, `setresuid` (per thread: the process has only this one).
    fn set_ids(&self, in_user_namespace: bool) -> Result<(), ApplyError> {
        let fail = |step| {
            move |e: Errno| ApplyError {
                step,
                errno: e.raw_os_error(),
            }
        };
        match set_thread_groups(&self.groups) {
            Ok(()) => {}
            Err(Errno::PERM) if in_user_namespace => {}
            Err(e) => return Err(fail(ApplyStep::Groups)(e)),
        }
        let [r, e, s] = self.gid.map(Gid::from_raw);
        set_thread_res_gid(r, e, s).map_err(fail(ApplyStep::Gid))?;
        let [r, e, s] = self.uid.map(Uid::from_raw);
        set_thread_res_uid(r, e, s).map_err(fail(ApplyStep::Uid))?;
        Ok(())
    }

    fn install_filters(&self) -> Result<(), ApplyError> {
        for filter in &self.filters {
            sys::seccomp_set_mode_filter(filter).map_err(|e| ApplyError {
                step: ApplyStep::Seccomp,
                errno: e.raw_os_error(),
            })?;
        }
        Ok(())
    }
}

/// The debug profile's inheritable set is empty: with capabilities in it, a non-root `--user`
/// regains them by executing a file with inheritable file capabilities, which the container
/// can plant (CVE-2022-24769, fixed the same way in runc/moby). Root needs none: after
/// `execve` it gets its bounding set.
const DEBUG_INHERITABLE: u64 = 0;

/// `BPF_MAXINSNS`.
const BPF_MAXINSNS: usize = 4096;

/// Every capability this kernel knows (bits 0..=`cap_last_cap`).
fn all_capabilities() -> Result<u64, PrivilegeError> {
    let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .map_err(PrivilegeError::CapLastCap)?;
    let last: u32 = text.trim().parse().map_err(|_| {
        PrivilegeError::CapLastCap(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{:?} is not a number", text.trim()),
        ))
    })?;
    Ok(if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    })
}

/// Opens `/proc/thread-self/attr/exec` for writing, refusing anything that is not procfs or
/// that is reached through a mount on top of it (the container controls its `/proc`).
fn open_exec_attr() -> Result<rustix::fd::OwnedFd, Errno> {
    let proc = rustix::fs::open(
        c"/proc",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if fstatfs(&proc)?.f_type != PROC_SUPER_MAGIC {
        return Err(Errno::XDEV);
    }
    let attr = openat2(
        &proc,
        c"thread-self/attr/exec",
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_XDEV | ResolveFlags::NO_MAGICLINKS,
    )?;
    if fstatfs(&attr)?.f_type != PROC_SUPER_MAGIC {
        return Err(Errno::XDEV);
    }
    Ok(attr)
}

/// Writes `label` to `attr/exec` in one `write` (the LSMs take the whole label or nothing).
fn write_exec_label(label: &[u8]) -> Result<(), Errno> {
    let attr = open_exec_attr()?;
    match rustix::io::write(&attr, label)? {
        n if n == label.len() => Ok(()),
        _ => Err(Errno::IO),
    }
}

/// The architecture this filter is for, as seccompiler names it.
#[cfg(target_arch = "x86_64")]
const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::aarch64;

/// Syscalls the debug profile denies (EPERM) whatever their arguments.
const DEBUG_DENIED: &[libc::c_long] = &[
    // File handles reach files outside the container's root (the "shocker" escape).
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    // Kernel code and kernel replacement.
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    // Mounts, old and new API.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    // Keyrings are not namespaced.
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    // Kernel attack surface with a history of escapes.
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // Host-wide state.
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_syslog,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_lookup_dcookie,
    libc::SYS_vhangup,
    libc::SYS_nfsservctl,
    // New namespaces would shed the filter's assumptions (and user namespaces bring caps).
    libc::SYS_setns,
    libc::SYS_unshare,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    // Removed from the kernel (ENOSYS), denied in case an old one still has them; libc no
    // longer names them. x86_64 numbers from arch/x86/entry/syscalls/syscall_64.tbl.
    #[cfg(target_arch = "x86_64")]
    174, // create_module
    #[cfg(target_arch = "x86_64")]
    177, // get_kernel_syms
    #[cfg(target_arch = "x86_64")]
    178, // query_module
];

/// `clone` flags that create namespaces (`CLONE_NEWTIME` shares its bit with the exit signal
/// in `clone` and only works with `clone3`/`unshare`, both denied).
const CLONE_NEW_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// `personality` values Docker's default profile allows: `PER_LINUX`, `PER_LINUX32`,
/// `UNAME26`, `PER_LINUX32 | UNAME26`, and the query `0xffffffff`.
const ALLOWED_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `__X32_SYSCALL_BIT`: x32 syscalls report the x86_64 audit arch with this bit in the number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Builds the debug profile's filter: a deny-list (EPERM) that allows everything else.
///
/// seccompiler checks the architecture first (any other ABI, such as i386 through `int 0x80`
/// or arm32 on aarch64, kills the process), but knows neither x32 (same audit arch as
/// x86_64, numbers with bit 30 set) nor a second return value. So after its architecture check
/// we insert: x32 numbers kill, `clone3` fails with ENOSYS (its flags are behind a pointer a
/// filter cannot read; glibc falls back to `clone`, whose flags we check).
fn debug_filter() -> Result<Vec<sock_filter>, PrivilegeError> {
    let err = |e: seccompiler::BackendError| PrivilegeError::DebugFilter(e.to_string());
    let dword = |arg, op, value| SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DEBUG_DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    // clone(flags, ...): the kernel reads the low 32 bits of flags.
    rules.insert(
        libc::SYS_clone,
        CLONE_NEW_FLAGS
            .iter()
            .map(|&flag| {
                let flag = flag as u32 as u64;
                SeccompRule::new(vec![dword(0, SeccompCmpOp::MaskedEq(flag), flag)?])
            })
            .collect::<Result<_, _>>()
            .map_err(err)?,
    );
    // ioctl(fd, cmd, ...): cmd is an unsigned int; TIOCSTI pushes input into a terminal,
    // TIOCLINUX can read the console's screen.
    rules.insert(
        libc::SYS_ioctl,
        [libc::TIOCSTI, libc::TIOCLINUX]
            .iter()
            .map(|&cmd| SeccompRule::new(vec![dword(1, SeccompCmpOp::Eq, cmd)?]))
            .collect::<Result<_, _>>()
            .map_err(err)?,
    );
    rules.insert(
        libc::SYS_personality,
        vec![SeccompRule::new(
            ALLOWED_PERSONALITIES
                .iter()
                .map(|&p| dword(0, SeccompCmpOp::Ne, p))
                .collect::<Result<_, _>>()
                .map_err(err)?,
        )
        .map_err(err)?],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        ARCH,
    )
    .map_err(err)?;
    let compiled: seccompiler::BpfProgram = filter.try_into().map_err(err)?;
    let mut program: Vec<sock_filter> = compiled
        .iter()
        .map(|i| bpf_jump(i.code, i.k, i.jt, i.jf))
        .collect();
    // seccompiler's layout: [load arch, jeq arch, kill] [load nr] [chains...]. Jumps are
    // relative and forward; inserting after the kill moves nothing any jump crosses (the arch
    // check jumps over the kill onto the first inserted instruction).
    let load_nr = bpf_stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR);
    if program.len() < 4
        || !same(&program[0], &bpf_stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH))
        || !same(
            &program[2],
            &bpf_stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        )
        || !same(&program[3], &load_nr)
    {
        return Err(PrivilegeError::DebugFilter(
            "seccompiler's program does not start with the expected architecture check".into(),
        ));
    }
    let mut prologue = vec![load_nr];
    #[cfg(target_arch = "x86_64")]
    prologue.extend([
        bpf_jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        bpf_stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
    ]);
    prologue.extend([
        bpf_jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        bpf_stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]);
    program.splice(3..3, prologue);
    if program.len() > BPF_MAXINSNS {
        return Err(PrivilegeError::DebugFilter(format!(
            "{} instructions",
            program.len()
        )));
    }
    Ok(program)
}

/// `BPF_LD | BPF_W | BPF_ABS`.
const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
/// `BPF_RET | BPF_K`.
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
/// `BPF_JMP | BPF_JGE | BPF_K`.
#[cfg(target_arch = "x86_64")]
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
/// Offset of `nr` in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
/// Offset of `arch` in `struct seccomp_data`.
const SECCOMP_DATA_ARCH: u32 = 4;

fn bpf_stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn bpf_jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn same(a: &sock_filter, b: &sock_filter) -> bool {
    (a.code, a.jt, a.jf, a.k) == (b.code, b.jt, b.jf, b.k)
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use rustix::pipe::{pipe_with, PipeFlags};
    use rustix::process::{kill_process, Signal};

    use super::*;
    use crate::sys::{CStringArray, Fork};

    const STATUS: &str = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        TracerPid:\t0\nUid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2000\t2000\t2001\n\
        FDSize:\t64\nGroups:\t10 1234 \nNStgid:\t4242\t1\nCapInh:\t0000000000000000\n\
        CapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n\
        CapAmb:\t0000000000000400\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\n\
        Speculation_Store_Bypass:\tthread force mitigated\n";

    #[test]
    fn parses_status() {
        let s = parse_status(STATUS).unwrap();
        assert_eq!(s.uid, [1000, 1001, 1002, 1003]);
        assert_eq!(s.gid, [2000, 2000, 2000, 2001]);
        assert_eq!(s.groups, [10, 1234]);
        assert_eq!(
            (s.cap_inh, s.cap_prm, s.cap_eff),
            (0, 0xa80425fb, 0xa80425fb)
        );
        assert_eq!((s.cap_bnd, s.cap_amb), (0xa80425fb, 0x400));
        assert!(s.no_new_privs);
        assert_eq!(
            (s.seccomp, s.seccomp_filters, s.tracer_pid),
            (2, Some(3), 0)
        );

        let no_groups = STATUS.replace("Groups:\t10 1234 ", "Groups:\t ");
        assert!(parse_status(&no_groups).unwrap().groups.is_empty());
        let old_kernel = STATUS.replace("Seccomp_filters:\t3\n", "");
        assert_eq!(parse_status(&old_kernel).unwrap().seccomp_filters, None);
        let bad = STATUS.replace("CapEff:\t00000000a80425fb", "CapEff:\tzz");
        assert_eq!(parse_status(&bad), Err(StatusError { field: "CapEff" }));
        let three_ids = STATUS.replace("\t1003", "");
        assert_eq!(parse_status(&three_ids), Err(StatusError { field: "Uid" }));
        let real = std::fs::read_to_string("/proc/self/status").unwrap();
        assert_eq!(
            parse_status(&real).unwrap().uid[0],
            rustix::process::getuid().as_raw()
        );
    }

    #[test]
    fn maps_host_ids() {
        let identity = "         0          0 4294967295\n";
        assert_eq!(host_to_namespace_id(0, identity), Some(0));
        assert_eq!(
            host_to_namespace_id(u32::MAX - 1, identity),
            Some(u32::MAX - 1)
        );
        let userns = "         0     100000      65536\n     65536       1000          1\n";
        assert_eq!(host_to_namespace_id(100000, userns), Some(0));
        assert_eq!(host_to_namespace_id(101000, userns), Some(1000));
        assert_eq!(host_to_namespace_id(165535, userns), Some(65535));
        assert_eq!(host_to_namespace_id(165536, userns), None);
        assert_eq!(host_to_namespace_id(1000, userns), Some(65536));
        assert_eq!(host_to_namespace_id(0, userns), None);
        assert_eq!(namespace_to_host_id(1000, userns), Some(101000));
        assert_eq!(namespace_to_host_id(65536, userns), Some(1000));
        assert_eq!(namespace_to_host_id(65537, userns), None);
        assert_eq!(namespace_to_host_id(7, "0 0 4294967295\n"), Some(7));
        assert_eq!(host_to_namespace_id(5, ""), None);
    }

    #[test]
    fn exec_labels() {
        assert_eq!(exec_label(b""), None);
        assert_eq!(exec_label(b"unconfined\n"), None);
        assert_eq!(exec_label(b"unconfined (unconfined)\n"), None);
        assert_eq!(
            exec_label(b"docker-default (enforce)\n").as_deref(),
            Some(&b"exec docker-default"[..])
        );
        assert_eq!(
            exec_label(b"system_u:system_r:container_t:s0:c1,c2\0").as_deref(),
            Some(&b"system_u:system_r:container_t:s0:c1,c2"[..])
        );
    }

    #[test]
    fn exec_attr_is_opened_on_procfs() {
        // Whether a label can be written depends on an LSM (none here); the path must resolve.
        let fd = open_exec_attr().unwrap();
        assert_eq!(fstatfs(&fd).unwrap().f_type, PROC_SUPER_MAGIC);
    }

    #[test]
    fn debug_filter_extends_seccompilers_program() {
        let program = debug_filter().unwrap();
        assert!(same(&program[3], &bpf_stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR)));
        let enosys = bpf_stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        assert!(program.iter().any(|i| same(i, &enosys)));
        assert!(program.len() < BPF_MAXINSNS);
        let sysadmin = Privileges::new(Profile::Sysadmin, &own(), None, false, vec![]).unwrap();
        assert!(sysadmin
            .warning()
            .unwrap()
            .contains("a hostile container can take this session over"));
        let debug = Privileges::new(Profile::Debug, &own(), None, false, vec![]).unwrap();
        assert_eq!(debug.warning(), None);
    }

    // --- helpers for the tests that fork ---

    fn who(uid: u32, gid: u32, groups: &[u32]) -> Identity {
        Identity {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    fn own() -> TargetCredentials {
        let me = TargetProcess::open(std::process::id()).unwrap();
        TargetCredentials::read(&me).unwrap()
    }

    fn bit(set: CapabilitySet) -> u64 {
        set.bits()
    }

    fn write_all(fd: BorrowedFd<'_>, bytes: &[u8]) {
        let _ = rustix::io::write(fd, bytes);
    }

    fn read_all(fd: &OwnedFd) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(Errno::INTR) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn wait_raw(pid: Pid) -> i32 {
        loop {
            match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
                Ok(Some((_, status))) => return status.as_raw(),
                Err(Errno::INTR) => {}
                other => panic!("waitpid: {other:?}"),
            }
        }
    }

    /// Runs `body` in a forked child with the write end of a pipe; returns what the child
    /// wrote and its raw wait status. A panic in the child is reported, never unwound into the
    /// test harness.
    fn in_child(body: impl FnOnce(BorrowedFd<'_>) -> i32) -> (String, i32) {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        match sys::fork().unwrap() {
            Fork::Child => {
                drop(r);
                let code =
                    catch_unwind(AssertUnwindSafe(|| body(w.as_fd()))).unwrap_or_else(|_| {
                        write_all(w.as_fd(), b"child panicked");
                        101
                    });
                sys::exit_now(code)
            }
            Fork::Parent(pid) => {
                drop(w);
                let out = read_all(&r);
                (String::from_utf8_lossy(&out).into_owned(), wait_raw(pid))
            }
        }
    }

    /// Applies `privileges` in a child that then execs `/bin/cat /proc/self/status`; returns
    /// the status the command saw after `execve`.
    fn status_after_exec(privileges: &Privileges) -> StatusFields {
        let cat = CString::new("/bin/cat").unwrap();
        let argv = CStringArray::new(vec![
            cat.clone(),
            CString::new("/proc/self/status").unwrap(),
        ]);
        let envp = CStringArray::new(vec![]);
        let (out, status) = in_child(|w| {
            if let Err(e) = privileges.apply(false) {
                write_all(w, format!("apply: {e}").as_bytes());
                return 1;
            }
            let _ = rustix::stdio::dup2_stdout(w);
            let err = sys::execve(&cat, &argv, &envp);
            write_all(w, format!("exec: {err}").as_bytes());
            1
        });
        assert_eq!(status, 0, "{out}");
        parse_status(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `syscall(nr, args..., 0)`: the sixth argument (flags of process_vm_readv) is 0.
    fn raw_syscall(nr: libc::c_long, args: [libc::c_long; 5]) -> Result<libc::c_long, i32> {
        // SAFETY: test-only; every call passes integers or NULL/valid pointers, and the
        // syscalls exercised either fail before touching memory or write only to buffers the
        // caller owns.
        let ret = unsafe {
            libc::syscall(
                nr,
                args[0],
                args[1],
                args[2],
                args[3],
                args[4],
                0 as libc::c_long,
            )
        };
        if ret < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(ret)
        }
    }

    /// The syscalls the debug filter must deny, as (name, nr, args). Each would fail otherwise
    /// with something other than EPERM for root (EFAULT, EINVAL, EBADF) or succeed, so EPERM
    /// shows the filter acted.
    fn denied_calls() -> Vec<(&'static str, libc::c_long, [libc::c_long; 5])> {
        let ioctl = |cmd: libc::Ioctl| [0, cmd as libc::c_long, 0, 0, 0];
        vec![
            ("mount", libc::SYS_mount, [0; 5]),
            (
                "unshare(CLONE_NEWUSER)",
                libc::SYS_unshare,
                [libc::CLONE_NEWUSER as _, 0, 0, 0, 0],
            ),
            (
                "open_by_handle_at",
                libc::SYS_open_by_handle_at,
                [-1, 0, 0, 0, 0],
            ),
            ("bpf", libc::SYS_bpf, [0; 5]),
            ("init_module", libc::SYS_init_module, [0; 5]),
            ("keyctl", libc::SYS_keyctl, [0; 5]),
            ("fsopen", libc::SYS_fsopen, [0; 5]),
            ("setns", libc::SYS_setns, [-1, 0, 0, 0, 0]),
            ("io_uring_setup", libc::SYS_io_uring_setup, [0; 5]),
            ("ioctl(TIOCSTI)", libc::SYS_ioctl, ioctl(libc::TIOCSTI)),
            ("ioctl(TIOCLINUX)", libc::SYS_ioctl, ioctl(libc::TIOCLINUX)),
            // The kernel reads the command as an unsigned int; so must the filter.
            (
                "ioctl(1<<32|TIOCSTI)",
                libc::SYS_ioctl,
                [0, (1 << 32) | libc::TIOCSTI as libc::c_long, 0, 0, 0],
            ),
            (
                "personality(READ_IMPLIES_EXEC)",
                libc::SYS_personality,
                [0x0400000, 0, 0, 0, 0],
            ),
            (
                "clone(CLONE_NEWNS)",
                libc::SYS_clone,
                [(libc::CLONE_NEWNS | libc::SIGCHLD) as _, 0, 0, 0, 0],
            ),
            (
                "clone(CLONE_NEWUSER)",
                libc::SYS_clone,
                [(libc::CLONE_NEWUSER | libc::SIGCHLD) as _, 0, 0, 0, 0],
            ),
        ]
    }

    /// In the child: every denied call fails with EPERM, clone3 with ENOSYS, and the tools'
    /// syscalls still work. Returns the failures.
    fn check_debug_syscalls() -> Vec<String> {
        let mut failures = Vec::new();
        for (name, nr, args) in denied_calls() {
            match raw_syscall(nr, args) {
                // A clone that got through: this is the new child, which must not run on.
                Ok(0) if nr == libc::SYS_clone => sys::exit_now(0),
                Err(libc::EPERM) => {}
                other => failures.push(format!("{name}: {other:?}, expected EPERM")),
            }
        }
        match raw_syscall(libc::SYS_clone3, [0; 5]) {
            Err(libc::ENOSYS) => {}
            other => failures.push(format!("clone3: {other:?}, expected ENOSYS")),
        }
        if let Err(e) = raw_syscall(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0]) {
            failures.push(format!("personality query: {e}"));
        }
        // process_vm_readv on ourselves.
        let source = [7u8; 16];
        let mut dest = [0u8; 16];
        let local = libc::iovec {
            iov_base: dest.as_mut_ptr().cast(),
            iov_len: dest.len(),
        };
        let remote = libc::iovec {
            iov_base: source.as_ptr() as *mut _,
            iov_len: source.len(),
        };
        let got = raw_syscall(
            libc::SYS_process_vm_readv,
            [
                std::process::id() as _,
                &local as *const _ as _,
                1,
                &remote as *const _ as _,
                1,
            ],
        );
        if got != Ok(16) || dest != source {
            failures.push(format!("process_vm_readv: {got:?}"));
        }
        // Packet sockets (tcpdump).
        match raw_syscall(
            libc::SYS_socket,
            [libc::AF_PACKET as _, libc::SOCK_RAW as _, 0, 0, 0],
        ) {
            Ok(fd) => sys::close_range(fd as u32, fd as u32),
            Err(e) => failures.push(format!("socket(AF_PACKET): {e}")),
        }
        // An ordinary ioctl.
        let (r, _w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let mut n: libc::c_int = 0;
        if let Err(e) = raw_syscall(
            libc::SYS_ioctl,
            [
                rustix::fd::AsRawFd::as_raw_fd(&r) as _,
                libc::FIONREAD as _,
                &mut n as *mut _ as _,
                0,
                0,
            ],
        ) {
            failures.push(format!("ioctl(FIONREAD): {e}"));
        }
        // fork, then ptrace the child (strace, gdb).
        match sys::fork() {
            Ok(Fork::Child) => loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            },
            Ok(Fork::Parent(child)) => {
                if let Err(e) = sys::ptrace_seize(child.as_raw_nonzero().get()) {
                    failures.push(format!("PTRACE_SEIZE of a child: {e}"));
                }
                let _ = kill_process(child, Signal::KILL);
                let _ = wait_raw(child);
            }
            Err(e) => failures.push(format!("fork: {e}")),
        }
        // posix_spawn: glibc tries clone3, gets ENOSYS, falls back to clone.
        match std::process::Command::new("/bin/true").status() {
            Ok(s) if s.success() => {}
            other => failures.push(format!("spawn /bin/true: {other:?}")),
        }
        failures
    }

    fn expected_debug_caps(shares_host_network: bool) -> u64 {
        let me = own().status;
        let mut never = DEBUG_NEVER;
        if shares_host_network {
            never |= CapabilitySet::NET_ADMIN;
        }
        (me.cap_bnd | DEBUG_EXTRA.bits()) & !never.bits() & me.cap_prm
    }

    #[test]
    fn debug_profile_in_a_child() {
        let privileges = Privileges::new(Profile::Debug, &own(), None, false, vec![]).unwrap();
        let (out, status) = in_child(|w| {
            if let Err(e) = privileges.apply(false) {
                write_all(w, format!("apply: {e}").as_bytes());
                return 1;
            }
            let mut failures = check_debug_syscalls();
            let text = std::fs::read_to_string("/proc/self/status").unwrap();
            let s = parse_status(&text).unwrap();
            let wanted = expected_debug_caps(false);
            for (name, set) in [
                ("CapEff", s.cap_eff),
                ("CapPrm", s.cap_prm),
                ("CapBnd", s.cap_bnd),
            ] {
                if set != wanted {
                    failures.push(format!("{name} {set:x}, expected {wanted:x}"));
                }
            }
            if (s.cap_inh, s.cap_amb) != (0, 0) {
                failures.push(format!("CapInh {:x} CapAmb {:x}", s.cap_inh, s.cap_amb));
            }
            if !s.no_new_privs || s.seccomp != 2 || s.seccomp_filters != Some(1) {
                failures.push(format!("NoNewPrivs/Seccomp: {s:?}"));
            }
            write_all(w, failures.join("\n").as_bytes());
            i32::from(!failures.is_empty())
        });
        assert_eq!((out.as_str(), status), ("", 0));
        let wanted = expected_debug_caps(false);
        assert_ne!(wanted & bit(CapabilitySet::SYS_PTRACE), 0);
        assert_ne!(wanted & bit(CapabilitySet::NET_ADMIN), 0);
        for never in [
            CapabilitySet::SYS_ADMIN,
            CapabilitySet::DAC_READ_SEARCH,
            CapabilitySet::SYS_MODULE,
        ] {
            assert_eq!(wanted & bit(never), 0);
        }
    }

    #[test]
    fn debug_filter_alone_denies_what_root_could_do() {
        // With every capability, only the filter can turn these calls into EPERM.
        let filter = debug_filter().unwrap();
        let (out, status) = in_child(|w| {
            let _ = set_no_new_privs(true);
            if let Err(e) = sys::seccomp_set_mode_filter(&filter) {
                write_all(w, format!("seccomp: {e}").as_bytes());
                return 1;
            }
            let failures = check_debug_syscalls();
            write_all(w, failures.join("\n").as_bytes());
            i32::from(!failures.is_empty())
        });
        assert_eq!((out.as_str(), status), ("", 0));
    }

    #[test]
    fn denied_calls_do_not_fail_with_eperm_without_the_filter() {
        // The control: without the filter, root's calls do not fail with EPERM, so the tests
        // above could fail.
        let (out, status) = in_child(|w| {
            let mut wrong = Vec::new();
            for (name, nr, args) in denied_calls() {
                if nr == libc::SYS_unshare || nr == libc::SYS_clone {
                    continue; // would succeed and change or duplicate this child
                }
                if raw_syscall(nr, args) == Err(libc::EPERM) {
                    wrong.push(name);
                }
            }
            write_all(w, wrong.join(", ").as_bytes());
            0
        });
        assert_eq!((out.as_str(), status), ("", 0));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn debug_filter_kills_other_abis() {
        let privileges = Privileges::new(Profile::Debug, &own(), None, false, vec![]).unwrap();
        let i386 = |_: BorrowedFd<'_>| {
            privileges.apply(false).unwrap();
            let mut eax: u32 = 20;
            // SAFETY: `int 0x80` with eax=20 is the i386 getpid, which takes no arguments and
            // only writes eax.
            unsafe { std::arch::asm!("int 0x80", inout("eax") eax) };
            eax as i32
        };
        let x32 = |_: BorrowedFd<'_>| {
            privileges.apply(false).unwrap();
            raw_syscall(X32_SYSCALL_BIT as libc::c_long | libc::SYS_getpid, [0; 5]).map_or(0, |_| 1)
        };
        for (abi, child) in [
            ("i386", &i386 as &dyn Fn(BorrowedFd<'_>) -> i32),
            ("x32", &x32),
        ] {
            let (out, status) = in_child(child);
            assert!(
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
                "{abi}: status {status:#x} {out}"
            );
        }
    }

    #[test]
    fn debug_profile_after_exec() {
        let target = own();
        let wanted = expected_debug_caps(true);
        let root = Privileges::new(Profile::Debug, &target, None, true, vec![]).unwrap();
        let s = status_after_exec(&root);
        assert_eq!(s.uid, [0; 4]);
        assert_eq!((s.cap_eff, s.cap_prm, s.cap_bnd), (wanted, wanted, wanted));
        assert_eq!(s.cap_eff & bit(CapabilitySet::NET_ADMIN), 0);
        assert!(s.no_new_privs);
        assert_eq!((s.seccomp, s.seccomp_filters), (2, Some(1)));

        // A non-root user ends with no capabilities, like `docker exec --user`.
        let user = Privileges::new(
            Profile::Debug,
            &target,
            Some(&who(1000, 1000, &[10, 20])),
            true,
            vec![],
        )
        .unwrap();
        let s = status_after_exec(&user);
        assert_eq!((s.uid, s.gid), ([1000; 4], [1000; 4]));
        assert_eq!(s.groups, [10, 20]);
        assert_eq!((s.cap_eff, s.cap_prm, s.cap_inh, s.cap_amb), (0, 0, 0, 0));
        assert_eq!(s.cap_bnd, wanted);
    }

    #[test]
    fn sysadmin_profile_after_exec() {
        let me = own().status;
        let root = Privileges::new(Profile::Sysadmin, &own(), None, false, vec![]).unwrap();
        let s = status_after_exec(&root);
        assert_eq!(
            (s.uid, s.cap_eff, s.cap_bnd),
            ([0; 4], me.cap_eff, me.cap_bnd)
        );
        assert!(!s.no_new_privs);
        assert_eq!(s.seccomp, 0);
        let user = Privileges::new(
            Profile::Sysadmin,
            &own(),
            Some(&who(1000, 1001, &[])),
            false,
            vec![],
        )
        .unwrap();
        let s = status_after_exec(&user);
        assert_eq!((s.uid, s.gid, s.cap_eff), ([1000; 4], [1001; 4], 0));
    }

    // --- the target profile against a real restricted process ---

    /// `acct` fails with `errno` (a filter the test can tell apart from another).
    fn acct_filter(errno: i32) -> Vec<sock_filter> {
        vec![
            bpf_stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
            bpf_jump(BPF_JEQ_K, libc::SYS_acct as u32, 0, 1),
            bpf_stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | errno as u32),
            bpf_stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        ]
    }

    const TARGET_BOUNDING: CapabilitySet = CapabilitySet::CHOWN
        .union(CapabilitySet::DAC_OVERRIDE)
        .union(CapabilitySet::KILL)
        .union(CapabilitySet::SETUID)
        .union(CapabilitySet::SETGID)
        .union(CapabilitySet::SETPCAP)
        .union(CapabilitySet::NET_BIND_SERVICE)
        .union(CapabilitySet::NET_RAW);
    const TARGET_AMBIENT: CapabilitySet =
        CapabilitySet::CHOWN.union(CapabilitySet::NET_BIND_SERVICE);

    /// A `sleep` killed and reaped on drop.
    struct Sleeper(Pid);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = kill_process(self.0, Signal::KILL);
            let _ = wait_raw(self.0);
        }
    }

    /// Forks, runs `setup` (which returns an error text or nothing), execs `sleep 30`, and
    /// returns once the exec happened (the close-on-exec pipe closed without a word).
    fn spawn_sleeper(setup: impl FnOnce() -> Result<(), String>) -> Sleeper {
        let sleep = CString::new("/bin/sleep").unwrap();
        let argv = CStringArray::new(vec![sleep.clone(), CString::new("30").unwrap()]);
        let envp = CStringArray::new(vec![]);
        let (r, w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        match sys::fork().unwrap() {
            Fork::Child => {
                drop(r);
                if let Err(e) = setup() {
                    write_all(w.as_fd(), e.as_bytes());
                    sys::exit_now(1);
                }
                let err = sys::execve(&sleep, &argv, &envp);
                write_all(w.as_fd(), format!("exec: {err}").as_bytes());
                sys::exit_now(1)
            }
            Fork::Parent(pid) => {
                drop(w);
                let sleeper = Sleeper(pid);
                let out = read_all(&r);
                assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
                sleeper
            }
        }
    }

    /// A target like a hardened container process: uid 1000, two groups, a small bounding
    /// set, ambient capabilities, two seccomp filters, with or without no_new_privs (without
    /// it, the filters go in while root still has CAP_SYS_ADMIN, as runc does).
    fn restricted_target(no_new_privs: bool) -> Sleeper {
        spawn_sleeper(|| {
            let e = |what: &'static str| move |err: Errno| format!("{what}: {err}");
            let filters = [acct_filter(libc::EPERM), acct_filter(libc::EACCES)];
            if !no_new_privs {
                for f in &filters {
                    sys::seccomp_set_mode_filter(f).map_err(e("seccomp"))?;
                }
            }
            for cap in 0..=40 {
                let bit = 1u64 << cap;
                if TARGET_BOUNDING.bits() & bit == 0 {
                    remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(bit))
                        .map_err(e("bounding"))?;
                }
            }
            set_thread_groups(&[Gid::from_raw(1234), Gid::from_raw(5678)]).map_err(e("groups"))?;
            set_keep_capabilities(true).map_err(e("keepcaps"))?;
            let gid = Gid::from_raw(2000);
            set_thread_res_gid(gid, gid, gid).map_err(e("gid"))?;
            let uid = Uid::from_raw(1000);
            set_thread_res_uid(uid, uid, uid).map_err(e("uid"))?;
            let kept = TARGET_AMBIENT | CapabilitySet::KILL;
            set_capabilities(
                None,
                CapabilitySets {
                    effective: kept,
                    permitted: kept,
                    inheritable: TARGET_AMBIENT,
                },
            )
            .map_err(e("capset"))?;
            for cap in [CapabilitySet::CHOWN, CapabilitySet::NET_BIND_SERVICE] {
                configure_capability_in_ambient_set(cap, true).map_err(e("ambient"))?;
            }
            if no_new_privs {
                set_no_new_privs(true).map_err(e("nnp"))?;
                for f in &filters {
                    sys::seccomp_set_mode_filter(f).map_err(e("seccomp"))?;
                }
            }
            Ok(())
        })
    }

    fn credentials_of(pid: Pid) -> TargetCredentials {
        let process = TargetProcess::open(pid.as_raw_nonzero().get() as u32).unwrap();
        TargetCredentials::read(&process).unwrap()
    }

    fn same_program(a: &[sock_filter], b: &[sock_filter]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
    }

    fn check_target_profile(no_new_privs: bool) {
        let target = restricted_target(no_new_privs);
        let pid = target.0.as_raw_nonzero().get() as u32;
        let creds = credentials_of(target.0);
        let t = &creds.status;
        // The target is what the setup made it (else the comparison below proves little).
        assert_eq!(
            (t.uid, t.gid, t.groups.as_slice()),
            ([1000; 4], [2000; 4], &[1234, 5678][..])
        );
        assert_eq!(
            (t.cap_amb, t.cap_eff, t.cap_bnd),
            (
                TARGET_AMBIENT.bits(),
                TARGET_AMBIENT.bits(),
                TARGET_BOUNDING.bits()
            )
        );
        assert_eq!(
            (t.no_new_privs, t.seccomp, t.seccomp_filters),
            (no_new_privs, 2, Some(2))
        );

        let filters = target_seccomp_filters(pid).unwrap();
        assert_eq!(filters.len(), 2);
        assert!(
            same_program(&filters[0], &acct_filter(libc::EPERM)),
            "oldest first"
        );
        assert!(same_program(&filters[1], &acct_filter(libc::EACCES)));
        // Detached, and still running.
        let after = credentials_of(target.0).status;
        assert_eq!(after.tracer_pid, 0);

        let privileges =
            Privileges::new(Profile::Target, &creds, None, false, filters.clone()).unwrap();
        assert_eq!(privileges.warning(), None);
        // The filters' order decides which errno wins: the newest filter's.
        let (out, status) = in_child(|w| {
            if let Err(e) = privileges.apply(false) {
                write_all(w, format!("apply: {e}").as_bytes());
                return 1;
            }
            match raw_syscall(libc::SYS_acct, [0; 5]) {
                Err(libc::EACCES) => 0,
                other => {
                    write_all(w, format!("acct: {other:?}").as_bytes());
                    1
                }
            }
        });
        assert_eq!((out.as_str(), status), ("", 0));

        let command = spawn_sleeper(|| privileges.apply(false).map_err(|e| e.to_string()));
        let c = credentials_of(command.0).status;
        assert_eq!((c.uid, c.gid, &c.groups), (t.uid, t.gid, &t.groups));
        assert_eq!(
            (c.cap_inh, c.cap_prm, c.cap_eff, c.cap_bnd, c.cap_amb),
            (t.cap_inh, t.cap_prm, t.cap_eff, t.cap_bnd, t.cap_amb)
        );
        assert_eq!(
            (c.no_new_privs, c.seccomp, c.seccomp_filters),
            (t.no_new_privs, t.seccomp, t.seccomp_filters)
        );
        let copied = target_seccomp_filters(command.0.as_raw_nonzero().get() as u32).unwrap();
        assert!(copied.iter().zip(&filters).all(|(a, b)| same_program(a, b)));
        assert_eq!(copied.len(), filters.len());
    }

    #[test]
    fn target_profile_with_no_new_privs() {
        check_target_profile(true);
    }

    #[test]
    fn target_profile_without_no_new_privs() {
        check_target_profile(false);
    }

    #[test]
    fn target_profile_user_overrides_ids_and_groups_only() {
        let target = restricted_target(true);
        let creds = credentials_of(target.0);
        let pid = target.0.as_raw_nonzero().get() as u32;
        let filters = target_seccomp_filters(pid).unwrap();
        let privileges = Privileges::new(
            Profile::Target,
            &creds,
            Some(&who(3000, 3001, &[42])),
            false,
            filters,
        )
        .unwrap();
        let command = spawn_sleeper(|| privileges.apply(false).map_err(|e| e.to_string()));
        let c = credentials_of(command.0).status;
        assert_eq!(
            (c.uid, c.gid, c.groups.as_slice()),
            ([3000; 4], [3001; 4], &[42][..])
        );
        assert_eq!(
            (c.cap_bnd, c.cap_amb),
            (creds.status.cap_bnd, creds.status.cap_amb)
        );
    }

    #[test]
    fn target_profile_refuses_a_wrong_filter_count() {
        let target = restricted_target(true);
        let creds = credentials_of(target.0);
        let err = Privileges::new(Profile::Target, &creds, None, false, vec![]).unwrap_err();
        assert!(
            matches!(
                err,
                PrivilegeError::FilterCount {
                    expected: 2,
                    got: 0,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn traced_target_is_a_clear_error() {
        let target = spawn_sleeper(|| Ok(()));
        let pid = target.0.as_raw_nonzero().get();
        sys::ptrace_seize(pid).unwrap();
        let err = target_seccomp_filters(pid as u32).unwrap_err();
        assert!(
            matches!(err, PrivilegeError::Traced { tracer, .. } if tracer == rustix::thread::gettid().as_raw_nonzero().get() as u32),
            "{err}"
        );
        assert!(err.to_string().contains("is being traced by pid"));
        // Killing the traced sleeper (Sleeper's drop) ends the trace.
    }
}
