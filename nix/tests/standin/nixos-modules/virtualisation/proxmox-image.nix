# STAND-IN for nixpkgs' nixos/modules/virtualisation/proxmox-image.nix
# (nixos-25.11), which nix/proxmox-guest.nix imports through modulesPath.
# It declares the `proxmox.*` options Fabric's template sets, with that
# file's types, defaults and `apply`, and makes the settings of that file
# that the checks would otherwise miss or double. It builds no image:
# system.build.VMA is a name to point at. Not mirrored: the image build,
# the assertions, the boot loader and initrd settings, and
# `services.sshd.enable` (an alias of services.openssh.enable in nixpkgs).
{ config, lib, ... }:

let
  inherit (lib) mkOption types;
  cfg = config.proxmox;
in
{
  options.proxmox = {
    qemuConf = {
      cores = mkOption {
        type = types.ints.positive;
        default = 1;
      };
      memory = mkOption {
        type = types.ints.positive;
        default = 1024;
      };
      # nixpkgs: "nixos-${config.system.nixos.label}".
      name = mkOption {
        type = types.str;
        default = "nixos";
      };
      additionalSpace = mkOption {
        type = types.str;
        default = "512M";
      };
      net0 = mkOption {
        type = types.commas;
        default = "virtio=00:00:00:00:00:00,bridge=vmbr0,firewall=1";
      };
      # The template's one disk, and the boot order naming it; the VMA is
      # written with drive-virtio0 whatever these say.
      virtio0 = mkOption {
        type = types.str;
        default = "local-lvm:vm-9999-disk-0";
      };
      boot = mkOption {
        type = types.str;
        default = "order=virtio0";
      };
      serial0 = mkOption {
        type = types.str;
        default = "socket";
      };
      # What qemu-server.conf wants: "1" or "0".
      agent = mkOption {
        type = types.bool;
        apply = x: if x then "1" else "0";
        default = true;
      };
    };
    filenameSuffix = mkOption {
      type = types.str;
      default = cfg.qemuConf.name;
    };
    cloudInit = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      defaultStorage = mkOption {
        type = types.str;
        default = "local-lvm";
      };
      device = mkOption {
        type = types.str;
        default = "ide2";
      };
    };
  };

  config = {
    system.build.VMA = {
      type = "derivation";
      name = "proxmox-standin-vma";
      outPath = "/nix/store/00000000000000000000000000000000-proxmox-standin-vma";
    };
    boot.growPartition = true;
    boot.kernelParams = [ "console=ttyS0" ];
    fileSystems."/" = {
      device = "/dev/disk/by-label/nixos";
      autoResize = true;
      fsType = "ext4";
    };
    networking = lib.mkIf cfg.cloudInit.enable {
      hostName = lib.mkForce "";
      useDHCP = false;
    };
    services = {
      cloud-init = lib.mkIf cfg.cloudInit.enable {
        enable = true;
        network.enable = true;
      };
      qemuGuest.enable = true;
    };
  };
}
