#!/usr/bin/env bash
# A session started from a debugging pod's view against one started on the node: the same
# release crashcart, the same target (a Docker container running busybox sleep) and image,
# `crashcart -i IMAGE PID true` timed by hyperfine. "From the pod" runs crashcart in the mount
# and cgroup namespaces of a container set up as tests/k8s.rs's
# `from_a_container_with_its_own_cgroup_namespace` sets one up (host PID namespace, a cgroup
# namespace of its own, /dev without loop nodes, the image and the binary mounted in): it
# opens the loop device through a node of its own and reaches the target's cgroups through
# detached hierarchy mounts from the target's cgroup namespace.
# Writes the figures into the bench:pod section of BENCHMARKS.md. Needs root, docker,
# hyperfine, busybox-static, e2fsprogs (tests/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
# Built from these sources (an older release binary would not work from the pod).
cargo build --release -q -p crashcart
crashcart=$(realpath "${CARGO_TARGET_DIR:-target}/release/crashcart")
work=$(mktemp -d)
target=crashcart-bench-pod-target-$$
debugger=crashcart-bench-pod-debugger-$$
trap 'docker rm -f "$target" "$debugger" >/dev/null 2>&1; rm -rf "$work"' EXIT

mkdir -p "$work/tree/bin" "$work/images"
cp /bin/busybox "$work/tree/bin/"
ln -s busybox "$work/tree/bin/true"
mke2fs -q -F -t ext3 -d "$work/tree" "$work/images/tools.img" 8M
mkdir "$work/ctx"
cp tests/fixtures/distroless/Dockerfile /bin/busybox "$work/ctx/"
DOCKER_BUILDKIT=0 docker build -q -t crashcart-test-distroless:latest "$work/ctx" >/dev/null

docker run -d --name "$target" crashcart-test-distroless:latest /busybox sleep 100000 >/dev/null
pid=$(docker inspect -f '{{.State.Pid}}' "$target")
volumes=(-v "$crashcart:/crashcart:ro" -v "$work/images:/host/images:ro")
for lib in $(ldd "$crashcart" | grep -o '/[^ ]*'); do
    volumes+=(-v "$lib:$lib:ro")
done
docker run -d --name "$debugger" --cgroupns=private --pid=host \
    --cap-add=ALL --cap-drop=SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --device /dev/loop-control --device-cgroup-rule 'b 7:* rwm' \
    "${volumes[@]}" crashcart-test-distroless:latest /busybox sleep 100000 >/dev/null
dbg=$(docker inspect -f '{{.State.Pid}}' "$debugger")

json="$work/pod.json"
hyperfine -N --warmup 5 --runs 100 --export-json "$json" \
    -n node "$crashcart -i $work/images/tools.img $pid true" \
    -n pod "nsenter -t $dbg -m -C -- /crashcart -i /host/images/tools.img $pid true" >&2
table=$(python3 - "$json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
node, pod = r["node"], r["pod"]
ms = lambda x: f'{x["median"] * 1e3:.1f} ms | {x["min"] * 1e3:.1f} ms | {x["mean"] * 1e3:.1f} ± {x["stddev"] * 1e3:.1f} ms'
print("| where crashcart runs (`crashcart -i IMAGE PID true`) | median | min | mean ± σ |")
print("| --- | --- | --- | --- |")
print(f"| on the node | {ms(node)} |")
print(f"| in a debugging pod's mount and cgroup namespaces (`nsenter -m -C`) | {ms(pod)} |")
print()
print(f"From the pod a session takes {pod['median'] / node['median']:.2f}x the node's time by "
      f"the medians, {pod['min'] / node['min']:.2f}x by the fastest runs: the spread of this "
      "shared machine is larger than the difference. The pod's route adds a detached tmpfs "
      "for the loop node and one detached cgroup mount per hierarchy (ten on this host); "
      "`nsenter` itself is part of the pod row.")
PY
)
write_section pod "### A session from a debugging pod (\`bench/pod.sh\`, $(date +%F), kernel $(uname -r))

hyperfine \`-N\`, 5 warmup + 100 runs, release build; cgroup v1 host, the pod in a
cgroup namespace of its own.

$table"
