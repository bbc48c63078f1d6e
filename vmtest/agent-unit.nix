# The agent unit the VM test installs: nix/module.nix's own
# `systemd.services.fabric-agent`, evaluated with the stand-in module system
# (nix/tests/standin/, as nix/tests/eval-standin.nix does), so ExecStart=,
# Type=notify, WatchdogSec= and the sandbox come from the module itself and
# not from a second copy. vmtest/run.py renders the attribute set into a
# unit file.
#
#   nix-instantiate --eval --strict --json vmtest/agent-unit.nix \
#     --argstr fabricPackage /nix/store/...-fabric --argstr interval 20s \
#     --argstr watchdogSec 15s --argstr healthCheck '...' \
#     [--argstr sshKeyFile /run/agenix/key --argstr knownHostsFile /run/agenix/known_hosts]
#
# sshKeyFile and knownHostsFile, when given, set the module's
# services.fabric.credentials options (scenario 10's rotation); left out,
# the options keep their defaults and the agent its first-boot files.
{
  fabricPackage,
  interval,
  watchdogSec,
  healthCheck,
  sshKeyFile ? null,
  knownHostsFile ? null,
}:
let
  lib = import ../nix/tests/standin/lib.nix;
  evalModules = import ../nix/tests/standin/modules.nix { inherit lib; };
  pkgs = import ../nix/tests/standin/pkgs.nix;
  config =
    (evalModules {
      modules = [
        ../nix/tests/standin/nixos.nix
        ../nix/module.nix
        {
          # The binary under test, at the store path the guest registers it
          # under (nix-store --add gives the same path on host and guest).
          services.fabric.package = {
            type = "derivation";
            name = "fabric";
            outPath = fabricPackage;
          };
          services.fabric.agent = {
            enable = true;
            # A test cannot wait the default 5m per commit, nor three 2min
            # watchdog periods: set as a NixOS user would.
            inherit interval;
            healthChecks = [ healthCheck ];
          };
          systemd.services.fabric-agent.serviceConfig.WatchdogSec = watchdogSec;
        }
        (
          if sshKeyFile == null && knownHostsFile == null then
            { }
          else
            {
              services.fabric.credentials = { inherit sshKeyFile knownHostsFile; };
            }
        )
      ];
      strict = [
        [
          "services"
          "fabric"
        ]
      ];
      specialArgs = {
        inherit pkgs;
        modulesPath = toString ../nix/tests/standin/nixos-modules;
      };
    }).config;
in
config.systemd.services.fabric-agent
