//! `--nix-container IMAGE`: nix runs inside a container (podman, else docker), for machines
//! without nix.
//!
//! The container writes into the same cache layout as a local build, mounted from the host:
//! - relocated: nix builds in the image's own `/nix/store` (no chroot, which container
//!   seccomp profiles forbid), then `nix copy` puts the closure into `root/nix/store`;
//! - native: `root/dev/crashcart/store` is mounted at `/dev/crashcart/store`, so the store
//!   dir is real inside the container and, again, no chroot is needed.
//!
//! The plan, the closure and the store's registration of it come back as files in a
//! per-build output directory; the profile is then worked out on the host, as for a local
//! build. Rootful docker writes them as root; the script hands them to the calling user.
//!
//! On an SELinux host the container's processes may not read or write files labelled for
//! the user, which every volume here is: the container runs with SELinux separation off
//! (`--security-opt label=disable`) rather than relabelling the volumes (`:z`), which would
//! change the labels of the user's files, and fails on read-only ones such as a `--nixpkgs`
//! in a nix store.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::info::{parse_dump_db, parse_plan};
use super::local::BuildRequest;
use super::run::run_nix;
use super::store::StoreLocation;
use super::{NixError, Realised, StoreMode};

/// Where the kernel says whether SELinux is enabled (selinuxfs is mounted when it is).
const SELINUX_ENFORCE: &str = "/sys/fs/selinux/enforce";

/// The shell script run in the container: `sh -c SCRIPT sh MODE PACKAGES_JSON OWNER`.
const SCRIPT: &str = r#"set -eu
mode=$1 packages=$2 owner=$3
if [ "$mode" = native ]; then
    store='local?store=/dev/crashcart/store&state=/crashcart/root/nix/var/nix&log=/crashcart/root/nix/var/log/nix'
else
    store=auto
fi
if [ -e /crashcart/nixpkgs ]; then set -- --argstr nixpkgs /crashcart/nixpkgs; else set --; fi
nix-instantiate --eval --strict --json --read-write-mode /crashcart/nix -A plan \
    --argstr packagesJSON "$packages" "$@" --store "$store" > /crashcart/out/plan.json
outs=$(nix-build /crashcart/nix -A outputs --argstr packagesJSON "$packages" "$@" \
    --store "$store" --option sandbox false --no-out-link)
if [ "$mode" = relocated ]; then
    nix --extra-experimental-features nix-command copy --no-check-sigs \
        --to 'local?root=/crashcart/root' $outs
    store='local?root=/crashcart/root'
fi
nix-store --store "$store" --query --requisites $outs > /crashcart/out/closure
nix-store --store "$store" --dump-db $(cat /crashcart/out/closure) > /crashcart/out/db
if [ -n "$owner" ]; then chown -R "$owner" /crashcart/root /crashcart/out; fi
"#;

/// Realises the packages' outputs with nix inside `image`, into `location` on the host.
pub fn build(
    engine: &Path,
    image: &str,
    location: &StoreLocation,
    mode: StoreMode,
    request: &BuildRequest,
) -> Result<Realised, NixError> {
    let out_dir = request.work_dir.join("out");
    create_dir(&out_dir)?;

    let mut run = Command::new(engine);
    run.args(["run", "--rm"]);
    if selinux_enabled(Path::new(SELINUX_ENFORCE)) {
        run.args(["--security-opt", "label=disable"]);
    }
    run.args(volume(request.expressions, "/crashcart/nix", true))
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
    Ok(Realised {
        packages: parse_plan(&read("plan.json")?)?,
        store_paths: read("closure")?.lines().map(PathBuf::from).collect(),
        infos: parse_dump_db(&read("db")?)?,
    })
}

/// Whether SELinux is enabled on this host (enforcing or permissive: labels are checked, or
/// their denials logged, either way).
fn selinux_enabled(enforce: &Path) -> bool {
    enforce.exists()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selinux_is_seen_through_selinuxfs() {
        let dir = tempfile::tempdir().unwrap();
        let enforce = dir.path().join("enforce");
        assert!(!selinux_enabled(&enforce));
        std::fs::write(&enforce, "1").unwrap();
        assert!(selinux_enabled(&enforce));
    }
}
