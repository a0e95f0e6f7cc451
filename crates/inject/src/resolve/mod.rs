//! Target resolution: turn what the user typed (a PID, a container ID, ID prefix or name, a
//! `docker://ID`-style reference) into the host PID of the container's init process.
//!
//! Resolution asks the cheapest authority that can answer, in this order:
//!
//! 1. All digits: a PID, checked in `/proc`.
//! 2. `docker://`, `containerd://`, `cri-o://`, `podman://` (how Kubernetes pod status writes
//!    container IDs): the scheme is stripped and only that runtime's containers match.
//! 3. An ID or ID prefix: the runtimes' state files under `/run` ([`state_files`]), then the
//!    IDs the kernel shows in `/proc/*/cgroup` ([`cgroup_scan`]). No daemon is involved, so
//!    this works when dockerd hangs and for runtimes without an API.
//! 4. Anything else, or an ID the files do not know (a stopped container): the Docker Engine
//!    API ([`docker`]), which also knows names.
//!
//! Like Docker, any unique prefix of a hex ID is accepted, and an ambiguous one is an error
//! that lists the candidates. Also like Docker, a name beats an ID prefix: a short hex string
//! (under 12 characters, e.g. `db` or `cafe`) is first offered to Docker as a name, briefly,
//! and only if Docker has no container of that name is it taken as a prefix. Twelve hex
//! digits and more (what `docker ps` shows) are IDs, resolved without the daemon. A PID read
//! from a file is only trusted while its process lives and, where the runtime records the
//! init's start time, started at that time (so a recycled PID is never taken for the init).
//! A paused (frozen) container or process is refused, since a command in it would hang.
//!
//! Kubernetes pods are named `k8s://NAMESPACE/POD[/CONTAINER]`, or without the scheme: no
//! other target form contains a `/` inside it (Docker names and task IDs cannot), so
//! `NAMESPACE/POD[/CONTAINER]` is read the same way when each part is a valid Kubernetes
//! name. Pods are found in the CRI runtimes' OCI bundles ([`kubernetes`]) first, with no
//! daemon involved; when the bundles know no such pod (none under `/run`, state directories
//! unreadable, a runtime whose state is elsewhere), the CRI runtime is asked over its socket
//! ([`cri`], through the blocking HTTP/2 client [`grpc`]): the endpoint given
//! (`--cri-endpoint`, `CONTAINER_RUNTIME_ENDPOINT`), else containerd's and CRI-O's usual
//! sockets under `/run`. See [`Resolver::resolve`] for the rules, the same for both sources.
//! (kubectl's `pod/NAME` form is *not* special: it means namespace `pod`.)

mod cgroup_scan;
mod cri;
mod docker;
mod freezer;
mod grpc;
mod kubernetes;
mod listing;
mod procfs;
mod state_files;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use cri::CriError;
pub use docker::DockerError;
pub use grpc::GrpcError;
pub use listing::{list, render, ContainerState, Listing};

/// The container runtime a target was found through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// A bare PID; no runtime involved (also a container runc/crun run without a known
    /// manager).
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

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Runtime::Pid => f.write_str("process"),
            Runtime::Docker => f.write_str("docker"),
            Runtime::Containerd { namespace } => write!(f, "containerd namespace {namespace}"),
            Runtime::Podman => f.write_str("podman"),
            Runtime::CriO => f.write_str("cri-o"),
        }
    }
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
    /// Nothing matched, but a running container has a name close to what was typed.
    #[error("no container or process matches {spec:?}; did you mean `{suggestion}`?")]
    DidYouMean {
        /// What the user typed.
        spec: String,
        /// The closest name of a running container.
        suggestion: String,
    },
    /// A prefix matched several containers.
    #[error("{spec:?} is ambiguous; it matches {}", candidates.join(", "))]
    Ambiguous {
        /// What the user typed.
        spec: String,
        /// Each container that matched: `NAME (RUNTIME ID, image IMAGE)` where the runtime
        /// knows a name and image, else `ID (RUNTIME)`.
        candidates: Vec<String>,
    },
    /// The container exists but is not running.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The target was empty.
    #[error("the target is empty; give a PID, a container ID, ID prefix or name")]
    Empty,
    /// `scheme://` that is not one of the runtimes Kubernetes writes.
    #[error("unknown runtime in {0:?}; use docker://, containerd://, cri-o://, podman:// or k8s://NAMESPACE/POD[/CONTAINER]")]
    UnknownScheme(String),
    /// An all-digit target that names no process.
    #[error("no process with PID {0}")]
    NoSuchPid(u32),
    /// The process has exited and is waiting to be reaped; its namespaces are gone.
    #[error("process {0} is exiting")]
    PidExiting(u32),
    /// The container is frozen; a command in it would hang.
    #[error("container {0} is paused; unpause it first")]
    Paused(String),
    /// The process's cgroup is frozen (its container is paused); a command would hang.
    #[error("process {0} is frozen (its container is paused); unpause it first")]
    Frozen(u32),
    /// Not an ID any state file knows, and Docker cannot be asked about names.
    #[error("no container or process matches {spec:?} (and Docker is not reachable at {})", socket.display())]
    DockerUnreachable {
        /// What the user typed.
        spec: String,
        /// The socket tried.
        socket: PathBuf,
        /// Why it could not be reached.
        #[source]
        source: io::Error,
    },
    /// No CRI container on this node belongs to the pod.
    #[error("no pod {pod} on this node (none of its containers is in the runtimes' state under {}{}; deleted, not scheduled here, or not started yet)", run_root.display(), asked_note(cri_sockets))]
    PodNotFound {
        /// `NAMESPACE/POD`.
        pod: String,
        /// The state directory searched.
        run_root: PathBuf,
        /// The CRI sockets that answered without it.
        cri_sockets: Vec<PathBuf>,
    },
    /// The CRI runtime could not be asked.
    #[error("cannot find {what} over the CRI socket {}", socket.display())]
    Cri {
        /// `pod NAMESPACE/POD`, or `pods` for a listing.
        what: String,
        /// The socket.
        socket: PathBuf,
        /// What went wrong.
        #[source]
        source: CriError,
    },
    /// `--cri-endpoint` (or `CONTAINER_RUNTIME_ENDPOINT`) names no unix socket.
    #[error("CRI endpoint {0:?} is not supported: give unix:///PATH or a socket's path")]
    BadCriEndpoint(String),
    /// The pod exists on this node but none of its app containers runs.
    #[error("pod {0} has no running container")]
    PodNotRunning(String),
    /// The pod has no container of the name given.
    #[error("pod {pod} has no container {container:?}; its containers: {}", choices.join(", "))]
    NoSuchContainer {
        /// `NAMESPACE/POD`.
        pod: String,
        /// The name asked for.
        container: String,
        /// The names it has.
        choices: Vec<String>,
    },
    /// No container was named and the pod runs several.
    #[error("pod {pod} runs several containers; name one: {}", choices.join(", "))]
    PodAmbiguous {
        /// `NAMESPACE/POD`.
        pod: String,
        /// `k8s://NAMESPACE/POD/CONTAINER` for each running container.
        choices: Vec<String>,
    },
    /// `k8s://` followed by something that is not `NAMESPACE/POD[/CONTAINER]`.
    #[error("{0:?} is not k8s://NAMESPACE/POD or k8s://NAMESPACE/POD/CONTAINER with valid Kubernetes names")]
    BadPodReference(String),
    /// Asking Docker failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// `/proc` could not be listed.
    #[error("cannot read {}", path.display())]
    Proc {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// ", nor known to the CRI runtime at X" for a pod-not-found message.
fn asked_note(sockets: &[PathBuf]) -> String {
    if sockets.is_empty() {
        return String::new();
    }
    let names: Vec<String> = sockets.iter().map(|s| s.display().to_string()).collect();
    format!(", nor known to the CRI runtime at {}", names.join(" or "))
}

/// Where resolution looks. [`Resolver::from_env`] honors `CRASHCART_PROC`, `CRASHCART_RUN`,
/// `DOCKER_HOST` and `CONTAINER_RUNTIME_ENDPOINT` so tests (and odd hosts, or a privileged pod
/// with the host's `/run` mounted elsewhere) can point it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    /// The host's procfs (`/proc`).
    pub proc_root: PathBuf,
    /// The runtimes' state directory (`/run`).
    pub run_root: PathBuf,
    /// `DOCKER_HOST` (`unix:///path`); `None` means `/var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// The CRI runtime's socket (`unix:///path` or a path) asked when the bundles do not
    /// know a pod; `None` means containerd's, then CRI-O's usual socket under `run_root`.
    pub cri_endpoint: Option<String>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            proc_root: PathBuf::from("/proc"),
            run_root: PathBuf::from("/run"),
            docker_host: None,
            cri_endpoint: None,
        }
    }
}

/// The scheme of pod references.
const POD_SCHEME: &str = "k8s://";

/// Hex strings shorter than this may be Docker names (`db`, `cafe`); see the module docs.
const NAME_LIKE_HEX_LEN: usize = 12;

/// How long Docker may take to say whether a short hex string is a name before resolution
/// carries on without it.
const NAME_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which runtime a `scheme://` restricts the search to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Any,
    Docker,
    Containerd,
    CriO,
    Podman,
}

impl Scope {
    fn admits(self, runtime: &Runtime) -> bool {
        match self {
            Scope::Any => true,
            // Docker's containers are containerd tasks (namespace `moby`) too.
            Scope::Docker => *runtime == Runtime::Docker,
            Scope::Containerd => matches!(runtime, Runtime::Containerd { .. } | Runtime::Docker),
            Scope::CriO => *runtime == Runtime::CriO,
            Scope::Podman => *runtime == Runtime::Podman,
        }
    }
}

/// A container some source (a state file, a cgroup path) reported, before its PID is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Container (task) ID as the runtime names it.
    pub id: String,
    /// The runtime the source belongs to.
    pub runtime: Runtime,
    /// Host PID of the init, as recorded.
    pub pid: u32,
    /// Start time of the init in clock ticks after boot, when the source records it.
    pub start_time: Option<u64>,
}

impl Resolver {
    /// The defaults, overridden by `CRASHCART_PROC`, `CRASHCART_RUN`, `DOCKER_HOST` and
    /// `CONTAINER_RUNTIME_ENDPOINT` (crictl's variable for the CRI socket).
    pub fn from_env() -> Self {
        let defaults = Resolver::default();
        let path = |var: &str, default: PathBuf| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map_or(default, PathBuf::from)
        };
        Resolver {
            proc_root: path("CRASHCART_PROC", defaults.proc_root),
            run_root: path("CRASHCART_RUN", defaults.run_root),
            docker_host: std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()),
            cri_endpoint: std::env::var("CONTAINER_RUNTIME_ENDPOINT")
                .ok()
                .filter(|e| !e.is_empty()),
        }
    }

    /// Resolves `spec`; see the module documentation for the order.
    ///
    /// A pod (`k8s://NAMESPACE/POD[/CONTAINER]`) resolves to the init of one of its app
    /// containers, never to the sandbox: the container named, or, when none is, the pod's only
    /// running one (several are an error that lists them). A container restarted by the
    /// kubelet (a new ID under the same name) resolves to the instance that runs; a PID is
    /// trusted only while its process lives in that container's cgroup. The bundles are read
    /// first; only a pod they do not know is asked of the CRI runtime, under the same rules.
    pub fn resolve(&self, spec: &str) -> Result<Target, ResolveError> {
        if spec.is_empty() {
            return Err(ResolveError::Empty);
        }
        if spec.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(pid) = spec.parse::<u32>() {
                return self.resolve_pid(pid);
            }
        }
        if let Some(rest) = spec.strip_prefix(POD_SCHEME) {
            let pod = kubernetes::parse_pod_ref(rest)
                .ok_or_else(|| ResolveError::BadPodReference(spec.to_string()))?;
            return self.resolve_pod(&pod);
        }
        if !spec.contains("://") {
            if let Some(pod) = kubernetes::parse_pod_ref(spec) {
                // Without the scheme the user may not have meant a pod: a pod that is not
                // here is "nothing matches", as for any other form.
                return match self.resolve_pod(&pod) {
                    Err(ResolveError::PodNotFound { .. }) => {
                        Err(ResolveError::NotFound(spec.to_string()))
                    }
                    other => other,
                };
            }
        }
        let (scope, query) = split_scheme(spec)?;
        if query.is_empty() {
            return Err(ResolveError::NotFound(spec.to_string()));
        }
        let by_docker = matches!(scope, Scope::Any | Scope::Docker);
        if by_docker && query.len() < NAME_LIKE_HEX_LEN && is_hex(query) {
            if let Some(info) = self.docker_container_named(query) {
                return self.docker_target(info);
            }
        }
        if let Some(target) = self.resolve_without_daemon(spec, scope, query)? {
            return Ok(target);
        }
        if by_docker {
            self.resolve_with_docker(spec, query)
        } else {
            Err(ResolveError::NotFound(spec.to_string()))
        }
    }

    fn resolve_pid(&self, pid: u32) -> Result<Target, ResolveError> {
        match procfs::read_stat(&self.proc_root, pid) {
            Ok(stat) if stat.is_exiting() => Err(ResolveError::PidExiting(pid)),
            Ok(_) if freezer::target_is_frozen(&self.proc_root, pid) => {
                Err(ResolveError::Frozen(pid))
            }
            Ok(_) => Ok(Target {
                pid,
                runtime: Runtime::Pid,
                id: None,
                name: None,
            }),
            Err(_) => Err(ResolveError::NoSuchPid(pid)),
        }
    }

    /// Looks `query` up in the state files, then in the cgroup paths. `Ok(None)` when neither
    /// knows it.
    fn resolve_without_daemon(
        &self,
        spec: &str,
        scope: Scope,
        query: &str,
    ) -> Result<Option<Target>, ResolveError> {
        let is_hex = is_hex(query);
        let query_lower = query.to_ascii_lowercase();
        // Exact IDs of any form (containerd task IDs can be names); prefixes of hex IDs.
        let wanted = |id: &str| id == query || (is_hex && id.starts_with(&query_lower));

        let mut candidates = state_files::find(&self.run_root, &self.proc_root, wanted);
        // The cgroup path only guesses the runtime; a state file that knows the ID is
        // authoritative, even when its runtime is not the one asked for.
        let known_to_state_files = !candidates.is_empty();
        candidates.retain(|c| scope.admits(&c.runtime));
        if !known_to_state_files && is_hex {
            let scanned = cgroup_scan::scan(&self.proc_root, wanted).map_err(|source| {
                ResolveError::Proc {
                    path: self.proc_root.clone(),
                    source,
                }
            })?;
            // One ID in two cgroups: a container named a cgroup of its own as another
            // container (or nests one under that ID). Which is meant cannot be told.
            let twice: Vec<&cgroup_scan::ScannedContainer> = scanned
                .iter()
                .filter(|s| {
                    scanned
                        .iter()
                        .any(|o| o.container.id == s.container.id && o.cgroup != s.cgroup)
                })
                .collect();
            if !twice.is_empty() {
                return Err(ResolveError::Ambiguous {
                    spec: spec.to_string(),
                    candidates: twice
                        .iter()
                        .map(|s| {
                            format!(
                                "{} (pid {}, cgroup {})",
                                s.container.id,
                                s.init_pid,
                                listing::printable(&s.cgroup)
                            )
                        })
                        .collect(),
                });
            }
            candidates = scanned
                .into_iter()
                .map(|found| Candidate {
                    id: found.container.id,
                    runtime: found.container.runtime,
                    pid: found.init_pid,
                    start_time: None,
                })
                .filter(|c| scope.admits(&c.runtime))
                .collect();
        }
        if candidates.iter().any(|c| c.id == query) {
            candidates.retain(|c| c.id == query);
        }

        candidates.sort_by(|a, b| a.id.cmp(&b.id));
        match candidates.as_slice() {
            [] => Ok(None),
            [only] => self.check_alive(only).map(Some),
            many => Err(ResolveError::Ambiguous {
                spec: spec.to_string(),
                candidates: self.describe(many),
            }),
        }
    }

    /// How an ambiguity lists the candidates: with the name and image a user recognizes, where
    /// the listing knows them (names and images come from runtime state others wrote: shown
    /// only as [`listing::printable`] makes them).
    fn describe(&self, candidates: &[Candidate]) -> Vec<String> {
        let known: std::collections::HashMap<String, Listing> = list(self)
            .unwrap_or_default()
            .into_iter()
            .map(|l| (l.id.clone(), l))
            .collect();
        candidates
            .iter()
            .map(|c| match known.get(&c.id) {
                Some(l) if !l.name.is_empty() => format!(
                    "{} ({} {}{})",
                    listing::printable(&l.name),
                    c.runtime,
                    &c.id[..c.id.len().min(listing::SHORT_ID_LEN)],
                    l.image
                        .as_deref()
                        .map(|i| format!(", image {}", listing::printable(i)))
                        .unwrap_or_default()
                ),
                Some(Listing {
                    image: Some(image), ..
                }) => format!(
                    "{} ({}, image {})",
                    c.id,
                    c.runtime,
                    listing::printable(image)
                ),
                _ => format!("{} ({})", c.id, c.runtime),
            })
            .collect()
    }

    /// The name of a running container closest to `spec`, when one is close enough to be a
    /// typo of it (`web1` for `web-1`): Docker names and pods' containers, with or without
    /// `k8s://`, as `spec` is written.
    pub fn suggest(&self, spec: &str) -> Option<String> {
        let typed = spec.strip_prefix("docker://").unwrap_or(spec);
        let mut names: Vec<String> = Vec::new();
        for l in list(self).unwrap_or_default() {
            if l.state != ContainerState::Running || l.name.is_empty() {
                continue;
            }
            let Some(pod_container) = l.name.strip_prefix(POD_SCHEME) else {
                names.push(l.name);
                continue;
            };
            let pod = pod_container
                .rsplit_once('/')
                .map_or(pod_container, |(p, _)| p);
            for form in [pod_container, pod] {
                if spec.starts_with(POD_SCHEME) {
                    names.push(format!("{POD_SCHEME}{form}"));
                } else {
                    names.push(form.to_string());
                }
            }
        }
        closest(typed, &names).map(listing::printable)
    }

    /// Resolves a pod reference from the CRI runtimes' bundles, else over the CRI socket; see
    /// [`Resolver::resolve`].
    fn resolve_pod(&self, pod: &kubernetes::PodRef<'_>) -> Result<Target, ResolveError> {
        let pod_name = format!("{}/{}", pod.namespace, pod.pod);
        let found = kubernetes::containers(&self.run_root, Some(pod.pod), |a| {
            a.namespace == pod.namespace && a.pod == pod.pod
        });
        if !found.is_empty() {
            return self.choose_pod_container(pod, &pod_name, &found);
        }
        let mut asked = Vec::new();
        let answers = self.ask_cri(&format!("pod {pod_name}"), true, |client| {
            client.pod_containers(pod.namespace, pod.pod)
        })?;
        for (socket, found) in answers {
            if !found.is_empty() {
                crate::step!(
                    "pod {pod_name} found over the CRI socket {}",
                    socket.display()
                );
                return self.choose_pod_container(pod, &pod_name, &found);
            }
            asked.push(socket);
        }
        Err(ResolveError::PodNotFound {
            pod: pod_name,
            run_root: self.run_root.clone(),
            cri_sockets: asked,
        })
    }

    /// The CRI sockets to ask, and whether the user named one.
    fn cri_sockets(&self) -> Result<(Vec<PathBuf>, bool), ResolveError> {
        match self.cri_endpoint.as_deref() {
            Some(endpoint) => {
                let socket = cri::socket_path(endpoint)
                    .ok_or_else(|| ResolveError::BadCriEndpoint(endpoint.to_string()))?;
                Ok((vec![socket], true))
            }
            None => Ok((
                cri::DEFAULT_SOCKETS
                    .iter()
                    .map(|s| self.run_root.join(s))
                    .collect(),
                false,
            )),
        }
    }

    /// Asks each CRI socket with `query`; the answers of those that gave one. A socket the
    /// user named must answer. Of the usual sockets, one that does not exist or serves no CRI
    /// (Docker's containerd) is passed over; with `usual_must_answer`, any other failure is
    /// reported when no other usual socket answered, so a stuck runtime is not mistaken for a
    /// missing pod.
    pub(crate) fn ask_cri<R>(
        &self,
        what: &str,
        usual_must_answer: bool,
        mut query: impl FnMut(&mut cri::CriClient) -> Result<R, CriError>,
    ) -> Result<Vec<(PathBuf, R)>, ResolveError> {
        let (sockets, named) = self.cri_sockets()?;
        let mut answers = Vec::new();
        let mut failure = None;
        for socket in sockets {
            let answer = cri::CriClient::connect(&socket, cri::TIMEOUT)
                .and_then(|mut client| query(&mut client));
            match answer {
                Ok(answer) => answers.push((socket, answer)),
                Err(e) if !named && (e.is_absent() || e.is_not_cri() || !usual_must_answer) => {
                    crate::step!(
                        "no CRI runtime at {}: {}",
                        socket.display(),
                        crate::log::chain(&e)
                    );
                }
                Err(source) => {
                    let error = ResolveError::Cri {
                        what: what.to_string(),
                        socket,
                        source,
                    };
                    if named {
                        return Err(error);
                    }
                    failure.get_or_insert(error);
                }
            }
        }
        match failure {
            Some(error) if answers.is_empty() => Err(error),
            _ => Ok(answers),
        }
    }

    /// Picks the container of a pod (its containers and sandboxes, from either source); see
    /// [`Resolver::resolve`].
    fn choose_pod_container(
        &self,
        pod: &kubernetes::PodRef<'_>,
        pod_name: &str,
        found: &[kubernetes::PodContainer],
    ) -> Result<Target, ResolveError> {
        let pod_name = pod_name.to_string();
        let apps: Vec<&kubernetes::PodContainer> =
            found.iter().filter(|c| !c.annotations.sandbox).collect();
        let mut names: Vec<String> = apps
            .iter()
            .map(|c| c.annotations.container.clone())
            .collect();
        names.sort();
        names.dedup();
        let live: Vec<(&kubernetes::PodContainer, procfs::ProcStat)> = apps
            .iter()
            .filter_map(|c| Some((*c, self.live_stat(&c.candidate, true)?)))
            .collect();
        let container = match pod.container {
            Some(name) if names.iter().any(|n| n == name) => name.to_string(),
            Some(name) => {
                return Err(ResolveError::NoSuchContainer {
                    pod: pod_name,
                    container: name.to_string(),
                    choices: names,
                })
            }
            None => {
                let mut running: Vec<&str> = live
                    .iter()
                    .map(|(c, _)| c.annotations.container.as_str())
                    .collect();
                running.sort_unstable();
                running.dedup();
                match running.as_slice() {
                    [] => return Err(ResolveError::PodNotRunning(pod_name)),
                    [only] => only.to_string(),
                    many => {
                        return Err(ResolveError::PodAmbiguous {
                            choices: many
                                .iter()
                                .map(|name| format!("{POD_SCHEME}{pod_name}/{name}"))
                                .collect(),
                            pod: pod_name,
                        })
                    }
                }
            }
        };
        let shown = format!("{pod_name}/{container}");
        // A restarted container leaves its old instance behind until it is removed; the one
        // that runs is the latest started.
        let Some((chosen, _)) = live
            .into_iter()
            .filter(|(c, _)| c.annotations.container == container)
            .max_by_key(|(_, stat)| stat.start_time)
        else {
            return Err(ResolveError::NotRunning(shown));
        };
        if freezer::target_is_frozen(&self.proc_root, chosen.candidate.pid) {
            return Err(ResolveError::Paused(shown));
        }
        Ok(Target {
            pid: chosen.candidate.pid,
            runtime: chosen.candidate.runtime.clone(),
            id: Some(chosen.candidate.id.clone()),
            name: Some(shown),
        })
    }

    /// The candidate's init as `/proc` shows it, if that process lives, started when the
    /// runtime recorded (where it did), and is in the candidate's own cgroup: one whose path
    /// names no other container, and with `id_in_cgroup` (CRI containers, whose state records
    /// no start time) one whose path names this container's ID. A PID recycled after the
    /// container exited is then not taken for it.
    fn live_stat(&self, candidate: &Candidate, id_in_cgroup: bool) -> Option<procfs::ProcStat> {
        if candidate.pid == 0 {
            return None;
        }
        let stat = procfs::read_stat(&self.proc_root, candidate.pid).ok()?;
        if stat.is_exiting() || candidate.start_time.is_some_and(|t| t != stat.start_time) {
            return None;
        }
        let cgroup = std::fs::read_to_string(
            self.proc_root
                .join(candidate.pid.to_string())
                .join("cgroup"),
        )
        .unwrap_or_default();
        if id_in_cgroup && !cgroup.contains(candidate.id.as_str()) {
            return None;
        }
        match cgroup_scan::container_of(&cgroup) {
            Some(found) if found.id != candidate.id => None,
            _ => Some(stat),
        }
    }

    /// Trusts a candidate's PID only while that process lives and, when the runtime
    /// recorded it, has the init's start time. A frozen container is refused: the session
    /// would hang in it.
    fn check_alive(&self, candidate: &Candidate) -> Result<Target, ResolveError> {
        let alive = procfs::read_stat(&self.proc_root, candidate.pid).is_ok_and(|stat| {
            !stat.is_exiting() && candidate.start_time.is_none_or(|t| t == stat.start_time)
        });
        if !alive {
            return Err(ResolveError::NotRunning(candidate.id.clone()));
        }
        if freezer::target_is_frozen(&self.proc_root, candidate.pid) {
            return Err(ResolveError::Paused(candidate.id.clone()));
        }
        Ok(Target {
            pid: candidate.pid,
            runtime: candidate.runtime.clone(),
            id: Some(candidate.id.clone()),
            name: None,
        })
    }

    /// Asks the Docker Engine about a name, or an ID no state file knows.
    fn resolve_with_docker(&self, spec: &str, query: &str) -> Result<Target, ResolveError> {
        if !docker::is_valid_reference(query) {
            return Err(ResolveError::NotFound(spec.to_string()));
        }
        let socket = docker::socket_path(self.docker_host.as_deref())?;
        let info = match docker::inspect_container(&socket, query, docker::TIMEOUT) {
            Ok(Some(info)) => info,
            Ok(None) => return Err(ResolveError::NotFound(spec.to_string())),
            Err(DockerError::Connect { socket, source })
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ResolveError::DockerUnreachable {
                    spec: spec.to_string(),
                    socket,
                    source,
                })
            }
            Err(e) => return Err(e.into()),
        };
        self.docker_target(info)
    }

    /// The running Docker container named exactly `name`, if Docker answers quickly; `None`
    /// on any doubt, leaving the decision to the daemonless lookup.
    fn docker_container_named(&self, name: &str) -> Option<docker::ContainerInfo> {
        if !docker::is_valid_reference(name) {
            return None;
        }
        let socket = docker::socket_path(self.docker_host.as_deref()).ok()?;
        // Docker matches an exact ID, then a name, then an ID prefix; only a name counts here.
        docker::inspect_container(&socket, name, NAME_PROBE_TIMEOUT)
            .ok()
            .flatten()
            .filter(|info| info.name.strip_prefix('/') == Some(name))
    }

    /// Checks what Docker said about a container: running, not paused, init still alive.
    fn docker_target(&self, info: docker::ContainerInfo) -> Result<Target, ResolveError> {
        let name = info
            .name
            .strip_prefix('/')
            .unwrap_or(&info.name)
            .to_string();
        let shown = if name.is_empty() {
            info.id.clone()
        } else {
            name.clone()
        };
        if info.state.paused {
            return Err(ResolveError::Paused(shown));
        }
        let pid = u32::try_from(info.state.pid).unwrap_or(0);
        if !info.state.running || pid == 0 {
            return Err(ResolveError::NotRunning(shown));
        }
        // Docker's answer can be stale by the time we read it: the init may have just exited.
        match procfs::read_stat(&self.proc_root, pid) {
            Ok(stat) if !stat.is_exiting() => Ok(Target {
                pid,
                runtime: Runtime::Docker,
                id: Some(info.id),
                name: Some(name).filter(|n| !n.is_empty()),
            }),
            _ => Err(ResolveError::NotRunning(shown)),
        }
    }
}

/// The one of `names` closest to `typed` by edit distance (a swap of two neighbours counts
/// once), if it is close enough to be a typo: at most one edit per three characters, and at
/// least one.
fn closest<'a>(typed: &str, names: &'a [String]) -> Option<&'a str> {
    let allowed = (typed.chars().count() / 3).max(1);
    names
        .iter()
        .map(|n| (strsim::damerau_levenshtein(typed, n), n))
        .filter(|(d, n)| *d <= allowed && *d < n.chars().count())
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, n)| n.as_str())
}

/// True for a non-empty string of hex digits (either case).
fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Splits `scheme://rest`; no scheme means any runtime.
fn split_scheme(spec: &str) -> Result<(Scope, &str), ResolveError> {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return Ok((Scope::Any, spec));
    };
    let scope = match scheme {
        "docker" => Scope::Docker,
        "containerd" => Scope::Containerd,
        "cri-o" => Scope::CriO,
        "podman" => Scope::Podman,
        _ => return Err(ResolveError::UnknownScheme(spec.to_string())),
    };
    Ok((scope, rest))
}

/// Resolves `spec` with [`Resolver::from_env`]; see [`Resolver::resolve_or_suggest`].
pub fn resolve(spec: &str) -> Result<Target, ResolveError> {
    Resolver::from_env().resolve_or_suggest(spec)
}

impl Resolver {
    /// [`Resolver::resolve`], and when nothing matches, a running container's name close to
    /// `spec` as "did you mean".
    pub fn resolve_or_suggest(&self, spec: &str) -> Result<Target, ResolveError> {
        self.resolve(spec).map_err(|e| match e {
            ResolveError::NotFound(spec) => match self.suggest(&spec) {
                Some(suggestion) => ResolveError::DidYouMean { spec, suggestion },
                None => ResolveError::NotFound(spec),
            },
            e => e,
        })
    }
}

#[cfg(test)]
mod tests;
