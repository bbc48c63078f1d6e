//! The Fabric Machine model: types, defaults and validation. No I/O.
//!
//! Everything that reads a Machine goes through here, so `fabric validate`,
//! `fabric render` and the composition function refuse exactly the same
//! manifests with exactly the same messages. Files, sockets and processes
//! belong to the crates above this one; this crate takes text or JSON and
//! returns a [`Machine`] or every [`Diagnostic`] it found.

#![warn(missing_docs)]

pub mod api;
pub mod credential;
pub mod diag;
pub mod flake;
pub mod fleet;
pub mod machine;
pub mod net;
pub mod schema;
pub mod secret;
pub mod source;
pub mod sshkeys;
pub mod status;

pub use diag::{Diagnostic, Pos, Severity};
pub use flake::{FlakeRef, FlakeRefError, FlakeScheme};
pub use machine::{Machine, MachineKind, NetworkConfig, Parsed, Placement};
pub use net::MacAddress;
pub use sshkeys::AuthorizedKey;
