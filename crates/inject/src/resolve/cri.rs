//! Pods over the CRI socket: the fallback for when the runtimes' bundles under `/run` give no
//! answer (a runtime whose state is elsewhere, state directories crashcart cannot read, a
//! runtime that keeps its bundles in another layout).
//!
//! What a CRI client must do to find a container's PID, as `crictl inspect` does it:
//! `Version` (is this a CRI runtime, and which), `ListPodSandbox` filtered by the pod's
//! `io.kubernetes.pod.namespace`/`name` labels, `ListContainers` of each sandbox, and a
//! verbose `ContainerStatus` of each running container, whose `info` map holds JSON with the
//! init's `pid` (containerd and CRI-O both put it under the key `info`). The answers become the
//! same [`PodContainer`]s the bundles give, and go through the same rules and the same checks
//! of the PID (alive, in the container's own cgroup, not frozen): the runtime's word is not
//! taken for a process's identity.

use std::collections::HashMap;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crashcart_cri_api as api;
use serde::Deserialize;

use super::grpc::{Channel, GrpcError};
use super::kubernetes::{PodAnnotations, PodContainer};
use super::{Candidate, Runtime};

/// The sockets tried when no endpoint is given, under the host's `/run`: containerd's, then
/// CRI-O's.
pub(crate) const DEFAULT_SOCKETS: [&str; 2] = ["containerd/containerd.sock", "crio/crio.sock"];

/// How long one call may take. A CRI runtime answers from memory in well under a millisecond;
/// one that takes seconds is stuck.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// The labels the kubelet puts on every sandbox and container.
const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_POD: &str = "io.kubernetes.pod.name";

/// Why the CRI runtime could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// Nothing listens on the socket, or it cannot be connected to.
    #[error("cannot connect")]
    Connect(#[source] io::Error),
    /// A call failed.
    #[error(transparent)]
    Call(#[from] GrpcError),
}

impl CriError {
    /// True when the socket does not exist (the runtime is not installed here).
    pub(crate) fn is_absent(&self) -> bool {
        matches!(self, CriError::Connect(e) if e.kind() == io::ErrorKind::NotFound)
    }

    /// True when the socket serves gRPC but not the CRI (containerd with its CRI plugin
    /// disabled, as Docker runs it).
    pub(crate) fn is_not_cri(&self) -> bool {
        matches!(self, CriError::Call(e) if e.is_unimplemented())
    }
}

/// The socket an endpoint names: `unix:///PATH` or a path. `None` for other schemes.
pub(crate) fn socket_path(endpoint: &str) -> Option<PathBuf> {
    match endpoint.split_once("://") {
        Some(("unix", path)) if !path.is_empty() => Some(PathBuf::from(path)),
        Some(_) => None,
        None if !endpoint.is_empty() => Some(PathBuf::from(endpoint)),
        None => None,
    }
}

/// A connection to a CRI runtime.
pub(crate) struct CriClient {
    channel: Channel<UnixStream>,
    /// What the runtime calls itself, as a [`Runtime`].
    runtime: Runtime,
}

impl CriClient {
    /// Connects and asks the runtime's name (which also tells a CRI runtime from another gRPC
    /// server).
    pub(crate) fn connect(socket: &Path, timeout: Duration) -> Result<CriClient, CriError> {
        let stream = UnixStream::connect(socket).map_err(CriError::Connect)?;
        let channel = Channel::new(stream, timeout)?;
        let mut client = CriClient {
            channel,
            runtime: Runtime::Pid,
        };
        let version: api::VersionResponse = client.call(
            "Version",
            &api::VersionRequest {
                version: "v1".into(),
            },
        )?;
        client.runtime = match version.runtime_name.as_str() {
            // The CRI plugin keeps every pod's containers in this containerd namespace.
            "containerd" => Runtime::Containerd {
                namespace: "k8s.io".into(),
            },
            "cri-o" => Runtime::CriO,
            _ => Runtime::Pid,
        };
        Ok(client)
    }

    fn call<Resp: prost::Message + Default>(
        &mut self,
        method: &str,
        request: &impl prost::Message,
    ) -> Result<Resp, GrpcError> {
        self.channel.call(api::RUNTIME_SERVICE, method, request)
    }

    /// The pod's sandboxes (one, or a replaced one beside it) and their containers; empty when
    /// the runtime knows no such pod.
    pub(crate) fn pod_containers(
        &mut self,
        namespace: &str,
        pod: &str,
    ) -> Result<Vec<PodContainer>, CriError> {
        let sandboxes: api::ListPodSandboxResponse = self.call(
            "ListPodSandbox",
            &api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    label_selector: HashMap::from([
                        (LABEL_NAMESPACE.into(), namespace.into()),
                        (LABEL_POD.into(), pod.into()),
                    ]),
                    ..Default::default()
                }),
            },
        )?;
        let mut found = Vec::new();
        for sandbox in sandboxes.items {
            // The metadata is the pod's identity; the labels only narrowed the search.
            let Some(meta) = sandbox.metadata.as_ref() else {
                continue;
            };
            if meta.namespace != namespace || meta.name != pod {
                continue;
            }
            let containers: api::ListContainersResponse = self.call(
                "ListContainers",
                &api::ListContainersRequest {
                    filter: Some(api::ContainerFilter {
                        pod_sandbox_id: sandbox.id.clone(),
                        ..Default::default()
                    }),
                },
            )?;
            found.push(self.entry(&sandbox, None, 0, None));
            for container in containers.containers {
                if container.pod_sandbox_id != sandbox.id {
                    continue;
                }
                let (pid, image) = if container.state == api::CONTAINER_RUNNING {
                    self.pid_and_image(&container.id)?
                } else {
                    (0, None)
                };
                let image = image.or_else(|| container.image.as_ref().map(|i| i.image.clone()));
                found.push(self.entry(&sandbox, Some(&container), pid, image));
            }
        }
        Ok(found)
    }

    /// Every running app container the runtime knows (for `--list`).
    pub(crate) fn running_containers(&mut self) -> Result<Vec<PodContainer>, CriError> {
        let sandboxes: api::ListPodSandboxResponse = self.call(
            "ListPodSandbox",
            &api::ListPodSandboxRequest { filter: None },
        )?;
        let sandboxes: HashMap<String, api::PodSandbox> = sandboxes
            .items
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let containers: api::ListContainersResponse = self.call(
            "ListContainers",
            &api::ListContainersRequest {
                filter: Some(api::ContainerFilter {
                    state: Some(api::ContainerStateValue {
                        state: api::CONTAINER_RUNNING,
                    }),
                    ..Default::default()
                }),
            },
        )?;
        let mut found = Vec::new();
        for container in containers.containers {
            let Some(sandbox) = sandboxes.get(&container.pod_sandbox_id) else {
                continue;
            };
            if sandbox.metadata.is_none() {
                continue;
            }
            let (pid, image) = self.pid_and_image(&container.id)?;
            let image = image.or_else(|| container.image.as_ref().map(|i| i.image.clone()));
            found.push(self.entry(sandbox, Some(&container), pid, image));
        }
        Ok(found)
    }

    /// A sandbox (`container` `None`) or one of its containers, as the bundles would give it.
    fn entry(
        &self,
        sandbox: &api::PodSandbox,
        container: Option<&api::Container>,
        pid: u32,
        image: Option<String>,
    ) -> PodContainer {
        let meta = sandbox.metadata.clone().unwrap_or_default();
        let name = container
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        PodContainer {
            annotations: PodAnnotations {
                sandbox: container.is_none(),
                namespace: meta.namespace,
                pod: meta.name,
                pod_uid: Some(meta.uid).filter(|u| !u.is_empty()),
                container: name,
                sandbox_id: Some(sandbox.id.clone()),
                image: image.filter(|i| !i.is_empty()),
            },
            candidate: Candidate {
                id: container.map_or_else(|| sandbox.id.clone(), |c| c.id.clone()),
                runtime: self.runtime.clone(),
                pid,
                start_time: None,
            },
        }
    }

    /// A running container's init PID (0 when the runtime does not say) and image, from its
    /// verbose status. A container that went away since it was listed has neither.
    fn pid_and_image(&mut self, id: &str) -> Result<(u32, Option<String>), CriError> {
        let status: api::ContainerStatusResponse = match self.call(
            "ContainerStatus",
            &api::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            },
        ) {
            Ok(status) => status,
            // NOT_FOUND: removed between the two calls.
            Err(GrpcError::Status { code: 5, .. }) => return Ok((0, None)),
            Err(e) => return Err(e.into()),
        };
        let pid = status
            .info
            .get("info")
            .map_or(0, |info| pid_from_info(info.as_bytes()));
        let image = status.status.and_then(|s| s.image).map(|i| i.image);
        Ok((pid, image))
    }
}

/// The `pid` of a verbose status's `info` JSON (containerd and CRI-O); 0 when absent or not
/// a PID.
pub(crate) fn pid_from_info(info: &[u8]) -> u32 {
    #[derive(Deserialize)]
    struct Info {
        #[serde(default)]
        pid: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Info>(info)
        .ok()
        .and_then(|i| i.pid)
        .and_then(|pid| pid.as_u64())
        .and_then(|pid| u32::try_from(pid).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock"),
            Some(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert_eq!(
            socket_path("/run/crio/crio.sock"),
            Some(PathBuf::from("/run/crio/crio.sock"))
        );
        assert_eq!(socket_path("tcp://10.0.0.1:1234"), None);
        assert_eq!(socket_path("npipe:////./pipe/x"), None);
        assert_eq!(socket_path("unix://"), None);
        assert_eq!(socket_path(""), None);
    }

    #[test]
    fn pid_in_verbose_info() {
        // containerd 1.6 and CRI-O both: {"sandboxID": ..., "pid": N, "runtimeSpec": ...}.
        assert_eq!(
            pid_from_info(br#"{"sandboxID":"ab","pid":4242,"runtimeSpec":{"ociVersion":"1"}}"#),
            4242
        );
        assert_eq!(pid_from_info(br#"{"pid":0}"#), 0);
        assert_eq!(pid_from_info(br#"{"pid":-1}"#), 0);
        assert_eq!(pid_from_info(br#"{"pid":99999999999}"#), 0);
        assert_eq!(pid_from_info(br#"{"pid":"12"}"#), 0);
        assert_eq!(pid_from_info(br#"{"nopid":1}"#), 0);
        assert_eq!(pid_from_info(b"not json"), 0);
    }
}
