//! Activation: SetProfile → Switch → Health → Commit, or Rollback.
//!
//! Mirrors what `nixos-rebuild switch` does (see the field notes, "NixOS
//! activation"), plus what it lacks: health checks and an automatic
//! rollback that points the profile back and re-activates the previous
//! generation. Once started, activation is never interrupted by SIGTERM, so
//! a profile is never left half-set.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::layout;
use crate::nix::{self, StorePath};
use crate::process::{Cancel, Cmd, CommandError, Runner};
use crate::root::Root;
use crate::state::{Failure, Outcome, Phase};

/// How `switch-to-configuration` is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationMode {
    /// Run `<toplevel>/bin/switch-to-configuration` as a child, inheriting
    /// the environment. Used with `--root` other than `/`, or when PID 1 is
    /// not systemd.
    Direct,
    /// Run it in a transient unit with a unique name (`systemd-run`), so it
    /// survives fabric being stopped or restarted mid-switch.
    TransientUnit,
}

impl ActivationMode {
    /// `TransientUnit` on a real system (root `/`, systemd as PID 1).
    pub fn detect(root: &Root) -> Self {
        let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        if root.is_host() && pid1.trim() == "systemd" {
            Self::TransientUnit
        } else {
            Self::Direct
        }
    }
}

/// The `switch-to-configuration` verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchAction {
    /// Activate now and make it the boot default.
    Switch,
    /// Only make it the boot default (switch-inhibitors changed).
    Boot,
}

impl SwitchAction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Switch => "switch",
            Self::Boot => "boot",
        }
    }
}

/// A health check: argv run without a shell (write `sh -c '…'` for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    argv: Vec<String>,
    text: String,
}

/// A `--health-check` value could not be split into words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("--health-check {text:?}: {reason}")]
pub struct HealthCheckError {
    text: String,
    reason: &'static str,
}

impl HealthCheck {
    /// Splits a command line with shell quoting rules (no expansion).
    pub fn parse(text: &str) -> Result<Self, HealthCheckError> {
        let argv = shlex::split(text).ok_or(HealthCheckError {
            text: text.to_string(),
            reason: "unbalanced quotes; quote like a shell would, e.g. \"curl -fsS 'http://127.0.0.1/health'\"",
        })?;
        if argv.is_empty() {
            return Err(HealthCheckError {
                text: text.to_string(),
                reason: "empty; give a command, e.g. \"systemctl is-active nginx.service\"",
            });
        }
        Ok(Self {
            argv,
            text: text.to_string(),
        })
    }

    /// The command as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn command(&self, timeout: Duration) -> Cmd {
        Cmd::new(&self.argv[0], timeout)
            .args(&self.argv[1..])
            .uninterruptible()
    }
}

impl std::str::FromStr for HealthCheck {
    type Err = HealthCheckError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Everything activation needs besides the toplevel.
#[derive(Debug, Clone)]
pub struct Activator {
    /// The machine root.
    pub root: Root,
    /// Direct or through `systemd-run`.
    pub mode: ActivationMode,
    /// Health checks run after a switch.
    pub health_checks: Vec<HealthCheck>,
    /// Timeout of each health check.
    pub health_timeout: Duration,
    /// Timeout of `switch-to-configuration`.
    pub switch_timeout: Duration,
    /// Timeout of `nix-env`.
    pub profile_timeout: Duration,
}

/// The result of one activation attempt.
#[derive(Debug, Clone)]
pub struct Activation {
    /// Switched, Unchanged, RolledBack, Failed or RollbackFailed.
    pub outcome: Outcome,
    /// Set when the outcome is not a success.
    pub error: Option<Failure>,
    /// The new generation needs a reboot to be fully in effect.
    pub reboot_needed: bool,
    /// Why a reboot is needed.
    pub reboot_reason: Option<String>,
    /// Wall time of profile + switch + health (+ rollback).
    pub duration: Duration,
}

impl Activator {
    /// `<root>/nix/var/nix/profiles/system`.
    pub fn profile(&self) -> PathBuf {
        self.root.join(layout::SYSTEM_PROFILE)
    }

    /// The running toplevel (`<root>/run/current-system`).
    pub fn running(&self) -> Option<StorePath> {
        nix::read_store_link(&self.root.join(layout::CURRENT_SYSTEM))
    }

    /// The argv that runs `switch-to-configuration ACTION` for `toplevel`.
    pub fn switch_command(&self, toplevel: &StorePath, action: SwitchAction) -> Cmd {
        let script = toplevel.switch_script();
        let cmd = match self.mode {
            ActivationMode::Direct => Cmd::new(&script, self.switch_timeout),
            ActivationMode::TransientUnit => Cmd::new("systemd-run", self.switch_timeout)
                .args([
                    "--collect",
                    "--no-ask-password",
                    "--pipe",
                    "--quiet",
                    "--service-type=exec",
                ])
                .arg(format!("--unit={}", unique_unit_name()))
                .arg(&script),
        };
        cmd.arg(action.as_str()).uninterruptible().echo_stderr()
    }

    /// Activates `new`, with `previous` (what runs now) as the rollback
    /// target. `on_phase` is called as each phase starts, so the caller can
    /// record it before anything irreversible happens.
    pub fn activate(
        &self,
        runner: &Runner,
        new: &StorePath,
        previous: Option<&StorePath>,
        on_phase: &mut dyn FnMut(Phase),
    ) -> Activation {
        let started = Instant::now();
        let done = |outcome, error, reboot: Option<String>| Activation {
            outcome,
            error,
            reboot_needed: reboot.is_some(),
            reboot_reason: reboot,
            duration: started.elapsed(),
        };
        // Activation is never cancelled half-way: a fresh, never-set token.
        let cancel = Cancel::new();

        // Only phases that take time are reported (each report is an
        // fsync'd state write); a failed closure check names its phase.
        if let Err(f) = check_closure(new) {
            return done(Outcome::Failed, Some(f), None);
        }

        let profile = self.profile();
        let prior = nix::profile_generation(&profile);
        if previous == Some(new) {
            // Already running: only make sure the profile agrees.
            if prior.as_ref().and_then(|g| g.store_path.as_ref()) != Some(new) {
                on_phase(Phase::SetProfile);
                if let Err(f) = self.set_profile(runner, new, &cancel) {
                    return done(Outcome::Failed, Some(f), None);
                }
            }
            return done(Outcome::Unchanged, None, self.reboot_reason(new, false));
        }

        on_phase(Phase::SetProfile);
        if prior.as_ref().and_then(|g| g.store_path.as_ref()) != Some(new) {
            if let Err(f) = self.set_profile(runner, new, &cancel) {
                return done(Outcome::Failed, Some(f), None);
            }
        }

        on_phase(Phase::Switch);
        let action = self.switch_action(new);
        let switched = self.switch(runner, new, action, &cancel);
        let failure = match switched {
            Ok(said_reboot) => {
                if !self.health_checks.is_empty() {
                    on_phase(Phase::Health);
                }
                match self.health(runner, &cancel) {
                    Ok(()) => {
                        let reboot =
                            self.reboot_reason(new, said_reboot || action == SwitchAction::Boot);
                        return done(Outcome::Switched, None, reboot);
                    }
                    Err(f) => f,
                }
            }
            Err(f) => f,
        };

        on_phase(Phase::Rollback);
        tracing::warn!(
            "{} (phase {}); rolling back",
            failure.message,
            failure.phase
        );
        match self.rollback(runner, previous, prior.as_ref(), &cancel) {
            Ok((reactivated, note)) => {
                let mut f = failure;
                if let Some(note) = note {
                    f.message = format!("{}; {note}", f.message);
                }
                let outcome = if reactivated {
                    Outcome::RolledBack
                } else {
                    Outcome::Failed
                };
                done(outcome, Some(f), None)
            }
            Err(rollback_failure) => {
                let f = Failure {
                    phase: Phase::Rollback,
                    message: format!(
                        "{} (phase {}), and the rollback failed too: {}",
                        failure.message, failure.phase, rollback_failure.message
                    ),
                    command: rollback_failure.command,
                    exit_code: rollback_failure.exit_code,
                    tail: rollback_failure.tail,
                };
                done(Outcome::RollbackFailed, Some(f), None)
            }
        }
    }

    fn set_profile(
        &self,
        runner: &Runner,
        out: &StorePath,
        cancel: &Cancel,
    ) -> Result<(), Failure> {
        let profile = self.profile();
        if let Some(dir) = profile.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Failure {
                phase: Phase::SetProfile,
                message: format!("cannot create {}: {e}", dir.display()),
                command: None,
                exit_code: None,
                tail: String::new(),
            })?;
        }
        let cmd = nix::set_profile_command(&profile, out, self.profile_timeout);
        runner
            .run(&cmd, cancel)
            .map(|_| ())
            .map_err(|e| failure(Phase::SetProfile, "setting the system profile failed", &e))
    }

    /// A change of `switch-inhibitors` makes `switch` refuse (exit 1); use
    /// `boot` then and report that a reboot is needed.
    fn switch_action(&self, new: &StorePath) -> SwitchAction {
        let running = self
            .root
            .join(layout::CURRENT_SYSTEM)
            .join("switch-inhibitors");
        let next = new.as_path().join("switch-inhibitors");
        match (std::fs::read(&running), std::fs::read(&next)) {
            (Ok(a), Ok(b)) if a != b => {
                tracing::warn!(
                    "switch-inhibitors changed; installing with `boot`, a reboot is needed"
                );
                SwitchAction::Boot
            }
            _ => SwitchAction::Switch,
        }
    }

    /// Runs the switch; `Ok(true)` when it exited 100 (reboot needed).
    fn switch(
        &self,
        runner: &Runner,
        toplevel: &StorePath,
        action: SwitchAction,
        cancel: &Cancel,
    ) -> Result<bool, Failure> {
        let cmd = self.switch_command(toplevel, action);
        tracing::info!("activating: {}", cmd.display());
        let out = runner
            .run_status(&cmd, cancel)
            .map_err(|e| failure(Phase::Switch, "switch-to-configuration could not run", &e))?;
        let said_reboot = match out.code {
            Some(0) => false,
            Some(100) => true,
            code => {
                let meaning = match code {
                    Some(1) => "usage error, failed pre-switch check or failed bootloader install",
                    Some(2) => "the activation script failed",
                    Some(4) => "some units failed to start or restart",
                    None => "it was killed by a signal",
                    _ => "unexpected exit code",
                };
                return Err(Failure {
                    phase: Phase::Switch,
                    message: format!(
                        "switch-to-configuration {} exited with {}: {meaning}",
                        action.as_str(),
                        code.map_or("a signal".to_string(), |c| format!("code {c}"))
                    ),
                    command: Some(cmd.display()),
                    exit_code: code,
                    tail: out.stderr_tail,
                });
            }
        };
        if !self.root.is_host() && action == SwitchAction::Switch {
            // Under --root the activation script updates the real
            // /run/current-system, not ours; keep ours true.
            crate::state::symlink_atomic(
                toplevel.as_path(),
                &self.root.join(layout::CURRENT_SYSTEM),
            )
            .map_err(|e| Failure {
                phase: Phase::Switch,
                message: format!(
                    "cannot point {} at {toplevel}: {e}",
                    self.root.join(layout::CURRENT_SYSTEM).display()
                ),
                command: None,
                exit_code: None,
                tail: String::new(),
            })?;
        }
        Ok(said_reboot)
    }

    fn health(&self, runner: &Runner, cancel: &Cancel) -> Result<(), Failure> {
        for check in &self.health_checks {
            let cmd = check.command(self.health_timeout);
            match runner.run(&cmd, cancel) {
                Ok(_) => tracing::info!("health check passed: {}", check.as_str()),
                Err(e) => {
                    return Err(failure(
                        Phase::Health,
                        &format!("health check `{}` failed", check.as_str()),
                        &e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Points the profile back and re-activates what ran before. Returns
    /// whether something was re-activated, and a note for the record.
    fn rollback(
        &self,
        runner: &Runner,
        previous: Option<&StorePath>,
        prior: Option<&nix::ProfileGeneration>,
        cancel: &Cancel,
    ) -> Result<(bool, Option<String>), Failure> {
        let profile = self.profile();
        // Prefer moving the profile back to the generation it had (no new
        // generation in the boot menu); otherwise --set what was running.
        let restore = match (prior, previous) {
            (Some(g), Some(p)) if g.store_path.as_ref() == Some(p) => Some(
                nix::switch_generation_command(&profile, g.number, self.profile_timeout),
            ),
            (_, Some(p)) => Some(nix::set_profile_command(&profile, p, self.profile_timeout)),
            (Some(g), None) => Some(nix::switch_generation_command(
                &profile,
                g.number,
                self.profile_timeout,
            )),
            (None, None) => None,
        };
        if let Some(cmd) = restore {
            runner
                .run(&cmd, cancel)
                .map_err(|e| failure(Phase::Rollback, "pointing the profile back failed", &e))?;
        }
        let Some(previous) = previous else {
            return Ok((
                false,
                Some("no previous generation was running, so nothing was re-activated".to_string()),
            ));
        };
        check_closure(previous).map_err(|mut f| {
            f.phase = Phase::Rollback;
            f
        })?;
        match self.switch(runner, previous, SwitchAction::Switch, cancel) {
            Ok(_) => {
                tracing::warn!("rolled back to the previous generation {previous}");
                Ok((true, None))
            }
            // The previous generation is what ran before; failed units in it
            // are not ours to fix, but say so.
            Err(f) if f.exit_code == Some(4) => {
                if !self.root.is_host() {
                    let _ = crate::state::symlink_atomic(
                        previous.as_path(),
                        &self.root.join(layout::CURRENT_SYSTEM),
                    );
                }
                Ok((
                    true,
                    Some("the previous generation came back with failed units".to_string()),
                ))
            }
            Err(mut f) => {
                f.phase = Phase::Rollback;
                Err(f)
            }
        }
    }

    /// Why `new` needs a reboot: the switch said so, or its kernel, initrd
    /// or modules differ from the booted system's.
    pub fn reboot_reason(&self, new: &StorePath, said: bool) -> Option<String> {
        if said {
            return Some("switch-to-configuration asked for a reboot".to_string());
        }
        let booted = self.root.join(layout::BOOTED_SYSTEM);
        if std::fs::symlink_metadata(&booted).is_err() {
            return None;
        }
        let differing: Vec<&str> = ["kernel", "initrd", "kernel-modules"]
            .into_iter()
            .filter(|name| {
                std::fs::read_link(booted.join(name)).ok()
                    != std::fs::read_link(new.as_path().join(name)).ok()
            })
            .collect();
        (!differing.is_empty())
            .then(|| format!("{} differ from the booted system", differing.join(", ")))
    }
}

fn check_closure(toplevel: &StorePath) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let script = toplevel.switch_script();
    match std::fs::metadata(&script) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        _ => Err(Failure {
            phase: Phase::CheckClosure,
            message: format!(
                "{} is missing or not executable: the flake attribute is not a NixOS system toplevel",
                script.display()
            ),
            command: None,
            exit_code: None,
            tail: String::new(),
        }),
    }
}

/// A [`Failure`] from a command error.
pub fn failure(phase: Phase, what: &str, e: &CommandError) -> Failure {
    Failure {
        phase,
        message: format!("{what}: {}", e.summary()),
        command: e.command().map(str::to_string),
        exit_code: e.code(),
        tail: e.tail().to_string(),
    }
}

fn unique_unit_name() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{}{t}-{}-{:04x}",
        layout::SWITCH_UNIT_PREFIX,
        std::process::id(),
        fastrand::u16(..)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_checks_split_like_a_shell_without_one() {
        let h = HealthCheck::parse("curl -fsS 'http://127.0.0.1/a b'").unwrap();
        assert_eq!(h.argv, ["curl", "-fsS", "http://127.0.0.1/a b"]);
        assert!(HealthCheck::parse("")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(HealthCheck::parse("sh -c 'oops")
            .unwrap_err()
            .to_string()
            .contains("unbalanced"));
    }

    #[test]
    fn transient_unit_argv_matches_nixos_rebuild() {
        let a = Activator {
            root: Root::host(),
            mode: ActivationMode::TransientUnit,
            health_checks: vec![],
            health_timeout: Duration::from_secs(1),
            switch_timeout: Duration::from_secs(1),
            profile_timeout: Duration::from_secs(1),
        };
        let p = StorePath::parse("/nix/store/f6vhy9wmv9wajr1wmvd239ffsc2xrfjf-toplevel").unwrap();
        let argv = a.switch_command(&p, SwitchAction::Switch).argv();
        assert_eq!(
            argv[..6],
            [
                "systemd-run",
                "--collect",
                "--no-ask-password",
                "--pipe",
                "--quiet",
                "--service-type=exec"
            ]
        );
        assert!(argv[6].starts_with("--unit=fabric-switch-"));
        assert_eq!(
            argv[7],
            "/nix/store/f6vhy9wmv9wajr1wmvd239ffsc2xrfjf-toplevel/bin/switch-to-configuration"
        );
        assert_eq!(argv[8], "switch");
        let other = a.switch_command(&p, SwitchAction::Switch).argv();
        assert_ne!(argv[6], other[6], "unit names must be unique");
    }
}
