//! State under `/var/lib/fabric`: written atomically (temp file, fsync,
//! rename, fsync of the directory), so a run killed at any point leaves
//! either the old file or the new one, and a re-run continues from it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::credential::CredentialSummary;
use crate::nix::StorePath;
use crate::remote::Revision;

/// Version of the state file format.
pub const SCHEMA: u32 = 1;
/// The largest state file read: 4 MiB. Fabric writes well under 1 MiB (20
/// deployments with at most 4 KiB of output each, 50 rejections); a bigger
/// file was not written by fabric, and reading it whole could exhaust a
/// small VM's memory.
pub const MAX_STATE_BYTES: u64 = 4 << 20;
/// How many deployments the history keeps.
pub const HISTORY_LEN: usize = 20;
/// How many rejected revisions are remembered.
pub const REJECTED_LEN: usize = 50;

/// Writes `bytes` to `path` (mode 0644) so that readers see the old or the
/// new content, never a mix, even across a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".fabric-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// Points `link` at `target` atomically (a new link, then rename over).
pub fn symlink_atomic(target: &Path, link: &Path) -> std::io::Result<()> {
    let dir = link.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Unique per call, not per process: two threads replacing the same link
    // must not remove or rename each other's temporary link.
    let tmp = dir.join(format!(
        ".{}.fabric-{}-{:08x}",
        link.file_name().and_then(|n| n.to_str()).unwrap_or("link"),
        std::process::id(),
        fastrand::u32(..)
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)?;
    File::open(dir)?.sync_all()
}

/// A wall-clock time, stored as RFC 3339 (UTC, milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        // Stored with millisecond precision; keep the in-memory value equal
        // to what a reload gives back.
        let now = SystemTime::now();
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> f64 {
        self.0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }

    /// Time since then (zero if in the future).
    pub fn age(&self) -> Duration {
        SystemTime::now().duration_since(self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_rfc3339_millis(self.0).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let at = humantime::parse_rfc3339_weak(&s)
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}")))?;
        // Kept to the millisecond, as written: a finer time (a file edited
        // by hand) would otherwise differ from what saving and reloading
        // it gives back (caught by the state fuzz target's save-and-reload check).
        let ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(Timestamp(
            SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
        ))
    }
}

/// Where a converge run is, or where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Nothing running.
    Idle,
    /// Reading and checking the flake target.
    ReadTarget,
    /// Waiting for the Git remote / looking up its head.
    WaitRemote,
    /// `nix build` of the pinned revision.
    Build,
    /// Checking the built toplevel can be activated.
    CheckClosure,
    /// `nix-env -p … --set`.
    SetProfile,
    /// `switch-to-configuration`.
    Switch,
    /// Running health checks.
    Health,
    /// Recording success.
    Commit,
    /// Re-activating the previous generation.
    Rollback,
}

/// The name a unit enum has in the state files, so that logs, `fabric
/// status` and the JSON always agree.
fn wire_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&wire_name(self))
    }
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Still running (or killed: a re-run continues).
    InProgress,
    /// Switched to the new generation and it is healthy.
    Switched,
    /// The built toplevel was already running; nothing activated.
    Unchanged,
    /// Activation or health failed; the previous generation is back.
    RolledBack,
    /// The build failed; nothing changed.
    BuildFailed,
    /// Something else failed before activation (flake target, remote,
    /// profile); nothing was switched.
    Failed,
    /// Activation failed and so did the rollback.
    RollbackFailed,
    /// Stopped by a termination signal before activation; nothing changed.
    Cancelled,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&wire_name(self))
    }
}

/// Why a deployment failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The phase that failed.
    pub phase: Phase,
    /// What went wrong, in one sentence.
    pub message: String,
    /// The failing command line, when a command failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The end of its output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tail: String,
}

/// One attempt to bring the machine to a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The Git revision, once known.
    pub revision: Option<Revision>,
    /// The built toplevel, once built.
    pub store_path: Option<StorePath>,
    /// The last phase reached.
    pub phase: Phase,
    /// How it ended.
    pub outcome: Outcome,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Seconds spent in `nix build`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_seconds: Option<f64>,
    /// Seconds spent setting the profile, switching and checking health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_seconds: Option<f64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

impl Deployment {
    /// A deployment starting now.
    pub fn start(phase: Phase) -> Self {
        Self {
            revision: None,
            store_path: None,
            phase,
            outcome: Outcome::InProgress,
            started_at: Timestamp::now(),
            finished_at: None,
            build_seconds: None,
            activation_seconds: None,
            error: None,
        }
    }
}

/// The generation the machine is on, as fabric last set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// The Git revision.
    pub revision: Revision,
    /// The toplevel.
    pub store_path: StorePath,
    /// When fabric activated (or found) it.
    pub since: Timestamp,
}

/// A revision the agent will not deploy again until the remote moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The revision.
    pub revision: Revision,
    /// How its deployment ended.
    pub outcome: Outcome,
    /// Why.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// `bootstrap.json` and `agent.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version ([`SCHEMA`]).
    pub schema: u32,
    /// The flake reference last used.
    pub flake: Option<String>,
    /// What the run is doing now, or where the last one stopped.
    pub phase: Phase,
    /// The generation fabric last activated or confirmed.
    pub current: Option<Generation>,
    /// The outcome of the last deployment.
    pub last_outcome: Option<Outcome>,
    /// The running generation needs a reboot to be fully in effect.
    pub reboot_needed: bool,
    /// Last time the remote was asked for its head.
    pub last_check: Option<Timestamp>,
    /// Last time a run ended converged.
    pub last_success: Option<Timestamp>,
    /// The agent's poll interval, so that `doctor` can tell a stalled agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// The credential the last look at the remote used: the key's
    /// fingerprint or the token's host, never the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialSummary>,
    /// Revisions not to deploy again (newest last).
    #[serde(default)]
    pub rejected: Vec<Rejection>,
    /// The last deployments (newest last).
    #[serde(default)]
    pub history: Vec<Deployment>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            schema: SCHEMA,
            flake: None,
            phase: Phase::Idle,
            current: None,
            last_outcome: None,
            reboot_needed: false,
            last_check: None,
            last_success: None,
            interval_seconds: None,
            credential: None,
            rejected: Vec::new(),
            history: Vec::new(),
        }
    }
}

impl State {
    /// Whether `rev` was rejected.
    pub fn rejection(&self, rev: &Revision) -> Option<&Rejection> {
        self.rejected.iter().rev().find(|r| &r.revision == rev)
    }

    /// Adds or replaces the open deployment (the newest one while in progress).
    pub fn record(&mut self, d: &Deployment) {
        match self.history.last_mut() {
            Some(last)
                if last.outcome == Outcome::InProgress && last.started_at == d.started_at =>
            {
                *last = d.clone();
            }
            _ => self.history.push(d.clone()),
        }
        self.phase = if d.outcome == Outcome::InProgress {
            d.phase
        } else {
            Phase::Idle
        };
        if d.outcome != Outcome::InProgress {
            self.last_outcome = Some(d.outcome);
        }
        let excess = self.history.len().saturating_sub(HISTORY_LEN);
        self.history.drain(..excess);
    }

    /// Remembers a rejected revision.
    pub fn reject(&mut self, rev: Revision, outcome: Outcome, reason: String) {
        self.rejected.retain(|r| r.revision != rev);
        self.rejected.push(Rejection {
            revision: rev,
            outcome,
            reason,
            at: Timestamp::now(),
        });
        let excess = self.rejected.len().saturating_sub(REJECTED_LEN);
        self.rejected.drain(..excess);
    }

    /// A deployment that was open when its run died is marked as such, so
    /// that history does not show it running forever.
    pub fn close_interrupted(&mut self) {
        for d in self.history.iter_mut() {
            if d.outcome == Outcome::InProgress {
                d.outcome = Outcome::Failed;
                d.error = Some(Failure {
                    phase: d.phase,
                    message: format!(
                        "the run was killed during phase {}; a later run continued",
                        d.phase
                    ),
                    command: None,
                    exit_code: None,
                    tail: String::new(),
                });
            }
        }
    }
}

/// A state file could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    /// Not readable.
    #[error("{}: cannot read state: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// Not valid.
    #[error("{}:{line}:{column}: state file is corrupt: {reason}; fabric bootstrap and fabric agent move it aside and start fresh, or delete it yourself", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        reason: String,
    },
    /// Bigger than [`MAX_STATE_BYTES`].
    #[error("{}: state file is {size} bytes, more than the {MAX_STATE_BYTES} fabric ever writes; fabric bootstrap and fabric agent move it aside and start fresh, or delete it yourself", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Written by a newer fabric.
    #[error("{}: written by a newer Fabric (schema {found}); this one reads schema {SCHEMA}; it is left as it is: upgrade fabric (after a rollback, roll fabric forward again)", path.display())]
    Newer {
        /// The file.
        path: PathBuf,
        /// The schema found.
        found: u32,
    },
    /// Not writable.
    #[error("{}: cannot write state: {reason}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

/// Reads a state file; `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<State>, StateError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| StateError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    // Read at most one byte past the limit: the size comes from the
    // metadata, but a file still growing (or not a regular file) must not
    // be read without bound either.
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(StateError::TooLarge {
            path: path.to_path_buf(),
            size: size.max(bytes.len() as u64),
        });
    }
    // The schema first: a newer Fabric's file may not fit this one's
    // fields, and reading it as corrupt would have it moved aside, losing
    // the newer one's history and trust data after a rollback.
    #[derive(serde::Deserialize)]
    struct Written {
        schema: Option<u32>,
    }
    if let Ok(Written {
        schema: Some(found),
    }) = serde_json::from_slice::<Written>(&bytes)
    {
        if found > SCHEMA {
            return Err(StateError::Newer {
                path: path.to_path_buf(),
                found,
            });
        }
    }
    // From bytes, so that a non-UTF-8 file is reported as corrupt at its
    // line and column like any other damage.
    let state: State = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        line: e.line().max(1),
        column: e.column().max(1),
        // The parser quotes what it found, which may hold a newline or
        // another control character; escaped, the problem stays one line
        // (and one journal entry).
        reason: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    })?;
    if state.schema > SCHEMA {
        return Err(StateError::Newer {
            path: path.to_path_buf(),
            found: state.schema,
        });
    }
    Ok(Some(state))
}

/// What [`load_or_recover`] did about a corrupt file.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The error that made it unusable.
    pub error: StateError,
    /// Where the corrupt file now is.
    pub moved_to: PathBuf,
}

/// Reads a state file; a corrupt one is moved aside (kept for a human to
/// read) and a fresh state is returned with a note of what happened.
pub fn load_or_recover(path: &Path) -> Result<(State, Option<Recovered>), StateError> {
    match load(path) {
        Ok(s) => Ok((s.unwrap_or_default(), None)),
        Err(error @ (StateError::Corrupt { .. } | StateError::TooLarge { .. })) => {
            let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
                .to_string()
                .replace(':', "");
            let moved_to = path.with_extension(format!("json.corrupt-{stamp}"));
            std::fs::rename(path, &moved_to).map_err(|e| StateError::Write {
                path: moved_to.clone(),
                reason: e.to_string(),
            })?;
            tracing::warn!(
                "{error}; moved it to {} and starting with empty state",
                moved_to.display()
            );
            Ok((State::default(), Some(Recovered { error, moved_to })))
        }
        Err(e) => Err(e),
    }
}

/// Writes a state file atomically.
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes).map_err(|e| StateError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// An exclusive `flock` on the converge lock; released when dropped (or
/// when the process dies, even by `kill -9`).
#[derive(Debug)]
pub struct ConvergeLock {
    file: File,
}

impl Drop for ConvergeLock {
    /// Unlocks explicitly rather than relying on the close: a `flock`
    /// belongs to the open file description, and a child forked by another
    /// thread holds a copy of every descriptor until it execs (`O_CLOEXEC`
    /// only closes it then). Closing ours alone would leave the lock held
    /// by that copy, so the next run of this very process found it busy.
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
    }
}

/// The lock could not be taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it.
    #[error("{}: another fabric run (pid {holder}) is converging this machine", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// The pid written by the holder.
        holder: String,
    },
    /// The file could not be opened.
    #[error("{}: cannot open the lock: {reason}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

impl ConvergeLock {
    /// Takes the lock without waiting.
    pub fn try_acquire(path: &Path) -> Result<Self, LockError> {
        let io = |e: std::io::Error| LockError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = file.set_len(0);
                let _ = writeln!(file, "{}", std::process::id());
                Ok(Self { file })
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(LockError::Busy {
                path: path.to_path_buf(),
                holder: std::fs::read_to_string(path)
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default(),
            }),
            Err(e) => Err(io(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A corrupt state file is reported on one line even when the bad value
    /// holds a newline (found by fuzzing).
    #[test]
    fn a_corrupt_value_with_a_newline_is_reported_on_one_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.json");
        std::fs::write(&p, "{\"schema\": 1, \"phase\": \"sw\\nitch\"}").unwrap();
        let message = load(&p).unwrap_err().to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("sw\\nitch"), "{message}");
    }

    /// A state file with times finer than a millisecond reads back as it
    /// saves: the reader keeps what the writer keeps.
    #[test]
    fn sub_millisecond_times_survive_save_and_reload() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.json");
        let mut text = serde_json::to_value(State::default()).unwrap();
        text["last_check"] = "2023-11-14T22:13:30.123456789Z".into();
        std::fs::write(&p, text.to_string()).unwrap();
        let loaded = load(&p).unwrap().unwrap();
        let at = loaded.last_check.unwrap();
        assert_eq!(at.to_string(), "2023-11-14T22:13:30.123Z");
        save(&p, &loaded).unwrap();
        assert_eq!(load(&p).unwrap().unwrap(), loaded);
    }

    /// Threads of one process replacing the same link each succeed.
    #[test]
    fn concurrent_symlink_replacements_do_not_collide() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("current-system");
        std::thread::scope(|s| {
            for t in 0..4 {
                let link = &link;
                s.spawn(move || {
                    for i in 0..300 {
                        let target = format!("/nix/store/{t}-{i}");
                        symlink_atomic(Path::new(&target), link).unwrap();
                    }
                });
            }
        });
        assert!(std::fs::read_link(&link).is_ok());
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s/agent.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path().join("s")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_newer_schema_is_never_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        // A newer Fabric's file need not have this one's fields at all.
        let newer = "{\"schema\": 2, \"history\": [], \"trust\": {\"k\": 1}}";
        std::fs::write(&p, newer).unwrap();
        let e = load(&p).unwrap_err();
        assert!(matches!(e, StateError::Newer { found: 2, .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("written by a newer Fabric (schema 2); this one reads schema 1"),
            "{e}"
        );
        assert!(load_or_recover(&p).is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), newer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn round_trips_and_locates_corruption() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.json");
        let mut s = State::default();
        let mut dep = Deployment::start(Phase::Build);
        dep.revision = Revision::parse("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        s.record(&dep);
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap().unwrap(), s);

        std::fs::write(&p, "{\n  \"schema\": 1,\n  \"phase\": oops\n}").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("agent.json:3:"), "{e}");
        assert!(e.contains("corrupt"), "{e}");
        let (fresh, rec) = load_or_recover(&p).unwrap();
        assert_eq!(fresh, State::default());
        let rec = rec.unwrap();
        assert!(rec.moved_to.exists() && !p.exists());
    }

    #[test]
    fn an_oversized_or_non_utf8_state_file_is_refused_and_moved_aside() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.json");
        let big = MAX_STATE_BYTES as usize + 10;
        std::fs::write(&p, vec![b' '; big]).unwrap();
        let e = load(&p).unwrap_err();
        assert!(
            matches!(e, StateError::TooLarge { size, .. } if size == big as u64),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "agent.json: state file is {big} bytes, more than the {MAX_STATE_BYTES}"
            )),
            "{msg}"
        );
        let (fresh, rec) = load_or_recover(&p).unwrap();
        assert_eq!(fresh, State::default());
        assert!(rec.unwrap().moved_to.exists() && !p.exists());

        std::fs::write(&p, b"{\n  \"schema\": 1,\n  \"flake\": \"caf\xe9\"\n}").unwrap();
        let e = load(&p).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { line: 3, .. }), "{e}");
        assert!(load_or_recover(&p).unwrap().1.is_some());
    }

    #[test]
    fn the_largest_state_fabric_writes_is_within_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.json");
        let mut s = State::default();
        // Control characters are escaped six bytes each in JSON.
        let tail: String = "\u{1b}".repeat(4096);
        for i in 0..2 * HISTORY_LEN {
            let mut dep = Deployment::start(Phase::Build);
            dep.outcome = Outcome::BuildFailed;
            dep.started_at = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(i as u64));
            dep.error = Some(Failure {
                phase: Phase::Build,
                message: "m".repeat(1024),
                command: Some("c".repeat(1024)),
                exit_code: Some(1),
                tail: tail.clone(),
            });
            s.record(&dep);
        }
        for i in 0..2 * REJECTED_LEN {
            let rev = Revision::parse(&format!("{i:040x}")).unwrap();
            s.reject(rev, Outcome::BuildFailed, "r".repeat(1024));
        }
        save(&p, &s).unwrap();
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size < MAX_STATE_BYTES / 4, "{size} bytes");
        assert_eq!(load(&p).unwrap().unwrap(), s);
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("converge.lock");
        let held = ConvergeLock::try_acquire(&p).unwrap();
        let e = ConvergeLock::try_acquire(&p).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        assert!(ConvergeLock::try_acquire(&p).is_ok());
    }

    /// A copy of the lock's descriptor in a child process (as a process
    /// forked by another thread holds until it execs) must not keep the
    /// lock once its `ConvergeLock` is dropped. The child here keeps the
    /// copy for as long as it lives, which makes the race deterministic.
    #[test]
    fn a_childs_copy_of_the_descriptor_does_not_outlive_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("converge.lock");
        let held = ConvergeLock::try_acquire(&p).unwrap();
        let copy = held.file.try_clone().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .stdin(copy)
            .spawn()
            .unwrap();
        drop(held);
        let again = ConvergeLock::try_acquire(&p);
        let _ = child.kill();
        let _ = child.wait();
        assert!(again.is_ok(), "{again:?}");
    }

    #[test]
    fn history_is_bounded_and_in_progress_is_replaced() {
        let mut s = State::default();
        let mut d = Deployment::start(Phase::Build);
        s.record(&d);
        d.phase = Phase::Switch;
        s.record(&d);
        assert_eq!(s.history.len(), 1);
        assert_eq!(s.phase, Phase::Switch);
        for _ in 0..30 {
            let mut d = Deployment::start(Phase::Build);
            d.outcome = Outcome::Switched;
            s.record(&d);
        }
        assert_eq!(s.history.len(), HISTORY_LEN);
        assert_eq!(s.phase, Phase::Idle);
    }
}
