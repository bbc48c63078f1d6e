# STAND-IN EVALUATION of flake.nix's outputs, and of the example fleet
# flake (examples/hosts/flake.nix) on top of them, without nixpkgs.
#
# Both flakes' `outputs` functions are called with a fake `nixpkgs` input:
# a `lib` (nixpkgs' real one when FABRIC_NIXPKGS_LIB names a copy, the
# stand-in otherwise: nix/tests/module-system.nix) with a `lib.fileset`
# that only records its arguments; `lib.nixosSystem` is that lib's
# evalModules over the stand-in NixOS options (nix/tests/standin/nixos.nix);
# `legacyPackages` are the
# stand-in packages, whose `callPackage` records what it was asked to build
# and builds nothing. What this checks is the flakes' own wiring: which
# outputs exist, that the NixOS modules compose (the `key` that lets a host
# import Fabric's modules twice, the flake's package winning over the
# module's default), and that the template, the VM test's machine and the
# example hosts configure the units as intended. Whether nixpkgs builds any
# of it is left to `nix flake check` where nixpkgs exists.
#
#   nix-instantiate --eval --strict nix/tests/flake-standin.nix -A summary
let
  moduleSystem = import ./module-system.nix;
  inherit (moduleSystem) lib;
  standinPkgs = import ./standin/pkgs.nix;

  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    fromJSON
    length
    replaceStrings
    toJSON
    ;

  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];

  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/11111111111111111111111111111111-${name}";
  };

  pkgsFor =
    system:
    standinPkgs
    // {
      stdenv.hostPlatform.system = system;
      callPackage =
        path: args:
        fakeDrv "fabric-0.1.0-${system}"
        // {
          calledWith = {
            path = toString path;
            inherit args;
          };
        };
      runCommand = name: env: script: fakeDrv name // { inherit env script; };
      mkShell = args: fakeDrv "shell" // { inherit args; };
      testers.runNixOSTest = test: fakeDrv "vm-test-run-${test.name}" // { inherit test; };
      cargo = fakeDrv "cargo";
      rustc = fakeDrv "rustc";
      clippy = fakeDrv "clippy";
      rustfmt = fakeDrv "rustfmt";
      python3 = fakeDrv "python3";
    };

  nixosSystem =
    { modules, ... }:
    lib.evalModules {
      modules = [ ./standin/nixos.nix ] ++ modules;
      specialArgs = {
        pkgs = pkgsFor "x86_64-linux";
        modulesPath = toString ./standin/nixos-modules;
      };
    };

  nixpkgs = {
    # What `${nixpkgs}` names in a build: a source tree holding lib/.
    outPath = "/nix/store/22222222222222222222222222222222-source";
    lib = lib // {
      inherit nixosSystem;
      fileset = {
        toSource = args: fakeDrv "source" // { inherit args; };
        fileFilter = predicate: root: { inherit predicate root; };
        unions = list: { inherit list; };
      };
    };
    legacyPackages = lib.genAttrs systems pkgsFor;
  };

  fabric = (import ../../flake.nix).outputs {
    self = fabric // {
      outPath = toString ../..;
    };
    inherit nixpkgs;
  };

  fleet = (import ../../examples/hosts/flake.nix).outputs {
    self = fleet;
    inherit nixpkgs;
    fabric = fabric;
  };

  flakePackage = fabric.packages.x86_64-linux.fabric;
  exeOf = unit: builtins.head (argvOf unit.serviceConfig.ExecStart);
  argvOf =
    execStart:
    map (replaceStrings [ "%%" "$$" ] [ "%" "$" ]) (
      fromJSON "[${replaceStrings [ "\" \"" ] [ "\",\"" ] execStart}]"
    );

  template = fabric.nixosConfigurations.proxmox-template.config;
  vmTest = fabric.checks.x86_64-linux.module-vm.test;
  vmNode = modules: (nixosSystem { modules = [ vmTest.nodes.machine ] ++ modules; }).config;
  vmMachine = vmNode [ ];
  # NixOS keeps a specialisation's configuration as a module (mkForce and
  # all) and adds it to the parent's; take it from the node's module
  # itself, as NixOS does.
  vmSpecialisation =
    (vmTest.nodes.machine {
      inherit lib;
      pkgs = pkgsFor "x86_64-linux";
    }).specialisation;
  vmNewAgent = vmNode [ vmSpecialisation.newAgent.configuration ];
  vmNoAgent = vmNode [ vmSpecialisation.noAgent.configuration ];
  dns01 = fleet.nixosConfigurations.dns01.config;
  basic = fleet.nixosConfigurations.basic.config;

  eq = name: actual: expected: {
    inherit name;
    ok = actual == expected;
    detail = "expected ${toJSON expected}, got ${toJSON actual}";
  };
  holds = name: ok: {
    inherit name ok;
    detail = "does not hold";
  };

  checks = [
    (eq "flake: outputs" (attrNames fabric) [
      "checks"
      "devShells"
      "nixosConfigurations"
      "nixosModules"
      "overlays"
      "packages"
    ])
    (eq "packages: x86_64-linux" (attrNames fabric.packages.x86_64-linux) [
      "default"
      "fabric"
      "proxmox-template"
    ])
    (eq "packages: aarch64-linux" (attrNames fabric.packages.aarch64-linux) [
      "default"
      "fabric"
    ])
    (eq "packages: default is fabric" fabric.packages.x86_64-linux.default flakePackage)
    (eq "packages: fabric is nix/package.nix" flakePackage.calledWith.path (toString ../package.nix))
    (eq "packages: the template is its VMA" fabric.packages.x86_64-linux.proxmox-template template.system.build.VMA)
    (eq "overlay: kubelize-fabric from nix/package.nix" (
      (fabric.overlays.default (pkgsFor "x86_64-linux") { }).kubelize-fabric.calledWith.path
    ) (toString ../package.nix))
    (eq "nixosModules" (attrNames fabric.nixosModules) [
      "default"
      "fabric"
      "proxmox-guest"
    ])
    (eq "nixosModules: default is fabric" (moduleKey fabric.nixosModules.default) "github:kubelize/fabric#nixosModules.fabric")
    (eq "nixosModules: fabric's key" (moduleKey fabric.nixosModules.fabric) "github:kubelize/fabric#nixosModules.fabric")
    (eq "nixosModules: proxmox-guest's key" (moduleKey fabric.nixosModules.proxmox-guest) "github:kubelize/fabric#nixosModules.proxmox-guest")
    (eq "nixosConfigurations" (attrNames fabric.nixosConfigurations) [ "proxmox-template" ])
    (eq "checks: x86_64-linux" (attrNames fabric.checks.x86_64-linux) [
      "fabric"
      "module-vm"
      "nix-files"
      "proxmox-template"
    ])
    (eq "checks: aarch64-linux" (attrNames fabric.checks.aarch64-linux) [
      "fabric"
      "nix-files"
    ])
    (eq "checks: the template's system" fabric.checks.x86_64-linux.proxmox-template template.system.build.toplevel)
    (holds "checks: nix-files runs nix/check.sh" (
      builtins.match ".*bash \\$src/nix/check.sh \\$src\n.*" fabric.checks.x86_64-linux.nix-files.script != null
    ))
    # The build sees only the files its fileset keeps; nix/check.sh reads
    # these besides the .nix and .sh files.
    (eq "checks: nix-files keeps the files the checks read" (
      let
        keeps = fabric.checks.x86_64-linux.nix-files.env.src.args.fileset.predicate;
        file = name: {
          inherit name;
          hasExt = ext: builtins.match ".*\\.${ext}" name != null;
        };
      in
      map (name: keeps (file name)) [
        "known_hosts"
        "module.nix"
        "check.sh"
        "README.md"
      ]
    ) [ true true true false ])
    (holds "checks: nix-files uses nixpkgs' real lib" (
      builtins.match ".*\nexport FABRIC_NIXPKGS_LIB=${nixpkgs.outPath}\n.*" fabric.checks.x86_64-linux.nix-files.script != null
    ))

    # The template: the flake's package (mkDefault in nixosModules.fabric)
    # wins over the module's own default, and nixosModules.fabric, imported
    # twice (directly and through proxmox-guest), defines it once.
    (eq "template: platform" template.nixpkgs.hostPlatform.system "x86_64-linux")
    (eq "template: bootstrap on" template.services.fabric.bootstrap.enable true)
    (eq "template: agent off" template.services.fabric.agent.enable false)
    (eq "template: the flake's fabric" template.services.fabric.package flakePackage)
    (eq "template: bootstrap runs it" (exeOf template.systemd.services.fabric-bootstrap) "${flakePackage}/bin/fabric")
    (eq "template: image name" template.proxmox.filenameSuffix "nixos-fabric-template")

    # The VM test's machine and its specialisations.
    (eq "vm test: name" vmTest.name "fabric-module")
    (eq "vm test: agent argv" (argvOf vmMachine.systemd.services.fabric-agent.serviceConfig.ExecStart) [
      "${flakePackage}/bin/fabric"
      "agent"
      "--flake"
      "git+file:///var/lib/fleet?ref=main#machine"
      "--interval"
      "10s"
      "--health-timeout"
      "60s"
      "--reboot"
      "never"
      "--metrics-address"
      "127.0.0.1:9750"
    ])
    (holds "vm test: the new agent has a new definition" (
      vmNewAgent.systemd.services.fabric-agent.environment.FABRIC_AGENT_DEFINITION
      != vmMachine.systemd.services.fabric-agent.environment.FABRIC_AGENT_DEFINITION
    ))
    (eq "vm test: ...and so does the definition unit"
      vmNewAgent.systemd.services.fabric-agent-definition.restartTriggers
      [ vmNewAgent.systemd.services.fabric-agent.environment.FABRIC_AGENT_DEFINITION ]
    )
    (eq "vm test: without the agent" (vmNoAgent.systemd.services ? fabric-agent) false)
    (eq "vm test: ...its definition is off" vmNoAgent.systemd.services.fabric-agent-definition.restartTriggers [
      "agent off"
    ])
    (holds "vm test: the script's units are the module's" (
      all' (unit: builtins.match ".*${unit}.*" vmTest.testScript != null) [
        "fabric-bootstrap.service"
        "fabric-agent.service"
        "specialisation/newAgent"
        "specialisation/noAgent"
      ]
    ))

    # The example fleet: Fabric's modules imported twice, the agent on.
    (eq "fleet: hosts" (attrNames fleet.nixosConfigurations) [
      "basic"
      "dns01"
    ])
    (eq "fleet: the flake's fabric" dns01.services.fabric.package flakePackage)
    # The fleet-wide check first: common.nix adds it with mkBefore, or
    # NixOS would put dns01.nix's (the later module's) first.
    (eq "fleet: dns01 agent argv" (argvOf dns01.systemd.services.fabric-agent.serviceConfig.ExecStart) [
      "${flakePackage}/bin/fabric"
      "agent"
      "--interval"
      "5m"
      "--health-check"
      "systemctl is-active --quiet sshd.service"
      "--health-check"
      "systemctl is-active --quiet unbound.service"
      "--health-timeout"
      "60s"
      "--reboot"
      "when-needed"
      "--metrics-address"
      "127.0.0.1:9750"
    ])
    (eq "fleet: dns01 keeps the bootstrap" (dns01.systemd.services ? fabric-bootstrap) true)
    (eq "fleet: dns01 hostname from cloud-init" dns01.networking.hostName "")
    (eq "fleet: basic has only the common checks" (
      filter (w: builtins.match "systemctl.*" w != null) (
        argvOf basic.systemd.services.fabric-agent.serviceConfig.ExecStart
      )
    ) [ "systemctl is-active --quiet sshd.service" ])
  ];

  all' = pred: list: builtins.all pred list;

  # A module's key, calling it first if it is a function.
  moduleKey =
    m:
    (
      if builtins.isFunction m then
        m {
          inherit lib;
          pkgs = pkgsFor "x86_64-linux";
        }
      else
        m
    ).key or null;

  failed = filter (c: !c.ok) checks;
in
{
  summary =
    if failed == [ ] then
      "${toString (length checks)} passed, 0 failed, with the ${moduleSystem.name}"
    else
      throw (
        "flake.nix stand-in (${moduleSystem.name}): ${toString (length failed)} of ${toString (length checks)} checks failed:\n"
        + concatStringsSep "\n" (map (c: "  - ${c.name}: ${c.detail}") failed)
      );
}
