# The crashcart tool set: the packages named in `packages` (one nixpkgs attribute per line),
# with the outputs `nix-env -i` would install of each.
#
# crashcart-imgbuild calls this with the list already parsed, twice:
#   nix-instantiate --eval --strict --json nix/ -A plan --argstr packagesJSON '["strace","gdb"]'
#   nix-build nix/ -A outputs --argstr packagesJSON '["strace","gdb"]'
# (plus `--argstr nixpkgs /path/to/nixpkgs`). `nixpkgs` is anything that `import nixpkgs { ... }`
# turns into an attribute set of derivations: by default the revision pinned in pin.json, or a
# checkout, or the offline test fixture.
#
# To move the pin, follow nix/README.md: set `rev` in pin.json to a nixpkgs commit and `sha256` to what
#   nix-prefetch-url --unpack https://github.com/NixOS/nixpkgs/archive/REV.tar.gz
# prints; the same packages file and pin always give the same image.
{
  packagesJSON,
  nixpkgs ? null,
  pin ? builtins.fromJSON (builtins.readFile ./pin.json),
}:
let
  source =
    if nixpkgs != null then
      nixpkgs
    else
      builtins.fetchTarball {
        name = "nixpkgs-${pin.rev}";
        url = "https://github.com/NixOS/nixpkgs/archive/${pin.rev}.tar.gz";
        inherit (pin) sha256;
      };
  # No user config or overlays (~/.config/nixpkgs): same packages file, same pin, same image.
  pkgs = import source {
    config = { };
    overlays = [ ];
  };

  names = builtins.fromJSON packagesJSON;

  # `a.b.c` names a nested attribute (e.g. `python3Packages.requests`).
  attrPath = name: builtins.filter builtins.isString (builtins.split "\\." name);
  lookup =
    name:
    builtins.foldl' (
      set: key: if set != null && builtins.isAttrs set && set ? ${key} then set.${key} else null
    ) pkgs (attrPath name);
  # A package is a derivation. A name whose evaluation throws (a removed alias) counts as
  # present, so that nix's own message says what became of it.
  isPackage =
    name:
    let
      found = builtins.tryEval (lookup name);
    in
    !found.success || (found.value.type or null) == "derivation";

  unknown = builtins.filter (name: !(isPackage name)) names;

  # The outputs nix-env would install: only the one named when the attribute selects an
  # output (`bind.dnsutils`, `outputSpecified`), else `meta.outputsToInstall` (e.g. openssl's
  # `bin` and `man`, not `dev`), else every output.
  outputsOf =
    pkg:
    let
      all = pkg.outputs or [ (pkg.outputName or "out") ];
    in
    if pkg.outputSpecified or false then
      [ (pkg.outputName or "out") ]
    else
      pkg.meta.outputsToInstall or all;

  selected = map (
    name:
    let
      pkg = lookup name;
    in
    {
      inherit name;
      outputs = map (output: pkg.${output}) (outputsOf pkg);
    }
  ) names;

  check =
    value:
    if names == [ ] then
      throw "crashcart-no-packages"
    else if unknown != [ ] then
      throw "crashcart-unknown-packages: ${builtins.toJSON unknown}"
    else
      value;
in
{
  # What crashcart-imgbuild reads (`nix-instantiate --eval --strict --json -A plan`): per
  # package, in file order, the store paths of the outputs it installs. The profile (every
  # package's files linked into one tree, the one listed first winning where two ship the
  # same file) is crashcart-imgbuild's own work, done without nix: building a profile
  # derivation would need nix's build sandbox, which CI runners deny.
  plan = check (
    map (p: {
      inherit (p) name;
      outputs = map (drv: drv.outPath) p.outputs;
    }) selected
  );

  # What nix realises (`nix-build -A outputs`): those outputs, substituted from a binary cache
  # or built where nix may build.
  outputs = check (builtins.concatMap (p: p.outputs) selected);
}
