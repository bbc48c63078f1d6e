# An example fleet repository: what a Machine's spec.nix.flakeRef points at.
#
#   flakeRef: git+https://github.com/kubelize/fleet?ref=main#dns01
#             `------------ this flake -------------' `- a host below
#
# Each nixosConfigurations.<name> is one machine. cloud-init writes the
# flakeRef to /etc/nix-flake-target; `fabric bootstrap` switches to it once
# at first boot, and `fabric agent` (enabled in common.nix) follows every
# new commit from then on. See README.md.
{
  description = "Example Fabric fleet: the NixOS hosts that Machines converge on";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    fabric = {
      url = "github:kubelize/fabric";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    { nixpkgs, fabric, ... }:
    let
      host =
        hostModule:
        nixpkgs.lib.nixosSystem {
          modules = [
            # services.fabric.{bootstrap,agent}.
            fabric.nixosModules.default
            # What the Fabric Proxmox template runs (disk layout, boot
            # loader, cloud-init, guest agent, SSH keys only). A host must
            # keep it, or its first switch can leave it unbootable.
            fabric.nixosModules.proxmox-guest
            ./common.nix
            hostModule
            { nixpkgs.hostPlatform = "x86_64-linux"; }
          ];
        };
    in
    {
      nixosConfigurations = {
        # examples/machines/dns01.yaml
        dns01 = host ./dns01.nix;
        # examples/machines/basic.yaml: nothing but the common settings.
        basic = host { };
      };
    };
}
