//! `fabric render`: the cloud-init files of one machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fabric_cloudinit::{RenderOptions, Seed, DEFAULT_FABRIC_FLAKE};

use crate::exit::{self, read_yaml, Stop};
use crate::machines;
use crate::output::{ensure_dir, write_atomic};
use fabric_model::secret::{keys_for_machine, KeysError};
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
    after_help = "Examples:\n  fabric render examples/machines/dns01.yaml\n  fabric render examples/machines/docker01.yaml --dir seed/\n  fabric render machine.yaml --secret admin-keys.yaml --dir seed/"
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
    /// A Kubernetes Secret manifest holding the keys that
    /// spec.bootstrap.sshAuthorizedKeysSecretRef names (data: base64,
    /// stringData: plain text, one key per line).
    #[arg(long, value_name = "SECRET.yaml")]
    pub secret: Option<PathBuf>,

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
    let secret_keys = match &args.secret {
        None => None,
        Some(path) => {
            let file = path.display().to_string();
            // Read even when the machine names no Secret: a mistyped path
            // must not pass unnoticed.
            let docs = read_yaml(path).map_err(|u| Stop::from(u).report())?;
            match keys_for_machine(&docs, &machine) {
                Ok(Some(keys)) => Some(keys),
                Ok(None) => {
                    let d = Diagnostic::warning(
                        "",
                        None,
                        "ignored: the machine names no spec.bootstrap.sshAuthorizedKeysSecretRef",
                    );
                    eprintln!("{}", d.located(&file));
                    None
                }
                Err(KeysError::NotInFile(d)) => {
                    eprintln!("{}", d.located(&file));
                    return Err(ExitCode::from(exit::USAGE));
                }
                Err(KeysError::Invalid(diags)) => {
                    for d in diags {
                        eprintln!("{}", d.located(&file));
                    }
                    return Err(ExitCode::from(exit::FAILED));
                }
            }
        }
    };
    let opts = RenderOptions {
        fabric_flake: args.fabric_flake.clone(),
    };
    fabric_cloudinit::render(&machine, secret_keys.as_deref(), &opts).map_err(|e| {
        eprintln!("{}: {e}", machine_path.display());
        ExitCode::from(exit::FAILED)
    })
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
        print!("{}", seed.user_data);
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
