//! `fabric doctor`: CLI glue for `fabric_converge::doctor`.

use std::path::PathBuf;
use std::process::ExitCode;

use fabric_converge::doctor::{self, DoctorOptions};
use fabric_converge::layout;
use fabric_converge::process::Runner;

/// Run the troubleshooting checklist and say what to fix.
///
/// Checks, in order, each printed as PASS, WARN, FAIL or SKIP with a hint:
///
///   flake target   /etc/nix-flake-target exists, is owned by root, is not
///                  writable by others, and holds a valid flake reference
///   credential     the deploy key and known_hosts, or the access tokens,
///                  are root's, private, and fit the flake (shows the key's
///                  fingerprint or the token's host, never the secret)
///   tools          nix, nix-env and git are on PATH
///   remote         the flake's Git remote answers `git ls-remote`, with
///                  the credential
///   bootstrap      the completion marker, the last bootstrap outcome and
///                  the state of fabric-bootstrap.service
///   cloud-init     /var/lib/cloud/data/result.json has no errors; warning
///                  and error lines in /var/log/cloud-init*.log
///   agent          agent.json is readable, the agent polls, its last outcome
///   disk /nix      free space (fail under 1 GiB, warn under 5 GiB)
///
/// Exit status: 0 nothing failed (warnings allowed); 1 a check failed;
/// 2 a bad flag, or --root is not an existing directory.
#[derive(Debug, clap::Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Examples:\n  fabric doctor\n  fabric doctor --json | jq '.checks[] | select(.verdict == \"fail\")'"
)]
pub struct Args {
    /// Treat DIR as the machine's /.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// The flake target file (a path on the machine, joined under --root).
    #[arg(long, value_name = "PATH", default_value = layout::FLAKE_TARGET)]
    pub flake_target: PathBuf,

    #[command(flatten)]
    pub credentials: super::bootstrap::CredentialArgs,

    /// Print the checks as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> ExitCode {
    let root = match super::machine_root("doctor", &args.root) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut opts = DoctorOptions::new(root);
    opts.flake_target = args.flake_target;
    opts.credentials = args.credentials.paths();
    let report = doctor::doctor(&opts, &Runner::new());
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => super::agent::out(s),
            Err(e) => {
                eprintln!("fabric doctor: {e}");
                return ExitCode::from(crate::exit::FAILED);
            }
        }
    } else {
        super::agent::out(report.render().trim_end());
    }
    ExitCode::from(report.exit_code())
}
