#!/usr/bin/env bash
# Resolution of a Kubernetes pod target on a node with 50 pods: crashcart's first route (the
# CRI runtime's OCI bundles under /run, no daemon), its fallback over the CRI socket (its own
# blocking HTTP/2 client, with the bundles out of sight), and a tonic client doing what
# `crictl inspect` does (ListPodSandbox, ListContainers, verbose ContainerStatus), all timed
# in one process by the ignored test `bench_resolution_with_50_pods` of tests/k8s.rs, against
# a containerd of its own with the CRI plugin (tests/k8s/node.rs); and `--list` both ways, in
# process and as the binary (hyperfine, /usr/bin/time).
# Writes the figures into the bench:k8s section of BENCHMARKS.md. Needs root, docker,
# containerd, runc, containernetworking-plugins, hyperfine (tests/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# The test times the release crashcart binary too (`crashcart --list`, hyperfine): build it
# from these sources.
cargo build --release -q -p crashcart
CRASHCART_BENCH_OUT=$out cargo test --release -q -p crashcart-tests --test k8s -- \
    --ignored --exact bench_resolution_with_50_pods --nocapture
write_section k8s "### Pod target resolution (\`bench/k8s.sh\`, $(date +%F), kernel $(uname -r))

$(cat "$out")"
