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
use fabric_converge::Root;

/// `--root DIR` of the converge commands: absolute, and an existing
/// directory. A mistyped root must not read as a machine with nothing
/// recorded (`status`) or nothing wrong (`doctor`): it is a bad flag (2).
pub(crate) fn machine_root(command: &str, dir: &Path) -> Result<Root, ExitCode> {
    let usage = |message: String| {
        eprintln!("fabric {command}: {message}");
        ExitCode::from(crate::exit::USAGE)
    };
    let root = Root::new(dir).map_err(|e| usage(e.to_string()))?;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(root),
        Ok(_) => Err(usage(format!(
            "--root {}: not a directory; give the directory that stands for the machine's /",
            dir.display()
        ))),
        Err(e) => Err(usage(format!(
            "--root {}: {e}; give an existing directory that stands for the machine's /",
            dir.display()
        ))),
    }
}

/// What `bootstrap` and `agent` need before converging: the root every path
/// is joined under, and a cancel token that SIGTERM and SIGINT trip.
pub(crate) fn converge_setup(command: &str, root: &Path) -> Result<(Root, Cancel), ExitCode> {
    let root = machine_root(command, root)?;
    let cancel = Cancel::on_termination_signals().map_err(|e| {
        eprintln!("fabric {command}: cannot handle SIGTERM: {e}");
        ExitCode::from(crate::exit::FAILED)
    })?;
    Ok((root, cancel))
}
