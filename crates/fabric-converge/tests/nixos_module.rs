//! The NixOS module (`nix/module.nix`) against what `fabric` implements.
//!
//! The module names units, files and flags that the binary must agree
//! with. nixpkgs cannot be fetched here, so the module is checked in two
//! ways:
//!
//! - its `layout = { … };` block must equal [`fabric_converge::layout`],
//!   entry for entry;
//! - the units it renders must use those names, paths and defaults, and
//!   only flags the `fabric` CLI declares. The units come from evaluating
//!   the module with real Nix (`nix-instantiate`, Debian's nix-bin) against
//!   the stand-in module system in `nix/tests/standin/` (a thin fake of
//!   NixOS: see `nix/tests/eval-standin.nix`; nixpkgs' real lib instead
//!   when `FABRIC_NIXPKGS_LIB` names a copy). The evaluation also runs its
//!   own checks and fails when one breaks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fabric_converge::deploy::HealthCheck;
use fabric_converge::layout;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `layout = { … };` block of nix/module.nix: `name = "value";` or
/// `name = 2;` lines, comments skipped.
fn module_layout(module: &str) -> BTreeMap<String, String> {
    let mut lines = module.lines().skip_while(|l| l.trim() != "layout = {");
    assert!(
        lines.next().is_some(),
        "nix/module.nix: no `layout = {{` block"
    );
    let mut entries = BTreeMap::new();
    for line in lines {
        let line = line.trim();
        if line == "};" {
            return entries;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .strip_suffix(';')
            .and_then(|l| l.split_once(" = "))
            .unwrap_or_else(|| panic!("nix/module.nix layout: cannot read {line:?}"));
        let value = value.trim_matches('"');
        assert!(
            entries
                .insert(name.to_string(), value.to_string())
                .is_none(),
            "nix/module.nix layout: {name} twice"
        );
    }
    panic!("nix/module.nix: the `layout` block is not closed");
}

/// The name of the `fabric` binary, from crates/fabric/Cargo.toml.
fn binary_name() -> String {
    let manifest = read("crates/fabric/Cargo.toml");
    let bin = manifest
        .split("[[bin]]")
        .nth(1)
        .expect("crates/fabric/Cargo.toml has a [[bin]] section");
    bin.lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("[[bin]] has a name")
}

#[test]
fn module_layout_is_fabric_layout() {
    let module = read("nix/module.nix");
    let nix = module_layout(&module);
    let rust: BTreeMap<String, String> = [
        ("binary", binary_name()),
        ("bootstrapUnit", layout::BOOTSTRAP_UNIT.into()),
        ("agentUnit", layout::AGENT_UNIT.into()),
        ("flakeTarget", layout::FLAKE_TARGET.into()),
        ("bootstrapMarker", layout::BOOTSTRAP_MARKER.into()),
        ("stateDir", layout::STATE_DIR.into()),
        ("agentState", layout::AGENT_STATE.into()),
        ("convergeLock", layout::CONVERGE_LOCK.into()),
        ("systemProfile", layout::SYSTEM_PROFILE.into()),
        ("defaultInterval", layout::DEFAULT_INTERVAL.into()),
        (
            "defaultBootstrapTimeout",
            layout::DEFAULT_BOOTSTRAP_TIMEOUT.into(),
        ),
        (
            "defaultHealthTimeout",
            layout::DEFAULT_HEALTH_TIMEOUT.into(),
        ),
        (
            "defaultMetricsAddress",
            layout::DEFAULT_METRICS_ADDRESS.into(),
        ),
        ("credentialsDir", layout::CREDENTIALS_DIR.into()),
        ("sshKeyFile", layout::SSH_KEY_FILE.into()),
        ("knownHostsFile", layout::KNOWN_HOSTS_FILE.into()),
        ("accessTokensFile", layout::ACCESS_TOKENS_FILE.into()),
        ("exitUsage", layout::exit::USAGE.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Both directions: a new entry on the Nix side needs a Rust counterpart here.
    assert_eq!(
        nix, rust,
        "nix/module.nix `layout` differs from fabric_converge::layout"
    );
}

/// `nix/tests/eval-standin.nix`'s `units`, evaluated with real Nix.
fn standin_units() -> Value {
    let out = Command::new("nix-instantiate")
        .current_dir(repo())
        .env(
            "NIX_CONFIG",
            "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false",
        )
        .args([
            "--readonly-mode",
            "--eval",
            "--strict",
            "--json",
            "nix/tests/eval-standin.nix",
            "-A",
            "units",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run nix-instantiate ({e}); the Nix tests need Nix (Debian: apt-get install nix-bin)")
        });
    assert!(
        out.status.success(),
        "nix/tests/eval-standin.nix failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nix-instantiate --json prints JSON")
}

/// ExecStart= back into argv. The module writes each word as a JSON string
/// with systemd's `%` and `$` doubled; this reads them with serde_json, a
/// different decoder from the stand-in's own.
fn argv(exec_start: &Value) -> Vec<String> {
    let text = exec_start.as_str().expect("ExecStart is a string");
    serde_json::Deserializer::from_str(text)
        .into_iter::<String>()
        .map(|w| {
            w.unwrap_or_else(|e| panic!("ExecStart={text}: {e}"))
                .replace("%%", "%")
                .replace("$$", "$")
        })
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")))
        .collect()
}

/// `systemd.services.<name>` for the unit file name.
fn service<'a>(case: &'a Value, unit: &str) -> &'a Value {
    let name = unit.strip_suffix(".service").expect("a .service unit");
    case.get(name)
        .unwrap_or_else(|| panic!("the module renders no {unit}; it has {case}"))
}

fn parent(path: &str) -> &str {
    Path::new(path)
        .parent()
        .and_then(Path::to_str)
        .expect("an absolute path")
}

#[test]
fn bootstrap_unit_matches_the_contract() {
    let units = standin_units();
    let unit = service(&units["bootstrap"], layout::BOOTSTRAP_UNIT);
    let exe = units["fabricExe"].as_str().unwrap();
    assert!(exe.ends_with(&format!("/bin/{}", binary_name())), "{exe}");

    assert_eq!(
        argv(&unit["serviceConfig"]["ExecStart"]),
        [
            exe,
            "bootstrap",
            "--timeout",
            layout::DEFAULT_BOOTSTRAP_TIMEOUT
        ]
    );
    // What cloud-init's per-boot hook relies on (fabric-cloudinit's runtime
    // unit has the same conditions and ordering).
    let negated_marker = format!("!{}", layout::BOOTSTRAP_MARKER);
    assert_eq!(
        strings(&unit["unitConfig"]["ConditionPathExists"]),
        [layout::FLAKE_TARGET, negated_marker.as_str()]
    );
    let after = strings(&unit["after"]);
    for needed in ["network-online.target", "cloud-final.service"] {
        assert!(after.contains(&needed), "After= lacks {needed}: {after:?}");
    }
    assert_eq!(strings(&unit["wants"]), ["network-online.target"]);
    assert_eq!(strings(&unit["wantedBy"]), ["multi-user.target"]);
    assert_eq!(unit["serviceConfig"]["Type"], "oneshot");
    assert_eq!(unit["serviceConfig"]["Restart"], "on-failure");
    assert_eq!(
        unit["serviceConfig"]["RestartPreventExitStatus"],
        serde_json::json!([layout::exit::USAGE])
    );

    // The sandbox leaves writable exactly what bootstrap writes.
    let state_dir = layout::STATE_DIR
        .strip_prefix("/var/lib/")
        .expect("the state directory is under /var/lib");
    assert_eq!(unit["serviceConfig"]["StateDirectory"], state_dir);
    assert_eq!(
        strings(&unit["serviceConfig"]["ReadWritePaths"]),
        [
            parent(layout::SYSTEM_PROFILE),
            parent(layout::BOOTSTRAP_MARKER)
        ]
    );
    // A stop (shutdown) lets an activation in progress finish.
    let bootstrap_defaults =
        fabric_converge::bootstrap::BootstrapOptions::new(fabric_converge::root::Root::host());
    assert_outlasts_switch(
        &unit["serviceConfig"]["TimeoutStopSec"],
        bootstrap_defaults.activator.switch_timeout,
    );
    assert!(layout::CONVERGE_LOCK.starts_with(&format!("{}/", layout::STATE_DIR)));
    assert!(layout::BOOTSTRAP_STATE.starts_with(&format!("{}/", layout::STATE_DIR)));
}

#[test]
fn agent_unit_matches_the_contract() {
    let units = standin_units();
    let exe = units["fabricExe"].as_str().unwrap();
    let unit = service(&units["agent"], layout::AGENT_UNIT);
    let config = &unit["serviceConfig"];

    // Without `flake` the module passes no --flake: the agent then reads
    // the flake target file, which is what its defaults say.
    assert_eq!(
        argv(&config["ExecStart"]),
        [
            exe,
            "agent",
            "--interval",
            layout::DEFAULT_INTERVAL,
            "--health-timeout",
            layout::DEFAULT_HEALTH_TIMEOUT,
            "--reboot",
            "never",
            "--metrics-address",
            layout::DEFAULT_METRICS_ADDRESS,
        ]
    );
    let defaults = fabric_converge::agent::AgentOptions::new(fabric_converge::root::Root::host());
    assert!(
        matches!(&defaults.flake, fabric_converge::agent::FlakeSource::TargetFile(p) if p == Path::new(layout::FLAKE_TARGET)),
        "the agent's default flake source is {:?}",
        defaults.flake
    );
    assert_eq!(defaults.reboot, fabric_converge::agent::RebootPolicy::Never);
    assert_eq!(Some(defaults.interval), duration(layout::DEFAULT_INTERVAL));
    assert_eq!(
        Some(defaults.activator.health_timeout),
        duration(layout::DEFAULT_HEALTH_TIMEOUT)
    );
    assert!(
        layout::DEFAULT_METRICS_ADDRESS.starts_with("127."),
        "metrics default to loopback"
    );

    assert_outlasts_switch(&config["TimeoutStopSec"], defaults.activator.switch_timeout);
    assert_eq!(config["Type"], "notify");
    assert!(
        config["WatchdogSec"].as_str().and_then(duration).is_some(),
        "WatchdogSec= {}",
        config["WatchdogSec"]
    );
    assert_eq!(unit["restartIfChanged"], false);
    assert!(
        !strings(&unit["after"]).contains(&layout::BOOTSTRAP_UNIT),
        "the agent must not wait for the bootstrap whose switch starts it"
    );
    assert_eq!(
        strings(&config["ReadWritePaths"]),
        [parent(layout::SYSTEM_PROFILE)]
    );

    // How it picks up its own upgrade: under the converge lock, acting on
    // the agent's unit by its real name.
    let upgrade = units["agent"]["fabric-agent-upgrade"]["script"]
        .as_str()
        .unwrap();
    for line in [
        format!("agent={}\n", layout::AGENT_UNIT),
        format!("exec 9>>{}\n", layout::CONVERGE_LOCK),
    ] {
        assert!(upgrade.contains(&line), "{line:?} not in\n{upgrade}");
    }
}

#[test]
fn every_option_reaches_the_agent_as_fabric_parses_it() {
    let units = standin_units();
    let unit = service(&units["agentFull"], layout::AGENT_UNIT);
    let words = argv(&unit["serviceConfig"]["ExecStart"]);
    let passed: Vec<&str> = words
        .iter()
        .zip(words.iter().skip(1))
        .filter(|(flag, _)| *flag == "--health-check")
        .map(|(_, check)| check.as_str())
        .collect();
    // A second module adds "true" with mkAfter. Without it NixOS would put
    // that module's check first (a later module's list definitions come
    // first), so the order is the one the modules decide, not merge order.
    let mut expected = strings(&units["healthChecks"]);
    expected.push("true");
    assert_eq!(passed, expected);
    for check in passed {
        // The agent splits each check like a shell would; quoting that
        // survived systemd must still split.
        HealthCheck::parse(check).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        words.last().map(String::as_str),
        Some("--verbose"),
        "extraArgs come last"
    );
    assert_eq!(
        flag_values(&words, "--access-tokens-file"),
        ["/run/agenix/fleet-token"]
    );

    // A deploy key with its pinned host key: the key's path as given, the
    // known_hosts file (a Nix path in the fleet repository) as its store path.
    let ssh = argv(&service(&units["agentSsh"], layout::AGENT_UNIT)["serviceConfig"]["ExecStart"]);
    assert_eq!(
        flag_values(&ssh, "--ssh-key-file"),
        ["/run/secrets/fleet-deploy-key"]
    );
    let known_hosts = flag_values(&ssh, "--known-hosts-file");
    assert!(
        matches!(known_hosts.as_slice(), [p] if p.starts_with("/nix/store/") && p.ends_with("-known_hosts")),
        "--known-hosts-file {known_hosts:?}"
    );
    assert!(flag_values(&ssh, "--access-tokens-file").is_empty());
}

/// The values given to every `flag` in `argv`, in order.
fn flag_values<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
    argv.iter()
        .zip(argv.iter().skip(1))
        .filter(|(f, _)| *f == flag)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// On SIGTERM fabric finishes an activation in progress; systemd must wait
/// longer than that before it kills the process (and the switch's pipes).
fn assert_outlasts_switch(timeout_stop: &Value, switch_timeout: Duration) {
    let stop = timeout_stop
        .as_str()
        .and_then(duration)
        .unwrap_or_else(|| panic!("TimeoutStopSec= {timeout_stop}"));
    assert!(
        stop > switch_timeout,
        "TimeoutStopSec={stop:?} would kill fabric during a switch it may take {switch_timeout:?} to finish"
    );
}

/// `--long` flags declared by a clap `Args` struct in `source`: explicit
/// `long = "name"` values, and fields under an `#[arg(...)]` that says
/// `long` without a value (clap derives `--field-name`).
fn declared_flags(source: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let mut pending_long = false;
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[arg(") || line.starts_with("#[clap(") {
            if let Some(rest) = line.split("long = \"").nth(1) {
                flags.push(format!("--{}", rest.split('"').next().unwrap_or_default()));
            } else if line.contains("long") {
                pending_long = true;
            }
            continue;
        }
        if line.starts_with("#[") || line.starts_with("///") || line.starts_with("//") {
            continue;
        }
        if pending_long {
            if let Some((field, _)) = line.trim_start_matches("pub ").split_once(':') {
                flags.push(format!("--{}", field.trim().replace('_', "-")));
            }
            pending_long = false;
        }
    }
    flags
}

/// [`declared_flags`] of `cli`, plus those of every `Args` struct it
/// includes with `#[command(flatten)]` (flags several subcommands share),
/// in that file or, failing that, wherever under crates/fabric/src.
fn declared_flags_with_flattened(cli: &str) -> Vec<String> {
    let source = read(cli);
    let mut flags = declared_flags(&source);
    let mut lines = source.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if !(line.starts_with("#[command(flatten") || line.starts_with("#[clap(flatten")) {
            continue;
        }
        let Some(ty) = lines
            .find(|l| !l.starts_with("#[") && !l.starts_with("//"))
            .and_then(|field| field.split_once(':'))
            .map(|(_, ty)| {
                ty.trim()
                    .trim_end_matches(',')
                    .rsplit("::")
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        else {
            continue;
        };
        // The CLI's own file first: `Args` is declared in many.
        let body = std::iter::once(source.clone())
            .chain(rust_sources(&repo().join("crates/fabric/src")))
            .find_map(|text| {
                let start = text.find(&format!("struct {ty} {{"))?;
                let rest = &text[start..];
                Some(rest[..rest.find("\n}").unwrap_or(rest.len())].to_string())
            })
            .unwrap_or_else(|| {
                panic!("{cli} flattens {ty}, declared nowhere under crates/fabric/src")
            });
        flags.extend(declared_flags(&body));
    }
    flags
}

fn rust_sources(dir: &Path) -> Vec<String> {
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            sources.push(
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            );
        }
    }
    sources
}

#[test]
fn the_cli_declares_every_flag_the_module_passes() {
    let units = standin_units();
    let extra = strings(&units["extraArgs"]);
    let cases = [
        (
            "crates/fabric/src/cmd/bootstrap.rs",
            service(&units["bootstrap"], layout::BOOTSTRAP_UNIT),
        ),
        (
            "crates/fabric/src/cmd/agent.rs",
            service(&units["agent"], layout::AGENT_UNIT),
        ),
        (
            "crates/fabric/src/cmd/agent.rs",
            service(&units["agentFull"], layout::AGENT_UNIT),
        ),
        (
            "crates/fabric/src/cmd/agent.rs",
            service(&units["agentNoMetrics"], layout::AGENT_UNIT),
        ),
        (
            "crates/fabric/src/cmd/agent.rs",
            service(&units["agentSsh"], layout::AGENT_UNIT),
        ),
    ];
    for (cli, unit) in cases {
        let declared = declared_flags_with_flattened(cli);
        for word in argv(&unit["serviceConfig"]["ExecStart"]) {
            if word.starts_with("--") && !extra.contains(&word.as_str()) {
                assert!(
                    declared.contains(&word),
                    "nix/module.nix passes {word}, which {cli} does not declare (it declares {declared:?})"
                );
            }
        }
    }
}

/// The values clap derives for a `ValueEnum` named `name` in `source`: its
/// variants in kebab case (`WhenNeeded` is `when-needed`).
fn value_enum(source: &str, name: &str) -> Vec<String> {
    let body = source
        .split(&format!("pub enum {name} {{"))
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_else(|| panic!("no `pub enum {name}` in the CLI"));
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("#["))
        .map(|variant| {
            let ident = variant.trim_end_matches(',');
            let mut kebab = String::new();
            for (i, c) in ident.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    kebab.push('-');
                }
                kebab.push(c.to_ascii_lowercase());
            }
            kebab
        })
        .collect()
}

#[test]
fn reboot_choices_are_the_cli_values() {
    let units = standin_units();
    let module = strings(&units["rebootChoices"]);
    let cli = value_enum(&read("crates/fabric/src/cmd/agent.rs"), "Reboot");
    assert_eq!(
        module, cli,
        "services.fabric.agent.reboot accepts {module:?}; fabric agent --reboot accepts {cli:?}"
    );
}

/// A systemd time span such as `30s`, `15min` or `1h`.
fn duration(span: &str) -> Option<Duration> {
    humantime::parse_duration(span).ok()
}

/// systemd's delay before the n-th automatic restart (service.c,
/// service_restart_usec_next): RestartSec first, then growing
/// geometrically to RestartMaxDelaySec over RestartSteps restarts.
fn restart_delay(n: u32, first: f64, max: f64, steps: u32) -> f64 {
    if n <= 1 || steps == 0 || first >= max {
        first
    } else if n > steps {
        max
    } else {
        first * (max / first).powf(f64::from(n - 1) / f64::from(steps))
    }
}

#[test]
fn bootstrap_retries_back_off_below_the_start_limit() {
    let units = standin_units();
    let unit = service(&units["bootstrap"], layout::BOOTSTRAP_UNIT);
    let config = &unit["serviceConfig"];
    let span = |v: &Value| {
        let s = v.as_str().unwrap_or_else(|| panic!("not a time span: {v}"));
        duration(s)
            .unwrap_or_else(|| panic!("not a time span: {s}"))
            .as_secs_f64()
    };
    let first = span(&config["RestartSec"]);
    let max = span(&config["RestartMaxDelaySec"]);
    let steps = u32::try_from(config["RestartSteps"].as_u64().expect("RestartSteps")).unwrap();
    let window = span(&unit["unitConfig"]["StartLimitIntervalSec"]);
    let burst = unit["unitConfig"]["StartLimitBurst"]
        .as_u64()
        .expect("StartLimitBurst");

    assert!(first >= 10.0, "RestartSec={first}s retries too fast");
    assert!(
        max <= 3600.0,
        "RestartMaxDelaySec={max}s leaves a machine unconverged too long"
    );

    // A run that fails at once, for two days: systemd's start rate limit
    // (ratelimit_below: a window opens at the first start after the last
    // one closed) must never trip, or the bootstrap would stop retrying.
    let mut now = 0.0;
    let mut window_start = f64::NEG_INFINITY;
    let mut in_window = 0;
    let mut restarts = 0;
    while now < 2.0 * 86400.0 {
        if now >= window_start + window {
            window_start = now;
            in_window = 0;
        }
        in_window += 1;
        assert!(
            in_window <= burst,
            "start {} at {now:.0}s is the {in_window}th within StartLimitIntervalSec={window}s (burst {burst})",
            restarts + 1
        );
        restarts += 1;
        now += restart_delay(restarts, first, max, steps);
    }
}
