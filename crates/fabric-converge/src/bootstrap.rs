//! `fabric bootstrap`: the first boot. Read the flake target, wait for the
//! remote, build exactly its head, activate, record, disable the unit.
//! Idempotent: a completed machine exits at once; a killed run is re-run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::credential::{self, CredentialError, CredentialPaths};
use crate::deploy::{ActivationMode, Activator, HealthCheck};
use crate::layout::{self, exit};
use crate::nix::{self, StorePath};
use crate::process::{Cancel, Cmd, Runner};
use crate::remote::{self, Backoff, RemoteQuery, Revision};
use crate::root::Root;
use crate::state::{
    self, ConvergeLock, Deployment, Failure, Generation, LockError, Outcome, Phase, State,
    StateError, Timestamp,
};
use crate::target::{self, TargetError};

/// Options of one bootstrap run.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// The machine root.
    pub root: Root,
    /// The flake target file, absolute on the machine (joined under root).
    pub flake_target: PathBuf,
    /// How waiting for the remote backs off, and for how long in total.
    pub backoff: Backoff,
    /// Timeout of `nix build`.
    pub build_timeout: Duration,
    /// Activation settings.
    pub activator: Activator,
    /// The credential files (`--ssh-key-file` …); unset ones default to
    /// the first-boot files that exist.
    pub credentials: CredentialPaths,
}

impl BootstrapOptions {
    /// Defaults for `root`: the contract paths, 30 min remote timeout,
    /// 2 h build timeout, 10 min switch timeout.
    pub fn new(root: Root) -> Self {
        let mode = ActivationMode::detect(&root);
        Self {
            flake_target: PathBuf::from(layout::FLAKE_TARGET),
            backoff: Backoff::new(Duration::from_secs(30 * 60)),
            build_timeout: Duration::from_secs(2 * 3600),
            activator: Activator {
                root: root.clone(),
                mode,
                health_checks: Vec::<HealthCheck>::new(),
                health_timeout: Duration::from_secs(60),
                switch_timeout: Duration::from_secs(10 * 60),
                profile_timeout: Duration::from_secs(5 * 60),
            },
            credentials: CredentialPaths::default(),
            root,
        }
    }
}

/// What a successful bootstrap did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum BootstrapReport {
    /// The marker was there: nothing to do.
    AlreadyComplete,
    /// Converged on `revision`.
    Completed {
        /// The revision built.
        revision: Revision,
        /// Its toplevel.
        store_path: StorePath,
        /// Switched, or Unchanged when it was already running.
        outcome: Outcome,
        /// A reboot is needed for it to take full effect.
        reboot_needed: bool,
    },
}

/// Why bootstrap did not complete. The same is recorded in bootstrap.json.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BootstrapError {
    /// The flake target was refused.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The credential was refused.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// State could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A phase failed; `failure` says which, with the command and its output.
    #[error("bootstrap failed in phase {}: {}{}", failure.phase, failure.message, tail_words(&failure.tail))]
    Failed {
        /// Recorded failure.
        failure: Failure,
        /// What the deployment ended as.
        outcome: Outcome,
    },
    /// The flake reference is valid but cannot be followed (not Git).
    #[error("{0}")]
    Unsupported(String),
    /// Stopped by SIGTERM/SIGINT.
    #[error(
        "bootstrap stopped by a termination signal during phase {0}; run it again to continue"
    )]
    Cancelled(Phase),
}

fn tail_words(tail: &str) -> String {
    let t = tail.trim_end();
    if t.is_empty() {
        String::new()
    } else {
        format!("\n--- output tail ---\n{t}")
    }
}

impl BootstrapError {
    /// The process exit code (see [`crate::layout::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Target(_) | Self::Credential(_) | Self::Unsupported(_) => exit::USAGE,
            Self::State(_) | Self::Lock(_) => exit::FAILED,
            Self::Failed {
                outcome: Outcome::RollbackFailed,
                ..
            } => exit::ROLLBACK_FAILED,
            Self::Failed { .. } => exit::FAILED,
            Self::Cancelled(_) => exit::CANCELLED,
        }
    }
}

struct Run {
    path: PathBuf,
    state: State,
    deployment: Deployment,
}

impl Run {
    fn enter(&mut self, phase: Phase) -> Result<(), StateError> {
        tracing::info!("bootstrap: {phase}");
        self.deployment.phase = phase;
        self.state.record(&self.deployment);
        state::save(&self.path, &self.state)
    }

    fn fail(&mut self, failure: Failure, outcome: Outcome) -> BootstrapError {
        self.deployment.outcome = outcome;
        self.deployment.finished_at = Some(Timestamp::now());
        self.deployment.error = Some(failure.clone());
        self.state.record(&self.deployment);
        if let Err(e) = state::save(&self.path, &self.state) {
            tracing::error!("{e}");
        }
        BootstrapError::Failed { failure, outcome }
    }

    /// Records that what the machine converges on (the flake target, or
    /// the credential that fetches it) was refused before any command ran.
    /// The caller returns the refusal itself: a usage error, not a failed run.
    fn refuse_target(&mut self, message: String) {
        self.fail(
            Failure {
                phase: Phase::ReadTarget,
                message,
                command: None,
                exit_code: None,
                tail: String::new(),
            },
            Outcome::Failed,
        );
    }

    fn cancelled(&mut self) -> BootstrapError {
        let phase = self.deployment.phase;
        self.deployment.outcome = Outcome::Cancelled;
        self.deployment.finished_at = Some(Timestamp::now());
        self.deployment.error = Some(Failure {
            phase,
            message: "stopped by a termination signal".into(),
            command: None,
            exit_code: None,
            tail: String::new(),
        });
        self.state.record(&self.deployment);
        let _ = state::save(&self.path, &self.state);
        BootstrapError::Cancelled(phase)
    }
}

/// Runs bootstrap. The marker makes it a no-op; the lock makes a second
/// concurrent run wait and then find the marker.
pub fn bootstrap(
    opts: &BootstrapOptions,
    runner: &Runner,
    cancel: &Cancel,
) -> Result<BootstrapReport, BootstrapError> {
    let marker = opts.root.join(layout::BOOTSTRAP_MARKER);
    if marker.exists() {
        tracing::info!("{} exists: bootstrap already complete", marker.display());
        return Ok(BootstrapReport::AlreadyComplete);
    }
    let lock = wait_for_lock(opts, cancel)?;
    if marker.exists() {
        tracing::info!("another run completed bootstrap while this one waited");
        return Ok(BootstrapReport::AlreadyComplete);
    }
    let path = opts.root.join(layout::BOOTSTRAP_STATE);
    let (mut st, _recovered) = state::load_or_recover(&path)?;
    st.close_interrupted();
    let mut run = Run {
        path,
        state: st,
        deployment: Deployment::start(Phase::ReadTarget),
    };
    // Reading the target is instant: recorded only if it fails.
    run.deployment.phase = Phase::ReadTarget;

    let target_path = opts.root.join(&opts.flake_target);
    let target = target::read_flake_target(&target_path)
        .inspect_err(|e| run.refuse_target(e.to_string()))?;
    for w in &target.warnings {
        tracing::warn!("{}: {w}", target_path.display());
    }
    run.state.flake = Some(target.flake.as_str().to_string());

    run.enter(Phase::WaitRemote)?;
    let query = match RemoteQuery::for_flake(&target.flake) {
        Ok(q) => q,
        Err(e) => {
            let message = format!("{}: {e}", target_path.display());
            run.refuse_target(message.clone());
            return Err(BootstrapError::Unsupported(message));
        }
    };
    let credential = credential::load(&opts.root, &opts.credentials, &target.flake)
        .inspect_err(|e| run.refuse_target(e.to_string()))?;
    let auth = credential.as_ref().map(|c| c.auth.clone());
    match &credential {
        Some(c) => tracing::info!(
            "credential: {} (from {})",
            c.summary,
            c.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => tracing::info!("no credential: fetching {} as it is", target.flake),
    }
    run.state.credential = credential.map(|c| c.summary);
    let query = RemoteQuery {
        auth: auth.clone(),
        ..query
    };
    let revision =
        match remote::wait_for_head(&query, runner, &opts.backoff, cancel, runner.liveness()) {
            Ok((rev, _)) => rev,
            Err(e) if e.is_cancelled() => return Err(run.cancelled()),
            Err(e) => {
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                let message =
                    match credential::explain_refusal(&e.tail(), run.state.credential.as_ref()) {
                        Some(hint) => format!("{first}; {hint}"),
                        None => first,
                    };
                let failure = Failure {
                    phase: Phase::WaitRemote,
                    message,
                    command: e.command(),
                    exit_code: None,
                    tail: e.tail(),
                };
                return Err(run.fail(failure, Outcome::Failed));
            }
        };
    run.state.last_check = Some(Timestamp::now());
    run.deployment.revision = Some(revision.clone());

    run.enter(Phase::Build)?;
    let installable = nix::toplevel_installable(&target.flake, &revision);
    tracing::info!("building {installable}");
    let build_started = Instant::now();
    let built = nix::build(
        runner,
        &installable,
        opts.build_timeout,
        cancel,
        auth.as_ref(),
    );
    run.deployment.build_seconds = Some(build_started.elapsed().as_secs_f64());
    let toplevel = match built {
        Ok(p) => p,
        Err(nix::BuildError::Command(e)) if e.is_cancelled() => return Err(run.cancelled()),
        Err(nix::BuildError::Command(e)) => {
            return Err(run.fail(
                crate::deploy::failure(Phase::Build, "nix build failed", &e),
                Outcome::BuildFailed,
            ))
        }
        Err(e) => {
            return Err(run.fail(
                Failure {
                    phase: Phase::Build,
                    message: e.to_string(),
                    command: None,
                    exit_code: None,
                    tail: String::new(),
                },
                Outcome::BuildFailed,
            ))
        }
    };
    run.deployment.store_path = Some(toplevel.clone());
    if cancel.is_cancelled() {
        return Err(run.cancelled());
    }

    let previous = opts.activator.running();
    let path = run.path.clone();
    let activation = {
        let state = &mut run.state;
        let deployment = &mut run.deployment;
        let mut on_phase = |phase: Phase| {
            tracing::info!("bootstrap: {phase}");
            deployment.phase = phase;
            state.record(deployment);
            if let Err(e) = state::save(&path, state) {
                tracing::error!("{e}");
            }
        };
        opts.activator
            .activate(runner, &toplevel, previous.as_ref(), &mut on_phase)
    };
    run.deployment.activation_seconds = Some(activation.duration.as_secs_f64());
    if let Some(failure) = activation.error {
        return Err(run.fail(failure, activation.outcome));
    }

    run.deployment.phase = Phase::Commit;
    run.deployment.outcome = activation.outcome;
    run.deployment.finished_at = Some(Timestamp::now());
    run.state.current = Some(Generation {
        revision: revision.clone(),
        store_path: toplevel.clone(),
        since: Timestamp::now(),
    });
    run.state.reboot_needed = activation.reboot_needed;
    run.state.last_success = Some(Timestamp::now());
    run.state.record(&run.deployment);
    state::save(&run.path, &run.state)?;
    let marker_text = format!(
        "revision={revision}\nstore_path={toplevel}\ncompleted_at={}\n",
        Timestamp::now()
    );
    state::write_atomic(&marker, marker_text.as_bytes()).map_err(|e| StateError::Write {
        path: marker.clone(),
        reason: e.to_string(),
    })?;
    if let Some(reason) = &activation.reboot_reason {
        tracing::warn!("reboot needed: {reason}");
    }
    disable_unit(opts, runner);
    drop(lock);
    tracing::info!("bootstrap complete: {revision} {toplevel}");
    Ok(BootstrapReport::Completed {
        revision,
        store_path: toplevel,
        outcome: activation.outcome,
        reboot_needed: activation.reboot_needed,
    })
}

fn wait_for_lock(opts: &BootstrapOptions, cancel: &Cancel) -> Result<ConvergeLock, BootstrapError> {
    let path = opts.root.join(layout::CONVERGE_LOCK);
    let started = Instant::now();
    let mut said = false;
    loop {
        match ConvergeLock::try_acquire(&path) {
            Ok(l) => return Ok(l),
            Err(LockError::Busy { holder, .. }) if started.elapsed() < opts.backoff.timeout => {
                if !said {
                    tracing::info!(
                        "waiting for the converge lock {} held by pid {holder}",
                        path.display()
                    );
                    said = true;
                }
                if !cancel.sleep(Duration::from_millis(200), &Default::default()) {
                    return Err(BootstrapError::Cancelled(Phase::Idle));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `systemctl [--root=DIR] disable --no-reload fabric-bootstrap.service`.
/// Best effort: on NixOS the unit file is in the store and cannot be
/// disabled; the marker (the unit's `ConditionPathExists=!`) is what keeps
/// it from running again.
///
/// `--no-reload`: removing the unit's links only matters at the next boot,
/// which reads them afresh, while the daemon reload `disable` otherwise
/// asks for makes PID 1 re-read every unit, seconds on a small machine,
/// at the end of every bootstrap.
fn disable_unit(opts: &BootstrapOptions, runner: &Runner) {
    let mut cmd = Cmd::new("systemctl", Duration::from_secs(60));
    if !opts.root.is_host() {
        cmd = cmd.arg(format!("--root={}", opts.root.dir().display()));
    }
    let cmd = cmd
        .args(["disable", "--no-reload", layout::BOOTSTRAP_UNIT])
        .uninterruptible();
    match runner.run(&cmd, &Cancel::new()) {
        Ok(_) => tracing::info!("disabled {}", layout::BOOTSTRAP_UNIT),
        Err(e) => tracing::warn!(
            "could not disable {} ({e}); the marker {} keeps it from running again",
            layout::BOOTSTRAP_UNIT,
            layout::BOOTSTRAP_MARKER
        ),
    }
}

/// Exit code for a bootstrap result.
pub fn exit_code(result: &Result<BootstrapReport, BootstrapError>) -> u8 {
    match result {
        Ok(_) => exit::OK,
        Err(e) => e.exit_code(),
    }
}
