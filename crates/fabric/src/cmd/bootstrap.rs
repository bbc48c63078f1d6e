//! `fabric bootstrap` (not yet implemented).

use std::process::ExitCode;

/// Not yet implemented.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("fabric bootstrap: not implemented yet");
    ExitCode::from(70)
}
