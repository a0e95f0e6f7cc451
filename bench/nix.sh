#!/usr/bin/env bash
# `crashcart-imgbuild --packages` on the offline fixture (tests/fixtures/nixpkgs), both store
# modes, cold store and warm store, side by side with doing it by hand (nix-build, copy the
# closure, rewrite /nix/store with perl, mke2fs -d); then the cost of the /nix/store ->
# /dev/.cart rewrite on a large store tree (/usr/lib/x86_64-linux-gnu under a fake store path):
# `--closure` with and without `--relocate`, which must add no more than 20%.
#
# Then the build on a CI runner's terms: from a warm local binary cache (`file://`, filled from
# the fixture) into a fresh store, today's way (nix substitutes the packages and builds the
# profile, builtin:buildenv, in its sandbox; crashcart-imgbuild --closure --profile) against
# crashcart-imgbuild --packages (nix only substitutes; the profile is merged without nix),
# unrestricted and under a seccomp filter denying mount (tests/support/deny.rs), where today's
# way fails. Last, a large closure (the fixture's cart-large: 6,018 files, 6,000 of them naming
# a store path): image size and build time with and without --relocate.
#
# Usage: bench/nix.sh [--write]   (--write replaces the nix section of BENCHMARKS.md)
# Needs: hyperfine, nix-build (offline is fine), perl, mke2fs, the fixture's host files.
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/lib.sh
imgbuild=${IMGBUILD:-$(release_bin crashcart-imgbuild crashcart-imgbuild)}
imgbuild=$(realpath "$imgbuild")
deny=${DENY:-$(release_bin crashcart-test-deny crashcart-tests)}

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

# A warm binary cache, as a runner would have (unsigned: require-sigs off).
build relocated "$work/cache-src" "$work/cache-src.img"
cache_paths=$(debugfs -R 'cat /.crashcart/manifest.json' "$work/cache-src.img" 2>/dev/null |
    python3 -c 'import json, sys; print(" ".join(json.load(sys.stdin)["store_paths"]))')
nix --extra-experimental-features nix-command copy --from "local?root=$work/cache-src/relocated" \
    --to "file://$work/cache?compression=none" $cache_paths 2>/dev/null
cache_config="substituters = file://$work/cache
require-sigs = false"
# Today's way: a buildenv profile built by nix, then its closure written by crashcart-imgbuild.
mkdir -p "$work/old-nix"
cat > "$work/old-nix/default.nix" <<'NIX'
{ nixpkgs }:
let
  pkgs = import nixpkgs { };
  names = [ "cart-check" "busybox" ];
  entry = i: name: [ "true" (toString (i + 1)) "1" pkgs.${name}.outPath ];
in
derivation {
  name = "crashcart-profile";
  system = builtins.currentSystem;
  builder = "builtin:buildenv";
  derivations = builtins.concatLists (builtins.genList (i: entry i (builtins.elemAt names i)) 2);
  manifest = builtins.toFile "crashcart-packages.json" (builtins.toJSON names);
  preferLocalBuild = true;
  allowSubstitutes = false;
}
NIX
cat > "$work/old-way.sh" <<'SCRIPT'
set -euo pipefail
store="local?root=$work/fresh/relocated"
profile=$(nix-build "$work/old-nix" --argstr nixpkgs "$fixture" --store "$store" \
    --option build-users-group '' --no-out-link)
nix-store --store "$store" -qR "$profile" > "$work/old.closure"
"$imgbuild" -q --closure "$work/old.closure" --profile "$profile" \
    --store-root "$work/fresh/relocated" --relocate /nix/store=/dev/.cart -o "$work/old.img"
SCRIPT
cat > "$work/new-way.sh" <<'SCRIPT'
set -euo pipefail
${RESTRICT:-} "$imgbuild" -q --packages "$work/packages" --nixpkgs "$fixture" \
    --nix-store "$work/fresh" -o "$work/new.img" 2>/dev/null
SCRIPT
export deny
fresh="chmod -R u+w $work/fresh 2>/dev/null || true; rm -rf $work/fresh $work/old.img $work/new.img"
NIX_CONFIG=$cache_config hyperfine --shell bash --runs 5 --export-json "$work/runner.json" \
    --prepare "$fresh" \
    -n "today: substitute, nix builds the profile (buildenv), --closure" "bash $work/old-way.sh" \
    -n "crashcart-imgbuild --packages: substitute, profile merged without nix" "bash $work/new-way.sh" \
    -n "crashcart-imgbuild --packages, mount denied (seccomp)" "RESTRICT='$deny mount' bash $work/new-way.sh" >&2
eval "$fresh"
old_restricted=$(NIX_CONFIG=$cache_config "$deny" mount bash "$work/old-way.sh" 2>&1 >/dev/null |
    grep -o "unable to make '/' private[^\"]*" | head -1 || true)
[ -n "$old_restricted" ] || old_restricted="(did not fail)"

# A large closure: cart-large, built once, then written with and without --relocate.
printf 'cart-large\n' > "$work/large.packages"
"$imgbuild" -q --packages "$work/large.packages" --nixpkgs "$fixture" --nix-store "$work/large" \
    -o "$work/large-packages.img" 2>/dev/null
debugfs -R 'cat /.crashcart/manifest.json' "$work/large-packages.img" 2>/dev/null |
    python3 -c 'import json, sys; m = json.load(sys.stdin); print("\n".join(m["store_paths"])); print(m["files"], m["relocated_files"], file=open(sys.argv[1], "w"))' "$work/large.counts" > "$work/large.closure"
large="$imgbuild -q --closure $work/large.closure --store-root $work/large/relocated"
hyperfine --runs 7 --export-json "$work/large.json" --prepare "rm -f $shm/large.img" \
    -n "cart-large: --closure" "$large -o $shm/large.img" \
    -n "cart-large: --closure with --relocate /nix/store=/dev/.cart" \
    "$large --relocate /nix/store=/dev/.cart -o $shm/large.img" >&2
$large -o "$work/large-plain.img"
$large --relocate /nix/store=/dev/.cart -o "$work/large-reloc.img"
large_sizes="$(stat -c %s "$work/large-plain.img") $(stat -c %s "$work/large-reloc.img") $(du -sb --apparent-size "$work/large/relocated/nix/store" | cut -f1)"

section=$(OLD_RESTRICTED=$old_restricted LARGE_SIZES=$large_sizes python3 - "$work" "$rel_img" "$rel_used" "$nat_img" "$nat_used" "$hand_img" "$tree_bytes" "$paths" "$matches" <<'PY'
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
runner = {r["command"]: r for r in json.load(open(f"{work}/runner.json"))["results"]}
names = list(runner)
today = runner[names[0]]["median"]
lines += [
    "",
    "On a CI runner's terms (`cart-check` + `busybox` from a warm local `file://` binary cache",
    "into a fresh store each run; 5 runs):",
    "",
    "| build | time | vs today |",
    "| --- | --- | --- |",
]
for name, r in runner.items():
    lines.append(f"| {name} | {ms(r)} | {r['median'] / today:.2f}x |")
import os
lines += [
    "",
    f"Today's way under the same filter fails: `{os.environ['OLD_RESTRICTED']}`.",
]
large = {r["command"]: r for r in json.load(open(f"{work}/large.json"))["results"]}
files, rewritten = open(f"{work}/large.counts").read().split()
plain_size, reloc_size, store_bytes = map(int, os.environ["LARGE_SIZES"].split())
names = list(large)
lines += [
    "",
    f"A large closure (the fixture's `cart-large` and busybox: {int(files):,} files, {mb(store_bytes)};",
    f"{int(rewritten):,} files rewritten by the relocation; image to tmpfs; 7 runs):",
    "",
    "| `crashcart-imgbuild` | time | image |",
    "| --- | --- | --- |",
    f"| {names[0]} | {ms(large[names[0]])} | {mb(plain_size)} |",
    f"| {names[1]} | {ms(large[names[1]])} | {mb(reloc_size)} |",
    "",
    f"`--relocate` on it: {(large[names[1]]['median'] / large[names[0]]['median'] - 1) * 100:+.1f}% (ratio of medians).",
]
print("\n".join(lines))
PY
)
echo "$section"
if [ "${1:-}" = --write ]; then
    write_section nix "$section"
fi
