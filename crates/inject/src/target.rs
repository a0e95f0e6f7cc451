//! Target resolution: turn what the user typed (a PID, a container ID, ID prefix or name, a
//! `docker://ID`-style reference) into the host PID of a process inside that container.

/// The container runtime a target was found through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// A bare PID; no runtime involved.
    Pid,
    /// Docker Engine (also `moby` containerd tasks).
    Docker,
    /// A containerd task in the given namespace (e.g. `k8s.io`).
    Containerd {
        /// containerd namespace.
        namespace: String,
    },
    /// Podman.
    Podman,
    /// CRI-O.
    CriO,
}

/// A resolved target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host PID of a process in the container (its init where known).
    pub pid: u32,
    /// How it was found.
    pub runtime: Runtime,
    /// Full container ID, when the target is a container.
    pub id: Option<String>,
    /// Container name, when the runtime has one.
    pub name: Option<String>,
}

/// Why a target could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Nothing matched.
    #[error("no container or process matches {0:?}")]
    NotFound(String),
    /// A prefix matched several containers.
    #[error("{spec:?} is ambiguous; it matches {}", candidates.join(", "))]
    Ambiguous {
        /// What the user typed.
        spec: String,
        /// Full IDs (and names) that matched.
        candidates: Vec<String>,
    },
    /// The container exists but is not running.
    #[error("container {0} is not running")]
    NotRunning(String),
}

/// Resolves `spec` to a target. (Placeholder: PIDs only, until resolution lands.)
pub fn resolve(spec: &str) -> Result<Target, ResolveError> {
    match spec.parse::<u32>() {
        Ok(pid) if std::path::Path::new(&format!("/proc/{pid}")).exists() => Ok(Target {
            pid,
            runtime: Runtime::Pid,
            id: None,
            name: None,
        }),
        _ => Err(ResolveError::NotFound(spec.to_string())),
    }
}
