# NixOS VM test of the Fabric module: the flake check `module-vm`
# (`nix build .#checks.x86_64-linux.module-vm`). It needs nixpkgs and KVM,
# so it runs where those exist, not in this repository's CI.
#
# It checks what the stand-in evaluation (eval-standin.nix) cannot: that
# NixOS renders the units, that systemd honours their conditions, that the
# agent starts, reports READY=1 and serves metrics inside its sandbox, and
# that a switch changing or removing the agent leaves it running until
# fabric-agent-upgrade moves it onto the new definition or stops it.
{ self }:

{
  name = "fabric-module";

  nodes.machine =
    { lib, pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];

      services.fabric.bootstrap.enable = true;
      services.fabric.agent = {
        enable = true;
        # There is nothing to converge on in the test: the remote is absent,
        # so every cycle fails early and the agent keeps running.
        flake = "git+file:///var/lib/fleet?ref=main#machine";
        interval = "10s";
      };

      environment.systemPackages = [ pkgs.curl ];

      # Specialisations add to this configuration, so changed values need
      # mkForce.
      specialisation.newAgent.configuration = {
        services.fabric.agent.interval = lib.mkForce "20s";
      };
      specialisation.noAgent.configuration = {
        services.fabric.agent.enable = lib.mkForce false;
      };
    };

  testScript = ''
    def prop(unit, name):
        return machine.succeed(f"systemctl show --property={name} --value {unit}").strip()

    machine.wait_for_unit("multi-user.target")

    with subtest("bootstrap is skipped, not failed, without a flake target"):
        machine.wait_until_succeeds("test \"$(systemctl show --property=ConditionResult --value fabric-bootstrap.service)\" = no")
        machine.fail("systemctl is-failed --quiet fabric-bootstrap.service")

    with subtest("bootstrap is skipped once the marker exists"):
        machine.succeed("echo 'git+file:///var/lib/fleet?ref=main#machine' > /etc/nix-flake-target")
        machine.succeed("chmod 0644 /etc/nix-flake-target")
        machine.succeed("touch /var/lib/nixos-bootstrap-complete")
        machine.succeed("systemctl start fabric-bootstrap.service")
        assert prop("fabric-bootstrap.service", "ConditionResult") == "no"
        assert prop("fabric-bootstrap.service", "Result") == "success"

    with subtest("the agent reports ready and serves metrics in its sandbox"):
        machine.wait_for_unit("fabric-agent.service")
        assert prop("fabric-agent.service", "Type") == "notify"
        assert prop("fabric-agent.service", "WatchdogUSec") == "2min"
        assert prop("fabric-agent.service", "ProtectSystem") == "strict"
        machine.wait_until_succeeds("curl --fail --silent http://127.0.0.1:9750/metrics")

    with subtest("the fabric binary is installed"):
        machine.succeed("fabric agent --help")
        machine.succeed("fabric bootstrap --help")

    base = machine.succeed("readlink -f /run/current-system").strip()

    with subtest("a switch leaves the agent running, then the upgrade unit moves it"):
        old_pid = prop("fabric-agent.service", "MainPID")
        machine.succeed(f"{base}/specialisation/newAgent/bin/switch-to-configuration test")
        machine.wait_until_succeeds(
            f"test \"$(systemctl show --property=MainPID --value fabric-agent.service)\" != {old_pid}"
        )
        machine.wait_for_unit("fabric-agent.service")
        pid = prop("fabric-agent.service", "MainPID")
        machine.succeed(f"tr '\\0' ' ' < /proc/{pid}/cmdline | grep -q -- '--interval 20s'")

    with subtest("a switch that turns the agent off stops it afterwards"):
        machine.succeed(f"{base}/specialisation/noAgent/bin/switch-to-configuration test")
        machine.wait_until_succeeds("test \"$(systemctl show --property=ActiveState --value fabric-agent.service)\" = inactive")
        machine.fail("systemctl is-failed --quiet fabric-agent.service")
  '';
}
