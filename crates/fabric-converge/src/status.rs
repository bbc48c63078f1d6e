//! `fabric status`: what bootstrap and the agent recorded, read-only.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::credential::CredentialSummary;
use crate::layout;
use crate::nix::{self, StorePath};
use crate::remote::Revision;
use crate::root::Root;
use crate::state::{self, Deployment, State};

/// One state file as `status` saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSection {
    /// The file.
    pub file: String,
    /// Why it could not be read (file:line:column for a corrupt file).
    pub error: Option<String>,
    /// Its content.
    pub state: Option<State>,
}

/// Everything `fabric status` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The root looked at.
    pub root: String,
    /// The completion marker exists.
    pub bootstrap_complete: bool,
    /// The deployed revision (the agent's, else bootstrap's).
    pub revision: Option<Revision>,
    /// Its toplevel.
    pub store_path: Option<StorePath>,
    /// What `/run/current-system` points at.
    pub running: Option<StorePath>,
    /// What `/run/booted-system` points at.
    pub booted: Option<StorePath>,
    /// A reboot is needed.
    pub reboot_needed: bool,
    /// The credential the last look at the remote used (the agent's, else
    /// bootstrap's): the key's fingerprint or the token's host.
    #[serde(default)]
    pub credential: Option<CredentialSummary>,
    /// bootstrap.json.
    pub bootstrap: StateSection,
    /// agent.json.
    pub agent: StateSection,
}

fn section(root: &Root, file: &str) -> StateSection {
    let path = root.join(file);
    match state::load(&path) {
        Ok(state) => StateSection {
            file: path.display().to_string(),
            error: None,
            state,
        },
        Err(e) => StateSection {
            file: path.display().to_string(),
            error: Some(e.to_string()),
            state: None,
        },
    }
}

/// Reads the status of the machine under `root`. Never writes.
pub fn status(root: &Root) -> StatusReport {
    let bootstrap = section(root, layout::BOOTSTRAP_STATE);
    let agent = section(root, layout::AGENT_STATE);
    let current = agent
        .state
        .as_ref()
        .and_then(|s| s.current.clone())
        .or_else(|| bootstrap.state.as_ref().and_then(|s| s.current.clone()));
    let reboot_needed = agent
        .state
        .as_ref()
        .filter(|s| s.current.is_some())
        .or(bootstrap.state.as_ref())
        .is_some_and(|s| s.reboot_needed);
    let credential = [&agent, &bootstrap]
        .into_iter()
        .filter_map(|s| s.state.as_ref())
        .find(|s| s.last_check.is_some() || s.credential.is_some())
        .and_then(|s| s.credential.clone());
    StatusReport {
        root: root.to_string(),
        bootstrap_complete: root.join(layout::BOOTSTRAP_MARKER).exists(),
        revision: current.as_ref().map(|c| c.revision.clone()),
        store_path: current.map(|c| c.store_path),
        running: nix::read_store_link(&root.join(layout::CURRENT_SYSTEM)),
        booted: nix::read_store_link(&root.join(layout::BOOTED_SYSTEM)),
        reboot_needed,
        credential,
        bootstrap,
        agent,
    }
}

impl StatusReport {
    /// 0 when every state file present could be read, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.bootstrap.error.is_some() || self.agent.error.is_some() {
            layout::exit::FAILED
        } else {
            layout::exit::OK
        }
    }

    /// The human-readable form.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "bootstrap:     {}",
            if self.bootstrap_complete {
                "complete"
            } else {
                "not complete"
            }
        );
        let _ = writeln!(
            o,
            "revision:      {}",
            opt(self.revision.as_ref().map(|r| r.to_string()))
        );
        let _ = writeln!(
            o,
            "store path:    {}",
            opt(self.store_path.as_ref().map(|p| p.to_string()))
        );
        let _ = writeln!(
            o,
            "running:       {}",
            opt(self.running.as_ref().map(|p| p.to_string()))
        );
        let _ = writeln!(
            o,
            "reboot needed: {}",
            if self.reboot_needed { "yes" } else { "no" }
        );
        let _ = writeln!(
            o,
            "credential:    {}",
            opt(self.credential.as_ref().map(|c| c.to_string()))
        );
        for (name, s) in [("bootstrap", &self.bootstrap), ("agent", &self.agent)] {
            let _ = writeln!(o);
            match (&s.error, &s.state) {
                (Some(e), _) => {
                    let _ = writeln!(o, "{name}: ERROR {e}");
                }
                (None, None) => {
                    let _ = writeln!(o, "{name}: no state yet ({})", s.file);
                }
                (None, Some(st)) => render_state(&mut o, name, st),
            }
        }
        o
    }
}

fn render_state(o: &mut String, name: &str, st: &State) {
    let ago = |t: Option<state::Timestamp>| {
        t.map(|t| {
            format!(
                "{t} ({} ago)",
                humantime::format_duration(std::time::Duration::from_secs(t.age().as_secs()))
            )
        })
        .unwrap_or_else(|| "never".into())
    };
    let _ = writeln!(
        o,
        "{name}: phase {}, last outcome {}",
        st.phase,
        st.last_outcome
            .map(|x| x.to_string())
            .unwrap_or_else(|| "-".into())
    );
    if let Some(f) = &st.flake {
        let _ = writeln!(o, "  flake:        {f}");
    }
    if let Some(c) = &st.credential {
        let _ = writeln!(o, "  credential:   {c}");
    }
    let _ = writeln!(o, "  last check:   {}", ago(st.last_check));
    let _ = writeln!(o, "  last success: {}", ago(st.last_success));
    for r in st.rejected.iter().rev() {
        let _ = writeln!(
            o,
            "  rejected:     {} ({} at {}): {}",
            r.revision, r.outcome, r.at, r.reason
        );
    }
    if !st.history.is_empty() {
        let _ = writeln!(o, "  history (newest first):");
    }
    for d in st.history.iter().rev() {
        render_deployment(o, d);
    }
}

fn render_deployment(o: &mut String, d: &Deployment) {
    let _ = writeln!(
        o,
        "    {}  {}  {}  {}",
        d.started_at,
        d.revision
            .as_ref()
            .map(|r| r.short().to_string())
            .unwrap_or_else(|| "-".repeat(12)),
        d.outcome,
        d.store_path
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default()
    );
    if let Some(e) = &d.error {
        let _ = writeln!(o, "      failed in {}: {}", e.phase, e.message);
        if let Some(c) = &e.command {
            let _ = writeln!(o, "      command: {c}");
        }
        for line in e
            .tail
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let _ = writeln!(o, "      | {line}");
        }
    }
}
