#!/usr/bin/env bash
# Writing a ~1 GB tree of real binaries and libraries (a copy of /usr/lib/x86_64-linux-gnu and
# /usr/bin) into an ext3 image, side by side in one hyperfine run:
#   crashcart-imgbuild --dir           (ours: libext2fs metadata, our own pwrite of the data)
#   mke2fs -t ext3 -d                  (the same library, block by block through its cache)
#   mkfs.ext3 + loop mount + cp -a     (the seed's way; needs root)
#   cp -a into a directory             (the floor: just copying the files)
# then peak memory (/usr/bin/time), image size against the tree's apparent size, the cost
# of --relocate on the same tree read as a closure (the nix images' path), and one run each
# beside mke2fs -d of 200,000 and 1,000,000 empty files and of a 1 TiB sparse file.
#
# Usage: bench/imgbuild.sh [--write]   (--write replaces the imgbuild section of BENCHMARKS.md)
# Needs: hyperfine, /usr/bin/time, e2fsprogs, python3; root for the seed's way. BENCH_DIR
# (default /var/tmp) must have room for the tree and three images (about 5 GB).
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
imgbuild=${IMGBUILD:-$(release_bin crashcart-imgbuild crashcart-imgbuild)}
runs=${RUNS:-5}

base=${BENCH_DIR:-/var/tmp}
need_kb=$((5 * 1024 * 1024))
free_kb=$(df -Pk "$base" | awk 'NR == 2 { print $4 }')
if [ "$free_kb" -lt "$need_kb" ]; then
    echo "bench/imgbuild.sh: $base has $((free_kb / 1024)) MiB free, needs $((need_kb / 1024)) MiB (set BENCH_DIR)" >&2
    exit 1
fi
work=$(mktemp -d "$base/crashcart-bench-imgbuild.XXXXXX")
cleanup() {
    mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
    rm -rf "$work"
}
trap cleanup EXIT

# The tree: the same bytes a user would put in a tool image. As a closure store path too,
# so --relocate can be measured on it.
tree=$work/store/nix/store/00000000000000000000000000000000-usr
mkdir -p "$tree" "$work/out" "$work/mnt"
cp -a /usr/lib/x86_64-linux-gnu "$tree/lib"
cp -a /usr/bin "$tree/bin"
echo "/nix/store/00000000000000000000000000000000-usr" > "$work/closure.txt"
apparent=$(du -sb --apparent-size "$tree" | cut -f1)
files=$(find "$tree" | wc -l)

# Our image sizes itself. mke2fs and the seed's mkfs.ext3 need room for their defaults (5%
# reserved for root, a larger journal, an inode per 16 KiB): a quarter more than the files.
"$imgbuild" -q --dir "$tree" -o "$work/out/probe.img"
image_bytes=$(stat -c %s "$work/out/probe.img")
image_used=$(( $(stat -c %b "$work/out/probe.img") * $(stat -c %B "$work/out/probe.img") ))
rm -f "$work/out/probe.img"
size_k=$((apparent * 5 / 4 / 1024))k

commands=(
    -n "crashcart-imgbuild --dir" "$imgbuild -q --dir $tree -o $work/out/ours.img"
    -n "mke2fs -t ext3 -d" "mke2fs -q -F -t ext3 -d $tree $work/out/mke2fs.img $size_k"
)
if [ "$(id -u)" = 0 ]; then
    commands+=(-n "mkfs.ext3 + mount + cp -a (seed)"
        "mkfs.ext3 -q -F $work/out/seed.img $size_k && mount -o loop $work/out/seed.img $work/mnt && cp -a $tree/. $work/mnt/ && umount $work/mnt")
fi
commands+=(-n "cp -a" "cp -a $tree $work/out/copy")

# Each run starts from an empty output directory with no dirty pages of the last one pending.
hyperfine --warmup 1 --runs "$runs" --export-json "$work/times.json" \
    --prepare "rm -rf $work/out/*; sync" "${commands[@]}" >&2

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
rm -rf "$work/out/"*
ours_rss=$(rss "$imgbuild" -q --dir "$tree" -o "$work/out/ours.img")
mke2fs_rss=$(rss mke2fs -q -F -t ext3 -d "$tree" "$work/out/mke2fs.img" "$size_k")
e2fsck -fn "$work/out/ours.img" >/dev/null

# --relocate on the same bytes read as a closure: what a relocated nix image costs extra.
rm -rf "$work/out/"*
hyperfine --warmup 1 --runs "$runs" --export-json "$work/relocate.json" \
    --prepare "rm -rf $work/out/*; sync" \
    -n "closure" "$imgbuild -q --closure $work/closure.txt --store-root $work/store -o $work/out/c.img" \
    -n "closure + relocate" "$imgbuild -q --closure $work/closure.txt --store-root $work/store --relocate /nix/store=/dev/.cart -o $work/out/r.img" >&2

# Many small files: 200 directories of 1,000 empty files (the directory and inode paths,
# where a per-file cost shows). One run each; mke2fs needs -N for that many inodes.
rm -rf "$work/out/"* "$work/store"
python3 - "$work/many" <<'PY'
import os, sys
for d in range(200):
    p = os.path.join(sys.argv[1], f"d{d:03}")
    os.makedirs(p)
    for i in range(1000):
        open(os.path.join(p, f"some-longer-file-name-{i:05}.txt"), "w").close()
PY
sync
many_ours=$(/usr/bin/time -f "%e s, %M KB" "$imgbuild" -q --dir "$work/many" -o "$work/out/many.img" 2>&1 | tail -1)
e2fsck -fn "$work/out/many.img" >/dev/null
sync
many_mke2fs=$(/usr/bin/time -f "%e s, %M KB" mke2fs -q -F -t ext3 -N 210000 -d "$work/many" "$work/out/many-mke2fs.img" 1G 2>&1 | tail -1)
rm -rf "$work/out/"* "$work/many"

# A million: 1,000 directories of 1,000 empty files, generated once and used by both tools.
# Peak RSS is what the target (< 64 MiB) is about; the tree's names go to a scratch file.
python3 - "$work/million" <<'PY'
import os, sys
for d in range(1000):
    p = os.path.join(sys.argv[1], f"d{d:03}")
    os.makedirs(p)
    for i in range(1000):
        open(os.path.join(p, f"some-longer-file-name-{i:05}.txt"), "w").close()
PY
sync
million_ours=$(/usr/bin/time -f "%e s, %M KB" "$imgbuild" -q --dir "$work/million" -o "$work/out/million.img" 2>&1 | tail -1)
e2fsck -fn "$work/out/million.img" >/dev/null
million_image=$(( $(stat -c %s "$work/out/million.img") / 1000000 ))
rm -f "$work/out/million.img"
sync
million_mke2fs=$(/usr/bin/time -f "%e s, %M KB" mke2fs -q -F -t ext3 -N 1010000 -d "$work/million" "$work/out/million-mke2fs.img" 4G 2>&1 | tail -1)
rm -rf "$work/out/"* "$work/million"

# A 1 TiB sparse file holding 12 KiB (start, middle, end): the content hash reads the data,
# not the apparent size. ext4 for both: mke2fs -t ext3 -d refuses a file this large.
mkdir -p "$work/sparse"
truncate -s 1T "$work/sparse/huge"
for at in 0 $((1 << 39)) $(((1 << 40) - 4096)); do
    head -c 4096 /dev/urandom | dd of="$work/sparse/huge" bs=4096 seek=$((at / 4096)) conv=notrunc status=none
done
sparse_ours=$(/usr/bin/time -f "%e s, %M KB" "$imgbuild" -q --fs ext4 --dir "$work/sparse" -o "$work/out/sparse.img" 2>&1 | tail -1)
e2fsck -fn "$work/out/sparse.img" >/dev/null
sparse_mke2fs=$(/usr/bin/time -f "%e s, %M KB" mke2fs -q -F -t ext4 -d "$work/sparse" "$work/out/sparse-mke2fs.img" 64M 2>&1 | tail -1)
rm -rf "$work/out/"* "$work/sparse"

section=$(python3 - "$work/times.json" "$work/relocate.json" <<EOF
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
rel = {x["command"]: x for x in json.load(open(sys.argv[2]))["results"]}
ours, mke = r["crashcart-imgbuild --dir"], r["mke2fs -t ext3 -d"]
seed = r.get("mkfs.ext3 + mount + cp -a (seed)")
cp = r["cp -a"]
mb = lambda b: f"{int(b) / 1e6:.0f} MB"
t = lambda x: f"{x['mean']:.2f} s ± {x['stddev']:.2f}"
rows = [("crashcart-imgbuild --dir", ours), ("mke2fs -t ext3 -d", mke)]
if seed:
    rows.append(("mkfs.ext3 + loop mount + cp -a + umount (the seed's way, root)", seed))
rows.append(("cp -a into a directory", cp))
table = "\n".join(f"| {n} | {t(x)} | {x['mean'] / ours['mean']:.2f}x |" for n, x in rows)
plain, reloc = rel["closure"], rel["closure + relocate"]
print(f"""Written by \`bench/imgbuild.sh --write\` on $(date -u +%Y-%m-%d). Tree: a copy of
\`/usr/lib/x86_64-linux-gnu\` and \`/usr/bin\` (Debian $(cat /etc/debian_version 2>/dev/null || echo '?')),
{mb($apparent)} apparent, $files entries; hyperfine, 1 warmup + $runs runs, \`sync\` before each.
Release build. Ours sizes itself; mke2fs and mkfs.ext3 are given 1.25x the files (what their
defaults need).

| | wall time, mean ± σ | relative to ours |
| --- | --- | --- |
{table}

- crashcart-imgbuild takes **{ours['mean'] / mke['mean']:.2f}x** the time of \`mke2fs -d\`
  (target ≤ 0.6x){f", **{ours['mean'] / seed['mean']:.2f}x** the seed's way" if seed else ""}.
  It does not fsync the finished image (a build output renamed into place, like a compiler's);
  mke2fs does.
- Peak RSS: crashcart-imgbuild $ours_rss KB, mke2fs $mke2fs_rss KB (target < 64 MiB; bounded
  by a few 1 MiB chunk buffers and the directories: other names go to a scratch file).
- Image: {mb($image_bytes)} for {mb($apparent)} of files, **{($image_bytes / $apparent - 1) * 100:+.1f}%**
  (target ≤ +10%); {mb($image_used)} allocated on disk. \`e2fsck -fn\` clean.
- \`--relocate /nix/store=/dev/.cart\` on the same tree as a closure: {t(reloc)} against
  {t(plain)}, **{(reloc['mean'] / plain['mean'] - 1) * 100:+.0f}%** (target ≤ +20%).
- 200,000 empty files in 200 directories (one run each, wall time and peak RSS):
  crashcart-imgbuild $many_ours; mke2fs -d -N 210000 $many_mke2fs.
- 1,000,000 empty files in 1,000 directories (one run each, wall time and peak RSS):
  crashcart-imgbuild **$million_ours** (target < 64 MiB; image $million_image MB, \`e2fsck -fn\`
  clean); mke2fs -d -N 1010000 $million_mke2fs.
- A 1 TiB sparse file holding 12 KiB, \`--fs ext4\` (one run each, wall time and peak RSS):
  crashcart-imgbuild $sparse_ours (\`e2fsck -fn\` clean); mke2fs -t ext4 -d $sparse_mke2fs.""")
EOF
)

printf '%s\n' "$section"
if [ "${1:-}" = --write ]; then
    write_section imgbuild "$section"
fi
