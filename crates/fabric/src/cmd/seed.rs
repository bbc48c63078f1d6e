//! `fabric seed`: a NoCloud seed image for one machine.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cmd::render::{prepare, SeedArgs};
use crate::exit;
use crate::output::write_file;

/// Write a NoCloud seed image (ISO9660, Rock Ridge and Joliet, label cidata).
///
/// The image holds exactly the files `fabric render --dir` writes, byte for
/// byte, and is reproducible: the same machine gives the same image. Attach
/// it to any VM as a CD-ROM, or upload it to Proxmox as ISO content.
///
/// An invalid machine is refused with the same messages as `fabric
/// validate`, and nothing is written.
///
/// Exit status: 0 written; 1 the machine or its Secret is invalid; 2 a
/// file does not exist, cannot be read, is not YAML or holds no Machine,
/// --secret holds no Secret the machine names, or --iso cannot be written.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  fabric seed examples/machines/dns01.yaml --iso dns01-seed.iso\n  qm set 120 --ide2 local:iso/dns01-seed.iso,media=cdrom",
    group(clap::ArgGroup::new("image").required(true).args(["iso", "output"]))
)]
pub struct Args {
    /// The Machine manifest.
    #[arg(value_name = "MACHINE.yaml")]
    pub machine: PathBuf,

    /// Where to write the image (its directory is created if missing).
    #[arg(long, value_name = "SEED.iso")]
    pub iso: Option<PathBuf>,

    /// Deprecated: the old name of --iso. -o/--output names an output
    /// format in every other command, as in kubectl.
    #[arg(
        long,
        short = 'o',
        value_name = "SEED.iso",
        hide = true,
        conflicts_with = "iso"
    )]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub seed: SeedArgs,
}

pub fn run(args: Args) -> ExitCode {
    if args.output.is_some() {
        eprintln!(
            "warning: fabric seed -o/--output FILE is deprecated; use --iso FILE (-o/--output names an output format, as in kubectl)"
        );
    }
    let Some(iso) = args.iso.or(args.output) else {
        // clap requires one of the two.
        return ExitCode::from(exit::USAGE);
    };
    let seed = match prepare(&args.machine, &args.seed) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let image = match fabric_cloudinit::seed_iso(&seed) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("fabric seed: cannot build the image: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match write_file(&iso, &image) {
        Ok(()) => {
            eprintln!("wrote {} ({} bytes)", iso.display(), image.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(exit::USAGE)
        }
    }
}
