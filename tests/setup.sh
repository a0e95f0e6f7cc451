#!/usr/bin/env bash
# Installs what crashcart's tests and benchmarks need on a Debian/Ubuntu machine and starts
# dockerd when it is not answering. Idempotent; needs root.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "tests/setup.sh: needs root (it installs packages and starts dockerd)" >&2
    exit 1
fi

packages=(
    docker.io            # the engine the end-to-end tests inject into
    busybox-static       # the only content of the distroless test container
    e2fsprogs            # mke2fs (test images, benchmarks) and e2fsck (image checks)
    libext2fs-dev        # crashcart-imgbuild links libext2fs
    pkg-config           # finds libext2fs for the -sys crate
    nix-bin              # --packages builds (offline, fixture nixpkgs)
    patchelf             # --host relocation of host binaries
    util-linux           # losetup, nsenter, unshare, mount
    iproute2 procps strace tcpdump gdb bash file python3  # host tools bundled by --host tests
    ncurses-term ca-certificates             # terminfo and CA certs bundled by --host
    musl-tools           # a musl-only container for the --host tests (musl-gcc)
    lsof                 # tests/hostile_privileges.rs: lsof -p 1 from a session
    gcc libc6-dev        # tests/hostile_privileges.rs: static payloads (tests/fixtures/hostile)
    hyperfine time       # bench/
    zstd                 # tests/packed.rs: compressed images as the release makes them
    python3-yaml         # tests/release.rs: the release workflow read by PyYAML
    attr libcap2-bin     # imgbuild tests: setfattr/getfattr, setcap (xattr fidelity)
    podman               # target resolution of Podman containers (tests/resolve.rs)
    containerd runc containernetworking-plugins  # tests/k8s.rs: pods over CRI
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# An unprivileged account for the rootless build tests.
id crashcart-builder >/dev/null 2>&1 || useradd --create-home --shell /bin/sh crashcart-builder

if ! docker info >/dev/null 2>&1; then
    (setsid dockerd >/var/log/crashcart-dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/crashcart-dockerd.log" >&2; exit 1; }
fi
