//! `--nix-container IMAGE`: nix runs inside a container (podman, else docker), for machines
//! without nix.
//!
//! The container writes into the same cache layout as a local build, mounted from the host:
//! - relocated: nix builds in the image's own `/nix/store` (no chroot, which container
//!   seccomp profiles forbid), then `nix copy` puts the closure into `root/nix/store`;
//! - native: `root/dev/crashcart/store` is mounted at `/dev/crashcart/store`, so the store
//!   dir is real inside the container and, again, no chroot is needed.
//!
//! The profile path and closure come back as files in a per-build output directory. Rootful
//! docker writes them as root; the script hands them to the calling user at the end.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::local::{last_line, BuildRequest};
use super::run::run_nix;
use super::store::StoreLocation;
use super::{BuiltProfile, NixError, StoreMode};

/// The shell script run in the container: `sh -c SCRIPT sh MODE PACKAGES_JSON OWNER`.
const SCRIPT: &str = r#"set -eu
mode=$1 packages=$2 owner=$3
if [ "$mode" = native ]; then
    store='local?store=/dev/crashcart/store&state=/crashcart/root/nix/var/nix&log=/crashcart/root/nix/var/log/nix'
else
    store=auto
fi
if [ -e /crashcart/nixpkgs ]; then set -- --argstr nixpkgs /crashcart/nixpkgs; else set --; fi
out=$(nix-build /crashcart/nix --argstr packagesJSON "$packages" "$@" --store "$store" \
    --option sandbox false --no-out-link)
if [ "$mode" = relocated ]; then
    nix --extra-experimental-features nix-command copy --no-check-sigs \
        --to 'local?root=/crashcart/root' "$out"
    store='local?root=/crashcart/root'
fi
nix-store --store "$store" --query --requisites "$out" > /crashcart/out/closure
echo "$out" > /crashcart/out/profile
if [ -n "$owner" ]; then chown -R "$owner" /crashcart/root /crashcart/out; fi
"#;

/// Builds the profile with nix inside `image`, into `location` on the host.
pub fn build(
    engine: &Path,
    image: &str,
    location: &StoreLocation,
    mode: StoreMode,
    request: &BuildRequest,
) -> Result<BuiltProfile, NixError> {
    let out_dir = request.work_dir.join("out");
    create_dir(&out_dir)?;

    let mut run = Command::new(engine);
    run.args(["run", "--rm"])
        .args(volume(request.expressions, "/crashcart/nix", true))
        .args(volume(&out_dir, "/crashcart/out", false));
    match mode {
        StoreMode::Relocated => {
            run.args(volume(&location.root, "/crashcart/root", false));
        }
        StoreMode::Native => {
            let store = location
                .root
                .join(location.store_dir.trim_start_matches('/'));
            let state = location.root.join("nix");
            create_dir(&store)?;
            create_dir(&state)?;
            run.args(volume(&store, location.store_dir, false))
                .args(volume(&state, "/crashcart/root/nix", false));
        }
    }
    if let Some(nixpkgs) = request.nixpkgs {
        run.args(volume(nixpkgs, "/crashcart/nixpkgs", true));
    }
    // Offline and mirror settings of the caller apply inside too.
    if std::env::var_os("NIX_CONFIG").is_some() {
        run.args(["--env", "NIX_CONFIG"]);
    }
    run.arg(image)
        .args(["sh", "-c", SCRIPT, "sh"])
        .arg(mode_name(mode))
        .arg(request.packages_json)
        .arg(owner_to_restore(engine));
    run_nix(run, || NixError::NoContainerEngine {
        engine: engine.display().to_string(),
    })?;

    let read = |name: &str| {
        let path = out_dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| NixError::ContainerResult { path, source })
    };
    let profile_text = read("profile")?;
    let profile = last_line(&profile_text).ok_or(NixError::NoProfile {
        output: profile_text.clone(),
    })?;
    Ok(BuiltProfile {
        store_paths: read("closure")?.lines().map(PathBuf::from).collect(),
        profile,
    })
}

/// podman when installed (rootless by default), else docker.
pub fn default_engine() -> Result<PathBuf, NixError> {
    ["podman", "docker"]
        .iter()
        .find_map(|name| find_on_path(name))
        .ok_or_else(|| NixError::NoContainerEngine {
            engine: "podman or docker".to_string(),
        })
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn volume(host: &Path, container: &str, read_only: bool) -> [String; 2] {
    let options = if read_only { ":ro" } else { "" };
    [
        "--volume".to_string(),
        format!("{}:{container}{options}", host.display()),
    ]
}

fn create_dir(path: &Path) -> Result<(), NixError> {
    std::fs::create_dir_all(path).map_err(|source| NixError::StoreDir {
        path: path.to_path_buf(),
        source,
    })
}

fn mode_name(mode: StoreMode) -> &'static str {
    match mode {
        StoreMode::Relocated => "relocated",
        StoreMode::Native => "native",
    }
}

/// `uid:gid` to give the results back to, when the container's root is the host's root
/// (rootful docker). Under podman or rootless docker, container root is already the caller.
fn owner_to_restore(engine: &Path) -> String {
    let is_docker = engine.file_name().is_some_and(|n| n == "docker");
    let uid = rustix::process::getuid();
    if !is_docker || uid.is_root() || docker_is_rootless(engine) {
        return String::new();
    }
    format!("{}:{}", uid.as_raw(), rustix::process::getgid().as_raw())
}

fn docker_is_rootless(engine: &Path) -> bool {
    Command::new(engine)
        .args(["info", "--format", "{{json .SecurityOptions}}"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("rootless"))
}
