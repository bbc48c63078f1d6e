# The Fabric NixOS module.
#
#   services.fabric.bootstrap  the first-boot unit: switch once to the flake
#                              that cloud-init wrote to /etc/nix-flake-target
#   services.fabric.agent      the daemon that keeps the machine on that flake
#
# docs/proxmox-template.md tells the whole first-boot story; the comments
# here say why each unit setting is what it is.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    any
    concatMap
    concatStringsSep
    hasPrefix
    literalExpression
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    optional
    optionals
    removeSuffix
    types
    ;

  cfg = config.services.fabric;

  # What `fabric` itself uses (crates/fabric-converge/src/layout.rs).
  # crates/fabric-converge/tests/nixos_module.rs compares every value here
  # with that file, so a rename on either side fails the tests.
  layout = {
    binary = "fabric";
    bootstrapUnit = "fabric-bootstrap.service";
    agentUnit = "fabric-agent.service";
    flakeTarget = "/etc/nix-flake-target";
    bootstrapMarker = "/var/lib/nixos-bootstrap-complete";
    stateDir = "/var/lib/fabric";
    agentState = "/var/lib/fabric/agent.json";
    convergeLock = "/var/lib/fabric/converge.lock";
    systemProfile = "/nix/var/nix/profiles/system";
    defaultInterval = "5m";
    defaultBootstrapTimeout = "30m";
    defaultHealthTimeout = "60s";
    defaultMetricsAddress = "127.0.0.1:9750";
    # Where cloud-init puts the Machine's credential at first boot (root,
    # 0600), and where `fabric` looks when given no credential flag.
    credentialsDir = "/etc/fabric/credentials";
    sshKeyFile = "/etc/fabric/credentials/ssh-key";
    knownHostsFile = "/etc/fabric/credentials/known_hosts";
    accessTokensFile = "/etc/fabric/credentials/access-tokens";
    # Exit code for bad input (a refused flake target, a bad flag): running
    # the same thing again cannot succeed, so systemd must not retry it.
    exitUsage = 2;
  };

  # The name `systemd.services.<name>` takes: the unit name without suffix.
  serviceName = unit: removeSuffix ".service" unit;
  bootstrapName = serviceName layout.bootstrapUnit;
  agentName = serviceName layout.agentUnit;
  upgradeName = "${agentName}-upgrade";
  definitionName = "${agentName}-definition";

  # One argv word of ExecStart=. systemd reads C-style double-quoted words,
  # which JSON strings are; it expands `%` specifiers and `$VAR` even inside
  # quotes, so both are doubled. Health checks often hold both
  # (`curl -w '%{http_code}'`, `sh -c 'test -n "$(hostname)"'`).
  execWord = arg: builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON arg);
  execLine = argv: concatStringsSep " " (map execWord argv);

  exe = "${cfg.package}/bin/${layout.binary}";

  bootstrapArgv = [
    exe
    "bootstrap"
    "--timeout"
    cfg.bootstrap.timeout
  ]
  ++ cfg.bootstrap.extraArgs;

  agentArgv = [
    exe
    "agent"
  ]
  ++ optionals (cfg.agent.flake != null) [
    "--flake"
    cfg.agent.flake
  ]
  ++ [
    "--interval"
    cfg.agent.interval
  ]
  ++ concatMap (check: [
    "--health-check"
    check
  ]) cfg.agent.healthChecks
  ++ [
    "--health-timeout"
    cfg.agent.healthTimeout
    "--reboot"
    cfg.agent.reboot
  ]
  ++ (
    if cfg.agent.metrics.enable then
      [
        "--metrics-address"
        cfg.agent.metrics.address
      ]
    else
      [ "--no-metrics" ]
  )
  ++ concatMap (
    c:
    optionals (c.value != null) [
      c.flag
      (credentialArg c)
    ]
  ) credentialFiles
  ++ cfg.agent.extraArgs;

  # The credential options, in the order their flags reach the agent.
  credentialFiles = [
    {
      name = "sshKeyFile";
      flag = "--ssh-key-file";
      secret = true;
      value = cfg.credentials.sshKeyFile;
    }
    {
      name = "knownHostsFile";
      flag = "--known-hosts-file";
      secret = false;
      value = cfg.credentials.knownHostsFile;
    }
    {
      name = "accessTokensFile";
      flag = "--access-tokens-file";
      secret = true;
      value = cfg.credentials.accessTokensFile;
    }
  ];
  credentialOption = c: "services.fabric.credentials.${c.name}";

  # A secret's path goes into the argv as it is. Interpolating a Nix path
  # would copy the file into the store, so one is refused here too: the
  # assertions say it first when NixOS builds the system, but anything
  # that reads the unit directly (nix eval, nixos-option) lands here.
  credentialArg =
    c:
    if builtins.isPath c.value && c.secret then
      throw (nixPathRefusal c)
    else
      "${c.value}";

  nixPathRefusal =
    c:
    "${credentialOption c} is the Nix path ${toString c.value}: Nix would copy it into the Nix store, which every user of the machine can read, and a flake's files are there already. Keep the secret out of the fleet repository and give its location on the machine as a string: config.sops.secrets.<name>.path (sops-nix), config.age.secrets.<name>.path (agenix), or \"${
      layout.${c.name}
    }\" (the first-boot file).";

  # What each credential option must be, as NixOS assertions: the build
  # stops with every failed message.
  credentialAssertions =
    let
      creds = cfg.credentials;
      flake = cfg.agent.flake;
      pathAssertions =
        c:
        let
          v = c.value;
          s = toString v;
          # A Nix path names a file of the fleet, not of the machine: it
          # lands in the store, wherever the fleet was checked out.
          onMachine = !builtins.isPath v;
        in
        optionals (v != null) [
          {
            assertion = onMachine || !c.secret;
            message = nixPathRefusal c;
          }
          {
            assertion = !onMachine || hasPrefix "/" s;
            message = "${credentialOption c} = \"${s}\" is not an absolute path. Give the file's full path on the machine, e.g. \"${
              layout.${c.name}
            }\".";
          }
          {
            assertion = !(c.secret && hasPrefix "${builtins.storeDir}/" s);
            message = "${credentialOption c} = \"${s}\" is in the Nix store, which every user of the machine can read. Keep the secret out of the store: let sops-nix or agenix put it under /run, or keep the first-boot file \"${
              layout.${c.name}
            }\".";
          }
          {
            assertion =
              !onMachine
              || !(any (tmp: hasPrefix tmp s) [
                "/tmp/"
                "/var/tmp/"
              ]);
            message = "${credentialOption c} = \"${s}\" is under /tmp or /var/tmp, which the agent's unit does not see (it has a private one, PrivateTmp=true). Keep the file elsewhere, e.g. under /run/secrets (sops-nix), /run/agenix (agenix) or ${layout.credentialsDir}.";
          }
        ];
    in
    concatMap pathAssertions credentialFiles
    ++ [
      {
        # No trust on first use: a key always comes with the host key it
        # may talk to. The first-boot known_hosts is named, not implied, so
        # the module never passes one SSH flag without the other.
        assertion = (creds.sshKeyFile == null) == (creds.knownHostsFile == null);
        message =
          if creds.knownHostsFile == null then
            "services.fabric.credentials.sshKeyFile is set but knownHostsFile is not: the agent would not know which host key the forge must present. Pin it: set knownHostsFile to a known_hosts file with the forge's host key (it is public, so a file of the fleet repository such as ./known_hosts will do), or to \"${layout.knownHostsFile}\" to keep the one the Machine's Secret put there at first boot."
          else
            "services.fabric.credentials.knownHostsFile is set but sshKeyFile is not: a pinned host key is only used with a deploy key. Set sshKeyFile too, e.g. to \"${layout.sshKeyFile}\" to keep the first-boot key.";
      }
      {
        assertion = creds.sshKeyFile == null || creds.accessTokensFile == null;
        message = "services.fabric.credentials: sshKeyFile and accessTokensFile are both set, but a fleet is fetched either over SSH (git+ssh://, a deploy key) or over HTTPS (git+https://, github:, gitlab:, a token). Keep the one that fits the flake reference.";
      }
      {
        assertion = creds.sshKeyFile == null || flake == null || hasPrefix "git+ssh://" flake;
        message = "services.fabric.credentials.sshKeyFile is set, but services.fabric.agent.flake = \"${toString flake}\" is not a git+ssh:// reference: a deploy key is only used over SSH. Use a git+ssh:// reference, or accessTokensFile for an HTTPS one.";
      }
      {
        assertion =
          creds.accessTokensFile == null
          || flake == null
          || any (scheme: hasPrefix scheme flake) [
            "git+https://"
            "github:"
            "gitlab:"
          ];
        message = "services.fabric.credentials.accessTokensFile is set, but services.fabric.agent.flake = \"${toString flake}\" is not a git+https://, github: or gitlab: reference: a token is only sent over HTTPS. Use such a reference, or sshKeyFile and knownHostsFile for a git+ssh:// one.";
      }
    ];

  # Tools the converge runs call by name. systemd, coreutils and friends are
  # on every NixOS service's PATH already.
  convergePath = [
    config.nix.package
    pkgs.git
    pkgs.openssh
  ];

  convergeEnvironment = config.networking.proxy.envVars // {
    # Builds and store writes go through nix-daemon, so the units below can
    # see the file system read-only (ProtectSystem=strict).
    NIX_REMOTE = "daemon";
    # Nix keeps its Git and tarball caches under $XDG_CACHE_HOME/nix; root's
    # home is read-only here (ProtectHome=read-only).
    XDG_CACHE_HOME = "/var/cache/fabric";
  };

  # Hardening both units share. Activation does not run under it: fabric
  # starts switch-to-configuration in a transient unit of its own
  # (systemd-run, `fabric-switch-*`), which PID 1 creates with none of these
  # restrictions, and which survives this unit being stopped mid-switch.
  # What the units themselves write: the system profile (nix-env --set and
  # rollback), fabric's state and cache directories, and the bootstrap
  # marker (bootstrap only). Nothing else.
  hardening = {
    ProtectSystem = "strict";
    # Private flakes are fetched with root's ~/.ssh and ~/.gitconfig.
    ProtectHome = "read-only";
    ReadWritePaths = [ (dirOf layout.systemProfile) ];
    StateDirectory = baseNameOf layout.stateDir;
    StateDirectoryMode = "0700";
    CacheDirectory = "fabric";
    CacheDirectoryMode = "0700";
    WorkingDirectory = layout.stateDir;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    NoNewPrivileges = true;
    SystemCallArchitectures = "native";
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
      "AF_NETLINK"
    ];
  };

  # Everything that decides how the running agent behaves. The agent carries
  # it in its environment; fabric-agent-upgrade compares the running one
  # with the one systemd has loaded (see `restartIfChanged` below).
  agentDefinition = builtins.hashString "sha256" (
    builtins.toJSON {
      argv = agentArgv;
      path = map toString convergePath;
      environment = convergeEnvironment;
    }
  );

  # On SIGTERM fabric stops a build at once but finishes an activation in
  # progress (its --switch-timeout defaults to 10 min). Killing it earlier
  # would take the switch's output pipe with it, and switch-to-configuration
  # could die half-way on its next write.
  stopTimeout = "15min";

  isLoopback = address: hasPrefix "127." address || hasPrefix "[::1]:" address;

  # A credential file's path on the machine. Nix paths pass the type only
  # so that the assertions can say why they are refused (a plain string
  # type would just say "not of type string").
  secretFile = lib.mkOptionType {
    name = "secretFile";
    description = "absolute path, as a string";
    descriptionClass = "noun";
    check = v: builtins.isString v || builtins.isPath v;
    merge = lib.mergeEqualOption;
  };
  # known_hosts is public: a Nix path (copied to the store) is fine.
  publicFile = lib.mkOptionType {
    name = "publicFile";
    description = "absolute path, as a string or a Nix path";
    descriptionClass = "noun";
    check = v: builtins.isString v || builtins.isPath v;
    merge = lib.mergeEqualOption;
  };

  # What fabric's duration flags accept (humantime: 90s, 5m, 1h30m), checked
  # here so that a typo fails the build instead of the unit.
  duration = types.strMatching "([0-9]+ *[a-zA-Z]+ *)+";
in
{
  options.services.fabric = {
    package = mkOption {
      type = types.package;
      # Not `pkgs.fabric`: nixpkgs has an unrelated package by that name.
      default = pkgs.kubelize-fabric or (pkgs.callPackage ./package.nix { });
      defaultText = literalExpression "pkgs.kubelize-fabric or (pkgs.callPackage ./package.nix { })";
      description = ''
        The package that provides the `fabric` binary. The flake's
        `nixosModules.default` sets it to the flake's own build; the
        flake's `overlays.default` provides it as `pkgs.kubelize-fabric`.
      '';
    };

    bootstrap = {
      enable = mkEnableOption ''
        the first-boot bootstrap: `fabric-bootstrap.service` switches the
        machine once to the flake reference in `/etc/nix-flake-target`,
        writes `/var/lib/nixos-bootstrap-complete` and never runs again.
        The Proxmox template turns it on; a host flake may keep it on, since
        the completion marker makes every later start a no-op
      '';

      timeout = mkOption {
        type = duration;
        default = layout.defaultBootstrapTimeout;
        example = "1h";
        description = ''
          How long `fabric bootstrap` waits for the flake's Git remote to
          answer before the run fails and systemd retries it
          (`fabric bootstrap --timeout`).
        '';
      };

      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Further arguments for `fabric bootstrap`.";
      };
    };

    agent = {
      enable = mkEnableOption ''
        the Fabric agent: `fabric-agent.service` watches the flake for new
        commits, builds exactly the new revision, switches to it, runs the
        health checks and rolls back when they fail
      '';

      flake = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "git+https://github.com/org/fleet?ref=main#dns01";
        description = ''
          The flake reference to converge on. `null` (the default) reads it
          from `/etc/nix-flake-target` at every run, which is where the
          Machine's `flakeRef` lands through cloud-init.
        '';
      };

      interval = mkOption {
        type = duration;
        default = layout.defaultInterval;
        example = "1m";
        description = "How often the agent asks the Git remote for a new commit (`--interval`).";
      };

      healthChecks = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "systemctl is-active --quiet nginx.service"
          "curl --fail --silent --max-time 5 http://127.0.0.1/healthz"
          "sh -c 'test \"$(dig +short @127.0.0.1 dns01.lab)\" != \"\"'"
        ];
        description = ''
          Commands run after each switch; a non-zero exit or a timeout
          rolls the machine back to the previous generation
          (`--health-check`, once per command). Each is split into words
          like a shell would (quotes work) but runs without one: write
          `sh -c '…'` for pipes, `$VAR` or `$(…)`. They run as root inside
          the agent's sandbox (read-only file system, private /tmp, no
          setuid programs such as sudo or ping) with the new generation's
          `/run/current-system/sw/bin` on PATH. They run in list order;
          when several modules set this option NixOS puts a later module's
          checks first, so use `lib.mkBefore`/`lib.mkAfter` to decide it.
        '';
      };

      healthTimeout = mkOption {
        type = duration;
        default = layout.defaultHealthTimeout;
        description = "How long each health check may run (`--health-timeout`).";
      };

      reboot = mkOption {
        type = types.enum [
          "never"
          "when-needed"
        ];
        default = "never";
        description = ''
          Whether the agent reboots after a switch that changed the kernel,
          initrd or kernel modules, or that switch-to-configuration could
          only apply at boot (`--reboot`).
        '';
      };

      metrics.enable = mkOption {
        type = types.bool;
        default = true;
        description = "Whether the agent serves Prometheus metrics (`--no-metrics` when off).";
      };

      metrics.address = mkOption {
        # An IP address and port, as fabric parses it (no host names).
        type = types.strMatching "(([0-9]{1,3}\\.){3}[0-9]{1,3}|\\[[0-9a-fA-F:.]+]):[0-9]{1,5}";
        default = layout.defaultMetricsAddress;
        example = "0.0.0.0:9750";
        description = ''
          Where the agent serves Prometheus metrics (`--metrics-address`,
          an IP address and port). The default is loopback only; the
          endpoint has no authentication, so open it to the network only
          behind a firewall rule.
        '';
      };

      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Further arguments for `fabric agent`.";
      };
    };

    # The agent's only. The bootstrap runs once on a fresh clone, before a
    # secret manager can decrypt anything for this machine, so it always
    # uses the first-boot files.
    credentials = {
      sshKeyFile = mkOption {
        type = types.nullOr secretFile;
        default = null;
        example = literalExpression "config.sops.secrets.fleet-deploy-key.path";
        description = ''
          The deploy key (an unencrypted OpenSSH private key) the agent
          fetches a `git+ssh://` fleet with (`fabric agent
          --ssh-key-file`). The agent reads it at every run, so a secret
          manager may replace it at any time; it must belong to root and
          be readable by nobody else (sops-nix's and agenix's defaults,
          0400 root, are fine).

          Give the path as a string, e.g.
          `config.sops.secrets.fleet-deploy-key.path` (sops-nix, under
          /run/secrets) or `config.age.secrets.fleet-deploy-key.path`
          (agenix, under /run/agenix), never a Nix path such as
          `./deploy-key`: Nix would copy that into the Nix store, which
          every user of the machine can read. Paths in the store, relative
          paths and paths under /tmp (the unit has a private one) are
          refused too.

          `null` (the default), with `knownHostsFile` null too: the file
          the Machine's Secret put at ${layout.sshKeyFile} at first boot,
          if there is one. Setting this requires `knownHostsFile` (no trust
          on first use), and excludes `accessTokensFile`.
        '';
      };

      knownHostsFile = mkOption {
        type = types.nullOr publicFile;
        default = null;
        example = literalExpression "./known_hosts";
        description = ''
          The forge's host key, as `known_hosts` lines, which the deploy
          key may talk to (`fabric agent --known-hosts-file`): SSH refuses
          any other host key (`StrictHostKeyChecking=yes`). One line must
          name the flake reference's host (`host`, or `[host]:port` for a
          port other than 22). The agent reads it at every run; it must
          not be writable by others.

          It holds nothing secret, so it may live in the fleet repository
          (a Nix path such as `./known_hosts`, or a store path) as well as
          on the machine (a string).

          `null` (the default), with `sshKeyFile` null too: the file at
          ${layout.knownHostsFile} from first boot, if there is one. Set
          it whenever `sshKeyFile` is set; to keep the first-boot one,
          write that path.
        '';
      };

      accessTokensFile = mkOption {
        type = types.nullOr secretFile;
        default = null;
        example = literalExpression "config.age.secrets.fleet-token.path";
        description = ''
          The HTTPS token for a `git+https://`, `github:` or `gitlab:`
          fleet, in Nix's `access-tokens` form: `HOST=TOKEN`, one per line,
          every HOST the flake reference's host (`fabric agent
          --access-tokens-file`). The agent hands it to Git and Nix
          through their environment, never their command line, and reads
          it at every run; it must belong to root and be readable by
          nobody else.

          As for `sshKeyFile`: a string such as
          `config.sops.secrets.fleet-token.path` or
          `config.age.secrets.fleet-token.path`, never a Nix path (it
          would be copied into the world-readable Nix store), not in the
          store, absolute and not under /tmp.

          `null` (the default): the file at ${layout.accessTokensFile}
          from first boot, if there is one.
        '';
      };
    };
  };

  config = mkMerge [
    (mkIf (cfg.bootstrap.enable || cfg.agent.enable) {
      # For the operator: `fabric status`, `fabric doctor`.
      environment.systemPackages = [ cfg.package ];
      # The converge runs build flakes; so does anyone debugging them.
      nix.settings.experimental-features = [
        "nix-command"
        "flakes"
      ];
    })

    (mkIf cfg.bootstrap.enable {
      systemd.services.${bootstrapName} = {
        description = "Fabric first-boot bootstrap (switch to the flake in ${layout.flakeTarget})";
        documentation = [ "https://github.com/kubelize/fabric/blob/main/docs/proxmox-template.md" ];

        # Started at every boot, and by cloud-init's per-boot hook with
        # `systemctl start --no-block`; both requests land on this one unit,
        # and systemd merges a start into one already queued or running.
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        # cloud-final writes nothing we read, but it is where cloud-init's
        # per-boot hook starts this unit; after it, the admin user, the
        # hostname and /etc/nix-flake-target are all in place.
        #
        # multi-user.target: without it systemd orders the target after
        # every unit it wants, so boot would wait for the whole bootstrap,
        # and the `systemctl start multi-user.target` that
        # switch-to-configuration issues from inside this very run would
        # wait for this run: a deadlock. Being ordered after the target
        # turns that default ordering off (nixpkgs' amazon-init does the same).
        after = [
          "network-online.target"
          "cloud-final.service"
          "multi-user.target"
        ];

        unitConfig = {
          # Skipped (not failed) when cloud-init wrote no flake target, and
          # after the first successful run.
          ConditionPathExists = [
            layout.flakeTarget
            "!${layout.bootstrapMarker}"
          ];
          # With the backoff below a failing bootstrap starts at most nine
          # times in its first hour and four times an hour after that, so
          # this limit never stops the retries; it only stops a tight loop
          # should someone set RestartSec=0.
          StartLimitIntervalSec = "1h";
          StartLimitBurst = 10;
          # The switch this unit runs usually moves to a generation without
          # it (or with a changed copy). Stopping it then would kill the run
          # before it records success.
          X-StopOnRemoval = false;
        };
        restartIfChanged = false;

        path = convergePath;
        environment = convergeEnvironment;

        serviceConfig = hardening // {
          Type = "oneshot";
          ExecStart = execLine bootstrapArgv;
          # Retry a failed run (remote down, build failed) with backoff:
          # 30 s, then doubling to at most every 15 min.
          Restart = "on-failure";
          RestartSec = "30s";
          RestartSteps = 5;
          RestartMaxDelaySec = "15min";
          RestartPreventExitStatus = [ layout.exitUsage ];
          # fabric exits 143 when stopped by SIGTERM (e.g. at shutdown);
          # the next boot runs it again, so that is not a failure.
          SuccessExitStatus = [ 143 ];
          # The completion marker lives directly in /var/lib.
          ReadWritePaths = hardening.ReadWritePaths ++ [ (dirOf layout.bootstrapMarker) ];
          TimeoutStopSec = stopTimeout;
        };
      };
    })

    (mkIf cfg.agent.enable {
      assertions = credentialAssertions;

      warnings = optional (cfg.agent.metrics.enable && !isLoopback cfg.agent.metrics.address) ''
        services.fabric.agent.metrics.address = "${cfg.agent.metrics.address}" serves
        the agent's metrics beyond this machine without authentication. Limit
        who can reach the port with the firewall, or keep the default
        (${layout.defaultMetricsAddress}).
      '';

      systemd.services.${agentName} = {
        description = "Fabric agent (keep this machine converged on its flake)";
        documentation = [ "https://github.com/kubelize/fabric/blob/main/README.md#nixos-the-flake-and-the-module" ];
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        # Not after fabric-bootstrap.service: the bootstrap's own switch
        # starts this unit, and waiting for the bootstrap from there would
        # deadlock. The converge lock keeps the two from activating at once.
        # After multi-user.target for the reason the bootstrap is: neither
        # boot nor a switch then waits for the agent's first cycle.
        after = [
          "network-online.target"
          "multi-user.target"
        ];

        # A switch must not restart the agent that is running it: the
        # health checks and any rollback still have to happen. The agent
        # picks up a changed definition through fabric-agent-upgrade below.
        restartIfChanged = false;

        unitConfig = {
          StartLimitIntervalSec = "10min";
          StartLimitBurst = 5;
          # A deployment that turns the agent off must not stop the agent
          # running it: switch-to-configuration would wait for it to stop
          # while it waits for the switch, until the stop timeout killed it
          # and the switch's output pipe with it. fabric-agent-upgrade stops
          # it once the deployment is over.
          X-StopOnRemoval = false;
        };

        path = convergePath ++ [
          # Health checks use the tools of the generation they check.
          "/run/current-system/sw"
        ];
        environment = convergeEnvironment // {
          # Which definition this process was started with; see below.
          FABRIC_AGENT_DEFINITION = agentDefinition;
        };

        serviceConfig = hardening // {
          Type = "notify";
          NotifyAccess = "main";
          ExecStart = execLine agentArgv;
          # fabric reports READY=1 as soon as its loop runs, before the
          # first cycle (which can be a whole deployment), so the default
          # start timeout holds.
          # fabric feeds the watchdog from a thread for as long as its
          # converge loop shows progress (a running build counts), so a
          # long build is not a hang, and a wedged loop gets restarted.
          WatchdogSec = mkDefault "2min";
          Restart = "always";
          RestartSec = "10s";
          RestartPreventExitStatus = [ layout.exitUsage ];
          SuccessExitStatus = [ 143 ];
          TimeoutStopSec = stopTimeout;
        };
      };
    })

    (mkIf (cfg.bootstrap.enable || cfg.agent.enable) {
      # How the agent picks up its own upgrade, or goes away. A switch
      # neither restarts nor stops the agent (restartIfChanged = false,
      # X-StopOnRemoval=false): it may be running that very switch. Two
      # small units finish the job once the deployment is over:
      #
      # - fabric-agent-definition carries the agent's definition hash (or
      #   "agent off") as a restart trigger, so every switch that changes,
      #   adds or removes the agent restarts it (after systemd has loaded
      #   the new units). It only queues the next unit, without waiting:
      #   the switch may be the agent's own, which holds the converge lock
      #   until its health checks and rollback are done.
      # - fabric-agent-upgrade takes the converge lock, so it never cuts a
      #   deployment short, then restarts the agent if the running process
      #   carries another definition than the unit systemd has loaded, or
      #   stops it if the unit is gone.
      #
      # They exist on every machine Fabric manages (bootstrap or agent on),
      # so that turning the agent off in Git retires it too.
      # `systemctl restart fabric-agent` does the same by hand.
      systemd.services.${definitionName} = {
        description = "Notice a new Fabric agent definition";
        wantedBy = [ "multi-user.target" ];
        restartTriggers = [ (if cfg.agent.enable then agentDefinition else "agent off") ];
        stopIfChanged = false;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = execLine [
            "${config.systemd.package}/bin/systemctl"
            "start"
            "--no-block"
            "${upgradeName}.service"
          ];
        };
      };

      systemd.services.${upgradeName} = {
        description = "Move the Fabric agent onto its new definition, or stop it, once it is idle";
        path = [ pkgs.util-linux ];
        serviceConfig = {
          Type = "oneshot";
          # The lock lives there; it may run before the agent first started.
          StateDirectory = baseNameOf layout.stateDir;
          StateDirectoryMode = "0700";
        };
        script = ''
          agent=${layout.agentUnit}
          definition() { grep -o 'FABRIC_AGENT_DEFINITION=[0-9a-f]*' || true; }

          # What the running agent needs: nothing (prints nothing), a
          # restart onto the loaded definition, or a stop (its unit is gone:
          # the agent was turned off). A stopped agent needs nothing; its
          # next start uses the loaded definition anyway.
          needed() {
            pid=$(systemctl show --property=MainPID --value "$agent")
            [ "''${pid:-0}" -gt 0 ] || return 0
            if [ "$(systemctl show --property=LoadState --value "$agent")" != loaded ]; then
              echo stop
              return 0
            fi
            running=$(tr '\0' '\n' < "/proc/$pid/environ" | definition)
            loaded=$(systemctl show --property=Environment --value "$agent" | tr ' ' '\n' | definition)
            [ "$running" = "$loaded" ] || echo restart
          }

          [ -n "$(needed)" ] || exit 0
          # The converge lock is held from a run's first step to its last
          # (build, switch, health checks, rollback); act only between runs.
          exec 9>>${layout.convergeLock}
          if ! flock --wait 3600 9; then
            echo "a converge run has held ${layout.convergeLock} for an hour; leaving $agent alone"
            exit 0
          fi
          action=$(needed)
          [ -n "$action" ] || exit 0
          echo "$agent: $action (its running definition is not the loaded one)"
          systemctl "$action" --no-block "$agent"
        '';
      };
    })
  ];
}
