//! `fabric validate`: check Machine manifests, alone and as a fleet.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use fabric_model::fleet::{self, Member};
use fabric_model::Diagnostic;

use crate::machines;

/// Check Machine manifests, one by one and across the fleet.
///
/// Reads every file given, and every *.yaml / *.yml file under every
/// directory given. Documents that are not Machines (Secrets, Compositions,
/// ...) are skipped. Each problem is printed on stdout as
///
///   FILE:LINE:COL: FIELD.PATH: what is wrong (what would be right)
///
/// e.g. `dns01.yaml:14:14: spec.network.gateway: 10.0.2.1 is outside
/// 10.0.1.0/24 (an address inside 10.0.1.0/24, or a different ip/cidr)`.
///
/// Across machines it finds hostnames (and so FQDNs) and static IPv4/IPv6
/// addresses used twice, naming every file involved. All problems are
/// collected before anything is reported.
///
/// Exit status: 0 when every machine is valid (warnings allowed), 1 when any
/// problem was found, 2 when a path cannot be read.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  fabric validate examples/machines\n  fabric validate dns01.yaml web01.yaml --output json"
)]
pub struct Args {
    /// Machine manifests, or directories to search for them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Output format: text lines, or one JSON document for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// FILE:LINE:COL: path: message lines.
    Text,
    /// {"machines": N, "valid": bool, "problems": [...]}.
    Json,
}

struct Problem {
    file: String,
    diagnostic: Diagnostic,
}

pub fn run(args: Args) -> ExitCode {
    let files = match machines::expand(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fabric validate: {e}");
            return ExitCode::from(2);
        }
    };
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let loaded = match machines::load_many(&paths) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fabric validate: {e}");
            return ExitCode::from(2);
        }
    };
    let mut problems = Vec::new();
    for (l, (_, named)) in loaded.iter().zip(&files) {
        if *named && l.machines.is_empty() && l.diagnostics.is_empty() {
            problems.push(Problem {
                file: l.file.clone(),
                diagnostic: Diagnostic::error("", None, "no Machine manifest in this file").hint(
                    format!(
                        "a Machine has apiVersion: {} and kind: Machine",
                        fabric_model::api::API_VERSION
                    ),
                ),
            });
        }
        problems.extend(l.diagnostics.iter().map(|d| Problem {
            file: l.file.clone(),
            diagnostic: d.clone(),
        }));
    }
    let members: Vec<Member> = loaded
        .iter()
        .flat_map(|l| {
            l.machines.iter().map(|machine| Member {
                file: &l.file,
                machine,
            })
        })
        .collect();
    for c in fleet::conflicts(&members) {
        problems.push(Problem {
            file: members[c.member].file.to_string(),
            diagnostic: c.diagnostic,
        });
    }
    let errors = problems.iter().filter(|p| p.diagnostic.is_error()).count();
    match args.output {
        Output::Text => {
            for p in &problems {
                println!("{}", p.diagnostic.located(&p.file));
            }
            eprintln!(
                "{} machine{} checked in {} file{}: {}",
                members.len(),
                plural(members.len()),
                loaded.len(),
                plural(loaded.len()),
                if errors == 0 {
                    "all valid".to_string()
                } else {
                    format!("{errors} error{}", plural(errors))
                }
            );
        }
        Output::Json => {
            let list: Vec<serde_json::Value> = problems
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "file": p.file,
                        "line": p.diagnostic.pos.map(|p| p.line),
                        "column": p.diagnostic.pos.map(|p| p.col),
                        "path": p.diagnostic.path,
                        "severity": if p.diagnostic.is_error() { "error" } else { "warning" },
                        "message": p.diagnostic.message,
                        "hint": p.diagnostic.hint,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "files": loaded.len(),
                "machines": members.len(),
                "valid": errors == 0,
                "problems": list,
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
    }
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
