#!/usr/bin/env bash
# crashcart demo: build both programs, bundle this machine's debugging tools into an image,
# start a distroless container (nothing in it but one static binary) and use the tools there.
# Needs root and Rust; installs the Debian packages it needs (tests/setup.sh).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

bash tests/setup.sh
say "building crashcart and crashcart-imgbuild (release)"
cargo build --release --locked -q
bin=target/release

say "bundling this machine's debugging tools into demo.img, one command (no root needed for this step)"
"$bin/crashcart-imgbuild" --host-set debug -o demo.img

say "starting a distroless container: FROM scratch, only /busybox, no shell on PATH"
ctx=$(mktemp -d)
cp /bin/busybox "$ctx/"
cp tests/fixtures/distroless/Dockerfile "$ctx/"
DOCKER_BUILDKIT=0 docker build -q -t crashcart-demo "$ctx" >/dev/null
rm -rf "$ctx"
id=$(docker run -d --rm crashcart-demo)
trap 'docker rm -f "$id" >/dev/null 2>&1 || true' EXIT
echo "container ${id:0:12}"
echo "docker exec ${id:0:12} sh  ->  $(docker exec "$id" sh 2>&1 | head -1 || true)"

cc() { echo "\$ crashcart ${id:0:12} $*"; "$bin/crashcart" -i demo.img "$id" "$@"; }

say "the container's processes, seen from inside (PID 1 is its busybox sleep)"
cc ps -ef
say "its network"
cc ip -brief addr
say "its files, with the image at /dev/crashcart"
cc ls /dev/crashcart/bin /
say "tracing a process started inside it"
cc strace -f -e trace=execve bash -c '/busybox true' 2>&1 | tail -3
say "capturing a packet on its loopback, no -Z needed"
(sleep 1; docker exec "$id" /busybox ping -c 2 127.0.0.1 >/dev/null) &
cc tcpdump -n -c 1 -i lo icmp 2>/dev/null
wait
say "a pipeline in bash from the image"
cc bash -c 'echo "PATH=$PATH" | cut -c1-60; cat /proc/1/cmdline | tr "\0" " "; echo'
say "afterwards: nothing left in the container, no loop device for demo.img"
docker exec "$id" /busybox ls /dev | tr '\n' ' '; echo
losetup -j demo.img | grep . || echo "no loop device attached to demo.img"
