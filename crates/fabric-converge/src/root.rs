//! `--root DIR`: every file a command reads or writes is joined under it.

use std::path::{Component, Path, PathBuf};

/// The directory that stands for `/` on the machine being converged.
///
/// Store paths are never joined: the Nix store is the real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    dir: PathBuf,
}

/// `--root` was not usable.
#[derive(Debug, thiserror::Error)]
#[error("--root {}: {reason}", dir.display())]
pub struct RootError {
    dir: PathBuf,
    reason: String,
}

impl Root {
    /// The real root, `/`.
    pub fn host() -> Self {
        Self {
            dir: PathBuf::from("/"),
        }
    }

    /// A root directory. It must be absolute, because commands run with
    /// other working directories and the path ends up in state files.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, RootError> {
        let dir = dir.into();
        if !dir.is_absolute() {
            return Err(RootError {
                reason: "must be an absolute path (e.g. /mnt or $PWD/root)".into(),
                dir,
            });
        }
        if dir.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(RootError {
                reason: "must not contain `..`".into(),
                dir,
            });
        }
        Ok(Self { dir })
    }

    /// True when this is `/`: activation may then go through systemd.
    pub fn is_host(&self) -> bool {
        self.dir
            .components()
            .all(|c| matches!(c, Component::RootDir))
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `path` (absolute on the machine) under this root.
    pub fn join(&self, path: impl AsRef<Path>) -> PathBuf {
        let rel: PathBuf = path
            .as_ref()
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        self.dir.join(rel)
    }
}

impl std::fmt::Display for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.dir.display().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_absolute_paths_under_root() {
        let r = Root::new("/tmp/r").unwrap();
        assert_eq!(
            r.join("/etc/nix-flake-target"),
            Path::new("/tmp/r/etc/nix-flake-target")
        );
        assert!(!r.is_host());
        assert_eq!(Root::host().join("/etc/x"), Path::new("/etc/x"));
        assert!(Root::host().is_host());
        assert!(Root::new("/").unwrap().is_host());
    }

    #[test]
    fn refuses_relative_and_parent_components() {
        assert!(Root::new("rel")
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        assert!(Root::new("/a/../b").unwrap_err().to_string().contains(".."));
    }
}
