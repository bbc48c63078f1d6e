# STAND-IN for the NixOS options nix/module.nix reads or sets, declared with
# the types NixOS gives them (as far as the stand-in lib has them) and
# defaults that play the same part. Everything else the modules under test
# set (boot, services.openssh, proxmox, ...) stays undeclared and is merged
# freely by the stand-in module system.
{ lib, pkgs, ... }:

let
  inherit (lib) mkOption types;
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    nix.package = mkOption {
      type = types.package;
      default = pkgs.nix;
    };
    nix.settings = mkOption {
      type = types.attrsOf types.unspecified;
      default = { };
    };
    networking.proxy.envVars = mkOption {
      type = types.attrsOf types.str;
      default = { };
    };
    systemd.package = mkOption {
      type = types.package;
      default = pkgs.systemd;
    };
    # In NixOS these are attrsOf submodules with many more options and
    # defaults (restartIfChanged = true, wantedBy = [ ], ...); the checks
    # read absent ones as those defaults.
    systemd.services = mkOption {
      type = types.attrsOf types.unspecified;
      default = { };
    };
    systemd.paths = mkOption {
      type = types.attrsOf types.unspecified;
      default = { };
    };
    systemd.timers = mkOption {
      type = types.attrsOf types.unspecified;
      default = { };
    };
  };

  # What NixOS builds from all of the above; here only something to point at.
  config.system.build.toplevel = {
    type = "derivation";
    name = "nixos-system-standin";
    outPath = "/nix/store/00000000000000000000000000000000-nixos-system-standin";
  };
}
