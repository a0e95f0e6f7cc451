#!/usr/bin/env bash
# Session start-up cost of crashcart, side by side with what a user would otherwise run:
#   crashcart ID true          (the image's true, in all of the container's namespaces; default
#                              profile debug: capabilities dropped, no_new_privs, seccomp)
#   crashcart --profile target (the target's own capabilities and seccomp filter, copied by
#                              ptrace)
#   nsenter -a -t PID true     (the container's own busybox true; no image, no cgroup, no /dev)
#   docker exec ID true        (through dockerd and containerd)
#   --user app                 (crashcart resolving a name from the container's passwd and group
#                              files, against docker exec -u app)
# cold: nothing holds the image's loop device, so every crashcart run attaches it first;
# warm: a long session keeps the device attached.
# Writes the figures into the bench:inject section of BENCHMARKS.md. Needs root, docker,
# hyperfine, busybox-static, mke2fs (tests/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release -q -p crashcart
cc=$(release_bin crashcart crashcart)

work=$(mktemp -d)
name=crashcart-bench-$$
cleanup() {
    [ -n "${session:-}" ] && kill "$session" 2>/dev/null || true
    chattr -i "$work/crashcart-immutable" 2>/dev/null || true
    docker rm -f "$name" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# A busybox image (what tests/inject.rs uses) and a distroless container.
mkdir -p "$work/tree/bin" "$work/ctx"
cp /bin/busybox "$work/tree/bin/busybox"
for a in sh true sleep; do ln -s busybox "$work/tree/bin/$a"; done
mke2fs -q -F -t ext3 -d "$work/tree" "$work/tools.img" 16M
cp /bin/busybox "$work/ctx/busybox"
cp tests/fixtures/distroless/Dockerfile "$work/ctx/"
DOCKER_BUILDKIT=0 docker build -q -t crashcart-test-distroless:latest "$work/ctx" >/dev/null
id=$(docker run -d --name "$name" crashcart-test-distroless:latest)
pid=$(docker inspect -f '{{.State.Pid}}' "$id")
# A user for --user: a passwd and group file of a usual size (a few dozen lines).
docker exec "$id" /busybox sh -c 'mkdir -p /etc && for i in $(/busybox seq 1 40); do
    echo "svc$i:x:$((2000 + i)):$((2000 + i))::/nonexistent:/sbin/nologin"; done > /etc/passwd &&
    echo "app:x:1000:1000::/home/app:/bin/sh" >> /etc/passwd &&
    for i in $(/busybox seq 1 40); do echo "grp$i:x:$((3000 + i)):app,svc$i"; done > /etc/group'
img=$work/tools.img
# crashcart installed immutable runs in place instead of from a sealed copy of itself.
cc_imm=$work/crashcart-immutable
cp "$cc" "$cc_imm"
chattr +i "$cc_imm"

common=(-N --warmup 5 --runs 40 --style none)
hyperfine "${common[@]}" --export-markdown "$work/cold.md" \
    -n "crashcart (cold)" "$cc -i $img $id true" \
    -n "crashcart --profile target (cold)" "$cc --profile target -i $img $id true" \
    -n "nsenter -a" "nsenter -a -t $pid /busybox true" \
    -n "docker exec" "docker exec $id /busybox true" >/dev/null

"$cc" -i "$img" "$id" sleep 3600 &
session=$!
sleep 1
hyperfine "${common[@]}" --export-markdown "$work/warm.md" \
    -n "crashcart (warm)" "$cc -i $img $id true" \
    -n "crashcart --profile sysadmin (warm)" "$cc --profile sysadmin -i $img $id true" \
    -n "crashcart, immutable binary (warm)" "$cc_imm -i $img $id true" \
    -n "crashcart --user app (warm)" "$cc --user app -i $img $id true" \
    -n "nsenter -a" "nsenter -a -t $pid /busybox true" \
    -n "docker exec" "docker exec $id /busybox true" \
    -n "docker exec -u app" "docker exec -u app $id /busybox true" >/dev/null

# Keystroke echo through each one's terminal: crashcart relays into a pty of the container's
# devpts, nsenter hands over the benchmark's own pty, docker exec -t relays through dockerd.
echo_cc=$(python3 bench/echo.py 300 "$cc" -i "$img" "$id" sh -i)
echo_ns=$(python3 bench/echo.py 300 nsenter -a -t "$pid" /busybox sh -i)
echo_de=$(python3 bench/echo.py 300 docker exec -it "$id" /busybox sh -i)
kill "$session"; wait "$session" 2>/dev/null || true; session=

# Peak memory of one session.
rss=$(/usr/bin/time -f %M "$cc" -i "$img" "$id" true 2>&1 >/dev/null | tail -1)

mean() { grep "^| \`*$1" "$2" | head -1 | awk -F'|' '{print $3}' | awk '{print $1}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
cold=$(mean "crashcart (cold)" "$work/cold.md")
warm=$(mean "crashcart (warm)" "$work/warm.md")
warm_imm=$(mean "crashcart, immutable binary (warm)" "$work/warm.md")
ns=$(mean "nsenter -a" "$work/warm.md")
ns_cold=$(mean "nsenter -a" "$work/cold.md")
de=$(mean "docker exec" "$work/warm.md")
warm_user=$(mean "crashcart --user app (warm)" "$work/warm.md")
de_user=$(mean "docker exec -u app" "$work/warm.md")

section=$work/section.md
{
    echo "### crashcart session start-up (\`bench/inject.sh\`, $(date -u +%Y-%m-%d), kernel $(uname -r))"
    echo
    echo "Command: \`true\` in a distroless busybox container. Mean wall time, 40 runs each, hyperfine -N."
    echo
    echo "Cold (every crashcart run attaches the loop device and detaches it at the end):"
    echo
    cat "$work/cold.md"
    echo
    echo "Warm (a long session keeps the loop device attached):"
    echo
    cat "$work/warm.md"
    echo
    echo "- warm crashcart / nsenter -a: **$(ratio "$warm" "$ns")x** (target: within 2x); with the"
    echo "  binary installed immutable (no sealed copy): **$(ratio "$warm_imm" "$ns")x**"
    echo "- cold crashcart / cold nsenter -a: **$(ratio "$cold" "$ns_cold")x** (target: within 4x)"
    echo "- docker exec / warm crashcart: **$(ratio "$de" "$warm")x** slower"
    echo "- --user app (41 passwd, 40 group lines read as data) / no --user, warm crashcart:"
    echo "  **$(ratio "$warm_user" "$warm")x**; docker exec -u app / crashcart --user app:"
    echo "  **$(ratio "$de_user" "$warm_user")x** slower"
    echo "- peak RSS of one crashcart session: $rss KiB"
    echo
    echo "Keystroke echo (one character typed, until the terminal shows it; 300 keystrokes,"
    echo "\`bench/echo.py\`), median / 95th percentile in microseconds:"
    echo
    echo "| | median [µs] | p95 [µs] |"
    echo "|:---|---:|---:|"
    echo "| crashcart (relay into the container's pty) | ${echo_cc% *} | ${echo_cc#* } |"
    echo "| nsenter -a (the caller's own pty) | ${echo_ns% *} | ${echo_ns#* } |"
    echo "| docker exec -it (relay through dockerd) | ${echo_de% *} | ${echo_de#* } |"
    echo
    echo "Where a session's extra time goes, against nsenter: resolving the target and the image,"
    echo "the private /dev, joining the cgroups and, since the hardening, re-executing from a"
    echo "sealed in-memory copy (about 2 ms: the binary is copied and executed a second time;"
    echo "skipped for an immutable binary), the profile (capabilities, seccomp filter), the relay"
    echo "and the session's HOME (one more tmpfs)."
    echo
    echo "Run again: \`sudo bench/inject.sh\`."
} >"$section"

write_section inject "$(cat "$section")"
cat "$section"
