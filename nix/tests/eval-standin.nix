# STAND-IN EVALUATION of the Fabric NixOS module (nix/module.nix) and the
# Proxmox guest/template modules, without nixpkgs.
#
# nixpkgs cannot be fetched where CI runs. This evaluates the modules' own
# logic (option defaults and types, mkIf/mkMerge wiring, the argv and unit
# settings they produce) with the module system of nixpkgs' real `lib`
# when FABRIC_NIXPKGS_LIB names a copy of it, and of the stand-in `lib`
# otherwise (nix/tests/module-system.nix), against a stand-in of the
# NixOS options they touch (nix/tests/standin/nixos.nix). It does not
# prove that NixOS accepts the units, nor that systemd runs them: the
# flake's `checks` (a real NixOS VM test) do that where nixpkgs exists.
#
#   nix-instantiate --eval --strict nix/tests/eval-standin.nix -A summary
#   nix-instantiate --eval --strict --json nix/tests/eval-standin.nix -A units
#
# Either throws, listing every failed check, when a check fails. `units`
# is what crates/fabric-converge/tests/nixos_module.rs compares with
# `fabric_converge::layout`. `refusals` are configurations that must fail
# with a given message; nix/check.sh evaluates each on its own, since
# builtins.tryEval cannot see a message.
let
  moduleSystem = import ./module-system.nix;
  inherit (moduleSystem) lib;
  pkgs = import ./standin/pkgs.nix;

  inherit (builtins)
    all
    attrNames
    concatStringsSep
    elem
    filter
    fromJSON
    hashString
    length
    replaceStrings
    toJSON
    ;

  evalWithOptions =
    modules:
    lib.evalModules {
      modules = [ ./standin/nixos.nix ] ++ modules;
      specialArgs = {
        inherit pkgs;
        # A string, so that "${modulesPath}/..." does not copy it to the store.
        modulesPath = toString ./standin/nixos-modules;
      };
    };

  eval = modules: (evalWithOptions modules).config;

  withModule = extra: eval ([ ../module.nix ] ++ extra);

  # ExecStart= back into argv: the module writes each word as a JSON string
  # with `%` and `$` doubled, separated by single spaces. `" "` cannot occur
  # inside a JSON string (its quotes are escaped), so it splits the words.
  argvOf =
    execStart:
    map (replaceStrings [ "%%" "$$" ] [ "%" "$" ]) (
      # Without the store paths' context (a known_hosts file from the
      # fleet repository), which fromJSON refuses.
      fromJSON "[${replaceStrings [ "\" \"" ] [ "\",\"" ] (builtins.unsafeDiscardStringContext execStart)}]"
    );

  fabricExe = "${pkgs.kubelize-fabric}/bin/fabric";

  # One check: a name, whether it holds, and what to say when it does not
  # (only evaluated then).
  eq = name: actual: expected: {
    inherit name;
    ok = actual == expected;
    detail = "expected ${toJSON expected}, got ${toJSON actual}";
  };
  holds = name: ok: {
    inherit name ok;
    detail = "does not hold";
  };

  fabricUnits = cfg: filter (n: builtins.match "fabric.*" n != null) (attrNames cfg.systemd.services);

  # --- cases -------------------------------------------------------------

  off = withModule [ ];

  bootstrap = withModule [ { services.fabric.bootstrap.enable = true; } ];
  bootstrapUnit = bootstrap.systemd.services.fabric-bootstrap;

  agent = withModule [ { services.fabric.agent.enable = true; } ];
  agentUnit = agent.systemd.services.fabric-agent;
  agentDefinition = agentUnit.environment.FABRIC_AGENT_DEFINITION;

  healthChecks = [
    "systemctl is-active --quiet nginx.service"
    "curl -fsS -o /dev/null -w '%{http_code}' http://127.0.0.1/healthz"
    "sh -c 'test -n \"$(hostname)\"'"
  ];
  extraArgs = [ "--verbose" ];
  agentFull = withModule [
    {
      services.fabric.agent = {
        enable = true;
        flake = "git+https://github.com/org/fleet?ref=main#dns01";
        interval = "1m";
        inherit healthChecks;
        healthTimeout = "30s";
        reboot = "when-needed";
        metrics.address = "0.0.0.0:9750";
        inherit extraArgs;
      };
      services.fabric.credentials.accessTokensFile = "/run/agenix/fleet-token";
    }
    # A second module adds a check. Lists from several modules
    # concatenate, a later module's first; mkAfter puts this one last.
    { services.fabric.agent.healthChecks = lib.mkAfter [ "true" ]; }
  ];
  agentFullUnit = agentFull.systemd.services.fabric-agent;

  # The credentials: a deploy key a secret manager keeps, with the forge's
  # host key pinned in the fleet repository (a Nix path: it is public).
  sshFlake = "git+ssh://git@github.com/org/fleet?ref=main#dns01";
  knownHostsInRepo = ../../examples/hosts/known_hosts;
  agentSsh = withModule [
    {
      services.fabric.agent = {
        enable = true;
        flake = sshFlake;
      };
      services.fabric.credentials = {
        sshKeyFile = "/run/secrets/fleet-deploy-key";
        knownHostsFile = knownHostsInRepo;
      };
    }
  ];
  agentSshUnit = agentSsh.systemd.services.fabric-agent;
  # The first-boot files, named: what a fleet writes to keep them.
  agentFirstBoot = withModule [
    {
      services.fabric.agent.enable = true;
      services.fabric.credentials = {
        sshKeyFile = "/etc/fabric/credentials/ssh-key";
        knownHostsFile = "/etc/fabric/credentials/known_hosts";
      };
    }
  ];
  failedAssertions = cfg: map (a: a.message) (filter (a: !a.assertion) cfg.assertions);
  # Credentials set, the agent off: nothing to check, nothing passed.
  credentialsAgentOff = withModule [
    {
      services.fabric.bootstrap.enable = true;
      services.fabric.credentials.sshKeyFile = ./deploy-key;
    }
  ];

  # The order NixOS gives list definitions when no module decides it: the
  # later module's first, an import's before its importer's.
  healthChecksOf = cfg: cfg.services.fabric.agent.healthChecks;
  twoModules = withModule [
    {
      services.fabric.agent = {
        enable = true;
        healthChecks = [ "first" ];
      };
    }
    { services.fabric.agent.healthChecks = [ "second" ]; }
  ];
  importing = withModule [
    {
      imports = [ { services.fabric.agent.healthChecks = [ "imported" ]; } ];
      services.fabric.agent.healthChecks = [ "importer" ];
    }
  ];
  ordered = withModule [
    { services.fabric.agent.healthChecks = lib.mkBefore [ "before" ]; }
    { services.fabric.agent.healthChecks = [ "plain" ]; }
    { services.fabric.agent.healthChecks = lib.mkAfter [ "after" ]; }
    { services.fabric.agent.healthChecks = lib.mkOrder 400 [ "first" ]; }
  ];

  # More of the module system's merging, each expectation as nixpkgs
  # 25.11's lib gave it (README.md, "Checking the Nix side").
  merging = withModule [
    {
      services.fabric.agent.enable = true;
      systemd.services.fabric-agent.after = [ "x.target" ];
    }
    { systemd.services.fabric-agent.after = [ "y.target" ]; }
    { systemd.services.gone = lib.mkIf false { description = "never"; }; }
    {
      networking.firewall.allowedTCPPorts = [ 1 ];
      imports = [
        {
          networking.firewall.allowedTCPPorts = [ 2 ];
          imports = [ { networking.firewall.allowedTCPPorts = [ 3 ]; } ];
        }
        { networking.firewall.allowedTCPPorts = [ 4 ]; }
      ];
    }
    { boot.loader.grub.extraConfig = "one"; }
    { boot.loader.grub.extraConfig = "two"; }
  ];

  noMetrics = withModule [
    {
      services.fabric.agent = {
        enable = true;
        metrics.enable = false;
        metrics.address = "0.0.0.0:9750";
      };
    }
  ];
  noMetricsUnit = noMetrics.systemd.services.fabric-agent;

  agentWith =
    settings:
    (withModule [
      {
        services.fabric.agent = {
          enable = true;
        }
        // settings;
      }
    ]).systemd.services.fabric-agent.serviceConfig.ExecStart;

  overridden = withModule [
    {
      services.fabric.agent.enable = true;
      systemd.services.fabric-agent.serviceConfig.WatchdogSec = "10min";
      systemd.services.fabric-agent.serviceConfig.ProtectSystem = lib.mkForce "full";
    }
  ];

  conflicting = withModule [
    {
      services.fabric.agent.enable = true;
      systemd.services.fabric-agent.serviceConfig.ProtectSystem = "full";
    }
  ];

  both = withModule [
    {
      services.fabric.bootstrap.enable = true;
      services.fabric.agent.enable = true;
    }
  ];

  guest = eval [ ../proxmox-guest.nix ];
  # A host that imports the guest module and sets its own hostname still
  # leaves the hostname to cloud-init.
  host = eval [
    ../proxmox-guest.nix
    ../module.nix
    {
      networking.hostName = "dns01";
      services.fabric.agent.enable = true;
    }
  ];
  template = eval [ ../proxmox-template.nix ];

  # The example fleet's dns01, as examples/hosts/flake.nix assembles it
  # (less the flake wrapper, which needs nixpkgs).
  exampleHost = eval [
    ../proxmox-guest.nix
    ../../examples/hosts/common.nix
    ../../examples/hosts/dns01.nix
  ];

  # A host of the example fleet once it is private (examples/hosts/private.nix).
  examplePrivateHost = eval [
    ../proxmox-guest.nix
    ../../examples/hosts/common.nix
    ../../examples/hosts/private.nix
  ];

  checks = [
    # Nothing is switched on by importing the module.
    (eq "off: no fabric units" (fabricUnits off) [ ])
    (eq "off: no packages" off.environment.systemPackages [ ])
    (eq "off: no warnings" off.warnings [ ])
    (eq "off: bootstrap disabled" off.services.fabric.bootstrap.enable false)
    (eq "off: agent disabled" off.services.fabric.agent.enable false)

    # The bootstrap unit and the contract with cloud-init's per-boot hook.
    (eq "bootstrap: its unit, and the ones that retire an agent" (fabricUnits bootstrap) [
      "fabric-agent-definition"
      "fabric-agent-upgrade"
      "fabric-bootstrap"
    ])
    (eq "bootstrap: no agent to define"
      bootstrap.systemd.services.fabric-agent-definition.restartTriggers
      [ "agent off" ]
    )
    (eq "bootstrap: argv" (argvOf bootstrapUnit.serviceConfig.ExecStart) [
      fabricExe
      "bootstrap"
      "--timeout"
      "30m"
    ])
    (eq "bootstrap: oneshot" bootstrapUnit.serviceConfig.Type "oneshot")
    (eq "bootstrap: wanted by multi-user.target" bootstrapUnit.wantedBy [ "multi-user.target" ])
    (eq "bootstrap: wants network-online.target" bootstrapUnit.wants [ "network-online.target" ])
    (eq "bootstrap: ordering" bootstrapUnit.after [
      "network-online.target"
      "cloud-final.service"
      "multi-user.target"
    ])
    (eq "bootstrap: conditions" bootstrapUnit.unitConfig.ConditionPathExists [
      "/etc/nix-flake-target"
      "!/var/lib/nixos-bootstrap-complete"
    ])
    (eq "bootstrap: retried on failure" bootstrapUnit.serviceConfig.Restart "on-failure")
    (eq "bootstrap: first retry after 30s" bootstrapUnit.serviceConfig.RestartSec "30s")
    (eq "bootstrap: backoff cap" bootstrapUnit.serviceConfig.RestartMaxDelaySec "15min")
    (eq "bootstrap: start limit window" bootstrapUnit.unitConfig.StartLimitIntervalSec "1h")
    (eq "bootstrap: start limit burst" bootstrapUnit.unitConfig.StartLimitBurst 10)
    (eq "bootstrap: bad input is not retried" bootstrapUnit.serviceConfig.RestartPreventExitStatus [ 2 ])
    (eq "bootstrap: survives its own switch" bootstrapUnit.restartIfChanged false)
    (eq "bootstrap: survives removal by its own switch" bootstrapUnit.unitConfig.X-StopOnRemoval false)
    (eq "bootstrap: may write the marker's directory and the profile" bootstrapUnit.serviceConfig.ReadWritePaths [
      "/nix/var/nix/profiles"
      "/var/lib"
    ])
    (eq "bootstrap: state directory" bootstrapUnit.serviceConfig.StateDirectory "fabric")
    (eq "bootstrap: a stop lets a switch finish" bootstrapUnit.serviceConfig.TimeoutStopSec "15min")
    (eq "bootstrap: builds through the daemon" bootstrapUnit.environment.NIX_REMOTE "daemon")
    (eq "bootstrap: package installed" bootstrap.environment.systemPackages [ pkgs.kubelize-fabric ])
    (holds "bootstrap: flakes enabled" (elem "flakes" bootstrap.nix.settings.experimental-features))
    (eq "bootstrap: timeout option" (argvOf
      (withModule [
        {
          services.fabric.bootstrap = {
            enable = true;
            timeout = "2h";
            extraArgs = [ "--verbose" ];
          };
        }
      ]).systemd.services.fabric-bootstrap.serviceConfig.ExecStart
    ) [ fabricExe "bootstrap" "--timeout" "2h" "--verbose" ])

    # The agent with defaults.
    (eq "agent: its units" (fabricUnits agent) [
      "fabric-agent"
      "fabric-agent-definition"
      "fabric-agent-upgrade"
    ])
    (eq "agent: argv with defaults" (argvOf agentUnit.serviceConfig.ExecStart) [
      fabricExe
      "agent"
      "--interval"
      "5m"
      "--health-timeout"
      "60s"
      "--reboot"
      "never"
      "--metrics-address"
      "127.0.0.1:9750"
    ])
    (eq "agent: notify" agentUnit.serviceConfig.Type "notify")
    (eq "agent: watchdog" agentUnit.serviceConfig.WatchdogSec "2min")
    (eq "agent: always restarted" agentUnit.serviceConfig.Restart "always")
    (eq "agent: a stop lets a switch finish" agentUnit.serviceConfig.TimeoutStopSec "15min")
    (eq "agent: not restarted by a switch" agentUnit.restartIfChanged false)
    (eq "agent: not stopped by the switch that removes it" agentUnit.unitConfig.X-StopOnRemoval false)
    (eq "agent: ordering" agentUnit.after [
      "network-online.target"
      "multi-user.target"
    ])
    (holds "agent: never waits for the bootstrap" (!(elem "fabric-bootstrap.service" agentUnit.after)))
    (eq "agent: wanted by multi-user.target" agentUnit.wantedBy [ "multi-user.target" ])
    (eq "agent: read-only system" agentUnit.serviceConfig.ProtectSystem "strict")
    (eq "agent: writes only the profile" agentUnit.serviceConfig.ReadWritePaths [ "/nix/var/nix/profiles" ])
    (eq "agent: state directory" agentUnit.serviceConfig.StateDirectory "fabric")
    (holds "agent: health checks see the current system" (elem "/run/current-system/sw" agentUnit.path))
    (eq "agent: no warnings on loopback" agent.warnings [ ])
    (eq "agent: no bootstrap unit" (agent.systemd.services ? fabric-bootstrap) false)
    (holds "agent: definition is a sha256" (builtins.match "[0-9a-f]{64}" agentDefinition != null))
    (eq "agent: definition unit restarts on a new definition"
      agent.systemd.services.fabric-agent-definition.restartTriggers
      [ agentDefinition ]
    )
    (eq "agent: definition unit only queues the upgrade" (argvOf
      agent.systemd.services.fabric-agent-definition.serviceConfig.ExecStart
    ) [ "${pkgs.systemd}/bin/systemctl" "start" "--no-block" "fabric-agent-upgrade.service" ])
    (holds "agent: upgrade waits for the converge lock, then checks again" (
      builtins.match ".*\n\\[ -n \"\\$\\(needed\\)\" ] [|][|] exit 0\n.*exec 9>>/var/lib/fabric/converge.lock\nif ! flock --wait 3600 9;.*\naction=\\$\\(needed\\)\n.*" agent.systemd.services.fabric-agent-upgrade.script != null
    ))
    (holds "agent: upgrade acts without waiting" (
      builtins.match ".*systemctl \"\\$action\" --no-block \"\\$agent\"\n" agent.systemd.services.fabric-agent-upgrade.script != null
    ))

    # Every option reaches the command line, quoted for systemd.
    (eq "agent: argv with every option" (argvOf agentFullUnit.serviceConfig.ExecStart) [
      fabricExe
      "agent"
      "--flake"
      "git+https://github.com/org/fleet?ref=main#dns01"
      "--interval"
      "1m"
      "--health-check"
      "systemctl is-active --quiet nginx.service"
      "--health-check"
      "curl -fsS -o /dev/null -w '%{http_code}' http://127.0.0.1/healthz"
      "--health-check"
      "sh -c 'test -n \"$(hostname)\"'"
      "--health-check"
      "true"
      "--health-timeout"
      "30s"
      "--reboot"
      "when-needed"
      "--metrics-address"
      "0.0.0.0:9750"
      "--access-tokens-file"
      "/run/agenix/fleet-token"
      "--verbose"
    ])
    (holds "agent: % and $ are escaped for systemd" (
      builtins.match ".*%%\\{http_code}.*\\$\\$\\(hostname\\).*" agentFullUnit.serviceConfig.ExecStart != null
    ))
    (eq "agent: warns about metrics beyond loopback" (length agentFull.warnings) 1)
    (eq "agent: metrics off" (argvOf noMetricsUnit.serviceConfig.ExecStart) [
      fabricExe
      "agent"
      "--interval"
      "5m"
      "--health-timeout"
      "60s"
      "--reboot"
      "never"
      "--no-metrics"
    ])
    (eq "agent: no warning without metrics" noMetrics.warnings [ ])
    (holds "agent: IPv6 loopback metrics" (
      elem "[::1]:9750" (argvOf (agentWith { metrics.address = "[::1]:9750"; }))
    ))
    (eq "agent: IPv6 loopback is not warned about" (withModule [
      {
        services.fabric.agent = {
          enable = true;
          metrics.address = "[::1]:9750";
        };
      }
    ]).warnings [ ])
    (holds "agent: compound durations" (elem "1h 30m" (argvOf (agentWith { interval = "1h 30m"; }))))
    (holds "agent: a new definition changes the hash" (
      agentFullUnit.environment.FABRIC_AGENT_DEFINITION != agentDefinition
    ))

    # The credentials reach the agent as its flags, before extraArgs.
    (eq "credentials: argv with a deploy key" (argvOf agentSshUnit.serviceConfig.ExecStart) [
      fabricExe
      "agent"
      "--flake"
      sshFlake
      "--interval"
      "5m"
      "--health-timeout"
      "60s"
      "--reboot"
      "never"
      "--metrics-address"
      "127.0.0.1:9750"
      "--ssh-key-file"
      "/run/secrets/fleet-deploy-key"
      "--known-hosts-file"
      "${knownHostsInRepo}"
    ])
    (holds "credentials: a known_hosts Nix path becomes a store path" (
      builtins.match "${builtins.storeDir}/[0-9a-z]{32}-known_hosts" "${knownHostsInRepo}" != null
    ))
    (eq "credentials: the first-boot files, named" (
      let
        argv = argvOf agentFirstBoot.systemd.services.fabric-agent.serviceConfig.ExecStart;
      in
      builtins.genList (i: builtins.elemAt argv (length argv - 4 + i)) 4
    ) [
      "--ssh-key-file"
      "/etc/fabric/credentials/ssh-key"
      "--known-hosts-file"
      "/etc/fabric/credentials/known_hosts"
    ])
    (eq "credentials: valid ones pass the assertions" (map failedAssertions [
      agent
      agentFull
      agentSsh
      agentFirstBoot
    ]) [ [ ] [ ] [ ] [ ] ])
    # A fleet checked out under /tmp: its known_hosts still lands in the
    # store, which the unit sees.
    (eq "credentials: a known_hosts Nix path is checked as the store path it becomes" (failedAssertions (withModule [
      {
        services.fabric.agent.enable = true;
        services.fabric.credentials = {
          sshKeyFile = "/run/secrets/fleet-deploy-key";
          knownHostsFile = /tmp/fleet/known_hosts;
        };
      }
    ])) [ ])
    (eq "credentials: the system builds with them" (map (cfg: cfg.system.build.toplevel.name) [
      agentSsh
      agentFirstBoot
    ]) [ "nixos-system-standin" "nixos-system-standin" ])
    (eq "credentials: the agent's only" (argvOf credentialsAgentOff.systemd.services.fabric-bootstrap.serviceConfig.ExecStart) [
      fabricExe
      "bootstrap"
      "--timeout"
      "30m"
    ])
    (eq "credentials: not checked while the agent is off" (failedAssertions credentialsAgentOff) [ ])
    # A secret manager installs its files in an activation script, before
    # any unit (re)starts: the agent waits for nothing more.
    (eq "credentials: ordering unchanged" agentSshUnit.after agentUnit.after)
    (eq "credentials: nothing added to the unit but flags" (builtins.removeAttrs agentSshUnit.serviceConfig [ "ExecStart" ]) (builtins.removeAttrs agentUnit.serviceConfig [ "ExecStart" ]))
    (holds "credentials: a new credential path restarts the agent" (
      agentSshUnit.environment.FABRIC_AGENT_DEFINITION != agentDefinition
      && agentFirstBoot.systemd.services.fabric-agent.environment.FABRIC_AGENT_DEFINITION != agentDefinition
    ))

    # List order, as NixOS merges it: only mkOrder decides it on purpose.
    (eq "order: a later module's health checks come first" (healthChecksOf twoModules) [
      "second"
      "first"
    ])
    (eq "order: an import's health checks come before its importer's" (healthChecksOf importing) [
      "imported"
      "importer"
    ])
    (eq "order: mkOrder, mkBefore and mkAfter decide it" (healthChecksOf ordered) [
      "first"
      "before"
      "plain"
      "after"
    ])
    (eq "order: the argv follows the merged list" (
      filter (w: w == "first" || w == "second") (argvOf twoModules.systemd.services.fabric-agent.serviceConfig.ExecStart)
    ) [
      "second"
      "first"
    ])

    # Inside a submodule (a unit) the definitions are reversed once more:
    # module order.
    (eq "order: a unit's lists from several modules" merging.systemd.services.fabric-agent.after [
      "network-online.target"
      "multi-user.target"
      "x.target"
      "y.target"
    ])
    # Collected breadth first, then reversed.
    (eq "order: nested imports" merging.networking.firewall.allowedTCPPorts [
      3
      4
      2
      1
    ])
    (eq "order: lines" merging.boot.loader.grub.extraConfig "two\none")
    (eq "merge: a unit under mkIf false is not there" (merging.systemd.services ? gone) false)

    # Overrides follow module-system priorities (the clash: `refusals`).
    (eq "override: plain definition beats mkDefault" overridden.systemd.services.fabric-agent.serviceConfig.WatchdogSec "10min")
    (eq "override: mkForce beats the module" overridden.systemd.services.fabric-agent.serviceConfig.ProtectSystem "full")

    # Both together: two units, one package.
    (eq "both: units" (fabricUnits both) [
      "fabric-agent"
      "fabric-agent-definition"
      "fabric-agent-upgrade"
      "fabric-bootstrap"
    ])
    (eq "both: one package" both.environment.systemPackages [ pkgs.kubelize-fabric ])

    # The guest module the template and hosts share.
    (eq "guest: bootstrap on" guest.services.fabric.bootstrap.enable true)
    (eq "guest: agent left to the host" guest.services.fabric.agent.enable false)
    (eq "guest: bootstrap unit" (fabricUnits guest) [
      "fabric-agent-definition"
      "fabric-agent-upgrade"
      "fabric-bootstrap"
    ])
    (eq "guest: cloud-init" guest.services.cloud-init.enable true)
    (eq "guest: cloud-init network" guest.services.cloud-init.network.enable true)
    (eq "guest: NoCloud first" guest.services.cloud-init.settings.datasource_list [
      "NoCloud"
      "ConfigDrive"
      "None"
    ])
    (eq "guest: hostname left to cloud-init" guest.networking.hostName "")
    (eq "guest: mutable users" guest.users.mutableUsers true)
    (eq "guest: guest agent" guest.services.qemuGuest.enable true)
    (eq "guest: sshd" guest.services.openssh.enable true)
    (eq "guest: SSH keys only" guest.services.openssh.settings.PasswordAuthentication false)
    (eq "guest: no keyboard-interactive" guest.services.openssh.settings.KbdInteractiveAuthentication false)
    (holds "guest: flakes" (elem "flakes" guest.nix.settings.experimental-features))
    (holds "guest: git" (elem pkgs.git guest.environment.systemPackages))
    (holds "guest: serial console" (elem "console=ttyS0,115200n8" guest.boot.kernelParams))
    (eq "guest: grow the root partition" guest.boot.growPartition true)
    (eq "guest: grow the root file system" guest.fileSystems."/".autoResize true)
    (eq "host: hostname still left to cloud-init" host.networking.hostName "")
    (eq "host: bootstrap kept, agent on" (fabricUnits host) [
      "fabric-agent"
      "fabric-agent-definition"
      "fabric-agent-upgrade"
      "fabric-bootstrap"
    ])
    (eq "example host: agent argv" (argvOf exampleHost.systemd.services.fabric-agent.serviceConfig.ExecStart) [
      fabricExe
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
    (eq "example private host: the deploy key and the pinned host key" (
      let
        argv = argvOf examplePrivateHost.systemd.services.fabric-agent.serviceConfig.ExecStart;
      in
      builtins.genList (i: builtins.elemAt argv (length argv - 4 + i)) 4
    ) [
      "--ssh-key-file"
      "/etc/fabric/credentials/ssh-key"
      "--known-hosts-file"
      "${../../examples/hosts/known_hosts}"
    ])
    (eq "example private host: the system builds" examplePrivateHost.system.build.toplevel.name "nixos-system-standin")
    (eq "example host: bootstrap kept" (exampleHost.systemd.services ? fabric-bootstrap) true)
    (eq "example host: hostname left to cloud-init" exampleHost.networking.hostName "")
    (eq "template: bootstrap on" template.services.fabric.bootstrap.enable true)
    (eq "template: image name" template.proxmox.filenameSuffix "nixos-fabric-template")
    # proxmox-image.nix turns the boolean into qemu-server.conf's "1".
    (eq "template: guest agent flag for Proxmox" template.proxmox.qemuConf.agent "1")
    (eq "template: stateVersion" template.system.stateVersion "25.11")
  ];

  # Configurations the module system must refuse, each with the message
  # nixpkgs' lib gives (nix/check.sh evaluates `value` and looks for
  # `message` in what nix-instantiate prints).
  refusals =
    let
      notOfType = option: type: "A definition for option `${option}' is not of type `${type}'.";
      notExist = option: "The option `${option}' does not exist. Definition values:";
      agentRefused =
        settings: message:
        {
          inherit message;
          value = agentWith settings;
        };
      credentialConfig =
        credentials:
        withModule [
          {
            services.fabric.agent.enable = true;
            services.fabric.credentials = credentials;
          }
        ];
      # The first line is enough: Nix indents an error's further lines.
      credentialRefused = credentials: message: {
        message = "- ${message}";
        value = (credentialConfig credentials).system.build.toplevel;
      };
      durationType = "string matching the pattern ([0-9]+ *[a-zA-Z]+ *)+";
      addressType = "string matching the pattern (([0-9]{1,3}\\.){3}[0-9]{1,3}|\\[[0-9a-fA-F:.]+]):[0-9]{1,5}";
    in
    {
      equal-priority-clash = {
        message = "The option `systemd.services.fabric-agent.serviceConfig.ProtectSystem' has conflicting definition values:";
        value = conflicting.systemd.services.fabric-agent.serviceConfig.ProtectSystem;
      };
      reboot-always = agentRefused { reboot = "always"; } (
        notOfType "services.fabric.agent.reboot" "one of \"never\", \"when-needed\""
      );
      metrics-address-host-name = agentRefused {
        metrics.address = "localhost:9750";
      } (notOfType "services.fabric.agent.metrics.address" addressType);
      metrics-address-without-port = agentRefused {
        metrics.address = "127.0.0.1";
      } (notOfType "services.fabric.agent.metrics.address" addressType);
      interval-without-unit = agentRefused { interval = "5"; } (
        notOfType "services.fabric.agent.interval" durationType
      );
      health-timeout-not-a-duration = agentRefused { healthTimeout = "soon"; } (
        notOfType "services.fabric.agent.healthTimeout" durationType
      );
      flake-not-a-string = agentRefused { flake = 42; } (
        notOfType "services.fabric.agent.flake" "null or string"
      );
      health-checks-not-a-list = agentRefused { healthChecks = "true"; } (
        notOfType "services.fabric.agent.healthChecks" "list of string"
      );
      # Misspelt options: inside services.fabric, elsewhere in NixOS, inside
      # a submodule (a unit), and at the top.
      misspelt-fabric-option = {
        message = notExist "services.fabric.agent.healtChecks";
        value = (withModule [ { services.fabric.agent.healtChecks = [ "true" ]; } ]).services.fabric.agent;
      };
      misspelt-nixos-option = {
        message = notExist "services.openssh.enabel";
        value = (eval [
          ../proxmox-guest.nix
          { services.openssh.enabel = true; }
        ]).services.openssh.enable;
      };
      misspelt-unit-setting = {
        message = notExist "systemd.services.fabric-agent.wantedby";
        value =
          (withModule [
            {
              services.fabric.agent.enable = true;
              systemd.services.fabric-agent.wantedby = [ "multi-user.target" ];
            }
          ]).systemd.services.fabric-agent.wantedBy;
      };
      # The credential options, refused by NixOS's assertions when it
      # builds the system (nixos/modules/system/activation/top-level.nix).
      ssh-key-nix-path = credentialRefused {
        sshKeyFile = ./deploy-key;
        knownHostsFile = "/etc/fabric/credentials/known_hosts";
      } "services.fabric.credentials.sshKeyFile is the Nix path ${toString ./deploy-key}: Nix would copy it into the Nix store, which every user of the machine can read";
      access-tokens-nix-path = credentialRefused {
        accessTokensFile = ./fleet-token;
      } "services.fabric.credentials.accessTokensFile is the Nix path ${toString ./fleet-token}: Nix would copy it into the Nix store";
      # Read straight from the unit (nix eval, nixos-option), past the
      # assertions: still refused, never copied.
      ssh-key-nix-path-in-unit = {
        message = "services.fabric.credentials.sshKeyFile is the Nix path ${toString ./deploy-key}: Nix would copy it into the Nix store";
        value = (credentialConfig {
          sshKeyFile = ./deploy-key;
          knownHostsFile = "/etc/fabric/credentials/known_hosts";
        }).systemd.services.fabric-agent.serviceConfig.ExecStart;
      };
      ssh-key-in-store = credentialRefused {
        sshKeyFile = "${builtins.storeDir}/00000000000000000000000000000000-deploy-key";
        knownHostsFile = "/etc/fabric/credentials/known_hosts";
      } "services.fabric.credentials.sshKeyFile = \"${builtins.storeDir}/00000000000000000000000000000000-deploy-key\" is in the Nix store, which every user of the machine can read";
      access-tokens-relative = credentialRefused {
        accessTokensFile = "secrets/fleet-token";
      } "services.fabric.credentials.accessTokensFile = \"secrets/fleet-token\" is not an absolute path";
      known-hosts-relative = credentialRefused {
        sshKeyFile = "/run/secrets/fleet-deploy-key";
        knownHostsFile = "known_hosts";
      } "services.fabric.credentials.knownHostsFile = \"known_hosts\" is not an absolute path";
      ssh-key-under-tmp = credentialRefused {
        sshKeyFile = "/tmp/deploy-key";
        knownHostsFile = "/etc/fabric/credentials/known_hosts";
      } "services.fabric.credentials.sshKeyFile = \"/tmp/deploy-key\" is under /tmp or /var/tmp, which the agent's unit does not see";
      ssh-key-without-known-hosts = credentialRefused {
        sshKeyFile = "/run/secrets/fleet-deploy-key";
      } "services.fabric.credentials.sshKeyFile is set but knownHostsFile is not";
      known-hosts-without-ssh-key = credentialRefused {
        knownHostsFile = "/etc/fabric/credentials/known_hosts";
      } "services.fabric.credentials.knownHostsFile is set but sshKeyFile is not";
      ssh-key-and-access-tokens = credentialRefused {
        sshKeyFile = "/run/secrets/fleet-deploy-key";
        knownHostsFile = "/etc/fabric/credentials/known_hosts";
        accessTokensFile = "/run/secrets/fleet-token";
      } "services.fabric.credentials: sshKeyFile and accessTokensFile are both set";
      ssh-key-for-https-flake = {
        message = "- services.fabric.credentials.sshKeyFile is set, but services.fabric.agent.flake = \"github:org/fleet#dns01\" is not a git+ssh:// reference";
        value =
          (withModule [
            {
              services.fabric.agent = {
                enable = true;
                flake = "github:org/fleet#dns01";
              };
              services.fabric.credentials = {
                sshKeyFile = "/run/secrets/fleet-deploy-key";
                knownHostsFile = "/etc/fabric/credentials/known_hosts";
              };
            }
          ]).system.build.toplevel;
      };
      access-tokens-for-ssh-flake = {
        message = "- services.fabric.credentials.accessTokensFile is set, but services.fabric.agent.flake = \"${sshFlake}\" is not a git+https://, github: or gitlab: reference";
        value =
          (withModule [
            {
              services.fabric.agent = {
                enable = true;
                flake = sshFlake;
              };
              services.fabric.credentials.accessTokensFile = "/run/secrets/fleet-token";
            }
          ]).system.build.toplevel;
      };
      ssh-key-not-a-path = {
        message = notOfType "services.fabric.credentials.sshKeyFile" "null or absolute path, as a string";
        value = (credentialConfig { sshKeyFile = 42; }).services.fabric.credentials.sshKeyFile;
      };
      misspelt-credential-option = {
        message = notExist "services.fabric.credentials.sshKey";
        value = (credentialConfig { sshKey = "/run/secrets/fleet-deploy-key"; }).services.fabric.credentials;
      };
      misspelt-top-level-option = {
        message = notExist "sytemd";
        value = (withModule [ { sytemd.services.fabric-agent.wantedBy = [ ]; } ]).services.fabric.agent.enable;
      };
    };

  failed = filter (c: !c.ok) checks;

  verdict =
    if failed == [ ] then
      "${toString (length checks)} passed, 0 failed, with the ${moduleSystem.name}"
    else
      throw (
        "nix/module.nix stand-in (${moduleSystem.name}): ${toString (length failed)} of ${toString (length checks)} checks failed:\n"
        + concatStringsSep "\n" (map (c: "  - ${c.name}: ${c.detail}") failed)
      );

  # The units as the stand-in renders them, for the Rust consistency test.
  pick = cfg: names: builtins.listToAttrs (map (name: { inherit name; value = cfg.systemd.services.${name}; }) names);
in
{
  summary = verdict;
  inherit refusals;
  refusalMessages = builtins.mapAttrs (_: r: r.message) refusals;
  # The agent's unit with these credentials, for nix/check.sh's store probe.
  credentialUnit =
    credentials:
    (withModule [
      {
        services.fabric.agent.enable = true;
        services.fabric.credentials = credentials;
      }
    ]).systemd.services.fabric-agent;
  credentialSystem =
    credentials:
    (withModule [
      {
        services.fabric.agent.enable = true;
        services.fabric.credentials = credentials;
      }
    ]).system.build.toplevel;
  units = builtins.seq verdict {
    bootstrap = pick bootstrap [ "fabric-bootstrap" ];
    agent = pick agent [
      "fabric-agent"
      "fabric-agent-definition"
      "fabric-agent-upgrade"
    ];
    agentFull = pick agentFull [ "fabric-agent" ];
    agentSsh = pick agentSsh [ "fabric-agent" ];
    agentNoMetrics = pick noMetrics [ "fabric-agent" ];
    inherit healthChecks extraArgs fabricExe;
    # The values services.fabric.agent.reboot accepts, for comparison with
    # the CLI's --reboot.
    rebootChoices = (evalWithOptions [ ../module.nix ]).options.services.fabric.agent.reboot.type.functor.payload.values;
  };
}
