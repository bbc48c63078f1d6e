//! `fabric agent`: poll the remote head, and when it moves, build exactly
//! that revision, switch, check health, and roll back when it is unhealthy.
//!
//! One cycle ([`Agent::cycle`]) costs one `git ls-remote` when nothing moved.
//! A rejected revision is not tried again until the remote moves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fabric_model::FlakeRef;
use serde::Serialize;

use crate::credential::{self, CredentialPaths, FetchAuth};
use crate::deploy::{ActivationMode, Activator, HealthCheck};
use crate::layout::{self, exit};
use crate::metrics::Metrics;
use crate::nix::{self, StorePath};
use crate::process::{Cancel, Cmd, Runner};
use crate::remote::{RemoteQuery, Revision};
use crate::root::Root;
use crate::state::{
    self, ConvergeLock, Deployment, Failure, Generation, LockError, Outcome, Phase, State,
    Timestamp,
};
use crate::target;

/// Where the agent gets its flake reference.
#[derive(Debug, Clone)]
pub enum FlakeSource {
    /// `--flake REF`.
    Fixed(FlakeRef),
    /// The flake target file (absolute on the machine), re-read every cycle.
    TargetFile(PathBuf),
}

/// What to do when a generation needs a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebootPolicy {
    /// Only report it (status, metrics).
    #[default]
    Never,
    /// `systemctl reboot` after a healthy switch that needs it.
    WhenNeeded,
}

/// Options of the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The machine root.
    pub root: Root,
    /// The flake reference.
    pub flake: FlakeSource,
    /// Time between polls.
    pub interval: Duration,
    /// Each wait is `interval` scaled by a random factor in
    /// `[1 - jitter, 1 + jitter]`, so that a fleet does not poll in step.
    pub jitter: f64,
    /// Timeout of `git ls-remote`.
    pub remote_timeout: Duration,
    /// Timeout of `nix build`.
    pub build_timeout: Duration,
    /// Activation settings, health checks included.
    pub activator: Activator,
    /// Reboot policy.
    pub reboot: RebootPolicy,
    /// Deploy the head even when it was rejected before.
    pub retry_rejected: bool,
    /// The credential files, re-read every cycle so that a rotated key or
    /// token is picked up without a restart.
    pub credentials: CredentialPaths,
}

impl AgentOptions {
    /// Defaults for `root`: the flake target file, 5 min interval ±10 %,
    /// no health checks, 60 s health timeout, reboot never.
    pub fn new(root: Root) -> Self {
        let mode = ActivationMode::detect(&root);
        Self {
            flake: FlakeSource::TargetFile(PathBuf::from(layout::FLAKE_TARGET)),
            interval: Duration::from_secs(300),
            jitter: 0.1,
            remote_timeout: Duration::from_secs(60),
            build_timeout: Duration::from_secs(2 * 3600),
            activator: Activator {
                root: root.clone(),
                mode,
                health_checks: Vec::<HealthCheck>::new(),
                health_timeout: Duration::from_secs(60),
                switch_timeout: Duration::from_secs(10 * 60),
                profile_timeout: Duration::from_secs(5 * 60),
            },
            reboot: RebootPolicy::Never,
            retry_rejected: false,
            credentials: CredentialPaths::default(),
            root,
        }
    }
}

/// How one cycle ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum CycleResult {
    /// The remote has not moved from the deployed revision.
    NoChange {
        /// The deployed revision.
        revision: Revision,
    },
    /// The head was rejected before; waiting for the remote to move.
    SkippedRejected {
        /// The head.
        revision: Revision,
        /// Why it was rejected.
        reason: String,
    },
    /// The head is deployed (switched, or its toplevel was already running).
    Deployed {
        /// The head.
        revision: Revision,
        /// Its toplevel.
        store_path: StorePath,
        /// Switched or Unchanged.
        outcome: Outcome,
        /// A reboot is needed.
        reboot_needed: bool,
    },
    /// The head failed (build, activation or health) and was rejected; the
    /// machine stays on (or went back to) the previous generation.
    Rejected {
        /// The head.
        revision: Revision,
        /// BuildFailed, RolledBack or Failed.
        outcome: Outcome,
        /// What failed.
        failure: Failure,
    },
    /// Activation failed and the rollback failed too.
    RollbackFailed {
        /// The head.
        revision: Revision,
        /// What failed.
        failure: Failure,
    },
    /// The remote could not be asked.
    RemoteFailed {
        /// Why.
        message: String,
    },
    /// The flake target or `--flake` was refused.
    TargetRefused {
        /// Why.
        message: String,
    },
    /// A credential file was refused, or does not fit the flake.
    CredentialRefused {
        /// Why (names the file; never the secret).
        message: String,
    },
    /// State could not be read or written.
    StateFailed {
        /// Why.
        message: String,
    },
    /// Another run holds the converge lock.
    Busy {
        /// Its pid.
        holder: String,
    },
    /// Stopped by SIGTERM/SIGINT before activation; nothing changed.
    Cancelled,
}

impl CycleResult {
    /// The exit code of `fabric agent --once` (see [`crate::layout::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NoChange { .. } | Self::SkippedRejected { .. } | Self::Deployed { .. } => {
                exit::OK
            }
            Self::Rejected { .. } | Self::RemoteFailed { .. } | Self::StateFailed { .. } => {
                exit::FAILED
            }
            Self::TargetRefused { .. } | Self::CredentialRefused { .. } => exit::USAGE,
            Self::Busy { .. } => exit::BUSY,
            Self::RollbackFailed { .. } => exit::ROLLBACK_FAILED,
            Self::Cancelled => exit::CANCELLED,
        }
    }
}

/// The agent: options, a runner and the metrics it keeps.
#[derive(Debug)]
pub struct Agent {
    opts: AgentOptions,
    runner: Runner,
    cancel: Cancel,
    metrics: Arc<Metrics>,
}

impl Agent {
    /// An agent; nothing runs until [`Agent::cycle`] or [`Agent::run`].
    pub fn new(opts: AgentOptions, runner: Runner, cancel: Cancel) -> Self {
        Self {
            opts,
            runner,
            cancel,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The metrics, to serve them.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    fn state_path(&self) -> PathBuf {
        self.opts.root.join(layout::AGENT_STATE)
    }

    /// One poll, and a deployment when the head moved.
    pub fn cycle(&self) -> CycleResult {
        let result = self.cycle_inner();
        match &result {
            CycleResult::NoChange { revision } => {
                tracing::info!("remote has not moved from {}; nothing to do", revision.short())
            }
            CycleResult::SkippedRejected { revision, reason } => tracing::info!(
                "head {} was rejected ({reason}); waiting for the remote to move (or use --retry-rejected)",
                revision.short()
            ),
            CycleResult::Deployed {
                revision,
                store_path,
                outcome,
                reboot_needed,
            } => {
                tracing::info!(
                    "deployed {revision} ({outcome}): {store_path}{}",
                    if *reboot_needed { ", reboot needed" } else { "" }
                )
            }
            CycleResult::Rejected {
                revision,
                outcome,
                failure,
            } => tracing::error!(
                "revision {revision} rejected ({outcome}) in phase {}: {}{}{}",
                failure.phase,
                failure.message,
                failure.command.as_deref().map(|c| format!("\ncommand: {c}")).unwrap_or_default(),
                if failure.tail.is_empty() { String::new() } else { format!("\n{}", failure.tail.trim_end()) }
            ),
            CycleResult::RollbackFailed { revision, failure } => tracing::error!(
                "ROLLBACK FAILED for {revision}, the machine needs attention: {}",
                failure.message
            ),
            CycleResult::RemoteFailed { message } => {
                tracing::warn!("cannot look at the remote: {message}")
            }
            CycleResult::TargetRefused { message } | CycleResult::CredentialRefused { message } => {
                tracing::error!("{message}")
            }
            CycleResult::StateFailed { message } => tracing::error!("{message}"),
            CycleResult::Busy { holder } => {
                tracing::info!(
                    "another converge run (pid {holder}) holds the lock; skipping this cycle"
                )
            }
            CycleResult::Cancelled => {
                tracing::info!("stopped by a termination signal; nothing was activated")
            }
        }
        result
    }

    fn load_state(&self) -> Result<State, CycleResult> {
        let (mut st, _recovered) =
            state::load_or_recover(&self.state_path()).map_err(|e| CycleResult::StateFailed {
                message: e.to_string(),
            })?;
        if st.current.is_none() {
            // Right after bootstrap: start from what it deployed.
            if let Ok(Some(b)) = state::load(&self.opts.root.join(layout::BOOTSTRAP_STATE)) {
                st.current = b.current;
                st.reboot_needed = b.reboot_needed;
            }
        }
        st.close_interrupted();
        st.interval_seconds = Some(self.opts.interval.as_secs());
        Ok(st)
    }

    fn save(&self, st: &State) -> Result<(), CycleResult> {
        self.metrics.observe(st);
        state::save(&self.state_path(), st).map_err(|e| CycleResult::StateFailed {
            message: e.to_string(),
        })
    }

    fn flake(&self) -> Result<FlakeRef, CycleResult> {
        match &self.opts.flake {
            FlakeSource::Fixed(f) => Ok(f.clone()),
            FlakeSource::TargetFile(p) => target::read_flake_target(&self.opts.root.join(p))
                .map(|t| t.flake)
                .map_err(|e| CycleResult::TargetRefused {
                    message: e.to_string(),
                }),
        }
    }

    fn cycle_inner(&self) -> CycleResult {
        let _lock = match ConvergeLock::try_acquire(&self.opts.root.join(layout::CONVERGE_LOCK)) {
            Ok(l) => l,
            Err(LockError::Busy { holder, .. }) => return CycleResult::Busy { holder },
            Err(e) => {
                return CycleResult::StateFailed {
                    message: e.to_string(),
                }
            }
        };
        let mut st = match self.load_state() {
            Ok(s) => s,
            Err(r) => return r,
        };
        let flake = match self.flake() {
            Ok(f) => f,
            Err(r) => return r,
        };
        st.flake = Some(flake.as_str().to_string());
        self.clear_reboot_after_reboot(&mut st);
        let query = match RemoteQuery::for_flake(&flake) {
            Ok(q) => q,
            Err(e) => {
                return CycleResult::TargetRefused {
                    message: e.to_string(),
                }
            }
        };

        let credential = match credential::load(&self.opts.root, &self.opts.credentials, &flake) {
            Ok(c) => c,
            Err(e) => {
                return CycleResult::CredentialRefused {
                    message: e.to_string(),
                }
            }
        };
        let auth = credential.as_ref().map(|c| c.auth.clone());
        let summary = credential.map(|c| c.summary);
        if summary != st.credential {
            match &summary {
                Some(s) => tracing::info!("credential: {s}"),
                None => tracing::info!("no credential: fetching {flake} as it is"),
            }
        }
        st.credential = summary;
        let query = RemoteQuery {
            auth: auth.clone(),
            ..query
        };

        self.metrics.polled();
        st.last_check = Some(Timestamp::now());
        let head = match query.head(&self.runner, self.opts.remote_timeout, &self.cancel) {
            Ok(h) => h,
            Err(e) if e.is_cancelled() => return CycleResult::Cancelled,
            Err(e) => {
                let _ = self.save(&st);
                let message = match credential::explain_refusal(&e.tail(), st.credential.as_ref()) {
                    Some(hint) => format!("{hint}. {e}"),
                    None => e.to_string(),
                };
                return CycleResult::RemoteFailed { message };
            }
        };
        let running = self.opts.activator.running();
        if let Some(cur) = &st.current {
            let drifted = running.as_ref().is_some_and(|r| r != &cur.store_path);
            if cur.revision == head && !drifted {
                st.last_success = Some(Timestamp::now());
                let revision = head;
                return self
                    .save(&st)
                    .err()
                    .unwrap_or(CycleResult::NoChange { revision });
            }
            if cur.revision == head {
                tracing::warn!(
                    "the running system is not the one fabric deployed for {}; converging it back",
                    head.short()
                );
            }
        }
        if !self.opts.retry_rejected {
            if let Some(r) = st.rejection(&head) {
                let reason = format!("{} at {}: {}", r.outcome, r.at, r.reason);
                let revision = head;
                return self
                    .save(&st)
                    .err()
                    .unwrap_or(CycleResult::SkippedRejected { revision, reason });
            }
        }
        if let Some(c) = &st.credential {
            // Once per deployment, so the journal of every build says
            // which credential fetched it.
            tracing::info!("building with credential: {c}");
        }
        self.deploy(&mut st, &flake, head, running, auth.as_ref())
    }

    fn deploy(
        &self,
        st: &mut State,
        flake: &FlakeRef,
        head: Revision,
        running: Option<StorePath>,
        auth: Option<&FetchAuth>,
    ) -> CycleResult {
        tracing::info!("remote moved to {head}; building it");
        let mut d = Deployment::start(Phase::Build);
        d.revision = Some(head.clone());
        st.record(&d);
        if let Err(r) = self.save(st) {
            return r;
        }

        let installable = nix::toplevel_installable(flake, &head);
        let started = Instant::now();
        let built = nix::build(
            &self.runner,
            &installable,
            self.opts.build_timeout,
            &self.cancel,
            auth,
        );
        d.build_seconds = Some(started.elapsed().as_secs_f64());
        let toplevel = match built {
            Ok(p) => p,
            Err(nix::BuildError::Command(e)) if e.is_cancelled() => {
                return self.finish_cancelled(st, d);
            }
            Err(e) => {
                let failure = match &e {
                    nix::BuildError::Command(c) => {
                        crate::deploy::failure(Phase::Build, "nix build failed", c)
                    }
                    other => Failure {
                        phase: Phase::Build,
                        message: other.to_string(),
                        command: None,
                        exit_code: None,
                        tail: String::new(),
                    },
                };
                return self.finish_rejected(st, d, head, Outcome::BuildFailed, failure);
            }
        };
        d.store_path = Some(toplevel.clone());
        if self.cancel.is_cancelled() {
            return self.finish_cancelled(st, d);
        }

        let path = self.state_path();
        let activation = {
            let mut on_phase = |phase: Phase| {
                tracing::info!("{}: {phase}", head.short());
                d.phase = phase;
                st.record(&d);
                if let Err(e) = state::save(&path, st) {
                    tracing::error!("{e}");
                }
            };
            self.opts
                .activator
                .activate(&self.runner, &toplevel, running.as_ref(), &mut on_phase)
        };
        d.activation_seconds = Some(activation.duration.as_secs_f64());
        match (activation.outcome, activation.error) {
            (Outcome::Switched | Outcome::Unchanged, _) => {
                d.phase = Phase::Commit;
                d.outcome = activation.outcome;
                d.finished_at = Some(Timestamp::now());
                st.current = Some(Generation {
                    revision: head.clone(),
                    store_path: toplevel.clone(),
                    since: Timestamp::now(),
                });
                st.reboot_needed = activation.reboot_needed;
                st.last_success = Some(Timestamp::now());
                st.record(&d);
                self.metrics
                    .deployed(d.outcome, d.build_seconds, d.activation_seconds);
                if let Err(r) = self.save(st) {
                    return r;
                }
                if let Some(reason) = &activation.reboot_reason {
                    tracing::warn!("reboot needed for {}: {reason}", head.short());
                    if self.opts.reboot == RebootPolicy::WhenNeeded {
                        self.reboot();
                    }
                }
                CycleResult::Deployed {
                    revision: head,
                    store_path: toplevel,
                    outcome: activation.outcome,
                    reboot_needed: activation.reboot_needed,
                }
            }
            (outcome, error) => {
                let failure = error.unwrap_or_else(|| Failure {
                    phase: d.phase,
                    message: "activation failed".into(),
                    command: None,
                    exit_code: None,
                    tail: String::new(),
                });
                if outcome == Outcome::RollbackFailed {
                    let r = self.finish_rejected(st, d, head.clone(), outcome, failure.clone());
                    if let CycleResult::StateFailed { .. } = r {
                        return r;
                    }
                    return CycleResult::RollbackFailed {
                        revision: head,
                        failure,
                    };
                }
                self.finish_rejected(st, d, head, outcome, failure)
            }
        }
    }

    fn finish_rejected(
        &self,
        st: &mut State,
        mut d: Deployment,
        head: Revision,
        outcome: Outcome,
        failure: Failure,
    ) -> CycleResult {
        d.outcome = outcome;
        d.finished_at = Some(Timestamp::now());
        d.error = Some(failure.clone());
        st.record(&d);
        st.reject(head.clone(), outcome, failure.message.clone());
        self.metrics
            .deployed(outcome, d.build_seconds, d.activation_seconds);
        if let Err(r) = self.save(st) {
            return r;
        }
        CycleResult::Rejected {
            revision: head,
            outcome,
            failure,
        }
    }

    fn finish_cancelled(&self, st: &mut State, mut d: Deployment) -> CycleResult {
        d.outcome = Outcome::Cancelled;
        d.finished_at = Some(Timestamp::now());
        d.error = Some(Failure {
            phase: d.phase,
            message: "stopped by a termination signal; nothing was activated".into(),
            command: None,
            exit_code: None,
            tail: String::new(),
        });
        st.record(&d);
        let _ = self.save(st);
        CycleResult::Cancelled
    }

    /// A reboot into the current generation settles "reboot needed":
    /// `/run/booted-system` then is the generation fabric deployed.
    fn clear_reboot_after_reboot(&self, st: &mut State) {
        if !st.reboot_needed {
            return;
        }
        let booted = nix::read_store_link(&self.opts.root.join(layout::BOOTED_SYSTEM));
        if booted.is_some() && booted.as_ref() == st.current.as_ref().map(|c| &c.store_path) {
            tracing::info!("booted into the current generation: no reboot needed any more");
            st.reboot_needed = false;
        }
    }

    fn reboot(&self) {
        let cmd = Cmd::new("systemctl", Duration::from_secs(60))
            .arg("reboot")
            .uninterruptible();
        match self.runner.run(&cmd, &Cancel::new()) {
            Ok(_) => tracing::warn!("rebooting (--reboot when-needed)"),
            Err(e) => tracing::error!("--reboot when-needed: {e}"),
        }
    }

    /// Cycles until SIGTERM/SIGINT, sleeping `interval` ± jitter between
    /// cycles. Under systemd (`NOTIFY_SOCKET` set) it reports READY=1 once
    /// the loop runs (not after the first cycle, which may be an hour-long
    /// first deploy that would hold `systemctl start` and the boot) and feeds
    /// the watchdog while the loop is alive.
    pub fn run(&self) -> u8 {
        let liveness = self.runner.liveness().clone();
        liveness.beat();
        if let Some(period) = sd_notify::watchdog_enabled() {
            let live = liveness.clone();
            let cancel = self.cancel.clone();
            let spawned = std::thread::Builder::new()
                .name("watchdog".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    while !cancel.is_cancelled() {
                        if live.since_last() < period {
                            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                        }
                        std::thread::sleep(period / 3);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start the watchdog thread: {e}");
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        loop {
            let result = self.cycle();
            if result == CycleResult::Cancelled || self.cancel.is_cancelled() {
                break;
            }
            let wait = self.next_wait();
            let status = format!(
                "{}; next check in {}",
                summary(&result),
                humantime::format_duration(Duration::from_secs(wait.as_secs()))
            );
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
            if !self.cancel.sleep(wait, &liveness) {
                break;
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("agent stopped");
        exit::OK
    }

    /// `interval` scaled by a random factor in `[1 - jitter, 1 + jitter]`.
    pub fn next_wait(&self) -> Duration {
        let j = self.opts.jitter.clamp(0.0, 0.9);
        self.opts
            .interval
            .mul_f64(1.0 - j + 2.0 * j * fastrand::f64())
    }
}

fn summary(r: &CycleResult) -> String {
    match r {
        CycleResult::NoChange { revision } => format!("converged on {}", revision.short()),
        CycleResult::SkippedRejected { revision, .. } => {
            format!("head {} is rejected", revision.short())
        }
        CycleResult::Deployed { revision, .. } => format!("deployed {}", revision.short()),
        CycleResult::Rejected { revision, .. } => format!("rejected {}", revision.short()),
        CycleResult::RollbackFailed { revision, .. } => {
            format!("rollback of {} failed", revision.short())
        }
        CycleResult::RemoteFailed { .. } => "remote unreachable".into(),
        CycleResult::TargetRefused { .. } => "flake target refused".into(),
        CycleResult::CredentialRefused { .. } => "credential refused".into(),
        CycleResult::StateFailed { .. } => "state unusable".into(),
        CycleResult::Busy { .. } => "another run holds the lock".into(),
        CycleResult::Cancelled => "stopping".into(),
    }
}

/// Reads the agent's state for `root` without changing it.
pub fn read_state(root: &Root) -> Result<Option<State>, state::StateError> {
    state::load(&root.join(layout::AGENT_STATE))
}
