#!/usr/bin/env bash
# A compressed image (`crashcart -i crashcart.img.zst`) against the raw image: the first run,
# which unpacks into the cache (SHA-256 of the .zst, decompression, fsync), a later run from
# the cache, the raw image, and what a user would otherwise do (`zstd -d` by hand, then the raw
# image). The image: crashcart-imgbuild --host bundling bash, strace, gdb, tcpdump, ps, ip and
# file from this machine, compressed as the release compresses it (zstd -19 --long=27 -T1).
# Every crashcart run is cold (nothing holds the loop device). Writes the bench:packed section
# of BENCHMARKS.md. Needs root, docker, hyperfine, zstd (tests/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release -q -p crashcart -p crashcart-imgbuild
cc=$(release_bin crashcart crashcart)
imgbuild=$(release_bin crashcart-imgbuild crashcart-imgbuild)

work=$(mktemp -d)
name=release-zst-bench-$$
cleanup() {
    docker rm -f "$name" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"$imgbuild" -q --host bash --host strace --host gdb --host tcpdump --host ps --host ip \
    --host file -o "$work/tools.img"
zstart=$(date +%s.%N)
zstd -q -19 --long=27 -T1 "$work/tools.img" -o "$work/tools.img.zst"
zend=$(date +%s.%N)
mkdir -p "$work/ctx"
cp /bin/busybox "$work/ctx/busybox"
cp tests/fixtures/distroless/Dockerfile "$work/ctx/"
DOCKER_BUILDKIT=0 docker build -q -t crashcart-test-distroless:latest "$work/ctx" >/dev/null
id=$(docker run -d --name "$name" crashcart-test-distroless:latest)
cache=$work/cache
run=(/dev/crashcart/bin/bash -c :)

hyperfine -N --style none --warmup 1 --runs 10 --export-markdown "$work/times.md" \
    --prepare "rm -rf $cache" \
    -n "crashcart -i tools.img.zst, first run (unpacks)" \
    "env CRASHCART_CACHE=$cache $cc -i $work/tools.img.zst $id ${run[*]}" \
    --prepare "rm -f $work/by-hand.img" \
    -n "zstd -d by hand, then crashcart -i tools.img" \
    "sh -c 'zstd -dq --long=27 $work/tools.img.zst -o $work/by-hand.img && $cc -i $work/by-hand.img $id ${run[*]}'" \
    --prepare "env CRASHCART_CACHE=$cache $cc -i $work/tools.img.zst $id ${run[*]}" \
    -n "crashcart -i tools.img.zst, cached" \
    "env CRASHCART_CACHE=$cache $cc -i $work/tools.img.zst $id ${run[*]}" \
    --prepare "true" \
    -n "crashcart -i tools.img (raw)" \
    "$cc -i $work/tools.img $id ${run[*]}" >/dev/null

rm -rf "$cache"
rss_first=$(env CRASHCART_CACHE="$cache" /usr/bin/time -f %M "$cc" -i "$work/tools.img.zst" "$id" "${run[@]}" 2>&1 >/dev/null | tail -1)
rss_cached=$(env CRASHCART_CACHE="$cache" /usr/bin/time -f %M "$cc" -i "$work/tools.img.zst" "$id" "${run[@]}" 2>&1 >/dev/null | tail -1)
rss_raw=$(/usr/bin/time -f %M "$cc" -i "$work/tools.img" "$id" "${run[@]}" 2>&1 >/dev/null | tail -1)
rss_zstd=$(/usr/bin/time -f %M zstd -dq --long=27 -c "$work/tools.img.zst" 2>&1 >/dev/null | tail -1)

mean() { grep -F "\`$1\`" "$work/times.md" | head -1 | awk -F'|' '{print $3}' | awk '{print $1}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
first=$(mean "crashcart -i tools.img.zst, first run (unpacks)")
hand=$(mean "zstd -d by hand, then crashcart -i tools.img")
cached=$(mean "crashcart -i tools.img.zst, cached")
raw=$(mean "crashcart -i tools.img (raw)")
raw_mb=$(du -m --apparent-size "$work/tools.img" | cut -f1)
zst_mb=$(awk -v b="$(stat -c %s "$work/tools.img.zst")" 'BEGIN { printf "%.1f", b / 1048576 }')
compress_s=$(awk -v a="$zstart" -v b="$zend" 'BEGIN { printf "%.1f", b - a }')

section=$work/section.md
{
    echo "### Compressed images (\`bench/packed.sh\`, $(date -u +%Y-%m-%d), kernel $(uname -r))"
    echo
    echo "Image: \`crashcart-imgbuild --host\` bash, strace, gdb, tcpdump, ps, ip, file: ${raw_mb} MB raw,"
    echo "${zst_mb} MB as \`zstd -19 --long=27 -T1\` (${compress_s} s to compress, once, at release)."
    echo "Command: \`bash -c :\` from the image in a distroless container, every run cold (loop"
    echo "device attached and detached). Mean wall time, 10 runs each, hyperfine -N; the first-run"
    echo "and by-hand rows start from an empty cache / no unpacked file each time."
    echo
    cat "$work/times.md"
    echo
    echo "- first run / raw image: **$(ratio "$first" "$raw")x** (the one-time unpack: SHA-256 of the"
    echo "  .zst, decompression, fsync of the copy); unpacking by hand first: **$(ratio "$hand" "$raw")x**"
    echo "- cached run / raw image: **$(ratio "$cached" "$raw")x** (what remains: the SHA-256 of the"
    echo "  ${zst_mb} MB .zst, the key, on every run)"
    echo "- peak RSS: first run $rss_first KiB, cached $rss_cached KiB, raw $rss_raw KiB; \`zstd -d\`"
    echo "  alone $rss_zstd KiB (decompression streams 1 MiB at a time; the window, 128 MiB for"
    echo "  \`--long=27\`, is most of it, in either)"
    echo
    echo "Run again: \`sudo bench/packed.sh\`."
} >"$section"

write_section packed "$(cat "$section")"
cat "$section"
