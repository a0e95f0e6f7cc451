#!/usr/bin/env bash
# Bundling the host's own bash, strace, ps, ip, tcpdump and gdb for a distroless container:
# `crashcart-imgbuild --host` (bundle + relocate + write the ext3 image) side by side with
# exodus (PyPI exodus-bundler, tarball output), in one hyperfine run; then the output sizes,
# peak memory, and whether each result runs in the distroless test container. In the same
# hyperfine run, the one-command image `--host-set debug` (every program of ~25 packages);
# then exodus once on the same programs (it takes minutes).
#
# Usage: bench/host.sh [--write]   (--write replaces the host section of BENCHMARKS.md)
# Needs: hyperfine, /usr/bin/time, patchelf, debugfs, the six tools and the debug set's
# packages (tests/setup.sh); docker for the "runs" column; exodus on PATH or $EXODUS, else it
# is installed once into a venv under ~/.cache.
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

# Everything (outputs, staging, exodus's scratch) in memory: the build machine's disk is
# shared, and its queue, not the tools, set the pace otherwise.
work=$(mktemp -d -p /dev/shm)
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work
host_args=()
for t in "${tools[@]}"; do host_args+=(--host "$t"); done

load_start=$(cut -d' ' -f1 /proc/loadavg)
hyperfine --warmup 1 --runs 5 --export-json "$work/times.json" \
    -n "crashcart-imgbuild --host" "rm -f $work/host.img; $imgbuild ${host_args[*]} -o $work/host.img" \
    -n "crashcart-imgbuild --host-set debug" "rm -f $work/debug.img; $imgbuild -q --host-set debug -o $work/debug.img" \
    -n "exodus -t" "rm -f $work/exodus.tgz; $exodus -q -t -o $work/exodus.tgz ${tools[*]}" >&2

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
rm -f "$work/host.img" "$work/debug.img" "$work/exodus.tgz"
imgbuild_rss=$(rss "$imgbuild" "${host_args[@]}" -o "$work/host.img")
debug_rss=$(rss "$imgbuild" -q --host-set debug -o "$work/debug.img")
exodus_rss=$(rss "$exodus" -q -t -o "$work/exodus.tgz" "${tools[@]}")

# The debug set's programs (host paths, from the image's manifest), bundled by exodus once.
manifest_of() { debugfs -R "cat /.crashcart/manifest.json" "$1" 2>/dev/null; }
files_of() { manifest_of "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["files"])'; }
manifest_of "$work/debug.img" | python3 -c '
import json, sys
for path in sorted({p["host_path"] for p in json.load(sys.stdin)["programs"]}):
    print(path)' >"$work/debug-programs"
debug_programs=$(wc -l <"$work/debug-programs")
mapfile -t programs <"$work/debug-programs"
/usr/bin/time -f "%e %M" -o "$work/exodus-debug.time" \
    "$exodus" -q -t -o "$work/exodus-debug.tgz" "${programs[@]}" >/dev/null
read -r exodus_debug_time exodus_debug_rss <"$work/exodus-debug.time"

mkdir "$work/exodus" "$work/exodus-debug"
tar xzf "$work/exodus.tgz" -C "$work/exodus"
tar xzf "$work/exodus-debug.tgz" -C "$work/exodus-debug"
image_bytes=$(stat -c %s "$work/host.img")
image_used=$(( $(stat -c %b "$work/host.img") * $(stat -c %B "$work/host.img") ))
debug_bytes=$(stat -c %s "$work/debug.img")
debug_used=$(( $(stat -c %b "$work/debug.img") * $(stat -c %B "$work/debug.img") ))
host_files=$(files_of "$work/host.img")
debug_files=$(files_of "$work/debug.img")
exodus_tgz=$(stat -c %s "$work/exodus.tgz")
exodus_tree=$(du -sb "$work/exodus" | cut -f1)
exodus_files=$(find "$work/exodus" ! -type d | wc -l)
exodus_debug_tgz=$(stat -c %s "$work/exodus-debug.tgz")
exodus_debug_tree=$(du -sb "$work/exodus-debug" | cut -f1)
exodus_debug_files=$(find "$work/exodus-debug" ! -type d | wc -l)

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

load_end=$(cut -d' ' -f1 /proc/loadavg)
export BENCH_LOAD="$load_start at the start, $load_end at the end, on $(nproc) cores"
export BENCH_DATE=$(date -u +%Y-%m-%d) BENCH_DEBIAN=$(cat /etc/debian_version 2>/dev/null || echo '?')
export BENCH_TOOLS="${tools[*]}" debug_programs image_bytes image_used debug_bytes debug_used \
    host_files debug_files exodus_tgz exodus_tree exodus_files exodus_debug_tgz \
    exodus_debug_tree exodus_debug_files imgbuild_rss debug_rss exodus_rss exodus_debug_time \
    exodus_debug_rss runs_crashcart runs_exodus
section=$(python3 - "$work/times.json" <<'EOF'
import json, os, sys
e = os.environ
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
ours, debug, exo = r["crashcart-imgbuild --host"], r["crashcart-imgbuild --host-set debug"], r["exodus -t"]
mb = lambda b: f"{int(b) / 1e6:.1f} MB"
exo_debug = float(e["exodus_debug_time"])
print(f"""Written by `bench/host.sh --write` on {e['BENCH_DATE']}. Bundling the test machine's
`{e['BENCH_TOOLS']}`, and `--host-set debug` ({e['debug_programs']} programs of the set's packages),
Debian {e['BENCH_DEBIAN']}; hyperfine, 1 warmup + 5 runs (exodus on the debug set's programs: one run,
`/usr/bin/time`). Release build; outputs and scratch space on tmpfs.
Load average (1 min) {e['BENCH_LOAD']}: other jobs share the machine, compare the ratios.

Six tools:

| | crashcart-imgbuild --host | exodus -t (exodus-bundler) |
| --- | --- | --- |
| wall time, mean ± σ | {ours['mean']:.2f} s ± {ours['stddev']:.2f} | {exo['mean']:.2f} s ± {exo['stddev']:.2f} |
| output | ext3 image {mb(e['image_bytes'])} ({mb(e['image_used'])} allocated) | tarball {mb(e['exodus_tgz'])} ({mb(e['exodus_tree'])} unpacked) |
| files | {e['host_files']} | {e['exodus_files']} |
| peak RSS | {e['imgbuild_rss']} KB | {e['exodus_rss']} KB |
| gdb -p 1 in the distroless container | {e['runs_crashcart']} | {e['runs_exodus']} |

The one-command image (`--host-set debug`), against the six tools and against exodus on the
same {e['debug_programs']} programs:

| | --host-set debug | six tools (--host) | exodus -t, the same programs |
| --- | --- | --- | --- |
| wall time | {debug['mean']:.2f} s ± {debug['stddev']:.2f} | {ours['mean']:.2f} s ± {ours['stddev']:.2f} | {exo_debug:.1f} s (one run) |
| output | image {mb(e['debug_bytes'])} ({mb(e['debug_used'])} allocated) | image {mb(e['image_bytes'])} | tarball {mb(e['exodus_debug_tgz'])} ({mb(e['exodus_debug_tree'])} unpacked) |
| files | {e['debug_files']} | {e['host_files']} | {e['exodus_debug_files']} |
| peak RSS | {e['debug_rss']} KB | {e['imgbuild_rss']} KB | {e['exodus_debug_rss']} KB |

- Six tools: crashcart-imgbuild is **{exo['mean'] / ours['mean']:.1f}x** faster than exodus (target:
  under 5 s for the six), and its output is an image ready for `crashcart -i`.
- `--host-set debug` takes **{debug['mean'] / ours['mean']:.1f}x** the six tools' time for
  {int(e['debug_files']) / int(e['host_files']):.1f}x the files and {int(e['debug_bytes']) / int(e['image_bytes']):.1f}x the image; exodus takes
  **{exo_debug / debug['mean']:.0f}x** as long on the same programs.
- The images are larger than exodus's unpacked trees because they also carry what the tools
  need at run time and exodus leaves out: Python's standard library (about 10 MB; without one
  gdb 13 quits before attaching when its embedded Python cannot initialise), glibc's gconv
  modules (8 MB), the host's whole terminfo database (7 MB), gdb's data directory and the CA
  bundle; the debug set adds vim's runtime (40 MB), manual pages and groff's data. The seed's
  route (a nix or Docker build of the tool set) needs the network and cannot run offline: not
  measured.""")
EOF
)

printf '%s\n' "$section"
if [ "${1:-}" = --write ]; then
    write_section host "$section"
fi
