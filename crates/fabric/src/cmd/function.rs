//! `fabric function` (not yet implemented).

use std::process::ExitCode;

/// Not yet implemented.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("fabric function: not implemented yet");
    ExitCode::from(70)
}
