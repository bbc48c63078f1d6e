//! `fabric doctor`: the original design's troubleshooting checklist as one
//! command. Each check passes or fails with a hint saying what to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::credential::{self, CredentialPaths, CredentialSummary};
use crate::layout;
use crate::process::{Cancel, Cmd, Runner};
use crate::remote::RemoteQuery;
use crate::root::Root;
use crate::state::{self, Outcome};
use crate::target;

/// Free space in `/nix` below which doctor fails.
pub const MIN_FREE_FAIL: u64 = 1 << 30;
/// Free space in `/nix` below which doctor warns.
pub const MIN_FREE_WARN: u64 = 5 << 30;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fine.
    Pass,
    /// Worth a look, not broken.
    Warn,
    /// Broken.
    Fail,
    /// Could not be checked here.
    Skip,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Short name.
    pub name: String,
    /// Verdict.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty on pass).
    pub hint: String,
}

/// All checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorReport {
    /// In checklist order.
    pub checks: Vec<Check>,
    /// The credential the remote check used: the key's fingerprint or the
    /// token's host, never the secret.
    #[serde(default)]
    pub credential: Option<CredentialSummary>,
}

impl DoctorReport {
    /// 0 when nothing failed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.checks.iter().any(|c| c.verdict == Verdict::Fail) {
            layout::exit::FAILED
        } else {
            layout::exit::OK
        }
    }

    /// One line per check, plus its hint.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for c in &self.checks {
            let tag = match c.verdict {
                Verdict::Pass => "PASS",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "SKIP",
            };
            o.push_str(&format!("[{tag}] {}: {}\n", c.name, c.detail));
            if !c.hint.is_empty() {
                o.push_str(&format!("       hint: {}\n", c.hint));
            }
        }
        o
    }
}

/// Options of `fabric doctor`.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The machine root.
    pub root: Root,
    /// The flake target file, absolute on the machine.
    pub flake_target: PathBuf,
    /// Timeout of the remote check.
    pub remote_timeout: Duration,
    /// The credential files, as bootstrap and the agent take them.
    pub credentials: CredentialPaths,
}

impl DoctorOptions {
    /// Defaults for `root`.
    pub fn new(root: Root) -> Self {
        Self {
            root,
            flake_target: PathBuf::from(layout::FLAKE_TARGET),
            remote_timeout: Duration::from_secs(20),
            credentials: CredentialPaths::default(),
        }
    }
}

fn check(
    name: &str,
    verdict: Verdict,
    detail: impl Into<String>,
    hint: impl Into<String>,
) -> Check {
    Check {
        name: name.into(),
        verdict,
        detail: detail.into(),
        hint: hint.into(),
    }
}

/// Runs every check.
pub fn doctor(opts: &DoctorOptions, runner: &Runner) -> DoctorReport {
    let root = &opts.root;
    let mut checks = Vec::new();
    let target_path = root.join(&opts.flake_target);
    let target = target::read_flake_target(&target_path);
    checks.push(match &target {
        Ok(t) => check(
            "flake target",
            if t.warnings.is_empty() { Verdict::Pass } else { Verdict::Warn },
            format!("{}: {}{}", target_path.display(), t.flake, t.warnings.iter().map(|w| format!(" ({w})")).collect::<String>()),
            "",
        ),
        Err(e) => check(
            "flake target",
            Verdict::Fail,
            e.to_string(),
            "cloud-init writes this file from the Machine's spec.nix.flakeRef; check `cloud-init status --long` and the Machine, or write it by hand as root",
        ),
    });

    let credential = target
        .as_ref()
        .ok()
        .map(|t| credential::load(root, &opts.credentials, &t.flake));
    checks.push(match &credential {
        None => check("credential", Verdict::Skip, "no valid flake target to fetch", "fix the flake target first"),
        Some(Ok(None)) => check(
            "credential",
            Verdict::Pass,
            format!("none: the flake is fetched without one (no {}, {} or {})", layout::SSH_KEY_FILE, layout::KNOWN_HOSTS_FILE, layout::ACCESS_TOKENS_FILE),
            "",
        ),
        Some(Ok(Some(c))) => check(
            "credential",
            Verdict::Pass,
            format!("{} ({})", c.summary, c.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")),
            "",
        ),
        Some(Err(e)) => check(
            "credential",
            Verdict::Fail,
            e.to_string(),
            "cloud-init writes these files from the Machine's spec.nix.credentialsSecretRef (root:root, 0600); fix the file as the message says, or the Secret",
        ),
    });
    let auth = match &credential {
        Some(Ok(Some(c))) => Some(c.auth.clone()),
        _ => None,
    };
    let credential_refused = matches!(credential, Some(Err(_)));
    let used = match &credential {
        Some(Ok(Some(c))) => Some(c.summary.clone()),
        _ => None,
    };

    checks.push(tools(runner));

    checks.push(match &target {
        Err(_) => check("remote", Verdict::Skip, "no valid flake target to ask about", "fix the flake target first"),
        Ok(_) if credential_refused => check("remote", Verdict::Skip, "the credential is refused", "fix the credential first"),
        Ok(t) => match RemoteQuery::for_flake(&t.flake).map(|q| RemoteQuery { auth: auth.clone(), ..q }) {
            Err(e) => check("remote", Verdict::Skip, e.to_string(), ""),
            Ok(q) => match q.head(runner, opts.remote_timeout, &Cancel::new()) {
                Ok(rev) => check("remote", Verdict::Pass, format!("{} answers: {} is at {rev}", q.url, q.git_ref), ""),
                Err(e) => check(
                    "remote",
                    Verdict::Fail,
                    format!("{}: {}", q.url, e.to_string().lines().last().unwrap_or_default()),
                    match credential::explain_refusal(&e.tail(), used.as_ref()) {
                        Some(hint) => hint,
                        None => format!("try `git ls-remote {} {}` as root: check DNS, routes, the deploy key or access token, and that ref {} exists", q.url, q.git_ref, q.git_ref),
                    },
                ),
            },
        },
    });

    checks.push(bootstrap_check(root, runner));
    checks.push(cloud_init_check(root));
    checks.push(agent_check(root));
    checks.push(disk_check());
    let credential = match credential {
        Some(Ok(c)) => c.map(|c| c.summary),
        _ => None,
    };
    DoctorReport { checks, credential }
}

fn tools(runner: &Runner) -> Check {
    let missing: Vec<&str> = ["nix", "nix-env", "git"]
        .into_iter()
        .filter(|p| runner.resolve(p.as_ref()).is_err())
        .collect();
    if missing.is_empty() {
        check(
            "tools",
            Verdict::Pass,
            "nix, nix-env and git are on PATH",
            "",
        )
    } else {
        check(
            "tools",
            Verdict::Fail,
            format!("not on PATH: {}", missing.join(", ")),
            "the NixOS module puts nix and git on the units' PATH; when running by hand, use a root shell with the system profile",
        )
    }
}

fn bootstrap_check(root: &Root, runner: &Runner) -> Check {
    let marker = root.join(layout::BOOTSTRAP_MARKER);
    let st = state::load(&root.join(layout::BOOTSTRAP_STATE));
    let unit = unit_state(root, runner, layout::BOOTSTRAP_UNIT);
    let unit_words = unit.map(|u| format!("; unit {u}")).unwrap_or_default();
    let hint = format!(
        "see `journalctl -u {0}` and `fabric status`; once the cause is fixed, `systemctl restart {0}`",
        layout::BOOTSTRAP_UNIT
    );
    if marker.exists() {
        return check(
            "bootstrap",
            Verdict::Pass,
            format!("complete ({}){unit_words}", marker.display()),
            "",
        );
    }
    match st {
        Err(e) => check(
            "bootstrap",
            Verdict::Fail,
            e.to_string(),
            "the file is moved aside and recreated by the next `fabric bootstrap`",
        ),
        Ok(None) => check(
            "bootstrap",
            Verdict::Warn,
            format!(
                "has not run yet (no {}){unit_words}",
                root.join(layout::BOOTSTRAP_STATE).display()
            ),
            format!(
                "cloud-init enables {}; check the cloud-init check below",
                layout::BOOTSTRAP_UNIT
            ),
        ),
        Ok(Some(s)) => match s.history.last() {
            Some(d) if d.outcome == Outcome::InProgress => check(
                "bootstrap",
                Verdict::Warn,
                format!("in progress, phase {}{unit_words}", d.phase),
                format!("follow it with `journalctl -fu {}`", layout::BOOTSTRAP_UNIT),
            ),
            Some(d) => {
                let why = d
                    .error
                    .as_ref()
                    .map(|e| format!(": failed in {}: {}", e.phase, e.message))
                    .unwrap_or_default();
                check(
                    "bootstrap",
                    Verdict::Fail,
                    format!("last run {}{why}{unit_words}", d.outcome),
                    hint,
                )
            }
            None => check(
                "bootstrap",
                Verdict::Warn,
                format!("no attempt recorded{unit_words}"),
                hint,
            ),
        },
    }
}

/// `systemctl show` of a unit, only on a real system (not under --root).
fn unit_state(root: &Root, runner: &Runner, unit: &str) -> Option<String> {
    if !root.is_host() {
        return None;
    }
    let cmd = Cmd::new("systemctl", Duration::from_secs(10)).args([
        "show",
        "--property=ActiveState,SubState,Result",
        unit,
    ]);
    let out = runner.run(&cmd, &Cancel::new()).ok()?;
    let words: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| v.to_string())
        .collect();
    (!words.is_empty()).then(|| words.join("/"))
}

fn cloud_init_check(root: &Root) -> Check {
    let result = root.join(layout::CLOUD_INIT_RESULT);
    let logs: Vec<PathBuf> = layout::CLOUD_INIT_LOGS
        .iter()
        .map(|l| root.join(l))
        .collect();
    let problems = log_problems(&logs);
    let log_words = match problems.last() {
        Some(last) => format!(
            "; {} warning/error lines in the logs, last: {last}",
            problems.len()
        ),
        None => String::new(),
    };
    let hint = format!(
        "run `cloud-init status --long`; read {} and {}",
        layout::CLOUD_INIT_LOGS[0],
        layout::CLOUD_INIT_LOGS[1]
    );
    let text = match std::fs::read_to_string(&result) {
        Ok(t) => t,
        Err(_) => {
            return check(
                "cloud-init",
                Verdict::Warn,
                format!("not finished (no {}){log_words}", result.display()),
                hint,
            )
        }
    };
    let errors: Vec<String> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.pointer("/v1/errors").cloned())
        .and_then(|e| e.as_array().cloned())
        .map(|a| {
            a.iter()
                .map(|e| e.as_str().map_or(e.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_else(|| {
            vec![format!(
                "{} is not cloud-init's result.json",
                result.display()
            )]
        });
    if errors.is_empty() {
        let verdict = if problems.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Warn
        };
        check(
            "cloud-init",
            verdict,
            format!("finished without errors{log_words}"),
            if problems.is_empty() {
                String::new()
            } else {
                hint
            },
        )
    } else {
        check(
            "cloud-init",
            Verdict::Fail,
            format!("finished with errors: {}{log_words}", errors.join("; ")),
            hint,
        )
    }
}

fn log_problems(logs: &[PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    for log in logs {
        if let Ok(text) = std::fs::read_to_string(log) {
            for line in text.lines() {
                if line.contains("WARNING") || line.contains("ERROR") || line.contains("Traceback")
                {
                    found.push(format!("{}: {}", log.display(), line.trim()));
                }
            }
        }
    }
    found
}

fn agent_check(root: &Root) -> Check {
    let hint = format!(
        "see `systemctl status {0}` and `journalctl -u {0}`",
        layout::AGENT_UNIT
    );
    match state::load(&root.join(layout::AGENT_STATE)) {
        Err(e) => check(
            "agent",
            Verdict::Fail,
            e.to_string(),
            "the agent moves the file aside and recreates it on its next cycle",
        ),
        Ok(None) => check("agent", Verdict::Warn, "has not run yet", hint),
        Ok(Some(s)) => {
            let stalled = match (s.last_check, s.interval_seconds) {
                (Some(t), Some(i)) => t.age() > Duration::from_secs(i.max(1) * 3 + 60),
                (None, _) => true,
                _ => false,
            };
            let last = s
                .last_check
                .map(|t| t.to_string())
                .unwrap_or_else(|| "never".into());
            let rev = s
                .current
                .as_ref()
                .map(|c| c.revision.short().to_string())
                .unwrap_or_else(|| "-".into());
            let outcome = s
                .last_outcome
                .map(|o| o.to_string())
                .unwrap_or_else(|| "-".into());
            let detail = format!(
                "on {rev}, last outcome {outcome}, last check {last}, {} rejected",
                s.rejected.len()
            );
            if stalled {
                check(
                    "agent",
                    Verdict::Fail,
                    format!("{detail}: not polling"),
                    hint,
                )
            } else if matches!(s.last_outcome, Some(Outcome::RollbackFailed)) {
                check("agent", Verdict::Fail, detail, "the last rollback failed: `fabric status` shows why; repair and run `fabric agent --once --retry-rejected`")
            } else if matches!(
                s.last_outcome,
                Some(Outcome::RolledBack | Outcome::BuildFailed)
            ) || s.reboot_needed
            {
                check(
                    "agent",
                    Verdict::Warn,
                    format!(
                        "{detail}{}",
                        if s.reboot_needed {
                            ", reboot needed"
                        } else {
                            ""
                        }
                    ),
                    "`fabric status` shows the failure and its output; push a fix",
                )
            } else {
                check("agent", Verdict::Pass, detail, "")
            }
        }
    }
}

/// Where builds land: the real /nix, also under --root, because store paths
/// are never joined under the root (see [`Root`]), so `nix build` fills the
/// host's store whatever the root. A root's own `DIR/nix` holds only the
/// profile's links. Without /nix yet, the filesystem it would be made on.
fn store_filesystem() -> PathBuf {
    let mut dir = PathBuf::from(layout::NIX_DIR);
    while !dir.exists() {
        match dir.parent() {
            Some(p) => dir = p.to_path_buf(),
            None => break,
        }
    }
    dir
}

fn disk_check() -> Check {
    let dir = store_filesystem();
    match rustix::fs::statvfs(Path::new(&dir)) {
        Err(e) => check(
            "disk /nix",
            Verdict::Skip,
            format!("statvfs {}: {e}", dir.display()),
            "",
        ),
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let words = format!(
                "{:.1} GiB free in {}",
                free as f64 / (1u64 << 30) as f64,
                dir.display()
            );
            let hint = "free space with `nix-collect-garbage --delete-older-than 14d` (keep the current generation), or grow the disk";
            if free < MIN_FREE_FAIL {
                check("disk /nix", Verdict::Fail, words, hint)
            } else if free < MIN_FREE_WARN {
                check("disk /nix", Verdict::Warn, words, hint)
            } else {
                check("disk /nix", Verdict::Pass, words, "")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under a --root on another filesystem (tmpfs here) that has a nix
    /// directory of its own, the free space is still the real store's.
    #[test]
    fn disk_space_is_the_real_stores_also_under_a_root() {
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "this test needs the tmpfs at /dev/shm");
        let dir = tempfile::tempdir_in(shm).unwrap();
        std::fs::create_dir_all(dir.path().join("nix/var/nix/profiles")).unwrap();
        let fsid = |p: &Path| rustix::fs::statvfs(p).unwrap().f_fsid;
        let real = store_filesystem();
        assert_ne!(
            fsid(dir.path()),
            fsid(&real),
            "the root must be on another filesystem than {} for this test to mean anything",
            real.display()
        );
        let root = Root::new(dir.path()).unwrap();
        let opts = DoctorOptions::new(root);
        let report = doctor(&opts, &Runner::new().with_path(String::new()));
        let disk = report
            .checks
            .iter()
            .find(|c| c.name == "disk /nix")
            .unwrap();
        assert!(
            disk.detail
                .ends_with(&format!("free in {}", real.display())),
            "{disk:?}"
        );
        assert_ne!(disk.verdict, Verdict::Skip, "{disk:?}");
    }
}
