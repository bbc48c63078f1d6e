//! The flake's Git remote: "is it there yet?" and "what is its head?", both
//! answered by one `git ls-remote` (no clone, no ICMP, no assumed host).

use std::time::{Duration, Instant};

use fabric_model::FlakeRef;
use serde::{Deserialize, Serialize};

use crate::credential::FetchAuth;
use crate::process::{Cancel, Cmd, CommandError, Liveness, Runner};

/// A full Git commit hash (40 hex, or 64 for SHA-256 repositories).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Revision(String);

impl Revision {
    /// Accepts only a full lowercase hex commit hash.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (s.len() == 40 || s.len() == 64)
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(s.to_string()))
    }

    /// The hash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 characters, for log lines.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl TryFrom<String> for Revision {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
            .ok_or_else(|| format!("{s:?} is not a full commit hash (40 or 64 lowercase hex)"))
    }
}

impl From<Revision> for String {
    fn from(r: Revision) -> String {
        r.0
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `git ls-remote` is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteQuery {
    /// The URL given to git.
    pub url: String,
    /// The ref: the flake's `ref=`, or `HEAD`.
    pub git_ref: String,
    /// A revision pinned in the flake reference itself (then the remote is
    /// only checked for reachability).
    pub pinned: Option<Revision>,
    /// The credential `git` gets, if the remote needs one.
    pub auth: Option<FetchAuth>,
}

/// Why the head could not be learnt.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The reference is not a Git flake (e.g. an https tarball).
    #[error("{0} is not a Git flake; the remote head can only be watched for git+https://, git+ssh://, git+file://, github:, gitlab: and sourcehut: references")]
    NotGit(String),
    /// git failed.
    #[error("{0}")]
    Command(#[from] CommandError),
    /// The remote answered but does not have the ref.
    #[error("{url} has no ref {git_ref} (yet); push it, or fix ?ref= in the flake reference")]
    NoSuchRef {
        /// The remote.
        url: String,
        /// The ref.
        git_ref: String,
    },
    /// Gave up waiting.
    #[error("gave up waiting for {url} after {attempts} attempts over {}; last error: {last}", humantime::format_duration(*waited))]
    TimedOut {
        /// The remote.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        waited: Duration,
        /// The last failure.
        last: Box<RemoteError>,
    },
    /// SIGTERM while waiting.
    #[error("stopped while waiting for the remote (termination signal)")]
    Cancelled,
}

impl RemoteError {
    /// The command that failed, when there was one.
    pub fn command(&self) -> Option<String> {
        match self {
            Self::Command(e) => e.command().map(str::to_string),
            Self::TimedOut { last, .. } => last.command(),
            _ => None,
        }
    }

    /// The tail of the failing command's output.
    pub fn tail(&self) -> String {
        match self {
            Self::Command(e) => e.tail().to_string(),
            Self::TimedOut { last, .. } => last.tail(),
            _ => String::new(),
        }
    }

    /// Whether a termination signal caused it.
    pub fn is_cancelled(&self) -> bool {
        match self {
            Self::Cancelled => true,
            Self::Command(e) => e.is_cancelled(),
            _ => false,
        }
    }
}

impl RemoteQuery {
    /// The query for a flake reference.
    pub fn for_flake(flake: &FlakeRef) -> Result<Self, RemoteError> {
        let url = flake
            .git_remote()
            .ok_or_else(|| RemoteError::NotGit(flake.as_str().to_string()))?;
        Ok(Self {
            url,
            git_ref: flake.git_ref().unwrap_or("HEAD").to_string(),
            pinned: flake.rev().and_then(Revision::parse),
            auth: None,
        })
    }

    /// `git ls-remote URL REF`.
    pub fn command(&self, timeout: Duration) -> Cmd {
        // Never wait for a password prompt: a first-boot unit has no
        // terminal. (No GIT_ASKPASS=/bin/false: NixOS has no /bin/false.)
        Cmd::new("git", timeout)
            .env("GIT_TERMINAL_PROMPT", "0")
            .args(["ls-remote", "--", &self.url, &self.git_ref])
            .fetch_auth(self.auth.as_ref())
    }

    /// Picks the revision of our ref out of `git ls-remote` output. A
    /// pattern such as `main` can match `refs/heads/main` and
    /// `refs/tags/main`; branches win, then peeled tags, then tags.
    pub fn parse(&self, stdout: &str) -> Option<Revision> {
        let refs: Vec<(&str, &str)> = stdout
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(h, r)| (h.trim(), r.trim()))
            .collect();
        let r = &self.git_ref;
        let wanted = [
            r.clone(),
            format!("refs/heads/{r}"),
            format!("refs/tags/{r}^{{}}"),
            format!("refs/tags/{r}"),
        ];
        let exact = if r.starts_with("refs/") || r == "HEAD" {
            &wanted[..1]
        } else {
            &wanted[1..]
        };
        exact
            .iter()
            .find_map(|w| refs.iter().find(|(_, name)| name == w))
            .and_then(|(h, _)| Revision::parse(h))
    }

    /// One lookup: the head now.
    pub fn head(
        &self,
        runner: &Runner,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<Revision, RemoteError> {
        let out = runner.run(&self.command(timeout), cancel)?;
        let head = self.parse(&out.stdout);
        match (&self.pinned, head) {
            (Some(pinned), _) => Ok(pinned.clone()),
            (None, Some(h)) => Ok(h),
            (None, None) => Err(RemoteError::NoSuchRef {
                url: self.url.clone(),
                git_ref: self.git_ref.clone(),
            }),
        }
    }
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Give up after this much time in total.
    pub timeout: Duration,
    /// Timeout of one `git ls-remote`.
    pub attempt_timeout: Duration,
}

impl Backoff {
    /// 1 s doubling to 1 min, each attempt limited to 60 s.
    pub fn new(timeout: Duration) -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            timeout,
            attempt_timeout: Duration::from_secs(60),
        }
    }

    /// The delay after `attempt` (1-based): `initial * 2^(attempt-1)`, capped,
    /// then scaled by a random factor in [0.5, 1.0) so that a fleet booted
    /// together does not knock in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        exp.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// Waits until the remote answers with our ref, logging one line per
/// attempt: what is awaited and why the last attempt failed.
pub fn wait_for_head(
    query: &RemoteQuery,
    runner: &Runner,
    backoff: &Backoff,
    cancel: &Cancel,
    liveness: &Liveness,
) -> Result<(Revision, u32), RemoteError> {
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let left = backoff.timeout.saturating_sub(start.elapsed());
        let per_call = backoff
            .attempt_timeout
            .min(left.max(Duration::from_secs(1)));
        let err = match query.head(runner, per_call, cancel) {
            Ok(rev) => {
                tracing::info!(
                    "remote {} answered: {} is at {rev} (attempt {attempt})",
                    query.url,
                    query.git_ref
                );
                return Ok((rev, attempt));
            }
            Err(e) if e.is_cancelled() => return Err(RemoteError::Cancelled),
            Err(e) => e,
        };
        let waited = start.elapsed();
        let delay = backoff.delay(attempt);
        if waited + delay >= backoff.timeout {
            tracing::error!(
                "giving up on {} after attempt {attempt}: {}",
                query.url,
                first_line(&err)
            );
            return Err(RemoteError::TimedOut {
                url: query.url.clone(),
                attempts: attempt,
                waited,
                last: Box::new(err),
            });
        }
        tracing::warn!(
            "waiting for flake remote {} (ref {}): attempt {attempt} failed: {}; next try in {:.1}s, {} of {} spent",
            query.url,
            query.git_ref,
            first_line(&err),
            delay.as_secs_f64(),
            humantime::format_duration(Duration::from_secs(waited.as_secs())),
            humantime::format_duration(backoff.timeout),
        );
        if !cancel.sleep(delay, liveness) {
            return Err(RemoteError::Cancelled);
        }
    }
}

/// The most telling line of an error: for a failed git, its first
/// `fatal:`/`error:` line (git ends with boilerplate such as "and the
/// repository exists."), else its last non-empty line.
fn first_line(e: &RemoteError) -> String {
    let tail = e.tail();
    let telling = tail
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or_else(|| tail.lines().map(str::trim).rev().find(|l| !l.is_empty()));
    match (e, telling) {
        (RemoteError::Command(CommandError::Exit { .. }), Some(l)) => l.to_string(),
        (RemoteError::Command(c), _) => c.summary(),
        _ => e.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(r: &str) -> RemoteQuery {
        RemoteQuery {
            url: "https://h/r".into(),
            git_ref: r.into(),
            pinned: None,
            auth: None,
        }
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn picks_branch_then_peeled_tag() {
        let out = format!("{A}\trefs/tags/main\n{B}\trefs/heads/main\n");
        assert_eq!(q("main").parse(&out).unwrap().as_str(), B);
        let out = format!("{A}\trefs/tags/v1\n{C}\trefs/tags/v1^{{}}\n");
        assert_eq!(q("v1").parse(&out).unwrap().as_str(), C);
        let out = format!("{A}\trefs/heads/feature/main\n");
        assert!(
            q("main").parse(&out).is_none(),
            "a suffix match is not our ref"
        );
        let out = format!("{A}\tHEAD\n");
        assert_eq!(q("HEAD").parse(&out).unwrap().as_str(), A);
    }

    #[test]
    fn ls_remote_argv() {
        let c = q("main").command(Duration::from_secs(5));
        assert_eq!(c.argv(), ["git", "ls-remote", "--", "https://h/r", "main"]);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            timeout: Duration::from_secs(100),
            attempt_timeout: Duration::from_secs(5),
        };
        for _ in 0..50 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(500) && d1 < Duration::from_secs(1));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_secs(2) && d3 < Duration::from_secs(4));
            assert!(b.delay(30) < Duration::from_secs(8));
        }
        let spread: std::collections::HashSet<u128> =
            (0..20).map(|_| b.delay(4).as_micros()).collect();
        assert!(spread.len() > 1, "jitter must vary the delay");
    }

    #[test]
    fn progress_names_the_telling_git_line() {
        let e = RemoteError::Command(CommandError::Exit {
            command: "git ls-remote -- file:///x main".into(),
            code: Some(128),
            tail: "fatal: '/x' does not appear to be a git repository\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n".into(),
        });
        assert_eq!(
            first_line(&e),
            "fatal: '/x' does not appear to be a git repository"
        );
    }

    #[test]
    fn revision_is_full_hex_only() {
        assert!(Revision::parse(A).is_some());
        assert!(Revision::parse("abc").is_none());
        assert!(Revision::parse(&A.to_uppercase()).is_none());
    }
}
