# The Fabric Proxmox template: `nix build .#proxmox-template` gives
# result/vzdump-qemu-nixos-fabric-template.vma.zst for `qmrestore`.
# docs/proxmox-template.md walks from there to a Machine.
#
# Everything a Fabric machine needs is in proxmox-guest.nix; this file only
# sizes the image and the VM it restores to. A Machine overrides cores,
# memory, disk size and network when it clones the template.
{
  imports = [ ./proxmox-guest.nix ];

  proxmox = {
    qemuConf = {
      name = "nixos-fabric-template";
      # The one disk, and the one a Machine's disk size resizes. nixpkgs
      # writes it into the VMA as `drive-virtio0` whatever this says, so
      # these only spell out its defaults; the function Input's template
      # `bootDisk` (default virtio0) must name the same slot, which
      # crates/fabric/tests/proxmox_guide.rs checks.
      virtio0 = "local-lvm:vm-9999-disk-0";
      boot = "order=virtio0";
      cores = 2;
      memory = 2048;
      # Room for the first switch's downloads even before the clone's disk
      # has been grown.
      additionalSpace = "2048M";
      # Restore with `qmrestore --unique` so clones get fresh MAC addresses.
      net0 = "virtio=00:00:00:00:00:00,bridge=vmbr0,firewall=1";
      serial0 = "socket";
      agent = true;
    };
    # The cloud-init drive the restored VM gets; the Machine's clone replaces
    # its contents with the rendered user-data snippet.
    cloudInit = {
      enable = true;
      defaultStorage = "local-lvm";
      device = "ide2";
    };
    filenameSuffix = "nixos-fabric-template";
  };
}
