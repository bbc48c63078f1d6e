# The `lib`, and with it the module system, that the Nix checks evaluate
# Fabric's modules with: nixpkgs' real lib when the environment variable
# FABRIC_NIXPKGS_LIB names a copy of it (a checkout of nixpkgs or of
# nix-community/nixpkgs.lib: the directory holding lib/, or lib/ itself),
# the stand-in in ./standin/ otherwise. CI has no nixpkgs (no registry
# here serves it), so it runs the stand-in; anyone with a copy runs the
# same checks against the real thing (README.md, "Checking the Nix side").
let
  dir = builtins.getEnv "FABRIC_NIXPKGS_LIB";
  real = dir != "";
  libDir =
    if builtins.substring 0 1 dir != "/" then
      throw "FABRIC_NIXPKGS_LIB=${dir}: give an absolute path to a nixpkgs (or nixpkgs.lib) checkout"
    else if builtins.pathExists "${dir}/lib/default.nix" then
      "${dir}/lib"
    else if builtins.pathExists "${dir}/default.nix" && builtins.pathExists "${dir}/modules.nix" then
      dir
    else
      throw "FABRIC_NIXPKGS_LIB=${dir} holds neither lib/default.nix nor lib's own default.nix and modules.nix";
  lib = if real then import libDir else import ./standin/lib.nix;
in
{
  inherit lib real;
  # For the checks' summaries: which lib gave the result.
  name = if real then "nixpkgs lib ${lib.trivial.release} (${libDir})" else "stand-in lib";
}
