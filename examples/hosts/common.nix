# Settings every host in this fleet shares.
{ lib, ... }:

{
  services.fabric.agent = {
    enable = true;
    # flake = null (the default): follow /etc/nix-flake-target, i.e. the
    # Machine's flakeRef, so one configuration serves whatever branch or
    # fork the Machine names.
    interval = "5m";
    # Roll back any generation that would lock us out. mkBefore: this
    # check runs before a host's own (dns01.nix), which NixOS would
    # otherwise put first, as it does a later module's list definitions.
    healthChecks = lib.mkBefore [ "systemctl is-active --quiet sshd.service" ];
    reboot = "when-needed";
  };

  # The admin user and its keys come from the Machine, through cloud-init
  # (users.mutableUsers stays true in proxmox-guest). Declare users here
  # instead if you prefer them in Git; then keep the Machine's adminUser
  # out of their way.

  time.timeZone = "UTC";
}
