//! `fabric render`: the cloud-init files of one machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fabric_cloudinit::{RenderOptions, SecretData, Seed, DEFAULT_FABRIC_FLAKE};

use crate::exit::{self, read_yaml, Stop};
use crate::machines;
use crate::output::{ensure_dir, write_atomic};
use fabric_model::credential::{self, CredentialError};
use fabric_model::secret::{keys_for_machine, KeysError};
use fabric_model::source::Node;
use fabric_model::Diagnostic;

/// Print a machine's cloud-init user-data, or write its NoCloud files.
///
/// Without --dir, prints the user-data (#cloud-config) on stdout. With
/// --dir DIR, writes DIR/user-data, DIR/meta-data, and DIR/network-config
/// when the machine has a static network (a stale network-config is
/// removed). These are the files of a NoCloud seed; `fabric seed` packs the
/// same bytes into an ISO image.
///
/// An invalid machine is refused with the same messages as `fabric
/// validate`, and nothing is written.
///
/// Exit status: 0 written or printed; 1 the machine or its Secret is
/// invalid; 2 a file does not exist, cannot be read, is not YAML or holds
/// no Machine, --secret holds no Secret the machine names, or --dir cannot
/// be written.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  fabric render examples/machines/dns01.yaml\n  fabric render examples/machines/docker01.yaml --dir seed/\n  fabric render machine.yaml --secret admin-keys.yaml --dir seed/\n  fabric render examples/private-fleet/db01.yaml --secret examples/private-fleet/db01-deploy-key.yaml"
)]
pub struct Args {
    /// The Machine manifest.
    #[arg(value_name = "MACHINE.yaml")]
    pub machine: PathBuf,

    #[command(flatten)]
    pub seed: SeedArgs,

    /// Write user-data, meta-data and network-config into this directory
    /// (created if missing) instead of printing the user-data.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Deprecated: the old name of --dir.
    #[arg(long, value_name = "DIR", hide = true, conflicts_with = "dir")]
    pub out: Option<PathBuf>,
}

/// Options shared by `render` and `seed`.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// A Kubernetes Secret manifest the machine names: the keys of
    /// spec.bootstrap.sshAuthorizedKeysSecretRef (one key per line), or the
    /// fleet credential of spec.nix.credentialsSecretRef (ssh-privatekey and
    /// known_hosts, or access-tokens). data: base64, stringData: plain text.
    /// Repeat for a machine that names both.
    #[arg(long, value_name = "SECRET.yaml")]
    pub secret: Vec<PathBuf>,

    /// Flake that provides `fabric` on VMs whose template lacks it; the
    /// first-boot unit runs `nix run <this> -- bootstrap` there.
    #[arg(long, value_name = "REF", default_value = DEFAULT_FABRIC_FLAKE)]
    pub fabric_flake: String,
}

/// Loads, validates and renders one machine, printing problems on stderr.
pub(crate) fn prepare(machine_path: &Path, args: &SeedArgs) -> Result<Seed, ExitCode> {
    let (machine, warnings) = machines::load_one(machine_path).map_err(Stop::report)?;
    for w in warnings {
        eprintln!("{w}");
    }
    let mut files: Vec<(String, Vec<Node>)> = Vec::new();
    for path in &args.secret {
        // Read even when the machine names no Secret: a mistyped path
        // must not pass unnoticed.
        let docs = read_yaml(path).map_err(|u| Stop::from(u).report())?;
        files.push((path.display().to_string(), docs));
    }
    let mut used = vec![false; files.len()];
    let mut secret_keys = None;
    if machine.ssh_keys_secret.is_some() && !files.is_empty() {
        let mut missing = Vec::new();
        for (i, (file, docs)) in files.iter().enumerate() {
            match keys_for_machine(docs, &machine) {
                Ok(keys) => {
                    secret_keys = keys;
                    used[i] = true;
                    break;
                }
                Err(KeysError::NotInFile(d)) => missing.push(d.located(file)),
                Err(KeysError::Invalid(diags)) => return Err(refused(file, diags)),
            }
        }
        if secret_keys.is_none() {
            return Err(not_found(missing));
        }
    }
    let mut fleet_credential = None;
    if machine.credentials_secret.is_some() && !files.is_empty() {
        let mut missing = Vec::new();
        for (i, (file, docs)) in files.iter().enumerate() {
            match credential::for_machine(docs, &machine) {
                Ok(c) => {
                    fleet_credential = c;
                    used[i] = true;
                    break;
                }
                Err(CredentialError::NotInFile(d)) => missing.push(d.located(file)),
                Err(CredentialError::Invalid(diags)) => return Err(refused(file, diags)),
            }
        }
        if fleet_credential.is_none() {
            return Err(not_found(missing));
        }
    }
    for ((file, _), used) in files.iter().zip(used) {
        if !used {
            let what = if machine.ssh_keys_secret.is_none() && machine.credentials_secret.is_none()
            {
                "ignored: the machine names no spec.bootstrap.sshAuthorizedKeysSecretRef"
            } else {
                "ignored: the machine's Secrets were found in other files"
            };
            eprintln!("{}", Diagnostic::warning("", None, what).located(file));
        }
    }
    let opts = RenderOptions {
        fabric_flake: args.fabric_flake.clone(),
    };
    let secrets = SecretData {
        ssh_keys: secret_keys.as_deref(),
        credential: fleet_credential.as_ref(),
    };
    fabric_cloudinit::render_with(&machine, &secrets, &opts).map_err(|e| {
        eprintln!("{}: {e}", machine_path.display());
        ExitCode::from(exit::FAILED)
    })
}

/// A Secret the machine names, found and wrong: exit 1, like an invalid
/// machine. The diagnostics name the data key and line, never the content.
fn refused(file: &str, diags: Vec<Diagnostic>) -> ExitCode {
    for d in diags {
        eprintln!("{}", d.located(file));
    }
    ExitCode::from(exit::FAILED)
}

/// No --secret file holds a Secret the machine names: the wrong file, exit 2.
fn not_found(missing: Vec<String>) -> ExitCode {
    for line in missing {
        eprintln!("{line}");
    }
    ExitCode::from(exit::USAGE)
}

pub fn run(args: Args) -> ExitCode {
    if args.out.is_some() {
        eprintln!("warning: fabric render --out DIR is deprecated; use --dir DIR");
    }
    let seed = match prepare(&args.machine, &args.seed) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(dir) = args.dir.or(args.out) else {
        if let Err(e) = crate::output::to_stdout(&seed.user_data) {
            eprintln!("fabric render: cannot write to stdout: {e}");
            return ExitCode::from(exit::USAGE);
        }
        return ExitCode::SUCCESS;
    };
    if let Err(e) = ensure_dir(&dir) {
        eprintln!("{e}");
        return ExitCode::from(exit::USAGE);
    }
    match write_seed_dir(&dir, &seed) {
        Ok(()) => {
            eprintln!("wrote {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: cannot write: {e}", dir.display());
            ExitCode::from(exit::USAGE)
        }
    }
}

fn write_seed_dir(dir: &Path, seed: &Seed) -> std::io::Result<()> {
    for (name, content) in seed.files() {
        write_atomic(&dir.join(name), content.as_bytes(), 0o644)?;
    }
    if seed.network_config.is_none() {
        // A network-config left from an earlier static render would make the
        // directory describe a different machine than the manifest.
        match std::fs::remove_file(dir.join("network-config")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
