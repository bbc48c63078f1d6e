{
  description = "Fabric: declare NixOS machines on Proxmox in Git and keep them that way";

  # No flake.lock is committed yet: it can only be written with network
  # access (README.md, "The lock file"). Until then every evaluation
  # locks nixos-25.11 afresh.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      # Where the `fabric` binary is built. The Proxmox template is x86_64
      # only, like Proxmox VE itself.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      template = self.nixosConfigurations.proxmox-template;
    in
    {
      overlays.default = final: _prev: {
        # Not `fabric`: nixpkgs has an unrelated package by that name.
        kubelize-fabric = final.callPackage ./nix/package.nix { };
      };

      packages = lib.recursiveUpdate (forAllSystems (pkgs: rec {
        fabric = pkgs.callPackage ./nix/package.nix { };
        default = fabric;
      })) { x86_64-linux.proxmox-template = template.config.system.build.VMA; };

      nixosModules = {
        # The module, with `services.fabric.package` defaulting to this
        # flake's build. `key` lets a configuration import it more than once
        # (directly and through proxmox-guest) without defining that twice.
        fabric =
          { lib, pkgs, ... }:
          {
            key = "github:kubelize/fabric#nixosModules.fabric";
            imports = [ ./nix/module.nix ];
            services.fabric.package = lib.mkDefault (
              self.packages.${pkgs.stdenv.hostPlatform.system}.fabric
                or (pkgs.callPackage ./nix/package.nix { })
            );
          };
        default = self.nixosModules.fabric;

        # What the template runs and a host keeps running: disk layout,
        # boot loader, cloud-init, guest agent, SSH, bootstrap on.
        proxmox-guest = {
          key = "github:kubelize/fabric#nixosModules.proxmox-guest";
          imports = [
            self.nixosModules.fabric
            ./nix/proxmox-guest.nix
          ];
        };
      };

      nixosConfigurations.proxmox-template = nixpkgs.lib.nixosSystem {
        modules = [
          self.nixosModules.proxmox-guest
          ./nix/proxmox-template.nix
          { nixpkgs.hostPlatform = "x86_64-linux"; }
        ];
      };

      checks = lib.recursiveUpdate (forAllSystems (pkgs: {
        fabric = self.packages.${pkgs.stdenv.hostPlatform.system}.fabric;

        # The same checks CI runs without nixpkgs: every .nix file parses,
        # and the module's unit wiring holds against the stand-in.
        nix-files =
          pkgs.runCommand "fabric-nix-files"
            {
              nativeBuildInputs = [
                pkgs.nix
                pkgs.python3
                pkgs.util-linux
              ];
              src = lib.fileset.toSource {
                root = ./.;
                # known_hosts: the example fleet pins its forge's host key.
                fileset = lib.fileset.fileFilter (
                  file: file.hasExt "nix" || file.hasExt "sh" || file.name == "known_hosts"
                ) ./.;
              };
            }
            ''
              # A private store, as nixpkgs' own lib tests use: the sandbox
              # has no nix-daemon and a read-only /nix/store.
              export HOME=$TMPDIR
              export NIX_STORE_DIR=$TMPDIR/store NIX_STATE_DIR=$TMPDIR/state
              export NIX_LOG_DIR=$TMPDIR/log NIX_CONF_DIR=$TMPDIR/etc
              # No root, nix-daemon or bubblewrap in a build; the VM test
              # covers the units' sandbox here.
              export FABRIC_SKIP_SANDBOX_PROBE=1
              # nixpkgs is at hand here: evaluate with its real lib, not the
              # stand-in CI has to use.
              export FABRIC_NIXPKGS_LIB=${nixpkgs}
              nix-store --init
              bash $src/nix/check.sh $src
              touch $out
            '';
      })) {
        x86_64-linux = {
          # The whole template evaluates and builds (not the VMA itself:
          # that needs the Proxmox-patched QEMU and takes long).
          proxmox-template = template.config.system.build.toplevel;

          # Boots a machine with the module and checks the units systemd
          # actually loads: conditions, ordering, sandbox, readiness.
          module-vm = nixpkgs.legacyPackages.x86_64-linux.testers.runNixOSTest (
            import ./nix/tests/vm.nix { inherit self; }
          );
        };
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.git
            pkgs.nix
          ];
        };
      });
    };
}
