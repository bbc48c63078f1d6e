//! The on-machine contract shared with the NixOS module (issue 5) and the
//! cloud-init renderer: unit names, file paths and the CLI they invoke.
//!
//! Every path here is absolute on the machine; commands join them under
//! `--root` with [`crate::Root`]. Change a name here and the NixOS module and
//! the rendered user-data must change with it.

/// The one-shot first-boot unit that runs `fabric bootstrap`.
pub const BOOTSTRAP_UNIT: &str = "fabric-bootstrap.service";
/// The daemon unit that runs `fabric agent` (`Type=notify`, `WatchdogSec=`).
pub const AGENT_UNIT: &str = "fabric-agent.service";

/// The flake reference the machine converges on, one line, owned by root and
/// writable by nobody else. Written by cloud-init.
pub const FLAKE_TARGET: &str = "/etc/nix-flake-target";
/// Written when the first boot converged. Its presence makes
/// `fabric bootstrap` exit 0 at once. The path is the original design's.
pub const BOOTSTRAP_MARKER: &str = "/var/lib/nixos-bootstrap-complete";
/// The credential for the flake's Git remote, written by cloud-init from
/// the Machine's `spec.nix.credentialsSecretRef` (root:root, 0600). Only
/// the files of the Secret's kind exist.
pub const CREDENTIALS_DIR: &str = "/etc/fabric/credentials";
/// An unencrypted OpenSSH private key (a deploy key), for `git+ssh`.
pub const SSH_KEY_FILE: &str = "/etc/fabric/credentials/ssh-key";
/// The known_hosts lines that pin the forge's host key (no trust on first use).
pub const KNOWN_HOSTS_FILE: &str = "/etc/fabric/credentials/known_hosts";
/// `HOST=TOKEN` pairs, one per line, in Nix's `access-tokens` form.
pub const ACCESS_TOKENS_FILE: &str = "/etc/fabric/credentials/access-tokens";
/// Fabric's state directory.
pub const STATE_DIR: &str = "/var/lib/fabric";
/// Bootstrap state (JSON, written atomically).
pub const BOOTSTRAP_STATE: &str = "/var/lib/fabric/bootstrap.json";
/// Agent state (JSON, written atomically).
pub const AGENT_STATE: &str = "/var/lib/fabric/agent.json";
/// The lock that keeps bootstrap and agent from activating at the same time.
pub const CONVERGE_LOCK: &str = "/var/lib/fabric/converge.lock";
/// The NixOS system profile.
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";
/// The running generation.
pub const CURRENT_SYSTEM: &str = "/run/current-system";
/// The generation the machine booted.
pub const BOOTED_SYSTEM: &str = "/run/booted-system";
/// The Nix store, checked for free space by `fabric doctor`.
pub const NIX_DIR: &str = "/nix";
/// cloud-init's result, read by `fabric doctor`.
pub const CLOUD_INIT_RESULT: &str = "/var/lib/cloud/data/result.json";
/// cloud-init's stage status, read by `fabric doctor`.
pub const CLOUD_INIT_STATUS: &str = "/var/lib/cloud/data/status.json";
/// cloud-init's logs, scanned by `fabric doctor`.
pub const CLOUD_INIT_LOGS: [&str; 2] =
    ["/var/log/cloud-init.log", "/var/log/cloud-init-output.log"];

/// Default `--interval` of the agent.
pub const DEFAULT_INTERVAL: &str = "5m";
/// Default `--timeout` of bootstrap (waiting for the remote).
pub const DEFAULT_BOOTSTRAP_TIMEOUT: &str = "30m";
/// Default `--health-timeout` of each health check.
pub const DEFAULT_HEALTH_TIMEOUT: &str = "60s";
/// Default `--metrics-address` of the agent (loopback only).
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9750";
/// Prefix of the transient unit that runs `switch-to-configuration`.
pub const SWITCH_UNIT_PREFIX: &str = "fabric-switch-";

/// Exit codes shared by `bootstrap`, `agent`, `status` and `doctor`.
pub mod exit {
    /// Converged, nothing to do, or already complete.
    pub const OK: u8 = 0;
    /// A run failed: remote never answered, build failed, activation or
    /// health failed and the previous generation was restored. The reason
    /// is recorded in the state file.
    pub const FAILED: u8 = 1;
    /// Bad input: a refused flake target file, an invalid flake reference,
    /// a refused credential file, a bad flag value.
    pub const USAGE: u8 = 2;
    /// Another converge run holds the lock (`agent --once` only; bootstrap
    /// waits for it).
    pub const BUSY: u8 = 3;
    /// Activation failed and so did the rollback: the machine needs a human.
    pub const ROLLBACK_FAILED: u8 = 4;
    /// Stopped by SIGTERM or SIGINT before finishing (128 + 15).
    pub const CANCELLED: u8 = 143;
}
