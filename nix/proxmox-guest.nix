# What every Fabric machine on Proxmox runs.
#
# The template image is built from it (nix/proxmox-template.nix), and host
# flakes import it (the flake's `nixosModules.proxmox-guest`), so the first
# switch keeps the disk layout, boot loader, cloud-init and guest agent the
# template booted with. A host that drops them can fail to boot, or lose the
# admin user and the network cloud-init set up.
#
# nixpkgs' proxmox-image.nix already sets several of these; they are spelled
# out here so the template does not silently change when those defaults do.
{
  lib,
  modulesPath,
  pkgs,
  ...
}:

{
  imports = [
    # Disk layout (/dev/disk/by-label/nixos, GRUB on /dev/vda), virtio
    # drivers, and system.build.VMA, the image `qmrestore` reads.
    "${modulesPath}/virtualisation/proxmox-image.nix"
    ./module.nix
  ];

  # cloud-init creates the admin user, sets the hostname and the static
  # network, and writes /etc/nix-flake-target. The network part renders
  # systemd-networkd files, so it has to be asked for.
  services.cloud-init = {
    enable = true;
    network.enable = true;
    # Proxmox hands cloud-init a NoCloud drive (or a ConfigDrive with
    # citype configdrive2). Without a list, cloud-init also probes cloud
    # metadata services that do not exist here and waits for each to time
    # out. None: a VM booted without a drive still gets through boot.
    settings.datasource_list = [
      "NoCloud"
      "ConfigDrive"
      "None"
    ];
  };

  # The hostname sticks only if NixOS does not manage it (field notes:
  # cloud-init on NixOS).
  networking.hostName = lib.mkForce "";

  # cloud-init adds the admin user at runtime; with immutable users the
  # next switch or boot would delete it.
  users.mutableUsers = true;

  # Proxmox shows the IP and lets `qm guest exec` / shutdown work.
  services.qemuGuest.enable = true;

  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "no";
    };
  };

  # The admin user cloud-init creates has SSH keys and no password, in the
  # wheel group; sudo asking for a password would lock it out of root.
  security.sudo.wheelNeedsPassword = false;

  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];
  # Flakes are fetched from Git (the fetcher needs the binary), and
  # operators debug with it.
  environment.systemPackages = [ pkgs.git ];

  # Serial console: Proxmox's serial0 is a socket, reached with
  # `qm terminal <vmid>`. systemd starts a getty on the console= device.
  boot.kernelParams = [ "console=ttyS0,115200n8" ];
  boot.loader.grub.extraConfig = ''
    serial --unit=0 --speed=115200
    terminal_input serial console
    terminal_output serial console
  '';

  # Clones get bigger disks than the template image: grow the root
  # partition and its file system at boot.
  boot.growPartition = true;
  fileSystems."/".autoResize = true;

  # First boot: switch to the Machine's flake. The completion marker makes
  # this a no-op on every later boot, in the template and in hosts alike.
  services.fabric.bootstrap.enable = lib.mkDefault true;

  # The release the template was installed with. A host keeps it: it
  # describes the machine's state on disk, not the nixpkgs it builds with.
  system.stateVersion = lib.mkDefault "25.11";
}
