//! `fabric bootstrap`: CLI glue for `fabric_converge::bootstrap`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use fabric_converge::bootstrap::{self, BootstrapOptions, BootstrapReport};
use fabric_converge::credential::CredentialPaths;
use fabric_converge::deploy::HealthCheck;
use fabric_converge::process::Runner;
use fabric_converge::remote::Backoff;
use fabric_converge::{layout, parse_duration};

/// Converge a freshly booted machine on its flake, once.
///
/// Runs as the first-boot unit fabric-bootstrap.service:
///
///   1. reads the flake target (/etc/nix-flake-target); it must be one flake
///      reference, owned by root and writable by nobody else;
///   2. waits for the flake's Git remote with `git ls-remote`, backing off
///      exponentially with jitter, one log line per attempt, up to --timeout;
///   3. builds exactly the remote head: the flake pinned with rev=<commit>,
///      attribute nixosConfigurations.<name>.config.system.build.toplevel;
///   4. sets the system profile and runs switch-to-configuration switch (in a
///      transient systemd unit on a real system, directly under --root);
///   5. writes /var/lib/nixos-bootstrap-complete and /var/lib/fabric/
///      bootstrap.json, and disables fabric-bootstrap.service.
///
/// It is idempotent: with the marker present it exits 0 at once; a second
/// concurrent run waits for the first and then finds the marker; a run that
/// was killed is simply run again. On failure, the phase, the command and
/// the tail of its output are recorded (see `fabric status`) and no marker
/// is written.
///
/// Git and Nix, and only they, get the fleet's credential (see the
/// credential flags): a deploy key through GIT_SSH_COMMAND with the pinned
/// known_hosts, or a token through GIT_CONFIG_* and NIX_CONFIG, never on a
/// command line. The journal and `fabric status` name the key's fingerprint
/// or the token's host, never the secret.
///
/// Exit status: 0 complete (or already complete); 1 failed (reason
/// recorded); 2 flake target refused or not a Git flake, a credential file
/// refused (others can read it, not root's, no pinned host, a token for
/// another host, the wrong kind for the flake), a bad flag, or
/// --root is not an existing directory; 4 activation and rollback both
/// failed; 143 stopped by SIGTERM or SIGINT.
#[derive(Debug, clap::Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Examples:\n  fabric bootstrap\n  fabric bootstrap --timeout 1h\n  fabric bootstrap --root /mnt --flake-target /etc/nix-flake-target"
)]
pub struct Args {
    /// Treat DIR as the machine's /: the flake target, /var/lib/fabric, the
    /// marker, the system profile and /run/current-system are read and
    /// written under it, and switch-to-configuration runs directly instead
    /// of through systemd-run.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Give up waiting for the Git remote after this long (e.g. 90s, 5m, 1h).
    #[arg(long, value_name = "DURATION", default_value = layout::DEFAULT_BOOTSTRAP_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,

    /// The file holding the flake reference (a path on the machine, joined
    /// under --root).
    #[arg(long, value_name = "PATH", default_value = layout::FLAKE_TARGET)]
    pub flake_target: PathBuf,

    /// Stop `nix build` after this long.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_duration)]
    pub build_timeout: Duration,

    /// Stop switch-to-configuration after this long (then roll back).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub switch_timeout: Duration,

    /// After the switch, run this command (no shell; quote like one, e.g.
    /// "curl -fsS http://127.0.0.1:8080/health"); a non-zero exit rolls
    /// back to the template's generation. Repeatable.
    #[arg(long = "health-check", value_name = "CMD")]
    pub health_checks: Vec<HealthCheck>,

    /// Timeout of each health check.
    #[arg(long, value_name = "DURATION", default_value = layout::DEFAULT_HEALTH_TIMEOUT, value_parser = parse_duration)]
    pub health_timeout: Duration,

    #[command(flatten)]
    pub credentials: CredentialArgs,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The credential flags of bootstrap, the agent and doctor.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CredentialArgs {
    /// The deploy key for a git+ssh:// flake: an unencrypted OpenSSH
    /// private key, owned by root, mode 0600 (a path on the machine, joined
    /// under --root). Default: /etc/fabric/credentials/ssh-key if it exists
    /// (and no --access-tokens-file is given).
    #[arg(long, value_name = "PATH")]
    pub ssh_key_file: Option<PathBuf>,

    /// known_hosts lines pinning the forge's host key; one must name the
    /// flake's host (`host`, or `[host]:port`). Required with a key: no
    /// trust on first use. Default: /etc/fabric/credentials/known_hosts if
    /// it exists (and no --access-tokens-file is given).
    #[arg(long, value_name = "PATH")]
    pub known_hosts_file: Option<PathBuf>,

    /// HOST=TOKEN pairs (Nix's access-tokens form) for a git+https://,
    /// github: or gitlab: flake; every HOST must be the flake's host. Owned
    /// by root, mode 0600. Default: /etc/fabric/credentials/access-tokens if
    /// it exists (and no key flag is given).
    #[arg(long, value_name = "PATH")]
    pub access_tokens_file: Option<PathBuf>,
}

impl CredentialArgs {
    /// The engine's form.
    pub fn paths(&self) -> CredentialPaths {
        CredentialPaths {
            ssh_key: self.ssh_key_file.clone(),
            known_hosts: self.known_hosts_file.clone(),
            access_tokens: self.access_tokens_file.clone(),
        }
    }
}

pub fn run(args: Args) -> ExitCode {
    super::agent::init_logging();
    let (root, cancel) = match super::converge_setup("bootstrap", &args.root) {
        Ok(ok) => ok,
        Err(code) => return code,
    };
    let mut opts = BootstrapOptions::new(root);
    opts.flake_target = args.flake_target;
    opts.backoff = Backoff::new(args.timeout);
    opts.build_timeout = args.build_timeout;
    opts.activator.switch_timeout = args.switch_timeout;
    opts.activator.health_checks = args.health_checks;
    opts.activator.health_timeout = args.health_timeout;
    opts.credentials = args.credentials.paths();

    let result = bootstrap::bootstrap(&opts, &Runner::new(), &cancel);
    let code = bootstrap::exit_code(&result);
    match &result {
        Ok(report) => {
            if args.json {
                super::agent::out(serde_json::to_string(report).unwrap_or_default());
            } else {
                match report {
                    BootstrapReport::AlreadyComplete => super::agent::out("already complete"),
                    BootstrapReport::Completed {
                        revision,
                        store_path,
                        reboot_needed,
                        ..
                    } => super::agent::out(format_args!(
                        "complete: {revision} {store_path}{}",
                        if *reboot_needed {
                            " (reboot needed)"
                        } else {
                            ""
                        }
                    )),
                }
            }
        }
        Err(e) => {
            eprintln!("fabric bootstrap: {e}");
            if args.json {
                let v = serde_json::json!({"result": "failed", "exit_code": code, "error": e.to_string()});
                super::agent::out(v);
            }
        }
    }
    ExitCode::from(code)
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
        let a = Cli::try_parse_from(["bootstrap"]).unwrap().args;
        assert_eq!(a.timeout, std::time::Duration::from_secs(30 * 60));
        assert_eq!(
            a.flake_target,
            std::path::Path::new("/etc/nix-flake-target")
        );
        let a = Cli::try_parse_from([
            "bootstrap",
            "--root",
            "/mnt",
            "--timeout",
            "1h",
            "--flake-target",
            "/etc/x",
        ])
        .unwrap()
        .args;
        assert_eq!(a.timeout, std::time::Duration::from_secs(3600));
        assert_eq!(a.root, std::path::Path::new("/mnt"));
    }

    #[test]
    fn credential_flags_default_to_none_and_pass_through() {
        let a = Cli::try_parse_from(["bootstrap"]).unwrap().args;
        assert_eq!(
            a.credentials.paths(),
            fabric_converge::credential::CredentialPaths::default()
        );
        let a = Cli::try_parse_from([
            "bootstrap",
            "--ssh-key-file",
            "/run/secrets/key",
            "--known-hosts-file",
            "/etc/kh",
            "--access-tokens-file",
            "/run/secrets/tokens",
        ])
        .unwrap()
        .args;
        let p = a.credentials.paths();
        assert_eq!(
            p.ssh_key.as_deref(),
            Some(std::path::Path::new("/run/secrets/key"))
        );
        assert_eq!(
            p.known_hosts.as_deref(),
            Some(std::path::Path::new("/etc/kh"))
        );
        assert_eq!(
            p.access_tokens.as_deref(),
            Some(std::path::Path::new("/run/secrets/tokens"))
        );
    }
}
