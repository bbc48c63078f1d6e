//! Reading `/etc/nix-flake-target`: the one line that says what this machine
//! converges on. Anyone who can write it can make the machine run their
//! code as root, so a file others can write is refused.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fabric_model::FlakeRef;

/// Why the flake target file was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetError {
    /// Missing or unreadable.
    #[error("{}: cannot read the flake target: {reason}; write the machine's flake reference there (one line, e.g. git+https://github.com/org/fleet?ref=main#dns01), owned by root, mode 0644", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// Not a regular file.
    #[error("{}: the flake target is not a regular file; replace it with a file holding the flake reference", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// Owned by someone other than root.
    #[error("{}: the flake target is owned by uid {uid}, not root; whoever owns it controls what this machine runs. Fix: chown root:root {}", path.display(), path.display())]
    NotRootOwned {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Writable by group or others.
    #[error("{}: the flake target is writable by {who} (mode {mode:04o}); anyone who can write it controls what this machine runs. Fix: chmod 0644 {}", path.display(), path.display())]
    Writable {
        /// The file (or its directory).
        path: PathBuf,
        /// "group", "others" or "group and others".
        who: &'static str,
        /// The permission bits.
        mode: u32,
    },
    /// Empty.
    #[error("{}: the flake target is empty; write the machine's flake reference there, e.g. git+https://github.com/org/fleet?ref=main#dns01", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// More than one reference.
    #[error("{}:{line}:1: the flake target holds more than one line; keep only the flake reference", path.display())]
    ExtraLines {
        /// The file.
        path: PathBuf,
        /// The first extra line.
        line: usize,
    },
    /// Not a valid flake reference.
    #[error("{}:{line}:{column}: {message}; {hint}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// What would be right.
        hint: String,
    },
}

impl TargetError {
    /// The refused file.
    pub fn path(&self) -> &Path {
        match self {
            Self::Unreadable { path, .. }
            | Self::NotAFile { path }
            | Self::NotRootOwned { path, .. }
            | Self::Writable { path, .. }
            | Self::Empty { path }
            | Self::ExtraLines { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }
}

/// A flake target that passed every check.
#[derive(Debug, Clone)]
pub struct FlakeTarget {
    /// Where it was read from.
    pub path: PathBuf,
    /// The reference.
    pub flake: FlakeRef,
    /// Advisories from the Machine API (e.g. `git+file://` is for tests).
    pub warnings: Vec<String>,
}

/// Reads and checks the flake target at `path` (already joined under the
/// root). The file must be a regular file, owned by root, not writable by
/// group or others, and hold one valid flake reference; blank lines and
/// lines starting with `#` are ignored.
pub fn read_flake_target(path: &Path) -> Result<FlakeTarget, TargetError> {
    let meta = std::fs::metadata(path).map_err(|e| TargetError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    check_guarded(&meta, 0, 0o022).map_err(|refused| match refused {
        Unguarded::NotAFile => TargetError::NotAFile {
            path: path.to_path_buf(),
        },
        Unguarded::Owner(uid) => TargetError::NotRootOwned {
            path: path.to_path_buf(),
            uid,
        },
        Unguarded::Open { who, mode } => TargetError::Writable {
            path: path.to_path_buf(),
            who,
            mode,
        },
    })?;
    let text = std::fs::read_to_string(path).map_err(|e| TargetError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_flake_target(path, &text)
}

/// Why a file that says what runs, or holds what fetches it, is refused
/// before it is read.
pub(crate) enum Unguarded {
    /// A directory, device or the like.
    NotAFile,
    /// Owned by this uid, not the one it must be.
    Owner(u32),
    /// Group or others have access they must not have.
    Open {
        /// "group", "others" or "group and others".
        who: &'static str,
        /// The permission bits.
        mode: u32,
    },
}

/// Checks that `meta` is a regular file owned by `owner` whose mode grants
/// none of the group and others bits in `mask`: whoever else could change
/// (or, for a secret, read) it would control what the machine runs.
pub(crate) fn check_guarded(
    meta: &std::fs::Metadata,
    owner: u32,
    mask: u32,
) -> Result<(), Unguarded> {
    if !meta.is_file() {
        return Err(Unguarded::NotAFile);
    }
    if meta.uid() != owner {
        return Err(Unguarded::Owner(meta.uid()));
    }
    let mode = meta.mode() & 0o7777;
    let who = match (mode & mask & 0o070 != 0, mode & mask & 0o007 != 0) {
        (true, true) => "group and others",
        (true, false) => "group",
        (false, true) => "others",
        (false, false) => return Ok(()),
    };
    Err(Unguarded::Open { who, mode })
}

/// Parses the content of a flake target file.
pub fn parse_flake_target(path: &Path, text: &str) -> Result<FlakeTarget, TargetError> {
    let mut found: Option<(usize, usize, &str)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if found.is_some() {
            return Err(TargetError::ExtraLines {
                path: path.to_path_buf(),
                line: i + 1,
            });
        }
        let column = raw.len() - raw.trim_start().len() + 1;
        found = Some((i + 1, column, trimmed));
    }
    let Some((line, column, reference)) = found else {
        return Err(TargetError::Empty {
            path: path.to_path_buf(),
        });
    };
    let flake = FlakeRef::parse(reference).map_err(|e| TargetError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message: e.message().to_string(),
        hint: e.hint().to_string(),
    })?;
    let warnings = flake.warnings();
    Ok(FlakeTarget {
        path: path.to_path_buf(),
        flake,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let p = dir.join("nix-flake-target");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn accepts_one_reference_with_comments_and_newline() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "# written by cloud-init\ngit+https://example.org/fleet?ref=main#dns01\n",
            0o644,
        );
        let t = read_flake_target(&p).unwrap();
        assert_eq!(t.flake.attr(), "dns01");
        assert_eq!(t.flake.git_ref(), Some("main"));
    }

    #[test]
    fn refuses_with_the_file_named() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("absent");
        let e = read_flake_target(&missing).unwrap_err();
        assert!(
            e.to_string().starts_with(&missing.display().to_string()),
            "{e}"
        );

        let p = write(d.path(), "git+https://example.org/fleet#dns01\n", 0o666);
        let e = read_flake_target(&p).unwrap_err().to_string();
        assert!(
            e.contains("writable by group and others (mode 0666)"),
            "{e}"
        );
        assert!(e.contains("chmod 0644"), "{e}");

        let p = write(d.path(), "git+https://example.org/fleet#dns01\n", 0o620);
        assert!(read_flake_target(&p)
            .unwrap_err()
            .to_string()
            .contains("writable by group (mode 0620)"));

        let p = write(d.path(), "\n  \n", 0o644);
        assert!(matches!(
            read_flake_target(&p).unwrap_err(),
            TargetError::Empty { .. }
        ));

        let p = write(
            d.path(),
            "git+https://example.org/a#x\ngit+https://example.org/b#y\n",
            0o644,
        );
        assert!(read_flake_target(&p)
            .unwrap_err()
            .to_string()
            .contains(":2:1:"));

        let p = write(d.path(), "\n   git+https://example.org/fleet\n", 0o644);
        let e = read_flake_target(&p).unwrap_err().to_string();
        assert!(e.contains("nix-flake-target:2:4: "), "{e}");
        assert!(e.contains("#<name>"), "{e}");

        let p = write(d.path(), "git+https://example.org/fleet#dns01\n", 0o644);
        std::os::unix::fs::chown(&p, Some(1000), None).unwrap();
        let e = read_flake_target(&p).unwrap_err().to_string();
        assert!(e.contains("owned by uid 1000, not root"), "{e}");
    }
}
