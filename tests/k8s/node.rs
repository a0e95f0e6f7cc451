//! A Kubernetes node without a kubelet: a containerd of its own with the CRI plugin (own
//! config, root, state and socket in a temp dir), pods created over CRI as the kubelet
//! creates them, and everything torn down on drop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crashcart::resolve::Resolver;
use crashcart_tests::{distroless_image, have, is_root, run_ok, skip, wait_until};

use super::cri::{self, Client};

/// The image every pod runs (the sandbox too): Debian's static busybox, `FROM scratch`.
pub const IMAGE: &str = "docker.io/library/crashcart-test-distroless:latest";

/// A containerd of its own with the CRI plugin.
pub struct Node {
    dir: tempfile::TempDir,
    containerd: Child,
    /// The CRI client.
    pub cri: Client,
    /// The CRI socket.
    pub socket: PathBuf,
    /// What the resolver reads as `/run`: containerd's state is `<run_root>/containerd`.
    pub run_root: PathBuf,
    bridge: String,
    pod_uids: Vec<String>,
}

/// What a pod is made of.
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// App containers, by name.
    pub containers: &'a [&'a str],
    /// `shareProcessNamespace: true`.
    pub share_pid: bool,
    /// `hostNetwork: true`.
    pub host_network: bool,
    /// `hostPID: true`.
    pub host_pid: bool,
    /// `securityContext.privileged: true` for every container (and so the sandbox).
    pub privileged: bool,
    /// `hostPath` volumes of every container.
    pub mounts: &'a [cri::Mount],
    /// Environment of every container.
    pub envs: &'a [(&'a str, &'a str)],
}

impl PodSpec<'_> {
    /// One pod, one container named `main`, nothing shared.
    pub fn simple<'a>(namespace: &'a str, name: &'a str) -> PodSpec<'a> {
        PodSpec {
            namespace,
            name,
            containers: &["main"],
            share_pid: false,
            host_network: false,
            host_pid: false,
            privileged: false,
            mounts: &[],
            envs: &[],
        }
    }
}

/// A running pod.
pub struct Pod {
    pub sandbox_id: String,
    config: cri::PodSandboxConfig,
    pid_mode: i32,
    privileged: bool,
    mounts: Vec<cri::Mount>,
    envs: Vec<cri::KeyValue>,
    /// Container name → its current ID.
    pub containers: HashMap<String, String>,
    attempts: HashMap<String, u32>,
}

impl Node {
    /// Starts containerd with the CRI plugin and imports [`IMAGE`]; `None` (after a skip)
    /// when this machine cannot.
    pub fn start() -> Option<Node> {
        if !is_root() {
            skip("needs root");
            return None;
        }
        for program in ["containerd", "ctr", "runc", "docker"] {
            if !have(program) {
                skip(&format!("{program} not installed (tests/setup.sh)"));
                return None;
            }
        }
        if !Path::new("/usr/lib/cni/bridge").exists() {
            skip("containernetworking-plugins not installed (tests/setup.sh)");
            return None;
        }
        let image = distroless_image();
        static N: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() + N.fetch_add(1, Ordering::Relaxed)) % 200 + 20;
        let dir = tempfile::Builder::new()
            .prefix("crashcart-k8s-")
            .tempdir()
            .unwrap();
        let t = dir.path();
        let run_root = t.join("run");
        let socket = t.join("containerd.sock");
        let bridge = format!("cck8s{n}");
        std::fs::create_dir_all(t.join("cni")).unwrap();
        std::fs::create_dir_all(&run_root).unwrap();
        std::fs::write(
            t.join("config.toml"),
            format!(
                r#"version = 2
root = "{t}/root"
state = "{t}/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{t}/containerd.sock"
[ttrpc]
  address = "{t}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{t}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # No CAP_SYS_RESOURCE in this machine's bounding set: never lower an oom_score_adj.
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{t}/cni"
"#,
                t = t.display()
            ),
        )
        .unwrap();
        // A bridge with host-local addresses and no iptables rules (no masquerade, no
        // gateway): pods get an address and a loopback, and the host's firewall is untouched.
        std::fs::write(
            t.join("cni/10-crashcart.conflist"),
            format!(
                r#"{{"cniVersion": "0.4.0", "name": "crashcart-test-{n}", "plugins": [
  {{"type": "bridge", "bridge": "{bridge}", "isGateway": false, "ipMasq": false,
    "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.89.{n}.0/24"}}]],
              "dataDir": "{t}/ipam"}}}}]}}"#,
                t = t.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(t.join("containerd.log")).unwrap();
        let containerd = Command::new("containerd")
            .arg("--config")
            .arg(t.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        assert!(
            wait_until(Duration::from_secs(20), || socket.exists()),
            "containerd did not start; see {}",
            t.join("containerd.log").display()
        );
        // The image, built offline, from Docker's store into containerd's k8s.io namespace.
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "docker save {image} | ctr -a {} -n k8s.io images import -",
            socket.display()
        )));
        let cri = Client::connect(&socket).expect("CRI client");
        Some(Node {
            dir,
            containerd,
            cri,
            socket,
            run_root,
            bridge,
            pod_uids: Vec::new(),
        })
    }

    /// A resolver that reads this node's state, the real `/proc`, and no Docker.
    pub fn resolver(&self) -> Resolver {
        Resolver {
            proc_root: PathBuf::from("/proc"),
            run_root: self.run_root.clone(),
            docker_host: Some(format!(
                "unix://{}",
                self.dir.path().join("no-docker.sock").display()
            )),
            cri_endpoint: None,
        }
    }

    /// Runs a pod as the kubelet does: RunPodSandbox with metadata and the `io.kubernetes.*`
    /// labels, then CreateContainer and StartContainer for each container.
    pub fn run_pod(&mut self, spec: &PodSpec<'_>) -> Pod {
        let uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            std::process::id(),
            self.pod_uids.len() as u64 + u64::from(rand_u16())
        );
        self.pod_uids.push(uid.clone());
        let pid_mode = if spec.host_pid {
            cri::NS_NODE
        } else if spec.share_pid {
            cri::NS_POD
        } else {
            cri::NS_CONTAINER
        };
        let network = if spec.host_network {
            cri::NS_NODE
        } else {
            cri::NS_POD
        };
        let log_directory = self.dir.path().join("logs").join(&uid);
        std::fs::create_dir_all(&log_directory).unwrap();
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: spec.name.into(),
                uid: uid.clone(),
                namespace: spec.namespace.into(),
                attempt: 0,
            }),
            // The kubelet leaves the hostname empty for hostNetwork pods.
            hostname: if spec.host_network {
                String::new()
            } else {
                spec.name.into()
            },
            log_directory: log_directory.display().to_string(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), spec.name.into()),
                ("io.kubernetes.pod.namespace".into(), spec.namespace.into()),
                ("io.kubernetes.pod.uid".into(), uid.clone()),
            ]),
            annotations: HashMap::new(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network,
                        pid: pid_mode,
                        ipc: cri::NS_POD,
                    }),
                    privileged: spec.privileged,
                }),
            }),
        };
        let sandbox_id = self.cri.run_pod_sandbox(&config).unwrap_or_else(|e| {
            panic!(
                "{e}; see {}",
                self.dir.path().join("containerd.log").display()
            )
        });
        let mut pod = Pod {
            sandbox_id,
            config,
            pid_mode,
            privileged: spec.privileged,
            mounts: spec.mounts.to_vec(),
            envs: spec
                .envs
                .iter()
                .map(|(key, value)| cri::KeyValue {
                    key: key.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            containers: HashMap::new(),
            attempts: HashMap::new(),
        };
        for name in spec.containers {
            self.start_container(&mut pod, name);
        }
        pod
    }

    /// Creates and starts container `name` in `pod` (again, with the next attempt number,
    /// when it ran before: what the kubelet does when a container restarts).
    pub fn start_container(&mut self, pod: &mut Pod, name: &str) -> String {
        let attempt = pod.attempts.get(name).map_or(0, |a| a + 1);
        pod.attempts.insert(name.to_string(), attempt);
        let meta = pod.config.metadata.clone().unwrap();
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt,
            }),
            image: Some(cri::ImageSpec {
                image: IMAGE.into(),
            }),
            command: vec!["/busybox".into()],
            args: vec!["sleep".into(), sleep_seconds(name).to_string()],
            envs: pod.envs.clone(),
            mounts: pod.mounts.clone(),
            labels: HashMap::from([
                ("io.kubernetes.container.name".into(), name.into()),
                ("io.kubernetes.pod.name".into(), meta.name.clone()),
                ("io.kubernetes.pod.namespace".into(), meta.namespace.clone()),
                ("io.kubernetes.pod.uid".into(), meta.uid.clone()),
            ]),
            annotations: HashMap::from([(
                "io.kubernetes.container.restartCount".into(),
                attempt.to_string(),
            )]),
            log_path: format!("{name}/{attempt}.log"),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    privileged: pod.privileged,
                    namespace_options: pod
                        .config
                        .linux
                        .as_ref()
                        .and_then(|l| l.security_context.as_ref())
                        .and_then(|s| s.namespace_options.clone())
                        .map(|ns| cri::NamespaceOption {
                            pid: pod.pid_mode,
                            ..ns
                        }),
                }),
            }),
        };
        let id = self
            .cri
            .create_container(&pod.sandbox_id, &config, &pod.config)
            .unwrap();
        self.cri.start_container(&id).unwrap();
        pod.containers.insert(name.to_string(), id.clone());
        id
    }

    /// Stops and removes the pod (`kubectl delete pod`).
    pub fn delete_pod(&mut self, pod: &Pod) {
        self.cri.stop_pod_sandbox(&pod.sandbox_id).unwrap();
        self.cri.remove_pod_sandbox(&pod.sandbox_id).unwrap();
    }

    /// Host PID of a container's init, from the CRI (what the library must agree with).
    pub fn pid(&mut self, container_id: &str) -> u32 {
        self.cri.container_pid(container_id).unwrap()
    }
}

/// What `sleep` is given in container `name`: a number that tells the containers apart in
/// `ps`.
pub fn sleep_seconds(name: &str) -> u32 {
    2_000_000_000
        + name
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % 100_000_000
}

fn rand_u16() -> u16 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u16)
}

impl Drop for Node {
    fn drop(&mut self) {
        // Pods first: their shims outlive containerd.
        if let Ok(sandboxes) = self
            .cri
            .list_pod_sandboxes(cri::PodSandboxFilter::default())
        {
            for sandbox in sandboxes {
                let _ = self.cri.stop_pod_sandbox(&sandbox.id);
                let _ = self.cri.remove_pod_sandbox(&sandbox.id);
            }
        }
        let _ = Command::new("kill")
            .arg(self.containerd.id().to_string())
            .status();
        let _ = self.containerd.wait();
        // Whatever is still mounted under the temp dir (rootfs, netns), deepest first.
        let t = self.dir.path().to_path_buf();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&t))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = Command::new("umount").args(["-l", mount]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // The pods' cgroups, which the kubelet would remove (and their parents, once empty).
        let hierarchies: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        for hierarchy in std::iter::once(PathBuf::from("/sys/fs/cgroup")).chain(hierarchies) {
            for uid in &self.pod_uids {
                let _ =
                    std::fs::remove_dir(hierarchy.join(format!("kubepods/besteffort/pod{uid}")));
            }
            let _ = std::fs::remove_dir(hierarchy.join("kubepods/besteffort"));
            let _ = std::fs::remove_dir(hierarchy.join("kubepods"));
        }
    }
}
