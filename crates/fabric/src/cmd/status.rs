//! `fabric status`: CLI glue for `fabric_converge::status`.

use std::path::PathBuf;
use std::process::ExitCode;

use fabric_converge::status;

/// Show what bootstrap and the agent did on this machine.
///
/// Reads /var/lib/fabric/bootstrap.json, /var/lib/fabric/agent.json, the
/// completion marker and /run/{current,booted}-system, and shows: the
/// deployed revision (full commit) and store path, the running system,
/// whether a reboot is needed, the credential the last fetch used (a deploy
/// key's SHA256 fingerprint or a token's host, never the secret), each run's phase and last outcome, rejected
/// revisions, and the last deployments (revision, store path, outcome,
/// time, and for failures the phase, command and tail of its output).
/// Never changes anything.
///
/// Exit status: 0 ok (also when nothing is recorded yet); 1 a state file
/// is unreadable or corrupt (the message gives file:line:column); 2 a bad
/// flag, or --root is not an existing directory.
#[derive(Debug, clap::Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Examples:\n  fabric status\n  fabric status --json | jq .revision"
)]
pub struct Args {
    /// Treat DIR as the machine's /.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> ExitCode {
    let root = match super::machine_root("status", &args.root) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = status::status(&root);
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => super::agent::out(s),
            Err(e) => {
                eprintln!("fabric status: {e}");
                return ExitCode::from(crate::exit::FAILED);
            }
        }
    } else {
        super::agent::out(report.render().trim_end());
    }
    for e in [&report.bootstrap.error, &report.agent.error]
        .into_iter()
        .flatten()
    {
        eprintln!("fabric status: {e}");
    }
    ExitCode::from(report.exit_code())
}
