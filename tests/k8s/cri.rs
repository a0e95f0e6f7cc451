//! A small blocking client of the CRI v1 `RuntimeService`: the calls a kubelet makes to run a
//! pod, and the ones `crictl inspect` makes to find a container's PID.
//!
//! The messages are written by hand with prost's derive from `k8s.io/cri-api`'s
//! `pkg/apis/runtime/v1/api.proto` (only the fields used here; the field numbers are the
//! proto's), so neither `protoc` nor a build script is needed. tonic carries them over the
//! runtime's unix socket; a current-thread tokio runtime makes each call blocking.

#![allow(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tonic::codegen::http::uri::PathAndQuery;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `NamespaceMode`: POD = 0, CONTAINER = 1, NODE = 2, TARGET = 3.
pub const NS_POD: i32 = 0;
pub const NS_CONTAINER: i32 = 1;
pub const NS_NODE: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceOption {
    #[prost(int32, tag = "1")]
    pub network: i32,
    #[prost(int32, tag = "2")]
    pub pid: i32,
    #[prost(int32, tag = "3")]
    pub ipc: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxSandboxSecurityContext {
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub log_directory: String,
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "7")]
    pub annotations: HashMap<String, String>,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
    #[prost(string, tag = "2")]
    pub runtime_handler: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `StopPodSandboxRequest`, `RemovePodSandboxRequest` (field 1: the sandbox ID).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxIdRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// Every empty response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerSecurityContext {
    #[prost(message, optional, tag = "3")]
    pub namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerConfig {
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxContainerSecurityContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    #[prost(map = "string, string", tag = "9")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "10")]
    pub annotations: HashMap<String, String>,
    #[prost(string, tag = "11")]
    pub log_path: String,
    #[prost(message, optional, tag = "15")]
    pub linux: Option<LinuxContainerConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "2")]
    pub config: Option<ContainerConfig>,
    #[prost(message, optional, tag = "3")]
    pub sandbox_config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerResponse {
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `StartContainerRequest`, `RemoveContainerRequest` (field 1: the container ID).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerIdRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(int64, tag = "2")]
    pub timeout: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStateValue {
    #[prost(int32, tag = "1")]
    pub state: i32,
}

/// `PodSandboxState.SANDBOX_READY`.
pub const SANDBOX_READY: i32 = 0;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxFilter {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub state: Option<PodSandboxStateValue>,
    #[prost(map = "string, string", tag = "3")]
    pub label_selector: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    pub filter: Option<PodSandboxFilter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(int32, tag = "3")]
    pub state: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStateValue {
    #[prost(int32, tag = "1")]
    pub state: i32,
}

/// `ContainerState.CONTAINER_RUNNING`.
pub const CONTAINER_RUNNING: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerFilter {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub state: Option<ContainerStateValue>,
    #[prost(string, tag = "3")]
    pub pod_sandbox_id: String,
    #[prost(map = "string, string", tag = "4")]
    pub label_selector: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersRequest {
    #[prost(message, optional, tag = "1")]
    pub filter: Option<ContainerFilter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(int32, tag = "6")]
    pub state: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersResponse {
    #[prost(message, repeated, tag = "1")]
    pub containers: Vec<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatusRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatusResponse {
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

/// A connection to a CRI runtime's socket.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
    socket: PathBuf,
}

impl Client {
    /// Connects to the unix socket at `socket`.
    pub fn connect(socket: &Path) -> Result<Client, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let path = socket.to_path_buf();
        let channel = runtime
            .block_on(
                // The URI is required but unused: the connector dials the socket.
                tonic::transport::Endpoint::from_static("http://cri.invalid")
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    })),
            )
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        Ok(Client {
            runtime,
            grpc: tonic::client::Grpc::new(channel),
            socket: socket.to_path_buf(),
        })
    }

    /// One unary call of `runtime.v1.RuntimeService`.
    fn call<Req, Resp>(&mut self, method: &'static str, request: Req) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let path = PathAndQuery::try_from(format!("/runtime.v1.RuntimeService/{method}"))
            .expect("method path");
        let grpc = &mut self.grpc;
        let result = self.runtime.block_on(async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic::codec::ProstCodec::<Req, Resp>::default();
            grpc.unary(tonic::Request::new(request), path, codec).await
        });
        result
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("{method} on {}: {status}", self.socket.display()))
    }

    pub fn run_pod_sandbox(&mut self, config: &PodSandboxConfig) -> Result<String, String> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let response: RunPodSandboxResponse = self.call("RunPodSandbox", request)?;
        Ok(response.pod_sandbox_id)
    }

    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<(), String> {
        let request = PodSandboxIdRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call::<_, Empty>("StopPodSandbox", request).map(drop)
    }

    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<(), String> {
        let request = PodSandboxIdRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call::<_, Empty>("RemovePodSandbox", request).map(drop)
    }

    pub fn create_container(
        &mut self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String, String> {
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let response: CreateContainerResponse = self.call("CreateContainer", request)?;
        Ok(response.container_id)
    }

    pub fn start_container(&mut self, id: &str) -> Result<(), String> {
        let request = ContainerIdRequest {
            container_id: id.to_string(),
        };
        self.call::<_, Empty>("StartContainer", request).map(drop)
    }

    pub fn stop_container(&mut self, id: &str, timeout: i64) -> Result<(), String> {
        let request = StopContainerRequest {
            container_id: id.to_string(),
            timeout,
        };
        self.call::<_, Empty>("StopContainer", request).map(drop)
    }

    pub fn list_pod_sandboxes(
        &mut self,
        filter: PodSandboxFilter,
    ) -> Result<Vec<PodSandbox>, String> {
        let request = ListPodSandboxRequest {
            filter: Some(filter),
        };
        let response: ListPodSandboxResponse = self.call("ListPodSandbox", request)?;
        Ok(response.items)
    }

    pub fn list_containers(&mut self, filter: ContainerFilter) -> Result<Vec<Container>, String> {
        let request = ListContainersRequest {
            filter: Some(filter),
        };
        let response: ListContainersResponse = self.call("ListContainers", request)?;
        Ok(response.containers)
    }

    /// The container's init PID, as `crictl inspect` finds it: the `pid` of the verbose
    /// status's `info` JSON.
    pub fn container_pid(&mut self, id: &str) -> Result<u32, String> {
        let request = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        let response: ContainerStatusResponse = self.call("ContainerStatus", request)?;
        let info = response.info.get("info").ok_or("no verbose info")?;
        let info: serde_json::Value = serde_json::from_str(info).map_err(|e| e.to_string())?;
        info["pid"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok())
            .ok_or_else(|| format!("no pid in the status of {id}"))
    }

    /// Resolves `namespace/pod/container` the way a CRI client must: the ready sandbox by its
    /// labels, its running container by name, then the container's status for the PID.
    pub fn resolve(&mut self, namespace: &str, pod: &str, container: &str) -> Result<u32, String> {
        let sandboxes = self.list_pod_sandboxes(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: SANDBOX_READY,
            }),
            label_selector: HashMap::from([
                ("io.kubernetes.pod.namespace".into(), namespace.into()),
                ("io.kubernetes.pod.name".into(), pod.into()),
            ]),
            ..Default::default()
        })?;
        let sandbox = sandboxes.first().ok_or("no such pod")?;
        let containers = self.list_containers(ContainerFilter {
            pod_sandbox_id: sandbox.id.clone(),
            state: Some(ContainerStateValue {
                state: CONTAINER_RUNNING,
            }),
            label_selector: HashMap::from([(
                "io.kubernetes.container.name".into(),
                container.into(),
            )]),
            ..Default::default()
        })?;
        let found = containers.first().ok_or("no such container")?;
        self.container_pid(&found.id.clone())
    }
}
