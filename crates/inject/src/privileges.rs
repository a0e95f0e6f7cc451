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
    #[error("cannot parse /proc/{pid}/status: {source}")]
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
    #[error("cannot read the seccomp filters of pid {pid}: {request}: {source}")]
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
    #[error("cannot read /proc/sys/kernel/cap_last_cap: {0}")]
    CapLastCap(std::io::Error),
    /// crashcart's own capabilities cannot be read.
    #[error("cannot read crashcart's own capabilities: {0}")]
    OwnCapabilities(Errno),
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
    // Index 0 is the most recent filter.
    filters.reverse();
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
    /// Computes the command's privileges for `profile` from the target's, with `user` (uid,
    /// gid in the target's user namespace) when the caller gave `--user`.
    ///
    /// `shares_host_network`: the target is in the host's network namespace (debug then leaves
    /// out `NET_ADMIN`). `target_filters`: [`target_seccomp_filters`] of the target for
    /// [`Profile::Target`] when its `Seccomp` is 2, else empty.
    pub fn new(
        profile: Profile,
        target: &TargetCredentials,
        user: Option<(u32, u32)>,
        shares_host_network: bool,
        target_filters: Vec<Vec<sock_filter>>,
    ) -> Result<Privileges, PrivilegeError> {
        let (uid, gid) = user.unwrap_or((0, 0));
        match profile {
            Profile::Sysadmin => Ok(Privileges {
                profile,
                groups: Vec::new(),
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
                    groups: Vec::new(),
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
                let (uid, gid) = match user {
                    Some((uid, gid)) => ([uid; 3], [gid; 3]),
                    None => (
                        ids("uid", &target.uid_map, status.uid)?,
                        ids("gid", &target.gid_map, status.gid)?,
                    ),
                };
                // A group without an ID in the namespace came from outside it and can be
                // neither set nor dropped there.
                let groups = status
                    .groups
                    .iter()
                    .filter_map(|&g| host_to_namespace_id(g, &target.gid_map))
                    .map(Gid::from_raw)
                    .collect();
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
