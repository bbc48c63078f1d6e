# The `fabric` binary, built from this repository and its Cargo.lock.
#
# Called by the flake (`packages.<system>.fabric`, `overlays.default`) and,
# when pkgs has no `kubelize-fabric`, by the module's `services.fabric.package`
# default. Some dependencies need Rust 1.89 (serde-saphyr), so this needs
# nixpkgs 25.11 or later.
{
  lib,
  rustPlatform,
}:

let
  workspace = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "fabric";
  inherit (workspace.workspace.package) version;

  # Only what cargo reads: editing docs, examples or the Nix files does not
  # rebuild the binary.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "--package"
    "fabric"
  ];

  # The workspace's tests run real Nix, Git and cloud-init against temporary
  # roots; the build sandbox has none of them (no nix-daemon, no network).
  # CI runs them with ./test.sh; the flake's checks run the NixOS module
  # tests and the template build.
  doCheck = false;

  meta = {
    description = "Declare NixOS machines on Proxmox in Git and keep them that way";
    homepage = "https://github.com/kubelize/fabric";
    license = lib.licenses.asl20;
    mainProgram = "fabric";
    platforms = lib.platforms.linux;
  };
}
