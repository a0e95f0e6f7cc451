//! What can be targeted on this node (`crashcart --list`): every container the runtimes'
//! state files know, named the way a user would type it.
//!
//! The sources are the ones resolution uses, cheapest first: the state files and the CRI
//! bundles under `/run` give IDs, PIDs, pods and images without any daemon; when the bundles
//! show no pod at all (unreadable, or kept elsewhere), the CRI runtime is asked over its
//! socket for its running containers, as resolution would ask it; Docker is asked, briefly,
//! only for its containers' names and images (a listing without them still shows the IDs).
//! Pod sandboxes are left out: they are never a target.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::cgroupfs::parse_mountinfo;

use super::{
    docker, freezer, kubernetes, state_files, ResolveError, Resolver, Runtime, POD_SCHEME,
};

/// How long Docker may take to list its containers before the listing goes on without names.
const DOCKER_LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// Length of the IDs shown in a table (what `docker ps` shows).
const SHORT_ID_LEN: usize = 12;

/// Whether a listed container can be entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContainerState {
    /// Its init runs.
    Running,
    /// Its cgroup is frozen; a session would hang.
    Paused,
    /// Its state file remains, but the recorded init is gone.
    Exited,
}

impl ContainerState {
    fn as_str(self) -> &'static str {
        match self {
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Exited => "exited",
        }
    }
}

/// One container that could be targeted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// What to type: `k8s://NAMESPACE/POD/CONTAINER`, a Docker name, or empty when only the
    /// ID is known.
    pub name: String,
    /// The runtime that runs it.
    pub runtime: Runtime,
    /// Full container ID.
    pub id: String,
    /// Host PID of its init (as recorded; see `state`).
    pub pid: u32,
    /// The image, when the runtime recorded it.
    pub image: Option<String>,
    /// Whether it can be entered.
    pub state: ContainerState,
}

/// Every container under the resolver's `/run` (and, when no pod is there, those the CRI
/// runtime runs), sorted by name then ID. An error only when a CRI endpoint the user named
/// cannot be asked.
pub fn list(resolver: &Resolver) -> Result<Vec<Listing>, ResolveError> {
    let mut pods: HashMap<String, kubernetes::PodAnnotations> =
        kubernetes::containers(&resolver.run_root, None, |_| true)
            .into_iter()
            .map(|c| (c.candidate.id, c.annotations))
            .collect();
    let mut entries = state_files::find(&resolver.run_root, &resolver.proc_root, |_| true);
    if pods.is_empty() {
        // A listing goes on without the usual sockets when they fail; a named one must answer.
        let answers = resolver.ask_cri("pods", false, |client| client.running_containers())?;
        for (_, found) in answers {
            for container in found {
                let id = container.candidate.id.clone();
                if !entries.iter().any(|e| e.id == id) {
                    entries.push(container.candidate);
                }
                pods.insert(id, container.annotations);
            }
        }
    }
    let docker: HashMap<String, docker::ContainerSummary> =
        if entries.iter().any(|e| e.runtime == Runtime::Docker) {
            docker::socket_path(resolver.docker_host.as_deref())
                .ok()
                .and_then(|socket| docker::list_containers(&socket, DOCKER_LIST_TIMEOUT).ok())
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect()
        } else {
            HashMap::new()
        };

    // Read once: a node with many containers has a long mountinfo.
    let mounts = std::fs::read_to_string(resolver.proc_root.join("self/mountinfo"))
        .map(|text| parse_mountinfo(&text))
        .unwrap_or_default();
    let mut listings: Vec<Listing> = entries
        .into_iter()
        .filter(|e| !pods.get(&e.id).is_some_and(|p| p.sandbox))
        .map(|entry| {
            let state = match resolver.live_stat(&entry, pods.contains_key(&entry.id)) {
                None => ContainerState::Exited,
                Some(_) if freezer::is_frozen_in(&resolver.proc_root, entry.pid, &mounts) => {
                    ContainerState::Paused
                }
                Some(_) => ContainerState::Running,
            };
            let (name, image) = if let Some(pod) = pods.get(&entry.id) {
                (
                    format!(
                        "{POD_SCHEME}{}/{}/{}",
                        pod.namespace, pod.pod, pod.container
                    ),
                    pod.image.clone(),
                )
            } else if let Some(summary) = docker.get(&entry.id) {
                let name = summary
                    .names
                    .first()
                    .map_or("", |n| n.trim_start_matches('/'));
                (
                    name.to_string(),
                    Some(summary.image.clone()).filter(|i| !i.is_empty()),
                )
            } else {
                (String::new(), None)
            };
            Listing {
                name,
                runtime: entry.runtime,
                id: entry.id,
                pid: entry.pid,
                image,
                state,
            }
        })
        .collect();
    listings.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Ok(listings)
}

/// The runtime as one short word for a listing.
fn runtime_word(runtime: &Runtime) -> String {
    match runtime {
        Runtime::Pid => "oci".to_string(),
        Runtime::Docker => "docker".to_string(),
        Runtime::Containerd { namespace } => format!("containerd:{namespace}"),
        Runtime::Podman => "podman".to_string(),
        Runtime::CriO => "cri-o".to_string(),
    }
}

/// A field as it may be printed: names and images come from runtime state that others
/// wrote, so control characters and whitespace (which could move a terminal's cursor or
/// split a plain line) become `?`; an empty field is `-`.
fn printable(field: &str) -> String {
    if field.is_empty() {
        return "-".to_string();
    }
    field
        .chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Renders a listing: a table with a header and aligned columns for a terminal (`table`),
/// else one line per container, fields separated by a tab, no header, the full ID (for
/// scripts: `cut -f`, `awk -F'\t'`).
pub fn render(listings: &[Listing], table: bool) -> String {
    let rows: Vec<[String; 6]> = listings
        .iter()
        .map(|l| {
            let id = if table {
                l.id.chars().take(SHORT_ID_LEN).collect()
            } else {
                l.id.clone()
            };
            [
                printable(&l.name),
                runtime_word(&l.runtime),
                printable(&id),
                l.pid.to_string(),
                printable(l.image.as_deref().unwrap_or("")),
                l.state.as_str().to_string(),
            ]
        })
        .collect();
    let mut out = String::new();
    if !table {
        for row in &rows {
            out.push_str(&row.join("\t"));
            out.push('\n');
        }
        return out;
    }
    let header = ["NAME", "RUNTIME", "ID", "PID", "IMAGE", "STATE"].map(str::to_string);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, field) in widths.iter_mut().zip(row) {
            *width = (*width).max(field.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (field, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(field);
            } else {
                let _ = write!(line, "{field:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Listing> {
        vec![
            Listing {
                name: "k8s://prod/shop-0/web".into(),
                runtime: Runtime::Containerd {
                    namespace: "k8s.io".into(),
                },
                id: "ab".repeat(32),
                pid: 4242,
                image: Some("example/web:1".into()),
                state: ContainerState::Running,
            },
            Listing {
                name: String::new(),
                runtime: Runtime::Podman,
                id: "cd".repeat(32),
                pid: 17,
                image: None,
                state: ContainerState::Paused,
            },
        ]
    }

    #[test]
    fn table_for_a_terminal() {
        assert_eq!(
            render(&sample(), true),
            "\
NAME                   RUNTIME            ID            PID   IMAGE          STATE
k8s://prod/shop-0/web  containerd:k8s.io  abababababab  4242  example/web:1  running
-                      podman             cdcdcdcdcdcd  17    -              paused
"
        );
    }

    #[test]
    fn plain_lines_when_piped() {
        let text = render(&sample(), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            format!(
                "k8s://prod/shop-0/web\tcontainerd:k8s.io\t{}\t4242\texample/web:1\trunning",
                "ab".repeat(32)
            )
        );
        assert_eq!(lines[1].split('\t').count(), 6);
    }

    #[test]
    fn empty_listing() {
        assert_eq!(render(&[], false), "");
        assert_eq!(render(&[], true), "NAME  RUNTIME  ID  PID  IMAGE  STATE\n");
    }

    #[test]
    fn hostile_fields_cannot_drive_the_terminal() {
        let mut listing = sample().remove(0);
        listing.image = Some("evil\x1b]0;pwned\x07\tx\ny".into());
        let text = render(&[listing], false);
        assert!(!text.contains('\x1b') && !text.contains('\x07'));
        assert_eq!(text.lines().count(), 1);
        assert_eq!(text.trim_end().split('\t').count(), 6);
    }
}
