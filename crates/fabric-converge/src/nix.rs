//! The Nix commands converge drives: `nix build` of one pinned toplevel and
//! `nix-env` on the system profile. Works with Nix 2.8 (no
//! `--print-out-paths`, so `--json`) and current Nix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fabric_model::FlakeRef;
use serde::{Deserialize, Serialize};

use crate::credential::FetchAuth;
use crate::process::{Cancel, Cmd, CommandError, Runner};
use crate::remote::Revision;

/// A path directly in the Nix store: `/nix/store/<32-char hash>-<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StorePath(String);

impl StorePath {
    /// Checks the shape; does not touch the disk.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("/nix/store/")?;
        let (hash, name) = rest.split_at_checked(32)?;
        let ok = hash
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
            && name.starts_with('-')
            && name.len() > 1
            && !name.contains('/');
        ok.then(|| Self(s.to_string()))
    }

    /// The path.
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `bin/switch-to-configuration` of this toplevel.
    pub fn switch_script(&self) -> PathBuf {
        self.as_path().join("bin/switch-to-configuration")
    }
}

impl TryFrom<String> for StorePath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("{s:?} is not a Nix store path"))
    }
}

impl From<StorePath> for String {
    fn from(p: StorePath) -> String {
        p.0
    }
}

impl std::fmt::Display for StorePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `nix build` did not give us a toplevel.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    /// The command failed (its stderr tail is inside).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// It succeeded but printed something else than expected.
    #[error("`{command}` printed no usable output path ({reason}); its stdout was: {stdout}")]
    Output {
        /// The command line.
        command: String,
        /// What was wrong.
        reason: String,
        /// The start of stdout.
        stdout: String,
    },
}

/// The installable for the toplevel of `flake` pinned to `rev`.
pub fn toplevel_installable(flake: &FlakeRef, rev: &Revision) -> String {
    flake.toplevel_installable(&flake.pinned(rev.as_str()))
}

/// `nix build --no-link --json -L <installable>`.
pub fn build_command(installable: &str, timeout: Duration) -> Cmd {
    Cmd::new("nix", timeout)
        .args(["build", "--no-link", "--json", "--print-build-logs"])
        .arg(installable)
        .echo_stderr()
}

/// Builds `installable` and returns its `out` path. `auth` is the
/// credential Nix (and the `git` it runs to fetch) gets, if any.
pub fn build(
    runner: &Runner,
    installable: &str,
    timeout: Duration,
    cancel: &Cancel,
    auth: Option<&FetchAuth>,
) -> Result<StorePath, BuildError> {
    let cmd = build_command(installable, timeout).fetch_auth(auth);
    let out = runner.run(&cmd, cancel)?;
    parse_build_json(&out.stdout).map_err(|reason| BuildError::Output {
        command: cmd.display(),
        reason,
        stdout: out.stdout.chars().take(400).collect(),
    })
}

/// The `out` path from `nix build --json` (`[{"drvPath":…,"outputs":{"out":…}}]`).
pub fn parse_build_json(stdout: &str) -> Result<StorePath, String> {
    #[derive(Deserialize)]
    struct Built {
        outputs: std::collections::BTreeMap<String, String>,
    }
    let built: Vec<Built> = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("not the JSON `nix build --json` prints: {e}"))?;
    let [one] = built.as_slice() else {
        return Err(format!(
            "expected one built derivation, got {}",
            built.len()
        ));
    };
    let out = one
        .outputs
        .get("out")
        .ok_or_else(|| "the derivation has no `out` output".to_string())?;
    StorePath::parse(out).ok_or_else(|| format!("{out:?} is not a Nix store path"))
}

/// `nix-env -p PROFILE --set OUT`: a new generation pointing at `out`.
pub fn set_profile_command(profile: &Path, out: &StorePath, timeout: Duration) -> Cmd {
    Cmd::new("nix-env", timeout)
        .arg("-p")
        .arg(profile)
        .arg("--set")
        .arg(out.as_str())
        .uninterruptible()
}

/// `nix-env -p PROFILE --switch-generation N`.
pub fn switch_generation_command(profile: &Path, generation: u64, timeout: Duration) -> Cmd {
    Cmd::new("nix-env", timeout)
        .arg("-p")
        .arg(profile)
        .arg("--switch-generation")
        .arg(generation.to_string())
        .uninterruptible()
}

/// What a profile points at now: its generation number and store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileGeneration {
    /// N of `system-N-link`.
    pub number: u64,
    /// Where that generation points.
    pub store_path: Option<StorePath>,
}

/// Reads `PROFILE -> PROFILE-N-link -> /nix/store/…`.
pub fn profile_generation(profile: &Path) -> Option<ProfileGeneration> {
    let link = std::fs::read_link(profile).ok()?;
    let name = link.file_name()?.to_str()?;
    let base = profile.file_name()?.to_str()?;
    let number = name
        .strip_prefix(base)?
        .strip_prefix('-')?
        .strip_suffix("-link")?
        .parse()
        .ok()?;
    let gen_link = profile.parent()?.join(name);
    let store_path = read_store_link(&gen_link);
    Some(ProfileGeneration { number, store_path })
}

/// The store path a symlink such as `/run/current-system` points at.
pub fn read_store_link(link: &Path) -> Option<StorePath> {
    let target = std::fs::read_link(link).ok()?;
    StorePath::parse(target.to_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "/nix/store/f6vhy9wmv9wajr1wmvd239ffsc2xrfjf-toplevel";

    #[test]
    fn parses_nix_2_8_and_current_json() {
        let j = format!(
            r#"[{{"drvPath":"/nix/store/ixbh46j4gssbnfs7mpvl13vm8gvqkdpx-toplevel.drv","outputs":{{"out":"{OUT}"}}}}]"#
        );
        assert_eq!(parse_build_json(&j).unwrap().as_str(), OUT);
        assert!(parse_build_json("[]").unwrap_err().contains("got 0"));
        assert!(parse_build_json("oops")
            .unwrap_err()
            .contains("not the JSON"));
        assert!(parse_build_json(r#"[{"outputs":{"out":"/tmp/x"}}]"#).is_err());
    }

    #[test]
    fn store_path_shape() {
        assert!(StorePath::parse(OUT).is_some());
        assert!(StorePath::parse("/nix/store/short-x").is_none());
        assert!(StorePath::parse(&format!("{OUT}/bin")).is_none());
        assert!(StorePath::parse("/tmp/f6vhy9wmv9wajr1wmvd239ffsc2xrfjf-x").is_none());
    }

    #[test]
    fn build_and_profile_argv() {
        let c = build_command("git+file:///r?ref=main&rev=abc#x", Duration::from_secs(1));
        assert_eq!(
            c.argv(),
            [
                "nix",
                "build",
                "--no-link",
                "--json",
                "--print-build-logs",
                "git+file:///r?ref=main&rev=abc#x"
            ]
        );
        let p = StorePath::parse(OUT).unwrap();
        let c = set_profile_command(
            Path::new("/r/nix/var/nix/profiles/system"),
            &p,
            Duration::from_secs(1),
        );
        assert_eq!(
            c.argv(),
            [
                "nix-env",
                "-p",
                "/r/nix/var/nix/profiles/system",
                "--set",
                OUT
            ]
        );
    }

    #[test]
    fn reads_profile_generation() {
        let d = tempfile::tempdir().unwrap();
        let gen = d.path().join("system-7-link");
        std::os::unix::fs::symlink(OUT, &gen).unwrap();
        std::os::unix::fs::symlink("system-7-link", d.path().join("system")).unwrap();
        let g = profile_generation(&d.path().join("system")).unwrap();
        assert_eq!(g.number, 7);
        assert_eq!(g.store_path.unwrap().as_str(), OUT);
    }
}
