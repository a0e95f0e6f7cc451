//! A minimal, blocking client for the one Docker Engine API call resolution needs:
//! `GET /containers/{name}/json`.
//!
//! Blocking on purpose: crashcart forks and calls `setns` soon after resolving, and an async
//! runtime would leave threads behind that a multi-threaded process cannot safely fork with.
//! One request per connection (`Connection: close`), so the response ends at end of stream;
//! Docker still sends larger bodies chunked, which `chunked_transfer` decodes.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where Docker listens when `DOCKER_HOST` is unset.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long a stuck daemon may keep us waiting, per read or write, when only Docker can
/// answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// An inspect response is a few KiB; anything near this is not Docker talking.
const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// Why asking Docker failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// `DOCKER_HOST` names something other than a unix socket.
    #[error(
        "DOCKER_HOST={0:?} is not supported: crashcart talks to Docker over a unix:// socket only"
    )]
    UnsupportedHost(String),
    /// The socket could not be connected to.
    #[error("cannot connect to Docker at {}", socket.display())]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Sending the request or reading the response failed.
    #[error("cannot talk to Docker at {}", socket.display())]
    Io {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The response was not the HTTP and JSON Docker sends.
    #[error("unexpected response from Docker at {}: {reason}", socket.display())]
    Protocol {
        /// The socket path.
        socket: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// Docker answered with an error status.
    #[error("Docker at {} answered {status}: {message}", socket.display())]
    Api {
        /// The socket path.
        socket: PathBuf,
        /// HTTP status.
        status: u16,
        /// Docker's `message`, or the raw body.
        message: String,
    },
}

/// The socket named by `DOCKER_HOST` (`unix:///path`), or [`DEFAULT_SOCKET`].
pub fn socket_path(docker_host: Option<&str>) -> Result<PathBuf, DockerError> {
    match docker_host.filter(|h| !h.is_empty()) {
        None => Ok(PathBuf::from(DEFAULT_SOCKET)),
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
            _ => Err(DockerError::UnsupportedHost(host.to_string())),
        },
    }
}

/// What crashcart needs from `docker inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContainerInfo {
    /// Full container ID.
    #[serde(rename = "Id")]
    pub id: String,
    /// Name, with Docker's leading `/`.
    #[serde(rename = "Name")]
    pub name: String,
    /// Run state.
    #[serde(rename = "State")]
    pub state: ContainerState,
}

/// `.State` of an inspect response.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContainerState {
    /// True while the container's init runs (also when paused).
    #[serde(rename = "Running")]
    pub running: bool,
    /// True while frozen by `docker pause`.
    #[serde(rename = "Paused", default)]
    pub paused: bool,
    /// Host PID of the init; 0 when not running.
    #[serde(rename = "Pid")]
    pub pid: i64,
}

/// True when `reference` can only be a container name or ID, so it may go into a URL path
/// unescaped: Docker's own name rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, with an optional `/`.
pub fn is_valid_reference(reference: &str) -> bool {
    let name = reference.strip_prefix('/').unwrap_or(reference);
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Inspects a container by name, ID or unique ID prefix. `Ok(None)` when Docker knows no
/// such container. `reference` must pass [`is_valid_reference`].
pub fn inspect_container(
    socket: &Path,
    reference: &str,
    timeout: Duration,
) -> Result<Option<ContainerInfo>, DockerError> {
    assert!(
        is_valid_reference(reference),
        "unchecked reference {reference:?}"
    );
    let name = reference.strip_prefix('/').unwrap_or(reference);
    let (status, body) = get(socket, &format!("/containers/{name}/json"), timeout)?;
    let protocol = |reason: String| DockerError::Protocol {
        socket: socket.to_path_buf(),
        reason,
    };
    match status {
        200 => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| protocol(format!("inspect body: {e}"))),
        404 => Ok(None),
        _ => Err(DockerError::Api {
            socket: socket.to_path_buf(),
            status,
            message: error_message(&body),
        }),
    }
}

/// A running container as `GET /containers/json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContainerSummary {
    /// Full container ID.
    #[serde(rename = "Id")]
    pub id: String,
    /// Names, each with Docker's leading `/`.
    #[serde(rename = "Names", default)]
    pub names: Vec<String>,
    /// The image as the user named it.
    #[serde(rename = "Image", default)]
    pub image: String,
}

/// Docker's running containers (for names and images in a listing).
pub fn list_containers(
    socket: &Path,
    timeout: Duration,
) -> Result<Vec<ContainerSummary>, DockerError> {
    let (status, body) = get(socket, "/containers/json", timeout)?;
    if status != 200 {
        return Err(DockerError::Api {
            socket: socket.to_path_buf(),
            status,
            message: error_message(&body),
        });
    }
    serde_json::from_slice(&body).map_err(|e| DockerError::Protocol {
        socket: socket.to_path_buf(),
        reason: format!("list body: {e}"),
    })
}

/// Docker's error bodies are `{"message": "..."}`.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ApiError {
        message: String,
    }
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

/// Sends `GET path` and returns the status and the decoded body; `timeout` bounds each read
/// and write.
fn get(socket: &Path, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), DockerError> {
    let io_error = |source| DockerError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| DockerError::Connect {
        socket: socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: crashcart/{}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).map_err(io_error)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io_error)?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(DockerError::Protocol {
            socket: socket.to_path_buf(),
            reason: format!("response larger than {MAX_RESPONSE_BYTES} bytes"),
        });
    }
    parse_response(&raw).map_err(|reason| DockerError::Protocol {
        socket: socket.to_path_buf(),
        reason,
    })
}

/// Splits a complete HTTP/1.1 response (read to end of stream) into status and body,
/// undoing chunked transfer encoding.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err("connection closed inside the headers".into()),
        Err(e) => return Err(format!("bad HTTP: {e}")),
    };
    let status = response.code.ok_or("no status code")?;
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &raw[head_len..];
    if header("transfer-encoding").is_some_and(|te| te.split(',').any(|c| c.trim() == "chunked")) {
        let mut body = Vec::new();
        chunked_transfer::Decoder::new(rest)
            .read_to_end(&mut body)
            .map_err(|e| format!("bad chunked body: {e}"))?;
        return Ok((status, body));
    }
    match header("content-length") {
        Some(len) => {
            let len: usize = len
                .parse()
                .map_err(|_| format!("bad Content-Length {len:?}"))?;
            let body = rest
                .get(..len)
                .ok_or_else(|| format!("body shorter than Content-Length {len}"))?;
            Ok((status, body.to_vec()))
        }
        None => Ok((status, rest.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_forms() {
        assert_eq!(socket_path(None).unwrap(), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            socket_path(Some("")).unwrap(),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_path(Some("unix:///run/user/1000/docker.sock")).unwrap(),
            PathBuf::from("/run/user/1000/docker.sock")
        );
        for bad in [
            "tcp://127.0.0.1:2375",
            "ssh://host",
            "unix://relative",
            "/var/run/docker.sock",
        ] {
            assert!(
                matches!(socket_path(Some(bad)), Err(DockerError::UnsupportedHost(h)) if h == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn references_that_may_go_into_a_url() {
        for ok in ["web-1", "/web-1", "a", "ecadcc32", "my_app.v2"] {
            assert!(is_valid_reference(ok), "{ok}");
        }
        for bad in [
            "", "/", "../x", "a/b", "a?b", "a b", "-x", ".x", "a%2fb", "é",
        ] {
            assert!(!is_valid_reference(bad), "{bad}");
        }
    }

    #[test]
    fn chunked_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\n{\"a\":\r\n3\r\n12}\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), (200, b"{\"a\":12}".to_vec()));
    }

    #[test]
    fn content_length_body() {
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\n{\"message\":1}";
        assert_eq!(
            parse_response(raw).unwrap(),
            (404, b"{\"message\":1}".to_vec())
        );
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}";
        assert!(parse_response(short).unwrap_err().contains("shorter"));
    }

    #[test]
    fn truncated_or_garbage_responses() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
        assert!(parse_response(b"\x00\x01garbage\r\n\r\n").is_err());
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse_response(bad_chunk).is_err());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(br#"{"message":"No such container: x"}"#),
            "No such container: x"
        );
        assert_eq!(error_message(b"plain text\n"), "plain text");
    }

    #[test]
    fn inspect_body() {
        let body = br#"{"Id":"abc","Name":"/web-1","State":{"Status":"running","Running":true,"Paused":false,"Restarting":false,"Pid":4242,"ExitCode":0},"Config":{}}"#;
        let info: ContainerInfo = serde_json::from_slice(body).unwrap();
        assert_eq!(info.id, "abc");
        assert_eq!(info.name, "/web-1");
        assert_eq!(info.state.pid, 4242);
        assert!(info.state.running && !info.state.paused);
    }
}
