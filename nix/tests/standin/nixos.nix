# STAND-IN for the NixOS options that Fabric's modules (nix/module.nix,
# nix/proxmox-guest.nix, nix/proxmox-template.nix), the VM test's machine
# (nix/tests/vm.nix) and the example fleet (examples/hosts/) read or set.
# It works with the stand-in lib and with nixpkgs' real lib alike
# (nix/tests/module-system.nix picks one).
#
# As in NixOS, an option declared nowhere is an error: a module that sets
# a new NixOS option fails here until the option is declared below, with
# the type the named nixpkgs file gives it. Each declaration names that
# file (nixos/… in NixOS/nixpkgs at nixos-25.11); where the type here is
# simpler than nixpkgs' the comment says how. Only the options' types and
# defaults are mirrored, not what NixOS builds from them (unit files,
# /etc, the system closure).
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption types;

  # nixos/lib/systemd-unit-options.nix `unitOption`: a [Unit]/[Service]
  # setting; list definitions (repeatable settings) concatenate, other
  # definitions must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    description = "systemd option";
    merge =
      loc: defs:
      if builtins.isList (builtins.head defs).value then
        builtins.concatMap (
          def:
          if builtins.isList def.value then
            def.value
          else
            throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list"
        ) defs
      else
        lib.mergeEqualOption loc defs;
  };

  listOfUnits = mkOption {
    # unitNameType in nixpkgs: a string matching a unit name.
    type = types.listOf types.str;
    default = [ ];
  };

  # nixos/lib/systemd-unit-options.nix: commonUnitOptions,
  # stage2CommonUnitOptions, serviceOptions and stage2ServiceOptions, the
  # options a `systemd.services.<name>` has (those Fabric uses, and the
  # dependency lists next to them).
  serviceOptions = {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      description = mkOption {
        # singleLineStr in nixpkgs.
        type = types.str;
        default = "";
      };
      documentation = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      wantedBy = listOfUnits;
      requiredBy = listOfUnits;
      requires = listOfUnits;
      wants = listOfUnits;
      after = listOfUnits;
      before = listOfUnits;
      bindsTo = listOfUnits;
      partOf = listOfUnits;
      conflicts = listOfUnits;
      unitConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
      restartTriggers = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      environment = mkOption {
        type = types.attrsOf (
          types.nullOr (
            types.oneOf [
              types.str
              types.path
              types.package
            ]
          )
        );
        default = { };
      };
      path = mkOption {
        type = types.listOf (
          types.oneOf [
            types.package
            types.str
          ]
        );
        default = [ ];
      };
      serviceConfig = mkOption {
        # nixpkgs adds a check of Type= and Restart= (checkService).
        type = types.attrsOf unitOption;
        default = { };
      };
      # nixpkgs turns a non-empty script into ExecStart=; not mirrored.
      script = mkOption {
        type = types.lines;
        default = "";
      };
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      stopIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
    };
  };
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    # nixos/modules/misc/assertions.nix
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    # nixos/modules/config/system-path.nix
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };

    # nixos/modules/config/nix.nix
    nix.package = mkOption {
      type = types.package;
      default = pkgs.nix;
    };
    # nixos/modules/config/nix.nix: a submodule whose freeformType is
    # this type; only freeform settings are set here.
    nix.settings = mkOption {
      type =
        let
          confAtom = types.nullOr (
            types.oneOf [
              types.bool
              types.int
              types.float
              types.str
              types.path
              types.package
            ]
          );
        in
        types.attrsOf (types.either confAtom (types.listOf confAtom));
      default = { };
    };

    # nixos/modules/config/networking.nix
    networking.proxy.envVars = mkOption {
      type = types.attrs;
      default = { };
    };
    # nixos/modules/tasks/network-interfaces.nix (default: the distro id)
    networking.hostName = mkOption {
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
    };
    # nixos/modules/tasks/network-interfaces.nix
    networking.useDHCP = mkOption {
      type = types.bool;
      default = true;
    };
    # nixos/modules/services/networking/firewall.nix
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    # nixos/modules/services/networking/firewall.nix
    networking.firewall.allowedUDPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };

    # nixos/modules/system/boot/systemd.nix
    systemd.package = mkOption {
      type = types.package;
      default = pkgs.systemd;
    };
    # nixos/modules/system/boot/systemd.nix, with the unit options of
    # nixos/lib/systemd-unit-options.nix (serviceOptions above)
    systemd.services = mkOption {
      type = types.attrsOf (types.submodule serviceOptions);
      default = { };
    };

    # nixos/modules/system/boot/kernel.nix (each a kernelParam: a string,
    # with spaces only inside double quotes)
    boot.kernelParams = mkOption {
      type = types.listOf (types.strMatching "([^\"[:space:]]|\"[^\"]*\")+");
      default = [ ];
    };
    # nixos/modules/system/boot/loader/grub/grub.nix
    boot.loader.grub.extraConfig = mkOption {
      type = types.lines;
      default = "";
    };
    # nixos/modules/system/boot/grow-partition.nix
    boot.growPartition = mkOption {
      type = types.bool;
      default = false;
    };
    # nixos/modules/tasks/filesystems.nix
    fileSystems = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            device = mkOption {
              type = types.nullOr types.str;
              default = null;
            };
            fsType = mkOption {
              type = types.str;
              default = "auto";
            };
            autoResize = mkOption {
              type = types.bool;
              default = false;
            };
          };
        }
      );
      default = { };
    };

    # nixos/modules/config/users-groups.nix
    users.mutableUsers = mkOption {
      type = types.bool;
      default = true;
    };
    # nixos/modules/security/sudo.nix
    security.sudo.wheelNeedsPassword = mkOption {
      type = types.bool;
      default = true;
    };
    # nixos/modules/config/locale.nix (nixpkgs also refuses spaces)
    time.timeZone = mkOption {
      type = types.nullOr types.str;
      default = null;
    };

    # nixos/modules/services/system/cloud-init.nix
    services.cloud-init.enable = mkOption {
      type = types.bool;
      default = false;
    };
    # nixos/modules/services/system/cloud-init.nix
    services.cloud-init.network.enable = mkOption {
      type = types.bool;
      default = false;
    };
    # nixos/modules/services/system/cloud-init.nix: a submodule whose
    # freeformType is the YAML format's value type; `anything` merges the
    # same way for the settings set here.
    services.cloud-init.settings = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    # nixos/modules/virtualisation/qemu-guest-agent.nix
    services.qemuGuest.enable = mkOption {
      type = types.bool;
      default = false;
    };
    # nixos/modules/services/networking/ssh/sshd.nix
    services.openssh.enable = mkOption {
      type = types.bool;
      default = false;
    };
    # nixos/modules/services/networking/ssh/sshd.nix (a submodule with a
    # freeformType too; only declared settings are set here)
    services.openssh.settings = mkOption {
      type = types.submodule {
        options = {
          PasswordAuthentication = mkOption {
            type = types.bool;
            default = true;
          };
          KbdInteractiveAuthentication = mkOption {
            type = types.bool;
            default = true;
          };
          PermitRootLogin = mkOption {
            type = types.enum [
              "yes"
              "without-password"
              "prohibit-password"
              "forced-commands-only"
              "no"
            ];
            default = "prohibit-password";
          };
        };
      };
      default = { };
    };
    # nixos/modules/services/networking/unbound.nix
    services.unbound.enable = mkOption {
      type = types.bool;
      default = false;
    };
    # nixos/modules/services/networking/unbound.nix: a submodule with a
    # freeformType of unbound.conf sections; `anything` merges the same way
    # for the settings set here.
    services.unbound.settings = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };

    # nixos/modules/misc/version.nix (nixpkgs' default is the release,
    # with a warning)
    system.stateVersion = mkOption {
      type = types.str;
      default = "25.11";
    };
    # nixos/modules/system/activation/top-level.nix
    system.build = mkOption {
      type = types.lazyAttrsOf types.unspecified;
      default = { };
    };
    # nixos/modules/misc/nixpkgs.nix (applied with lib.systems.elaborate,
    # whose stand-in keeps only `system`)
    nixpkgs.hostPlatform = mkOption {
      type = types.either types.str types.attrs;
      apply = lib.systems.elaborate;
    };
    # nixos/modules/system/activation/specialisation.nix. In nixpkgs
    # `configuration` is a module added to the parent's; here it stays the
    # attribute set it was given (nix/tests/flake-standin.nix adds it).
    specialisation = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            inheritParentConfig = mkOption {
              type = types.bool;
              default = true;
            };
            configuration = mkOption {
              type = types.attrs;
              default = { };
            };
          };
        }
      );
      default = { };
    };
  };

  # What NixOS builds from all of the above; here only something to point
  # at. As nixos/modules/system/activation/top-level.nix does, it is there
  # only when every assertion holds (else "Failed assertions: - …"), and
  # evaluating it shows the warnings.
  config.system.build.toplevel = lib.asserts.checkAssertWarn config.assertions config.warnings {
    type = "derivation";
    name = "nixos-system-standin";
    outPath = "/nix/store/00000000000000000000000000000000-nixos-system-standin";
  };
}
