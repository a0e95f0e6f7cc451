//! A small blocking client of the CRI v1 `RuntimeService`: the calls a kubelet makes to run a
//! pod, and the ones `crictl inspect` makes to find a container's PID.
//!
//! The messages are `crashcart-cri-api`'s (written by hand with prost's derive, shared with
//! crashcart's own blocking client). tonic carries them over the runtime's unix socket; a
//! current-thread tokio runtime makes each call blocking. This is the independent client:
//! the tests create pods with it and check what crashcart's own client finds against it.

#![allow(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tonic::codegen::http::uri::PathAndQuery;

pub use crashcart_cri_api::*;

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

    /// Runs `cmd` in container `id` and waits at most `timeout` seconds (`kubectl exec`).
    pub fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, String> {
        let request = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|c| c.to_string()).collect(),
            timeout,
        };
        self.call("ExecSync", request)
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
