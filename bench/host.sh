#!/usr/bin/env bash
# Bundling the host's own bash, strace, ps, ip, tcpdump and gdb for a distroless container:
# `crashcart-imgbuild --host` (bundle + relocate + write the ext3 image) side by side with
# exodus (PyPI exodus-bundler, tarball output), in one hyperfine run; then the output sizes,
# peak memory, and whether each result runs in the distroless test container.
#
# Usage: bench/host.sh [--write]   (--write replaces the host section of BENCHMARKS.md)
# Needs: hyperfine, /usr/bin/time, patchelf, the six tools; docker for the "runs" column;
# exodus on PATH or $EXODUS, else it is installed once into a venv under ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=(bash strace ps ip tcpdump gdb)
. bench/lib.sh
imgbuild=${IMGBUILD:-$(release_bin crashcart-imgbuild crashcart-imgbuild)}

exodus=${EXODUS:-$(command -v exodus || true)}
if [ -z "$exodus" ]; then
    venv=${XDG_CACHE_HOME:-$HOME/.cache}/crashcart-bench/exodus-venv
    [ -x "$venv/bin/exodus" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q exodus-bundler; }
    exodus=$venv/bin/exodus
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
host_args=()
for t in "${tools[@]}"; do host_args+=(--host "$t"); done

hyperfine --warmup 1 --runs 5 --export-json "$work/times.json" \
    -n "crashcart-imgbuild --host" "rm -f $work/host.img; $imgbuild ${host_args[*]} -o $work/host.img" \
    -n "exodus -t" "rm -f $work/exodus.tgz; $exodus -q -t -o $work/exodus.tgz ${tools[*]}" >&2

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
rm -f "$work/host.img" "$work/exodus.tgz"
imgbuild_rss=$(rss "$imgbuild" "${host_args[@]}" -o "$work/host.img")
exodus_rss=$(rss "$exodus" -q -t -o "$work/exodus.tgz" "${tools[@]}")

mkdir "$work/exodus"
tar xzf "$work/exodus.tgz" -C "$work/exodus"
image_bytes=$(stat -c %s "$work/host.img")
image_used=$(( $(stat -c %b "$work/host.img") * $(stat -c %B "$work/host.img") ))
exodus_tgz=$(stat -c %s "$work/exodus.tgz")
exodus_tree=$(du -sb "$work/exodus" | cut -f1)

# Does each result run gdb -batch -p 1 in the distroless container (no /bin/bash, no libc)?
runs_crashcart=untested
runs_exodus=untested
if docker info >/dev/null 2>&1 && docker image inspect crashcart-test-distroless:latest >/dev/null 2>&1; then
    cid=$(docker run -d -v "$work/exodus/exodus:/opt/exodus:ro" crashcart-test-distroless:latest)
    crashcart_bin=${CRASHCART:-}
    for candidate in "$(dirname "$imgbuild")/crashcart" "${CARGO_TARGET_DIR:-target}/debug/crashcart"; do
        [ -z "$crashcart_bin" ] && [ -x "$candidate" ] && crashcart_bin=$candidate
    done
    if [ -n "$crashcart_bin" ] && [ "$(id -u)" = 0 ]; then
        "$crashcart_bin" -i "$work/host.img" "$cid" gdb -batch -p 1 -ex bt 2>/dev/null | grep -q '^#0 ' \
            && runs_crashcart=yes || runs_crashcart=no
    fi
    docker exec "$cid" /opt/exodus/bin/gdb -batch -p 1 -ex bt 2>/dev/null | grep -q '^#0 ' \
        && runs_exodus=yes || runs_exodus="no (launchers are #!/bin/bash scripts)"
    docker rm -f "$cid" >/dev/null
fi

section=$(python3 - "$work/times.json" <<EOF
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
ours, exo = r["crashcart-imgbuild --host"], r["exodus -t"]
mb = lambda b: f"{int(b) / 1e6:.1f} MB"
print(f"""Written by \`bench/host.sh --write\` on $(date -u +%Y-%m-%d). Bundling the test machine's
\`${tools[*]}\` (Debian $(cat /etc/debian_version 2>/dev/null || echo '?')); hyperfine, 1 warmup + 5 runs.

| | crashcart-imgbuild --host | exodus -t (exodus-bundler) |
| --- | --- | --- |
| wall time, mean ± σ | {ours['mean']:.2f} s ± {ours['stddev']:.2f} | {exo['mean']:.2f} s ± {exo['stddev']:.2f} |
| output | ext3 image {mb($image_bytes)} ({mb($image_used)} allocated) | tarball {mb($exodus_tgz)} ({mb($exodus_tree)} unpacked) |
| peak RSS | $imgbuild_rss KB | $exodus_rss KB |
| gdb -p 1 in the distroless container | $runs_crashcart | $runs_exodus |

crashcart-imgbuild is **{exo['mean'] / ours['mean']:.1f}x** faster than exodus (target: under 5 s for the six),
and its output is an image ready for \`crashcart -i\`. The image is larger than exodus's unpacked
tree because it also carries what the tools need at run time and exodus leaves out: Python's
standard library (about 10 MB; without one gdb 13 quits before attaching when its embedded
Python cannot initialise), glibc's gconv modules (8 MB),
terminfo, gdb's data directory and the CA bundle. The seed's route (a nix or Docker build of
the tool set) needs the network and cannot run offline: not measured.""")
EOF
)

printf '%s\n' "$section"
if [ "${1:-}" = --write ]; then
    write_section host "$section"
fi
