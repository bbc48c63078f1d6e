//! The NoCloud seed image: ISO 9660 with Rock Ridge and Joliet, labelled
//! `cidata`, built in memory.
//!
//! Rock Ridge gives Linux (which mounts the seed inside the VM) the real
//! lowercase names and modes; Joliet does the same for readers without
//! Rock Ridge. Every date in the image is one fixed instant and the writer
//! reads no clock, so the same seed always gives the same bytes.

use hadris_fs::{Content, DateTime, NoClock, Node, Owner, Permissions, SetAttr, Tree};
use hadris_iso::{IsoId, IsoLevel, IsoOptions};

use crate::Seed;

/// The volume label cloud-init's NoCloud datasource looks for.
pub const SEED_VOLUME_LABEL: &str = "cidata";

/// The one date in every seed image (1980-01-01T00:00:00Z, the earliest
/// date FAT and most tools agree on). A fixed date is what makes the image
/// reproducible; a real one would tell nothing cloud-init uses.
const SEED_TIME: DateTime = NoClock::TIME;

/// Why the seed image could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoError {
    /// The ISO writer refused the files.
    #[error("could not build the seed image: {0}")]
    Write(String),
    /// The writer stored something differently than asked (a name, a mode),
    /// so the image would not hold exactly the rendered files.
    #[error("the seed image would not hold the files as rendered: {0}")]
    Altered(String),
}

/// Builds the seed image holding exactly [`Seed::files`].
pub fn seed_iso(seed: &Seed) -> Result<Vec<u8>, IsoError> {
    let mut tree = Tree::new();
    // Root-owned and world-readable, as genisoimage -r would store them;
    // set explicitly so nothing of the host that builds the image leaks in.
    let attrs = SetAttr::new()
        .with_permissions(Permissions::new(0o644))
        .with_owner(Owner::new(0, 0))
        .with_modified(SEED_TIME)
        .with_accessed(SEED_TIME)
        .with_created(SEED_TIME);
    for (name, text) in seed.files() {
        let node = Node::file(Content::bytes(text.as_bytes())).with_attrs(attrs);
        tree.insert(name, node)
            .map_err(|e| IsoError::Write(format!("{name}: {e}")))?;
    }
    let options = IsoOptions::new()
        .with_id(IsoId::Volume, SEED_VOLUME_LABEL)
        .with_id(IsoId::Application, "FABRIC")
        .with_level(IsoLevel::L2)
        .with_joliet()
        .with_rock_ridge()
        .with_time(SEED_TIME);
    let mut image = Vec::new();
    let report = hadris_iso::sync::write(&mut image, &tree, &options)
        .map_err(|e| IsoError::Write(e.to_string()))?;
    if let Some(w) = report.warnings().first() {
        return Err(IsoError::Altered(w.to_string()));
    }
    Ok(image)
}
