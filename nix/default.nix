# The crashcart tool set: the packages named in `packages` (one nixpkgs attribute per line)
# joined into one profile, the way `nix-env -i` joins a user's packages.
#
# crashcart-imgbuild calls this with the list already parsed:
#   nix-build nix/ --argstr packagesJSON '["strace","gdb"]' [--argstr nixpkgs /path/to/nixpkgs]
# `nixpkgs` is anything that `import nixpkgs { ... }` turns into an attribute set of derivations:
# by default the revision pinned in pin.json, or a checkout, or the offline test fixture.
#
# To move the pin, set `rev` in pin.json to a nixpkgs commit and `sha256` to what
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

  # The outputs nix-env would install (e.g. openssl's `bin` and `man`, not `dev`).
  outputsOf =
    pkg: map (output: pkg.${output}) (pkg.meta.outputsToInstall or [ (pkg.outputName or "out") ]);

  # builtin:buildenv reads `derivations` as groups of: active, priority, output count,
  # output paths. Each package gets its own priority, in file order: when two packages
  # provide the same file, the one listed first wins instead of failing the build.
  entries = builtins.genList (
    i:
    let
      outputs = outputsOf (lookup (builtins.elemAt names i));
    in
    [
      "true"
      (toString (i + 1))
      (toString (builtins.length outputs))
    ]
    ++ outputs
  ) (builtins.length names);

  profile = derivation {
    name = "crashcart-profile";
    system = builtins.currentSystem;
    # Built into nix: links every package's files into one tree, no shell or stdenv needed,
    # so the same expression works on nixpkgs and on the test fixture.
    builder = "builtin:buildenv";
    derivations = builtins.concatLists entries;
    manifest = builtins.toFile "crashcart-packages.json" packagesJSON;
    preferLocalBuild = true;
    allowSubstitutes = false;
  };
in
if names == [ ] then
  throw "crashcart-no-packages"
else if unknown != [ ] then
  throw "crashcart-unknown-packages: ${builtins.toJSON unknown}"
else
  profile
