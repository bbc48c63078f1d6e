//! cloud-init rendering for Fabric machines: user-data, network-config,
//! meta-data and the NoCloud seed ISO. Pure functions: no files, no clock,
//! no randomness, so the same machine always gives the same bytes.
//!
//! Every file is written as `serde` data through a JSON serializer whose
//! output YAML 1.1 reads back as exactly the same structure (see the
//! `yaml_json` module), never by pasting values into YAML text.

#![warn(missing_docs)]

mod bootstrap;
mod iso;
mod network;
mod yaml_json;

use std::collections::HashSet;

use fabric_model::credential::Credential;
use fabric_model::{api::SecretKeyRef, AuthorizedKey, FlakeRef, Machine};
use serde::Serialize;

pub use iso::{seed_iso, IsoError, SEED_VOLUME_LABEL};

/// The flake `nix run` fetches Fabric from when the template has no
/// `fabric` installed. It provides `fabric` as its default package and app.
pub const DEFAULT_FABRIC_FLAKE: &str = "github:kubelize/fabric";

/// The unit that runs `fabric bootstrap`; the template's NixOS module
/// provides it under this name, or the per-boot script writes it.
pub const BOOTSTRAP_UNIT: &str = "fabric-bootstrap.service";
/// The flake target file, read by bootstrap and the agent.
pub const FLAKE_TARGET: &str = "/etc/nix-flake-target";
/// Written by `fabric bootstrap` when the first converge succeeded.
pub const BOOTSTRAP_MARKER: &str = "/var/lib/nixos-bootstrap-complete";
/// Where cloud-init's scripts-per-boot module finds the bootstrap hook.
pub const PER_BOOT_SCRIPT: &str = "/var/lib/cloud/scripts/per-boot/fabric-bootstrap";
/// Runtime units: the only systemd unit directory writable on NixOS.
pub const RUNTIME_UNIT_DIR: &str = "/run/systemd/system";

/// Where the fleet credential's files go: root-only, read by `fabric
/// bootstrap` and `fabric agent` by default.
pub const CREDENTIALS_DIR: &str = "/etc/fabric/credentials";
/// The SSH deploy key (OpenSSH private key).
pub const SSH_KEY_FILE: &str = "/etc/fabric/credentials/ssh-key";
/// The pinned host keys for the deploy key's host.
pub const KNOWN_HOSTS_FILE: &str = "/etc/fabric/credentials/known_hosts";
/// Nix's access tokens, `HOST=TOKEN`, one per line.
pub const ACCESS_TOKENS_FILE: &str = "/etc/fabric/credentials/access-tokens";
/// Mode of the credential files: root alone reads them.
pub const CREDENTIAL_FILE_MODE: &str = "0600";

/// The admin user's login shell. `/bin/bash` does not exist on NixOS.
pub const ADMIN_SHELL: &str = "/run/current-system/sw/bin/bash";
/// The admin user's group; NixOS grants sudo to `wheel`.
pub const ADMIN_GROUP: &str = "wheel";
/// The admin user's sudo rule: the password is locked, so it must be
/// passwordless to be usable at all.
pub const ADMIN_SUDO: &str = "ALL=(ALL) NOPASSWD:ALL";

/// Choices that are not part of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// The flake `nix run` takes Fabric from when the template lacks it
    /// (`--fabric-flake`).
    pub fabric_flake: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            fabric_flake: DEFAULT_FABRIC_FLAKE.to_string(),
        }
    }
}

/// The files of a NoCloud seed, as cloud-init reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// `user-data`: `#cloud-config` and a JSON body.
    pub user_data: String,
    /// `meta-data`: instance-id and local-hostname.
    pub meta_data: String,
    /// `network-config` (v2), present when the machine has a static address.
    pub network_config: Option<String>,
}

impl Seed {
    /// File names and contents, in a fixed order: `user-data`, `meta-data`,
    /// then `network-config` when there is one.
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        let mut files = vec![
            ("user-data", self.user_data.as_str()),
            ("meta-data", self.meta_data.as_str()),
        ];
        if let Some(n) = &self.network_config {
            files.push(("network-config", n.as_str()));
        }
        files
    }
}

/// What the machine's Secrets hold, once read.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretData<'a> {
    /// The keys of `spec.bootstrap.sshAuthorizedKeysSecretRef`.
    pub ssh_keys: Option<&'a [AuthorizedKey]>,
    /// The credential of `spec.nix.credentialsSecretRef`.
    pub credential: Option<&'a Credential>,
}

/// Why a machine could not be rendered. Valid machines fail only for
/// reasons outside the manifest: a missing Secret or a bad option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The machine names a Secret for its keys and none was given.
    #[error(
        "the machine takes SSH keys from key {key:?} of Secret {name:?} \
         (spec.bootstrap.sshAuthorizedKeysSecretRef), but the Secret was not given; \
         pass its manifest with --secret SECRET.yaml"
    )]
    SecretKeysMissing {
        /// The Secret's name.
        name: String,
        /// The key in the Secret's data.
        key: String,
    },
    /// The machine names a credential Secret and none was given.
    #[error(
        "the machine fetches its flake with the credential in Secret {name:?} \
         (spec.nix.credentialsSecretRef), but the Secret was not given; \
         pass its manifest with --secret SECRET.yaml"
    )]
    CredentialMissing {
        /// The Secret's name.
        name: String,
    },
    /// After merging inline and Secret keys, there is no key at all.
    #[error(
        "the machine has no SSH key, so nobody could log in; add one to \
         spec.bootstrap.sshAuthorizedKeys or to the Secret"
    )]
    NoKeys,
    /// `--fabric-flake` is not an acceptable flake reference.
    #[error("--fabric-flake {flake}: {message} ({hint})")]
    FabricFlake {
        /// The flake as given.
        flake: String,
        /// What is wrong.
        message: String,
        /// What would be right.
        hint: String,
    },
    /// Serialization failed; with the types here this does not happen, but
    /// it is reported rather than unwrapped.
    #[error("could not encode {file}: {message}")]
    Encode {
        /// The file being rendered.
        file: &'static str,
        /// The serializer's message.
        message: String,
    },
}

/// Checks `--fabric-flake`. It names a flake whose default package is
/// `fabric`, so unlike a machine's flakeRef it needs no `#attr`; otherwise
/// the same rules hold (no `path:`, no credentials), because it is written
/// world-readable onto the machine.
pub fn check_fabric_flake(flake: &str) -> Result<(), RenderError> {
    if flake.trim().is_empty() {
        return Err(RenderError::FabricFlake {
            flake: flake.to_string(),
            message: "the flake reference is empty".into(),
            hint: format!("give a flake providing fabric, e.g. {DEFAULT_FABRIC_FLAKE}"),
        });
    }
    let candidate = if flake.contains('#') {
        flake.to_string()
    } else {
        format!("{flake}#fabric")
    };
    FlakeRef::parse(&candidate)
        .map(|_| ())
        .map_err(|e| RenderError::FabricFlake {
            flake: flake.to_string(),
            message: e.message().replace("#fabric", ""),
            hint: e.hint().replace("#fabric", ""),
        })
}

/// The admin user's keys: inline keys, then the Secret's, each key once
/// (by fingerprint, first occurrence kept: sshd stops at the first matching
/// line, so a repeat with another comment adds nothing).
pub fn authorized_keys<'a>(
    machine: &'a Machine,
    secret_keys: Option<&'a [AuthorizedKey]>,
) -> Result<Vec<&'a AuthorizedKey>, RenderError> {
    if let (Some(SecretKeyRef { name, key }), None) = (&machine.ssh_keys_secret, secret_keys) {
        return Err(RenderError::SecretKeysMissing {
            name: name.clone(),
            key: key.clone(),
        });
    }
    let mut seen = HashSet::new();
    let keys: Vec<&AuthorizedKey> = machine
        .ssh_keys
        .iter()
        .chain(secret_keys.unwrap_or_default())
        .filter(|k| seen.insert(k.fingerprint()))
        .collect();
    if keys.is_empty() {
        return Err(RenderError::NoKeys);
    }
    Ok(keys)
}

/// Renders the whole seed of a machine that names no credential Secret.
pub fn render(
    machine: &Machine,
    secret_keys: Option<&[AuthorizedKey]>,
    opts: &RenderOptions,
) -> Result<Seed, RenderError> {
    render_with(
        machine,
        &SecretData {
            ssh_keys: secret_keys,
            credential: None,
        },
        opts,
    )
}

/// Renders the whole seed, with what the machine's Secrets hold.
pub fn render_with(
    machine: &Machine,
    secrets: &SecretData<'_>,
    opts: &RenderOptions,
) -> Result<Seed, RenderError> {
    Ok(Seed {
        user_data: render_user_data_with(machine, secrets, opts)?,
        meta_data: render_meta_data(machine)?,
        network_config: render_network_config(machine)?,
    })
}

/// Renders `user-data` alone (what `fabric render` prints).
pub fn render_user_data(
    machine: &Machine,
    secret_keys: Option<&[AuthorizedKey]>,
    opts: &RenderOptions,
) -> Result<String, RenderError> {
    render_user_data_with(
        machine,
        &SecretData {
            ssh_keys: secret_keys,
            credential: None,
        },
        opts,
    )
}

/// Renders `user-data` alone, with what the machine's Secrets hold.
pub fn render_user_data_with(
    machine: &Machine,
    secrets: &SecretData<'_>,
    opts: &RenderOptions,
) -> Result<String, RenderError> {
    let keys = authorized_keys(machine, secrets.ssh_keys)?;
    check_fabric_flake(&opts.fabric_flake)?;
    let credential = match (&machine.credentials_secret, secrets.credential) {
        (Some(r), None) => {
            return Err(RenderError::CredentialMissing {
                name: r.name.clone(),
            })
        }
        // A credential for a machine that names none is not delivered:
        // the machine would not use it.
        (None, _) => None,
        (Some(_), Some(c)) => Some(c),
    };
    user_data(machine, &keys, credential, &opts.fabric_flake)
}

/// Renders `meta-data`.
pub fn render_meta_data(machine: &Machine) -> Result<String, RenderError> {
    #[derive(Serialize)]
    struct MetaData<'a> {
        #[serde(rename = "instance-id")]
        instance_id: String,
        #[serde(rename = "local-hostname")]
        local_hostname: &'a str,
    }
    let body = encode(
        "meta-data",
        &MetaData {
            instance_id: machine.instance_id(),
            local_hostname: &machine.hostname,
        },
    )?;
    Ok(format!("{body}\n"))
}

/// Renders `network-config` (v2), or `None` when the machine uses DHCP.
pub fn render_network_config(machine: &Machine) -> Result<Option<String>, RenderError> {
    match network::network_config(&machine.network) {
        Some(config) => Ok(Some(format!("{}\n", encode("network-config", &config)?))),
        None => Ok(None),
    }
}

#[derive(Serialize)]
struct UserData<'a> {
    hostname: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fqdn: Option<String>,
    users: [User<'a>; 1],
    write_files: Vec<WriteFile<'a>>,
}

#[derive(Serialize)]
struct User<'a> {
    name: &'a str,
    groups: [&'static str; 1],
    sudo: &'static str,
    lock_passwd: bool,
    shell: &'static str,
    ssh_authorized_keys: Vec<&'a str>,
}

#[derive(Serialize)]
struct WriteFile<'a> {
    path: &'static str,
    content: std::borrow::Cow<'a, str>,
    owner: &'static str,
    permissions: &'static str,
}

fn user_data(
    machine: &Machine,
    keys: &[&AuthorizedKey],
    credential: Option<&Credential>,
    fabric_flake: &str,
) -> Result<String, RenderError> {
    let flake_target = format!("{}\n", machine.flake.as_str());
    let script = bootstrap::per_boot_script(fabric_flake);
    let mut write_files = vec![WriteFile {
        path: FLAKE_TARGET,
        content: flake_target.into(),
        owner: "root:root",
        permissions: "0644",
    }];
    write_files.extend(credential_files(credential));
    write_files.push(WriteFile {
        path: PER_BOOT_SCRIPT,
        content: script.into(),
        owner: "root:root",
        permissions: "0755",
    });
    let doc = UserData {
        hostname: &machine.hostname,
        fqdn: machine.fqdn(),
        // No `default` entry: the image's distro user must not appear.
        users: [User {
            name: &machine.admin_user,
            groups: [ADMIN_GROUP],
            sudo: ADMIN_SUDO,
            lock_passwd: true,
            shell: ADMIN_SHELL,
            ssh_authorized_keys: keys.iter().map(|k| k.openssh()).collect(),
        }],
        write_files,
    };
    let body = encode("user-data", &doc)?;
    Ok(format!("#cloud-config\n{body}\n"))
}

/// The credential's files, root-only: only those of the Secret's kind, so
/// that bootstrap's defaults find exactly one credential.
fn credential_files(credential: Option<&Credential>) -> Vec<WriteFile<'_>> {
    let file = |path, content| WriteFile {
        path,
        content,
        owner: "root:root",
        permissions: CREDENTIAL_FILE_MODE,
    };
    match credential {
        None => Vec::new(),
        Some(Credential::SshKey(k)) => vec![
            file(SSH_KEY_FILE, k.private_key().into()),
            file(KNOWN_HOSTS_FILE, k.known_hosts().into()),
        ],
        Some(Credential::AccessTokens(t)) => {
            vec![file(ACCESS_TOKENS_FILE, t.file_content().into())]
        }
    }
}

fn encode<T: Serialize>(file: &'static str, value: &T) -> Result<String, RenderError> {
    yaml_json::to_string(value).map_err(|e| RenderError::Encode {
        file,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
