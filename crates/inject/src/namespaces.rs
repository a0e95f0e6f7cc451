//! The target's namespaces: opened as descriptors before anything is entered, compared with
//! crashcart's own, and entered (`setns`) one kind at a time, only those that differ.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{fstat, stat};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::process::{ProcessError, TargetProcess};
use crate::step;

/// A kind of namespace, in the order a session enters them (user last: mounting needs the
/// host's privileges, which entering the container's user namespace gives up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Mount namespace.
    Mnt,
    /// Hostname.
    Uts,
    /// System V IPC, POSIX message queues.
    Ipc,
    /// Network.
    Net,
    /// cgroup namespace (the view of /proc/self/cgroup).
    Cgroup,
    /// Time namespace (applies to children).
    Time,
    /// PID namespace (applies to children).
    Pid,
    /// User namespace.
    User,
}

impl Kind {
    /// Every kind, in entering order.
    pub const ALL: [Kind; 8] = [
        Kind::Mnt,
        Kind::Uts,
        Kind::Ipc,
        Kind::Net,
        Kind::Cgroup,
        Kind::Time,
        Kind::Pid,
        Kind::User,
    ];

    /// The kernel's short name (`mnt`, `uts`, ...).
    pub fn name(self) -> &'static str {
        &self.proc_name()[3..]
    }

    /// The file name under `/proc/PID/ns`.
    pub fn proc_name(self) -> &'static str {
        match self {
            Kind::Mnt => "ns/mnt",
            Kind::Uts => "ns/uts",
            Kind::Ipc => "ns/ipc",
            Kind::Net => "ns/net",
            Kind::Cgroup => "ns/cgroup",
            Kind::Time => "ns/time",
            Kind::Pid => "ns/pid",
            Kind::User => "ns/user",
        }
    }

    fn link_type(self) -> LinkNameSpaceType {
        match self {
            Kind::Mnt => LinkNameSpaceType::Mount,
            Kind::Uts => LinkNameSpaceType::HostNameAndNISDomainName,
            Kind::Ipc => LinkNameSpaceType::InterProcessCommunication,
            Kind::Net => LinkNameSpaceType::Network,
            Kind::Cgroup => LinkNameSpaceType::ControlGroup,
            Kind::Time => LinkNameSpaceType::Time,
            Kind::Pid => LinkNameSpaceType::ProcessID,
            Kind::User => LinkNameSpaceType::User,
        }
    }
}

/// Why a namespace could not be opened or entered.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// Opening `/proc/PID/ns/*` failed.
    #[error(transparent)]
    Open(#[from] ProcessError),
    /// `setns` failed.
    #[error("cannot enter the {} namespace of pid {pid}", kind.name())]
    Enter {
        /// Which.
        kind: Kind,
        /// The target PID.
        pid: u32,
        /// Why.
        source: rustix::io::Errno,
    },
}

/// The target's namespaces that differ from crashcart's.
#[derive(Debug)]
pub struct Namespaces {
    pid: u32,
    differing: Vec<(Kind, OwnedFd)>,
}

impl Namespaces {
    /// Opens every namespace of `target` that differs from ours. A kind the kernel lacks (no
    /// `/proc/self/ns/<kind>`) is skipped.
    pub fn open(target: &TargetProcess) -> Result<Namespaces, NamespaceError> {
        let mut differing = Vec::new();
        for kind in Kind::ALL {
            let Ok(ours) = stat(format!("/proc/self/{}", kind.proc_name())) else {
                continue;
            };
            let fd = target.open_file(kind.proc_name())?;
            let theirs = fstat(&fd).map_err(|e| target.error(kind.proc_name(), e))?;
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino) {
                differing.push((kind, fd));
            }
        }
        step!(
            "pid {}: namespaces to enter: {}",
            target.pid,
            differing
                .iter()
                .map(|(k, _)| k.name())
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok(Namespaces {
            pid: target.pid,
            differing,
        })
    }

    /// Whether `kind` differs from ours.
    pub fn differs(&self, kind: Kind) -> bool {
        self.differing.iter().any(|(k, _)| *k == kind)
    }

    /// Enters the target's namespace of `kind` if it differs, and closes its descriptor.
    pub fn enter(&mut self, kind: Kind) -> Result<(), NamespaceError> {
        let Some(i) = self.differing.iter().position(|(k, _)| *k == kind) else {
            return Ok(());
        };
        let (_, fd) = self.differing.remove(i);
        move_into_link_name_space(fd.as_fd(), Some(kind.link_type())).map_err(|source| {
            NamespaceError::Enter {
                kind,
                pid: self.pid,
                source,
            }
        })
    }

    /// The descriptors still held (for a forked process that closes every other one).
    pub fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.differing
            .iter()
            .map(|(_, fd)| fd.as_raw_fd())
            .collect()
    }

    /// Takes the descriptor of `kind` out (to hand to the command's process), if it differs.
    pub fn take(&mut self, kind: Kind) -> Option<OwnedFd> {
        let i = self.differing.iter().position(|(k, _)| *k == kind)?;
        Some(self.differing.remove(i).1)
    }
}
