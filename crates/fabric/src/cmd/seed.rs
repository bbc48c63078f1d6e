//! `fabric seed`: a NoCloud seed image for one machine.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cmd::render::{prepare, SeedArgs};
use crate::exit;
use crate::output::write_atomic;

/// Write a NoCloud seed image (ISO9660, Rock Ridge and Joliet, label cidata).
///
/// The image holds exactly the files `fabric render --out` writes, byte for
/// byte, and is reproducible: the same machine gives the same image. Attach
/// it to any VM as a CD-ROM, or upload it to Proxmox as ISO content.
///
/// An invalid machine is refused with the same messages as `fabric
/// validate`, and nothing is written.
///
/// Exit status: 0 written; 1 the machine or its Secret is invalid (invalid
/// YAML included); 2 a file does not exist, cannot be read, is not UTF-8
/// text or holds no Machine, or --output cannot be written.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  fabric seed examples/machines/dns01.yaml --output dns01-seed.iso\n  qm set 120 --ide2 local:iso/dns01-seed.iso,media=cdrom"
)]
pub struct Args {
    /// The Machine manifest.
    #[arg(value_name = "MACHINE.yaml")]
    pub machine: PathBuf,

    /// Where to write the image.
    #[arg(long, short = 'o', value_name = "SEED.iso")]
    pub output: PathBuf,

    #[command(flatten)]
    pub seed: SeedArgs,
}

pub fn run(args: Args) -> ExitCode {
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
    match write_atomic(&args.output, &image, 0o644) {
        Ok(()) => {
            eprintln!("wrote {} ({} bytes)", args.output.display(), image.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fabric seed: {}: cannot write: {e}", args.output.display());
            ExitCode::from(exit::USAGE)
        }
    }
}
