#!/usr/bin/env bash
# `crashcart-imgbuild --packages` on the offline fixture (tests/fixtures/nixpkgs), both store
# modes, cold store and warm store, side by side with doing it by hand (nix-build, copy the
# closure, rewrite /nix/store with perl, mke2fs -d); then the cost of the /nix/store ->
# /dev/.cart rewrite on a large store tree (/usr/lib/x86_64-linux-gnu under a fake store path):
# `--closure` with and without `--relocate`, which must add no more than 20%.
#
# Usage: bench/nix.sh [--write]   (--write replaces the nix section of BENCHMARKS.md)
# Needs: hyperfine, nix-build (offline is fine), perl, mke2fs, the fixture's host files.
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/lib.sh
imgbuild=${IMGBUILD:-$(release_bin crashcart-imgbuild crashcart-imgbuild)}
imgbuild=$(realpath "$imgbuild")

work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
export NIX_CONFIG='substituters ='
fixture=$PWD/tests/fixtures/nixpkgs
printf 'cart-check\nbusybox\n' > "$work/packages"
build() { # build MODE STORE IMAGE
    "$imgbuild" -q --packages "$work/packages" --nixpkgs "$fixture" --store-mode "$1" \
        --nix-store "$2" -o "$3" 2>/dev/null
}
export -f build
export imgbuild work fixture

# By hand, what the image builder replaces: build, copy the closure, rewrite, mke2fs -d.
cat > "$work/by-hand.sh" <<'SCRIPT'
set -euo pipefail
store="local?root=$work/hand-store"
out=$(nix-build "$fixture" -A cart-check -A busybox --store "$store" --option build-users-group '' --no-out-link 2>/dev/null)
rm -rf "$work/hand-tree" "$work/hand.img"
mkdir -p "$work/hand-tree/store"
for p in $(nix-store --store "$store" -qR $out); do cp -a "$work/hand-store$p" "$work/hand-tree/store/"; done
chmod -R u+w "$work/hand-tree"
find "$work/hand-tree" -type f -exec perl -pi -0777 -e 's{/nix/store}{/dev/.cart}g' {} +
find "$work/hand-tree" -type l | while read -r l; do
    t=$(readlink "$l"); ln -sfn "${t//\/nix\/store//dev/.cart}" "$l"
done
size=$(( $(du -sk "$work/hand-tree" | cut -f1) * 2 + 4096 ))
mke2fs -q -F -t ext3 -d "$work/hand-tree" "$work/hand.img" "${size}k" >/dev/null
SCRIPT

# Warm stores: one build each beforehand.
build relocated "$work/warm" "$work/warm-relocated.img"
build native "$work/warm" "$work/warm-native.img"
bash "$work/by-hand.sh"

hyperfine --shell bash --runs 5 --export-json "$work/fixture.json" \
    --prepare "chmod -R u+w $work/cold 2>/dev/null || true; rm -rf $work/cold $work/f.img" \
    -n "relocated, cold store" "build relocated $work/cold $work/f.img" \
    -n "native, cold store" "build native $work/cold $work/f.img" \
    -n "relocated, warm store" "build relocated $work/warm $work/f.img" \
    -n "native, warm store" "build native $work/warm $work/f.img" \
    -n "by hand: nix-build, cp, perl, mke2fs -d (warm)" "bash $work/by-hand.sh" >&2

size_of() { stat -c %s "$1"; }
used_of() { echo $(( $(stat -c %b "$1") * $(stat -c %B "$1") )); }
closure_bytes() { # closure_bytes MODE-DIR
    du -sb --apparent-size "$1"/*/*-cart-* "$1"/*/*-busybox-* "$1"/*/*-fixture-glibc "$1"/*/*-crashcart-* 2>/dev/null |
        awk '{s += $1} END {print s}'
}
rel_img=$(size_of "$work/warm-relocated.img"); rel_used=$(used_of "$work/warm-relocated.img")
nat_img=$(size_of "$work/warm-native.img"); nat_used=$(used_of "$work/warm-native.img")
hand_img=$(size_of "$work/hand.img")
paths=$(debugfs -R 'cat /.crashcart/manifest.json' "$work/warm-relocated.img" 2>/dev/null |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["store_paths"]))')

# The rewrite on a large tree: a copy of the host's libraries as one fake store path.
fake=/nix/store/0c7vdyfm3w1yzsxw5i1vy5aq35rsp8rx-host-libraries
mkdir -p "$work/big$(dirname "$fake")"
cp -a /usr/lib/x86_64-linux-gnu "$work/big$fake"
echo "$fake" > "$work/closure"
tree_bytes=$(du -sb "$work/big" | cut -f1)
matches=$(grep -roF /nix/store "$work/big" | wc -l || true)
# Alternating pairs, not one command's runs after the other's: on a shared machine load
# comes and goes, and each pair sees about the same.
# The image goes to tmpfs: what is measured is the writer's work, not the shared disk's queue.
shm=$(mktemp -d -p /dev/shm crashcart-bench-nix.XXXXXX)
trap 'rm -rf "$shm"; chmod -R u+w "$work"; rm -rf "$work"' EXIT
python3 - "$work" "$imgbuild" "$shm" <<'PY' >&2
import json, resource, statistics, subprocess, sys, time
work, imgbuild, shm = sys.argv[1], sys.argv[2], sys.argv[3]
base = [imgbuild, "-q", "--closure", f"{work}/closure", "--store-root", f"{work}/big", "-o", f"{shm}/big.img"]
commands = {"closure": base, "closure + relocate": base + ["--relocate", "/nix/store=/dev/.cart"]}
def once(argv):
    subprocess.run(["rm", "-f", f"{shm}/big.img"], check=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
for argv in commands.values():
    once(argv)  # warm the page cache
runs = {name: [] for name in commands}
for _ in range(9):
    for name, argv in commands.items():
        runs[name].append(once(argv))
json.dump(runs, open(f"{work}/rewrite.json", "w"))
for name, r in runs.items():
    print(f"{name}: wall median {statistics.median(w for w, _ in r):.3f} s, cpu median {statistics.median(c for _, c in r):.3f} s")
PY

section=$(python3 - "$work" "$rel_img" "$rel_used" "$nat_img" "$nat_used" "$hand_img" "$tree_bytes" "$paths" "$matches" <<'PY'
import json, statistics, sys
work, rel_img, rel_used, nat_img, nat_used, hand_img, tree, paths, matches = (
    sys.argv[1], *map(int, sys.argv[2:]))
fx = {r["command"]: r for r in json.load(open(f"{work}/fixture.json"))["results"]}
rw = json.load(open(f"{work}/rewrite.json"))
ms = lambda r: f'{r["median"] * 1000:.0f} ms (mean {r["mean"] * 1000:.0f} ± {r["stddev"] * 1000:.0f})'
mb = lambda b: f"{b / 2**20:.1f} MiB"
hand = fx["by hand: nix-build, cp, perl, mke2fs -d (warm)"]["median"]
lines = [
    "Written by `bench/nix.sh --write` (hyperfine; medians, ratios of medians; offline:",
    "`NIX_CONFIG='substituters ='`).",
    "",
    f"Fixture (`cart-check` + `busybox` from `tests/fixtures/nixpkgs`, {paths} store paths; cold =",
    "empty nix store: nix evaluates, imports the host files and builds 6 derivations; 5 runs):",
    "",
    "| build | time | vs by hand |",
    "| --- | --- | --- |",
]
for name, r in fx.items():
    lines.append(f"| {name} | {ms(r)} | {r['median'] / hand:.2f}x |")
lines += [
    "",
    f"Image size: relocated {mb(rel_img)} ({mb(rel_used)} allocated), native {mb(nat_img)} "
    f"({mb(nat_used)} allocated); by hand with `mke2fs -d` {mb(hand_img)}.",
    "",
    f"The rewrite on a large store tree ({mb(tree)}: `/usr/lib/x86_64-linux-gnu` as one store path,",
    f"holding {matches} occurrences of `/nix/store`, so this is mostly the cost of scanning every",
    "byte; page cache warm, image written to tmpfs; 9 alternating pairs, medians):",
    "",
    "| `crashcart-imgbuild` | wall | CPU (user + system) |",
    "| --- | --- | --- |",
]
plain, reloc = rw["closure"], rw["closure + relocate"]
median = statistics.median
wall = lambda runs: median(w for w, _ in runs)
cpu_of = lambda runs: median(c for _, c in runs)
wall_ratio = median(r[0] / p[0] for p, r in zip(plain, reloc))
cpu_ratio = median(r[1] / p[1] for p, r in zip(plain, reloc))
lines += [
    f"| `--closure` | {wall(plain) * 1000:.0f} ms | {cpu_of(plain) * 1000:.0f} ms |",
    f"| `--closure --relocate /nix/store=/dev/.cart` | {wall(reloc) * 1000:.0f} ms "
    f"| {cpu_of(reloc) * 1000:.0f} ms |",
    "",
    f"`--relocate` adds {(wall_ratio - 1) * 100:.1f}% to the image build's wall time and "
    f"{(cpu_ratio - 1) * 100:.1f}% to its CPU time (medians of the per-pair ratios); budget: 20%.",
]
print("\n".join(lines))
PY
)
echo "$section"
if [ "${1:-}" = --write ]; then
    write_section nix "$section"
fi
