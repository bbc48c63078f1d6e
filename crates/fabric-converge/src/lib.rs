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
