//! `fabric agent`: CLI glue for `fabric_converge::agent`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use fabric_converge::agent::{Agent, AgentOptions, CycleResult, FlakeSource, RebootPolicy};
use fabric_converge::deploy::HealthCheck;
use fabric_converge::process::Runner;
use fabric_converge::{layout, parse_duration};
use fabric_model::FlakeRef;

/// Keep the machine converged on its flake: the GitOps agent.
///
/// Every --interval (with ±10% random jitter, so a fleet does not poll in
/// step) it asks the Git remote for the head with one `git ls-remote`. When
/// the head has not moved, nothing is built or activated. When it moved:
///
///   1. build exactly that revision (the flake pinned with rev=<commit>);
///   2. skip activation if the toplevel is the running one;
///   3. set the system profile, then switch-to-configuration switch;
///   4. run every --health-check, and require the switch to report no
///      failed units (exit 4 is a failure).
///
/// If activation or a health check fails, the previous generation is
/// re-activated and the profile pointed back at it, and the revision is
/// recorded as rejected: it is not tried again until the remote moves. A
/// failed build changes nothing and is recorded with its output.
///
/// Runs as fabric-agent.service (Type=notify): READY=1 as soon as the loop
/// runs, WATCHDOG=1 while it is alive. SIGTERM during a build stops
/// the build; an activation in progress is always finished first.
///
/// Metrics (Prometheus text) on http://127.0.0.1:9750/metrics by default:
/// fabric_agent_last_check_timestamp_seconds,
/// fabric_agent_last_success_timestamp_seconds, fabric_agent_current_revision,
/// fabric_agent_rejected_revisions, fabric_agent_reboot_needed,
/// fabric_agent_build_duration_seconds,
/// fabric_agent_activation_duration_seconds, fabric_agent_polls_total,
/// fabric_agent_deployments_total, fabric_agent_resident_memory_bytes.
///
/// The credential files (see the flags) are re-read every cycle, so a
/// rotated key or token is used from the next poll on; only git and nix
/// get it, through their environment.
///
/// Exit status (--once): 0 converged or nothing changed; 1 the revision
/// was rejected (build, activation or health failed), the remote could not
/// be asked, or the state cannot be written; 2 flake target or --flake
/// refused, a credential file refused, a bad flag, or --root is not an existing directory; 3 another
/// run holds the lock; 4 activation and rollback both failed; 143 stopped
/// by SIGTERM. The daemon exits 0 on SIGTERM, 1 when --metrics-address is
/// taken (systemd retries it), and 2 for a bad flag.
#[derive(Debug, clap::Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Examples:\n  fabric agent\n  fabric agent --interval 2m --health-check 'systemctl is-active nginx.service'\n  fabric agent --once --flake 'git+https://github.com/org/fleet?ref=main#dns01'"
)]
pub struct Args {
    /// Treat DIR as the machine's / (state, profile, /run/current-system
    /// are under it; switch-to-configuration runs directly).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// The flake reference to follow, e.g.
    /// git+https://github.com/org/fleet?ref=main#dns01. Default: the flake
    /// target file, re-read every cycle.
    #[arg(long, value_name = "REF", value_parser = parse_flake)]
    pub flake: Option<FlakeRef>,

    /// The flake target file used when --flake is not given (a path on the
    /// machine, joined under --root).
    #[arg(long, value_name = "PATH", default_value = layout::FLAKE_TARGET)]
    pub flake_target: PathBuf,

    /// Time between polls of the remote (e.g. 90s, 5m, 1h), ±10% jitter.
    #[arg(long, value_name = "DURATION", default_value = layout::DEFAULT_INTERVAL, value_parser = parse_duration)]
    pub interval: Duration,

    /// After a switch, run this command (no shell; quote like one, e.g.
    /// "curl -fsS http://127.0.0.1:8080/health"). A non-zero exit or a
    /// timeout rolls back. Repeatable; all must pass.
    #[arg(long = "health-check", value_name = "CMD")]
    pub health_checks: Vec<HealthCheck>,

    /// Timeout of each health check.
    #[arg(long, value_name = "DURATION", default_value = layout::DEFAULT_HEALTH_TIMEOUT, value_parser = parse_duration)]
    pub health_timeout: Duration,

    /// Reboot after a healthy switch whose kernel, initrd or modules differ
    /// from the booted ones (or that asked for it): never (only report it
    /// in status and metrics) or when-needed (`systemctl reboot`).
    #[arg(long, value_enum, default_value_t = Reboot::Never)]
    pub reboot: Reboot,

    /// Serve Prometheus metrics here. Keep it on loopback unless a
    /// firewall protects it.
    #[arg(long, value_name = "ADDR:PORT", default_value = layout::DEFAULT_METRICS_ADDRESS)]
    pub metrics_address: SocketAddr,

    /// Do not serve metrics.
    #[arg(long, conflicts_with = "metrics_address")]
    pub no_metrics: bool,

    /// Run one cycle and exit with its result (no metrics endpoint).
    #[arg(long)]
    pub once: bool,

    /// Deploy the head even if it was rejected before.
    #[arg(long)]
    pub retry_rejected: bool,

    /// Stop `nix build` after this long.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_duration)]
    pub build_timeout: Duration,

    /// Stop switch-to-configuration after this long (then roll back).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub switch_timeout: Duration,

    #[command(flatten)]
    pub credentials: super::bootstrap::CredentialArgs,

    /// With --once, print the cycle result as JSON on stdout.
    #[arg(long, requires = "once")]
    pub json: bool,
}

/// A flake reference as the Machine API reads it; the error says what would
/// be right.
fn parse_flake(text: &str) -> Result<FlakeRef, String> {
    FlakeRef::parse(text).map_err(|e| format!("{}; {}", e.message(), e.hint()))
}

/// `--reboot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reboot {
    /// Only report that a reboot is needed.
    Never,
    /// Run `systemctl reboot` when needed.
    WhenNeeded,
}

/// Logs on stderr: plain text without colour unless stderr is a terminal,
/// and without our own timestamps under journald (it adds its own).
/// `RUST_LOG` overrides the level (default info).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(tty)
        .with_target(false);
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

pub fn run(args: Args) -> ExitCode {
    init_logging();
    let (root, cancel) = match super::converge_setup("agent", &args.root) {
        Ok(ok) => ok,
        Err(code) => return code,
    };
    let mut opts = AgentOptions::new(root);
    opts.flake = match args.flake {
        Some(f) => FlakeSource::Fixed(f),
        None => FlakeSource::TargetFile(args.flake_target),
    };
    opts.interval = args.interval.max(Duration::from_secs(1));
    opts.build_timeout = args.build_timeout;
    opts.activator.switch_timeout = args.switch_timeout;
    opts.activator.health_checks = args.health_checks;
    opts.activator.health_timeout = args.health_timeout;
    opts.reboot = match args.reboot {
        Reboot::Never => RebootPolicy::Never,
        Reboot::WhenNeeded => RebootPolicy::WhenNeeded,
    };
    opts.retry_rejected = args.retry_rejected;
    opts.credentials = args.credentials.paths();
    let agent = Agent::new(opts, Runner::new(), cancel);

    if args.once {
        let result = agent.cycle();
        if args.json {
            // A report for scripts, failed or not: stdout, as validate's.
            out(serde_json::to_string(&result).unwrap_or_default());
        } else if result.exit_code() == crate::exit::OK {
            out(one_line(&result));
        } else {
            // A run error: stderr only, as bootstrap's.
            eprintln!("fabric agent: {}", one_line(&result));
        }
        return ExitCode::from(result.exit_code());
    }

    if !args.no_metrics {
        if !args.metrics_address.ip().is_loopback() {
            tracing::warn!(
                "serving metrics on {}, which is not loopback",
                args.metrics_address
            );
        }
        match fabric_converge::metrics::serve(args.metrics_address, agent.metrics()) {
            Ok(addr) => tracing::info!("metrics on http://{addr}/metrics"),
            Err(e) => {
                eprintln!(
                    "fabric agent: cannot serve metrics on {}: {e}; pick another --metrics-address or use --no-metrics",
                    args.metrics_address
                );
                // Another process holding the port may go away, so this is
                // a failure systemd retries (1), not a usage error (2).
                return ExitCode::from(crate::exit::FAILED);
            }
        }
    }
    ExitCode::from(agent.run())
}

/// Writes a result line to stdout; a closed pipe (`| head`) is not worth a
/// panic.
pub(crate) fn out(text: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn one_line(r: &CycleResult) -> String {
    match r {
        CycleResult::NoChange { revision } => format!("no change: {revision}"),
        CycleResult::SkippedRejected { revision, reason } => {
            format!("skipped rejected {revision}: {reason}")
        }
        CycleResult::Deployed {
            revision,
            store_path,
            outcome,
            reboot_needed,
        } => format!(
            "{outcome}: {revision} {store_path}{}",
            if *reboot_needed {
                " (reboot needed)"
            } else {
                ""
            }
        ),
        CycleResult::Rejected {
            revision,
            outcome,
            failure,
        } => {
            format!(
                "rejected {revision} ({outcome}) in {}: {}",
                failure.phase, failure.message
            )
        }
        CycleResult::RollbackFailed { revision, failure } => {
            format!("rollback failed for {revision}: {}", failure.message)
        }
        CycleResult::RemoteFailed { message } => format!("remote failed: {message}"),
        CycleResult::TargetRefused { message } => format!("refused: {message}"),
        CycleResult::CredentialRefused { message } => format!("credential refused: {message}"),
        CycleResult::StateFailed { message } => format!("state: {message}"),
        CycleResult::Busy { holder } => format!("busy: pid {holder} holds the converge lock"),
        CycleResult::Cancelled => "cancelled".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::Args,
    }

    #[test]
    fn contract_flags_and_defaults() {
        let a = Cli::try_parse_from(["agent"]).unwrap().args;
        assert_eq!(a.root, std::path::Path::new("/"));
        assert_eq!(a.interval, std::time::Duration::from_secs(300));
        assert_eq!(a.health_timeout, std::time::Duration::from_secs(60));
        assert_eq!(a.metrics_address.to_string(), "127.0.0.1:9750");
        assert_eq!(a.reboot, super::Reboot::Never);
        assert!(a.flake.is_none() && !a.once);

        let a = Cli::try_parse_from([
            "agent",
            "--root",
            "/mnt",
            "--flake",
            "git+https://example.org/fleet?ref=main#dns01",
            "--interval",
            "90s",
            "--health-check",
            "systemctl is-active nginx.service",
            "--health-check",
            "curl -fsS 'http://127.0.0.1/health'",
            "--reboot",
            "when-needed",
            "--once",
        ])
        .unwrap()
        .args;
        assert_eq!(a.interval, std::time::Duration::from_secs(90));
        assert_eq!(a.health_checks.len(), 2);
        assert_eq!(a.reboot, super::Reboot::WhenNeeded);
        assert_eq!(a.flake.unwrap().attr(), "dns01");

        let e =
            Cli::try_parse_from(["agent", "--flake", "git+https://example.org/fleet"]).unwrap_err();
        assert!(e.to_string().contains("#<name>"), "{e}");
        let e = Cli::try_parse_from(["agent", "--interval", "soon"]).unwrap_err();
        assert!(e.to_string().contains("e.g. 90s, 5m, 1h"), "{e}");
    }
}
