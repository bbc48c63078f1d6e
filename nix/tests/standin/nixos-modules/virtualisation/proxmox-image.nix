# STAND-IN for nixpkgs' nixos/modules/virtualisation/proxmox-image.nix,
# which nix/proxmox-guest.nix imports through modulesPath. The real module
# declares the `proxmox.*` options and builds system.build.VMA; here those
# stay undeclared, and the settings below are the ones the real module
# makes that the stand-in checks would otherwise miss or double.
{ lib, ... }:

{
  system.build.VMA = {
    type = "derivation";
    name = "proxmox-standin-vma";
    outPath = "/nix/store/00000000000000000000000000000000-proxmox-standin-vma";
  };
  boot.kernelParams = [ "console=ttyS0" ];
  networking.hostName = lib.mkForce "";
  services.qemuGuest.enable = true;
}
