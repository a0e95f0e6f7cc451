//! Kubernetes pods on this node, read from the OCI bundles the CRI runtimes keep under `/run`:
//! no kubelet, no API server, no CRI round trip.
//!
//! Both CRI runtimes write each container's OCI `config.json` before starting it, and both
//! put the pod's identity in its annotations:
//!
//! | | containerd (CRI plugin) | CRI-O |
//! | --- | --- | --- |
//! | bundle | `containerd/io.containerd.runtime.v2.task/k8s.io/<id>/config.json` | `containers/storage/<driver>-containers/<id>/userdata/config.json` |
//! | init PID | `init.pid` beside it | `pidfile` beside it |
//! | sandbox or app container | `io.kubernetes.cri.container-type` | `io.kubernetes.cri-o.ContainerType` |
//! | pod namespace, name, UID | `io.kubernetes.cri.sandbox-namespace`, `-name`, `-uid` | `io.kubernetes.pod.namespace`, `.name`, `.uid` |
//! | container name | `io.kubernetes.cri.container-name` | `io.kubernetes.container.name` (also in the `io.kubernetes.cri-o.Labels` JSON) |
//! | sandbox ID | `io.kubernetes.cri.sandbox-id` | `io.kubernetes.cri-o.SandboxID` |
//! | image | `io.kubernetes.cri.image-name` | `io.kubernetes.cri-o.ImageName` |
//!
//! The sandbox ("pause") container is never a target: it runs nothing to debug. A bundle is
//! runtime state written by root, but part of it (annotations, environment, labels) comes from
//! whoever created the pod, so it is parsed as untrusted input: bounded in size, never followed
//! through a symlink, any shape tolerated (a bundle that does not parse is skipped).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Deserialize;

use super::{state_files, Candidate, Runtime};

/// The largest `config.json` read. Real ones are a few KiB to a few hundred (a long
/// environment); anything larger is not a bundle crashcart wants to parse.
pub(crate) const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// What a bundle's annotations say about its place in a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodAnnotations {
    /// True for the pod's sandbox (pause) container.
    pub sandbox: bool,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's UID, when recorded.
    pub pod_uid: Option<String>,
    /// The container's name in the pod spec (empty for a sandbox).
    pub container: String,
    /// The sandbox's container ID, when recorded.
    pub sandbox_id: Option<String>,
    /// The image the container was created from, when recorded.
    pub image: Option<String>,
}

/// A pod's container found on this node, before its PID is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodContainer {
    /// Where the pod and container names came from.
    pub annotations: PodAnnotations,
    /// Its ID, runtime and recorded init PID.
    pub candidate: Candidate,
}

/// The annotations of an OCI `config.json`, unknown fields ignored. `None` for a bundle that
/// does not parse or carries no pod identity (not a CRI container).
pub(crate) fn parse_bundle_config(bytes: &[u8]) -> Option<PodAnnotations> {
    #[derive(Deserialize)]
    struct OciConfig {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    let config: OciConfig = serde_json::from_slice(bytes).ok()?;
    let a = config.annotations;
    let get = |key: &str| a.get(key).filter(|v| !v.is_empty()).cloned();
    if let Some(kind) = get("io.kubernetes.cri.container-type") {
        // containerd's CRI plugin.
        let sandbox = kind == "sandbox";
        return Some(PodAnnotations {
            sandbox,
            namespace: get("io.kubernetes.cri.sandbox-namespace")?,
            pod: get("io.kubernetes.cri.sandbox-name")?,
            pod_uid: get("io.kubernetes.cri.sandbox-uid"),
            container: if sandbox {
                String::new()
            } else {
                get("io.kubernetes.cri.container-name")?
            },
            sandbox_id: get("io.kubernetes.cri.sandbox-id"),
            image: get("io.kubernetes.cri.image-name"),
        });
    }
    let kind = get("io.kubernetes.cri-o.ContainerType")?;
    // CRI-O: the kubelet's labels, as annotations and inside the Labels JSON.
    let labels: HashMap<String, String> = get("io.kubernetes.cri-o.Labels")
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    let label = |key: &str| get(key).or_else(|| labels.get(key).filter(|v| !v.is_empty()).cloned());
    let sandbox = kind == "sandbox";
    Some(PodAnnotations {
        sandbox,
        namespace: label("io.kubernetes.pod.namespace")?,
        pod: label("io.kubernetes.pod.name")?,
        pod_uid: label("io.kubernetes.pod.uid"),
        container: if sandbox {
            String::new()
        } else {
            label("io.kubernetes.container.name")?
        },
        sandbox_id: get("io.kubernetes.cri-o.SandboxID"),
        image: get("io.kubernetes.cri-o.ImageName"),
    })
}

/// Reads a bundle's `config.json`: a regular file, not through a symlink, at most
/// [`MAX_CONFIG_BYTES`].
fn read_config(path: &Path) -> Option<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // O_NONBLOCK: a FIFO planted here must not hang resolution.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() as u64 <= MAX_CONFIG_BYTES).then_some(bytes)
}

/// Every CRI container (sandboxes included) whose bundle is under `run_root` and whose
/// annotations satisfy `wanted`.
///
/// With `hint`, a bundle whose bytes do not contain it is skipped unparsed: resolving one pod
/// passes its name, which every bundle of that pod contains verbatim (a pod name has no
/// character JSON must escape and the runtimes' encoders escape none of them), so a node's
/// other bundles cost a read and a byte search instead of a parse.
pub(crate) fn containers(
    run_root: &Path,
    hint: Option<&str>,
    wanted: impl Fn(&PodAnnotations) -> bool,
) -> Vec<PodContainer> {
    let parse = |bytes: Vec<u8>| {
        if let Some(hint) = hint {
            if !contains(&bytes, hint.as_bytes()) {
                return None;
            }
        }
        parse_bundle_config(&bytes).filter(&wanted)
    };
    let mut found = Vec::new();
    let containerd = run_root.join("containerd/io.containerd.runtime.v2.task");
    for (namespace, id, dir) in state_files::namespaced_dirs(&containerd, &|_: &str| true) {
        let Some(annotations) = read_config(&dir.join("config.json")).and_then(parse) else {
            continue;
        };
        // An init.pid is written once the task has started.
        let pid = state_files::read_pid_file(&dir.join("init.pid")).unwrap_or(0);
        found.push(PodContainer {
            annotations,
            candidate: Candidate {
                id,
                runtime: Runtime::Containerd { namespace },
                pid,
                start_time: None,
            },
        });
    }
    let storage = run_root.join("containers/storage");
    for (id, userdata) in state_files::containers_storage_dirs(&storage, &|_: &str| true) {
        let Some(annotations) = read_config(&userdata.join("config.json")).and_then(parse) else {
            continue;
        };
        let pid = state_files::read_pid_file(&userdata.join("pidfile")).unwrap_or(0);
        found.push(PodContainer {
            annotations,
            candidate: Candidate {
                id,
                runtime: Runtime::CriO,
                pid,
                start_time: None,
            },
        });
    }
    found
}

/// True when `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    // Scan for the first byte (a tight loop the compiler vectorizes), compare only there.
    let mut from = 0;
    while let Some(offset) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + offset;
        if haystack[at..].starts_with(needle) {
            return true;
        }
        from = at + 1;
    }
    false
}

/// A pod reference: `NAMESPACE/POD` or `NAMESPACE/POD/CONTAINER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodRef<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// The pod.
    pub pod: &'a str,
    /// The container, when named.
    pub container: Option<&'a str>,
}

impl std::fmt::Display for PodRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.pod)?;
        if let Some(container) = self.container {
            write!(f, "/{container}")?;
        }
        Ok(())
    }
}

/// Parses `NAMESPACE/POD[/CONTAINER]` (what follows `k8s://`). Each part must be a name
/// Kubernetes accepts: namespaces and containers are DNS-1123 labels (lower-case letters,
/// digits, `-`, at most 63), pods DNS-1123 subdomains (also `.`, at most 253). `None`
/// otherwise.
pub(crate) fn parse_pod_ref(text: &str) -> Option<PodRef<'_>> {
    let mut parts = text.split('/');
    let namespace = parts.next()?;
    let pod = parts.next()?;
    let container = parts.next();
    if parts.next().is_some()
        || !is_dns_label(namespace)
        || !is_dns_subdomain(pod)
        || !container.is_none_or(is_dns_label)
    {
        return None;
    }
    Some(PodRef {
        namespace,
        pod,
        container,
    })
}

/// RFC 1123 label as Kubernetes checks it.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain as Kubernetes checks it: dot-separated labels, at most 253.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINERD_APP: &str = r#"{
        "ociVersion": "1.0.2-dev",
        "process": {"args": ["/busybox", "sleep", "1000"], "env": ["A=b"]},
        "root": {"path": "rootfs"},
        "annotations": {
            "io.kubernetes.cri.container-name": "web",
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.image-name": "example/web:1",
            "io.kubernetes.cri.sandbox-id": "5a5d",
            "io.kubernetes.cri.sandbox-name": "shop-0",
            "io.kubernetes.cri.sandbox-namespace": "prod",
            "io.kubernetes.cri.sandbox-uid": "0b6e"
        },
        "linux": {"namespaces": [{"type": "pid"}]}
    }"#;

    const CRIO_APP: &str = r#"{
        "annotations": {
            "io.kubernetes.cri-o.ContainerType": "container",
            "io.kubernetes.cri-o.SandboxID": "77aa",
            "io.kubernetes.cri-o.ImageName": "example/api:2",
            "io.kubernetes.cri-o.Labels": "{\"io.kubernetes.container.name\":\"api\",\"io.kubernetes.pod.name\":\"api-1\",\"io.kubernetes.pod.namespace\":\"dev\"}",
            "io.kubernetes.pod.uid": "1234"
        }
    }"#;

    #[test]
    fn containerd_app_container() {
        let a = parse_bundle_config(CONTAINERD_APP.as_bytes()).unwrap();
        assert_eq!(
            a,
            PodAnnotations {
                sandbox: false,
                namespace: "prod".into(),
                pod: "shop-0".into(),
                pod_uid: Some("0b6e".into()),
                container: "web".into(),
                sandbox_id: Some("5a5d".into()),
                image: Some("example/web:1".into()),
            }
        );
    }

    #[test]
    fn containerd_sandbox_has_no_container_name() {
        let text = CONTAINERD_APP
            .replace(
                r#""io.kubernetes.cri.container-type": "container""#,
                r#""io.kubernetes.cri.container-type": "sandbox""#,
            )
            .replace(r#""io.kubernetes.cri.container-name": "web","#, "");
        let a = parse_bundle_config(text.as_bytes()).unwrap();
        assert!(a.sandbox);
        assert_eq!(a.container, "");
    }

    #[test]
    fn crio_labels_json_fallback() {
        let a = parse_bundle_config(CRIO_APP.as_bytes()).unwrap();
        assert_eq!(
            (a.namespace.as_str(), a.pod.as_str(), a.container.as_str()),
            ("dev", "api-1", "api")
        );
        assert_eq!(a.pod_uid.as_deref(), Some("1234"));
        assert_eq!(a.sandbox_id.as_deref(), Some("77aa"));
        assert!(!a.sandbox);
    }

    #[test]
    fn not_a_pod() {
        assert_eq!(parse_bundle_config(b"{}"), None);
        assert_eq!(parse_bundle_config(br#"{"annotations":{}}"#), None);
        // An app container without its name is not usable.
        let text = CONTAINERD_APP.replace(r#""io.kubernetes.cri.container-name": "web","#, "");
        assert_eq!(parse_bundle_config(text.as_bytes()), None);
        // Annotations of the wrong type.
        assert_eq!(parse_bundle_config(br#"{"annotations":[1,2]}"#), None);
        assert_eq!(parse_bundle_config(br#"{"annotations":{"a":1}}"#), None);
    }

    /// xorshift64*: a deterministic stream for the fuzz-style test, no dependency needed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Mutated bundles (truncated, bytes flipped, JSON fragments spliced in, deep nesting)
    /// never panic the parser, and whatever it accepts is a complete pod identity.
    #[test]
    fn mutated_bundles_never_panic() {
        let seeds = [
            CONTAINERD_APP,
            CRIO_APP,
            "{}",
            r#"{"annotations":{"k":"v"}}"#,
        ];
        let fragments: [&[u8]; 9] = [
            b"\"",
            b"\\u0000",
            b"{",
            b"}",
            b"[",
            b",\"annotations\":{}",
            b"\xff\xfe",
            b"\"io.kubernetes.cri.container-type\":\"sandbox\",",
            b"null",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(4) {
                    0 => bytes.truncate(at),
                    1 if at < bytes.len() => bytes[at] = rng.next() as u8,
                    2 => {
                        let fragment = fragments[rng.below(fragments.len())];
                        bytes.splice(at..at, fragment.iter().copied());
                    }
                    _ => {
                        let end = (at + rng.below(16)).min(bytes.len());
                        bytes.drain(at..end);
                    }
                }
            }
            if let Some(a) = parse_bundle_config(&bytes) {
                assert!(!a.namespace.is_empty() && !a.pod.is_empty());
                assert!(a.sandbox || !a.container.is_empty());
            }
        }
        // Nesting far deeper than serde_json's recursion limit is an error, not a crash.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_bundle_config(deep.as_bytes()), None);
    }

    #[test]
    fn oversized_and_symlinked_configs_are_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        assert_eq!(read_config(&big), None);
        let ok = tmp.path().join("ok.json");
        std::fs::write(&ok, CONTAINERD_APP).unwrap();
        assert!(read_config(&ok).is_some());
        let link = tmp.path().join("link.json");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert_eq!(read_config(&link), None);
        assert_eq!(read_config(tmp.path()), None);
    }

    #[test]
    fn byte_search() {
        assert!(contains(b"abcabd", b"abd"));
        assert!(contains(b"abd", b"abd"));
        assert!(contains(b"x", b""));
        assert!(!contains(b"abcab", b"abd"));
        assert!(!contains(b"", b"a"));
    }

    #[test]
    fn pod_references() {
        let r = parse_pod_ref("prod/shop-0/web").unwrap();
        assert_eq!(
            (r.namespace, r.pod, r.container),
            ("prod", "shop-0", Some("web"))
        );
        assert_eq!(r.to_string(), "prod/shop-0/web");
        let r = parse_pod_ref("kube-system/coredns-5d78c9869d-abcde").unwrap();
        assert_eq!(r.container, None);
        assert!(parse_pod_ref("a/b.c.d").is_some());
        for bad in [
            "prod",
            "prod/",
            "/pod",
            "Prod/pod",
            "prod/pod/ctr/x",
            "prod/-pod",
            "prod/pod/c_1",
            "prod/pod..x",
            "/sys/fs",
            "prod/pod/",
        ] {
            assert_eq!(parse_pod_ref(bad), None, "{bad}");
        }
        assert!(parse_pod_ref(&format!("{}/p", "n".repeat(64))).is_none());
    }
}
