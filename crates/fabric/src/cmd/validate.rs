//! `fabric validate`: check Machine manifests, alone and as a fleet.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use fabric_model::fleet::{self, Member};
use fabric_model::Diagnostic;

use crate::exit::{self, read_text, Unusable};
use crate::machines;

/// Check Machine manifests, one by one and across the fleet.
///
/// Reads every file given, and every *.yaml / *.yml file under every
/// directory given. Documents that are not Machines (Secrets, Compositions,
/// ...) are skipped. Each problem is printed on stdout as one line,
///
///   FILE:LINE:COL: FIELD.PATH: what is wrong (what would be right)
///
/// (an example is below).
///
/// Across machines it finds hostnames (and so FQDNs), static IPv4/IPv6
/// addresses and MAC addresses used twice, naming every file involved. All problems are
/// collected before anything is reported.
///
/// Every path named must hold at least one Machine, so that a mistyped or
/// emptied path fails in CI instead of passing as "all valid";
/// --allow-empty accepts a path without any.
///
/// Exit status: 0 every machine is valid (warnings allowed); 1 a problem
/// was found (an invalid field, a fleet conflict); 2 a path does not
/// exist, cannot be read, is over 4 MiB, is not UTF-8 text, is not YAML,
/// or holds no Machine (without --allow-empty). Every problem is printed
/// first.
#[derive(Debug, clap::Args)]
#[command(after_help = after_help())]
pub struct Args {
    /// Machine manifests, or directories to search for them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Accept a path that holds no Machine manifest (for a fleet directory
    /// that may be empty); without it such a path is an error (exit 2).
    #[arg(long)]
    pub allow_empty: bool,

    /// Output format: text lines, or one JSON document for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// What `fabric validate` prints for examples/machines/dns01.yaml with its
/// gateway changed to 10.0.2.1. The README shows the same line; a test
/// checks that both show this one, and that validate prints it.
pub const GATEWAY_EXAMPLE: &str = "dns01.yaml:18:14: spec.network.gateway: 10.0.2.1 is outside 10.0.1.0/24 (an address inside 10.0.1.0/24, or a different ip/cidr)";

fn after_help() -> String {
    format!(
        "A problem, e.g. examples/machines/dns01.yaml with gateway: 10.0.2.1:\n  {GATEWAY_EXAMPLE}\n\n\
         Examples:\n  fabric validate examples/machines\n  fabric validate dns01.yaml web01.yaml --output json\n  fabric validate fleet/ --allow-empty"
    )
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
    /// The path cannot be checked at all (exit 2), rather than checked and
    /// found wrong.
    unusable: bool,
}

impl Problem {
    fn unusable(u: Unusable) -> Self {
        Self {
            file: u.file,
            diagnostic: u.diagnostic,
            unusable: true,
        }
    }
}

pub fn run(args: Args) -> ExitCode {
    let mut problems = Vec::new();
    // Each named path's files, as indices into `read`.
    let mut named = Vec::new();
    let mut read = Vec::new();
    // Paths and files that could not be read, named in the summary.
    let mut unreadable: Vec<String> = Vec::new();
    let mut found_files = 0;
    for n in machines::expand(&args.paths) {
        let files = match n.files {
            Ok(f) => f,
            Err(u) => {
                // Named, so counted: the summary says it could not be read.
                found_files += 1;
                unreadable.push(u.file.clone());
                problems.push(Problem::unusable(u));
                continue;
            }
        };
        found_files += files.len();
        let mut indices = Vec::new();
        for f in files {
            match read_text(&f) {
                Ok(text) => {
                    indices.push(read.len());
                    read.push((f, text));
                }
                // A file that cannot be read is not an empty one: it
                // counts as found, and fails the run on its own.
                Err(u) => {
                    indices.push(usize::MAX);
                    unreadable.push(u.file.clone());
                    problems.push(Problem::unusable(u));
                }
            }
        }
        named.push((n.path, n.dir, indices));
    }
    let checked = machines::check_many(&read);
    let what = format!(
        "a Machine has apiVersion: {} and kind: Machine; pass --allow-empty when none is fine",
        fabric_model::api::API_VERSION
    );
    for (path, dir, indices) in &named {
        // A mistyped or emptied path must not pass as "all valid": every
        // path named has to hold a Machine (valid or not).
        let found = indices.iter().any(|&i| match checked.get(i) {
            Some(Ok(l)) => !l.machines.is_empty() || !l.diagnostics.is_empty(),
            // Unreadable, or not YAML: reported on its own.
            _ => true,
        });
        if found || args.allow_empty {
            continue;
        }
        let message = if *dir {
            format!(
                "no Machine manifest in this directory ({} *.yaml/*.yml file{} searched)",
                indices.len(),
                plural(indices.len())
            )
        } else {
            "no Machine manifest in this file".to_string()
        };
        let mut u = Unusable::new(path.display().to_string(), message);
        u.diagnostic = u.diagnostic.hint(what.clone());
        problems.push(Problem::unusable(u));
    }
    let mut loaded = Vec::new();
    for c in checked {
        match c {
            Ok(l) => loaded.push(l),
            Err(u) => {
                unreadable.push(u.file.clone());
                problems.push(Problem::unusable(u));
            }
        }
    }
    for l in &loaded {
        problems.extend(l.diagnostics.iter().map(|d| Problem {
            file: l.file.clone(),
            diagnostic: d.clone(),
            unusable: false,
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
            unusable: false,
        });
    }
    let errors = problems.iter().filter(|p| p.diagnostic.is_error()).count();
    let unusable = problems.iter().filter(|p| p.unusable).count();
    let invalid: usize = loaded.iter().map(|l| l.invalid).sum();
    let count = Count {
        files: found_files,
        read: loaded.len(),
        machines: members.len() + invalid,
        invalid,
        errors,
        unreadable,
    };
    match args.output {
        Output::Text => {
            let lines: String = problems
                .iter()
                .map(|p| format!("{}\n", p.diagnostic.located(&p.file)))
                .collect();
            if let Err(e) = crate::output::to_stdout(&lines) {
                eprintln!("fabric validate: cannot write to stdout: {e}");
                return ExitCode::from(exit::USAGE);
            }
            eprintln!("{}", count.summary());
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
                        "unusable": p.unusable,
                        "message": p.diagnostic.message,
                        "hint": p.diagnostic.hint,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "files": count.files,
                "filesRead": count.read,
                "unreadable": count.unreadable,
                "machines": count.machines,
                "invalidMachines": count.invalid,
                "valid": errors == 0,
                "problems": list,
            });
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
            if let Err(e) = crate::output::to_stdout(&text) {
                eprintln!("fabric validate: cannot write to stdout: {e}");
                return ExitCode::from(exit::USAGE);
            }
        }
    }
    ExitCode::from(if unusable > 0 {
        exit::USAGE
    } else if errors > 0 {
        exit::FAILED
    } else {
        exit::OK
    })
}

/// What a run read and found, for its summary line.
struct Count {
    /// Files named, or found under a directory named.
    files: usize,
    /// Of those, files read as YAML.
    read: usize,
    /// Machine manifests found, valid or not.
    machines: usize,
    /// Of those, invalid ones.
    invalid: usize,
    errors: usize,
    /// Paths that could not be read or are not YAML, as named.
    unreadable: Vec<String>,
}

impl Count {
    /// One line: `2 machines checked in 2 of 3 files: 1 invalid, 2 errors; could not read 1: nope.yaml`.
    fn summary(&self) -> String {
        let mut line = format!(
            "{} machine{} checked in {} of {} file{}",
            self.machines,
            plural(self.machines),
            self.read,
            self.files,
            plural(self.files)
        );
        if self.read == self.files {
            line = format!(
                "{} machine{} checked in {} file{}",
                self.machines,
                plural(self.machines),
                self.read,
                plural(self.read)
            );
        }
        line.push_str(&match (self.errors, self.invalid) {
            (0, _) => ": all valid".to_string(),
            (e, 0) => format!(": {e} error{}", plural(e)),
            (e, i) => format!(": {i} invalid, {e} error{}", plural(e)),
        });
        if !self.unreadable.is_empty() {
            line.push_str(&format!(
                "; could not read {}: {}",
                self.unreadable.len(),
                self.unreadable.join(", ")
            ));
        }
        line
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
