pub mod agent;
pub mod bootstrap;
pub mod compose;
pub mod doctor;
pub mod function;
pub mod render;
pub mod seed;
pub mod status;
pub mod validate;

use std::path::Path;
use std::process::ExitCode;

use fabric_converge::process::Cancel;
use fabric_converge::{layout, Root};

/// What `bootstrap` and `agent` need before converging: the root every path
/// is joined under, and a cancel token that SIGTERM and SIGINT trip.
pub(crate) fn converge_setup(command: &str, root: &Path) -> Result<(Root, Cancel), ExitCode> {
    let root = Root::new(root).map_err(|e| {
        eprintln!("fabric {command}: {e}");
        ExitCode::from(layout::exit::USAGE)
    })?;
    let cancel = Cancel::on_termination_signals().map_err(|e| {
        eprintln!("fabric {command}: cannot handle SIGTERM: {e}");
        ExitCode::from(layout::exit::FAILED)
    })?;
    Ok((root, cancel))
}
