//! The converge engine: what runs on the machine once it has booted.
//!
//! Git is the only truth. [`bootstrap`] brings a fresh machine to the head
//! of its flake once; [`agent`] keeps it there, building exactly the
//! revision it detected, switching, checking health and rolling back.
//! [`status`] and [`doctor`] read what they recorded.
//!
//! Boundaries: every file goes through a [`Root`], every external program
//! through a [`process::Runner`] (argv, timeout, stderr tail), and every
//! state write through [`state::write_atomic`]. Only `systemctl` and
//! `systemd-run` touch systemd; with `--root` other than `/`, activation
//! runs `switch-to-configuration` directly. The on-machine contract (unit
//! names, paths, exit codes) lives in [`layout`].

pub mod agent;
pub mod bootstrap;
pub mod credential;
pub mod deploy;
pub mod doctor;
pub mod layout;
pub mod metrics;
pub mod nix;
pub mod process;
pub mod remote;
pub mod root;
pub mod state;
pub mod status;
pub mod target;

pub use root::Root;

/// Parses a duration written like `90s`, `5m`, `1h` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 90s, 5m, 1h or 1h30m"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_like_systemd() {
        use std::time::Duration;
        assert_eq!(super::parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(super::parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(
            super::parse_duration("1h30m"),
            Ok(Duration::from_secs(5400))
        );
        assert!(super::parse_duration("5 minutes please")
            .unwrap_err()
            .contains("e.g. 90s"));
    }
}
