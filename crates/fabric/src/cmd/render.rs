//! `fabric render`: the cloud-init files of one machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fabric_cloudinit::{RenderOptions, Seed, DEFAULT_FABRIC_FLAKE};

use crate::exit::{self, read_text, Stop};
use crate::machines;
use crate::output::write_atomic;

/// Print a machine's cloud-init user-data, or write its NoCloud files.
///
/// Without --out, prints the user-data (#cloud-config) on stdout. With
/// --out DIR, writes DIR/user-data, DIR/meta-data, and DIR/network-config
/// when the machine has a static network (a stale network-config is
/// removed). These are the files of a NoCloud seed; `fabric seed` packs the
/// same bytes into an ISO image.
///
/// An invalid machine is refused with the same messages as `fabric
/// validate`, and nothing is written.
///
/// Exit status: 0 written or printed; 1 the machine or its Secret is
/// invalid (invalid YAML included); 2 a file does not exist, cannot be
/// read, is not UTF-8 text or holds no Machine, or --out cannot be written.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  fabric render examples/machines/dns01.yaml\n  fabric render examples/machines/docker01.yaml --out seed/\n  fabric render machine.yaml --secret admin-keys.yaml --out seed/"
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
    let secret_keys = match (&args.secret, &machine.ssh_keys_secret) {
        (Some(path), Some(r)) => {
            let file = path.display().to_string();
            let text = read_text(path).map_err(|u| Stop::from(u).report())?;
            match fabric_model::secret::keys_from_yaml(&text, &r.name, &r.key) {
                Ok(keys) => Some(keys),
                Err(diags) => {
                    for d in diags {
                        eprintln!("{}", d.located(&file));
                    }
                    return Err(ExitCode::from(exit::FAILED));
                }
            }
        }
        (Some(path), None) => {
            eprintln!(
                "warning: {} ignored: the machine names no spec.bootstrap.sshAuthorizedKeysSecretRef",
                path.display()
            );
            None
        }
        (None, _) => None,
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
    let seed = match prepare(&args.machine, &args.seed) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(dir) = args.out else {
        print!("{}", seed.user_data);
        return ExitCode::SUCCESS;
    };
    match write_seed_dir(&dir, &seed) {
        Ok(()) => {
            eprintln!("wrote {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fabric render: {}: cannot write: {e}", dir.display());
            ExitCode::from(exit::USAGE)
        }
    }
}

fn write_seed_dir(dir: &Path, seed: &Seed) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
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
