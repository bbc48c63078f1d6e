//! The credential for a private flake: a deploy key with its pinned host
//! key, or an access token, read from root-only files and handed to the Git
//! and Nix children that fetch, and to nothing else.
//!
//! The secret lives in memory only as [`FetchAuth`], whose `Debug` prints
//! no value, and reaches a child only through its environment (never its
//! argv, which `ps` shows and the runner records). What is shown and
//! recorded is a [`CredentialSummary`]: the key's fingerprint or the
//! token's host.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use fabric_model::{FlakeRef, FlakeScheme};
use serde::{Deserialize, Serialize};

use crate::layout;
use crate::root::Root;
use crate::target::{check_guarded, Unguarded};

/// The largest credential file read. A key or a handful of known_hosts
/// lines is a few KiB; anything bigger is not what cloud-init wrote.
pub const MAX_CREDENTIAL_BYTES: u64 = 64 << 10;

/// The credential files as the flags give them: paths on the machine,
/// joined under `--root`. `None` means "the default, if it exists".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialPaths {
    /// `--ssh-key-file`.
    pub ssh_key: Option<PathBuf>,
    /// `--known-hosts-file`.
    pub known_hosts: Option<PathBuf>,
    /// `--access-tokens-file`.
    pub access_tokens: Option<PathBuf>,
}

/// Which credential was used, for status, doctor and the journal: never
/// the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CredentialSummary {
    /// A deploy key for `git+ssh`.
    SshKey {
        /// `SHA256:…`, as `ssh-keygen -lf` prints it.
        fingerprint: String,
        /// The host its known_hosts pins: `host`, or `[host]:port`.
        host: String,
    },
    /// An access token for `git+https`, `github:` or `gitlab:`.
    AccessToken {
        /// The host it is for.
        host: String,
    },
}

impl std::fmt::Display for CredentialSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SshKey { fingerprint, host } => write!(f, "ssh key {fingerprint} for {host}"),
            Self::AccessToken { host } => write!(f, "access token for {host}"),
        }
    }
}

/// What a fetching child gets in its environment. `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FetchAuth {
    env: Vec<(String, String)>,
    nix_config: Option<String>,
}

impl std::fmt::Debug for FetchAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("FetchAuth")
            .field("env", &names)
            .field(
                "nix_config",
                &self.nix_config.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl FetchAuth {
    /// Variables to set on the child, values included.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Lines to append to the child's `NIX_CONFIG`.
    pub fn nix_config(&self) -> Option<&str> {
        self.nix_config.as_deref()
    }
}

/// A loaded credential that fits the flake reference.
#[derive(Debug, Clone)]
pub struct Credential {
    /// What status and the journal show.
    pub summary: CredentialSummary,
    /// What fetching children get.
    pub auth: FetchAuth,
    /// The files it was read from (joined under the root).
    pub files: Vec<PathBuf>,
}

/// A credential file or flag was refused. Every message names the file and
/// says what would be right; none quotes a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// Missing, unreadable or too big.
    #[error("{}: cannot read the {what}: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Which file it is meant to be.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Not a regular file.
    #[error("{}: the {what} is not a regular file; put the {what} there as a file", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// Which file.
        what: &'static str,
    },
    /// Owned by someone else.
    #[error("{}: the {what} is owned by uid {uid}, not {want}; whoever owns it can replace the credential. Fix: chown {want}:{want} {}", path.display(), path.display())]
    WrongOwner {
        /// The file.
        path: PathBuf,
        /// Which file.
        what: &'static str,
        /// Its owner.
        uid: u32,
        /// Who should own it ("root", or the uid running fabric).
        want: String,
    },
    /// Readable or writable by others.
    #[error("{}: the {what} is {access} by {who} (mode {mode:04o}); {why}. Fix: chmod {fix} {}", path.display(), path.display())]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Which file.
        what: &'static str,
        /// "readable", "writable" or "readable and writable".
        access: &'static str,
        /// "group", "others" or "group and others".
        who: &'static str,
        /// The permission bits.
        mode: u32,
        /// Why it matters.
        why: &'static str,
        /// The mode to set.
        fix: &'static str,
    },
    /// The content is not what the file should hold.
    #[error("{}:{line}:{column}: {message}; {hint}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// What would be right.
        hint: String,
    },
    /// The files do not make one credential, or it does not fit the flake.
    #[error("{}: {message}; {hint}", path.display())]
    Mismatch {
        /// The file (or the first of the files) concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
        /// What would be right.
        hint: String,
    },
}

impl CredentialError {
    /// The refused file.
    pub fn path(&self) -> &Path {
        match self {
            Self::Unreadable { path, .. }
            | Self::NotAFile { path, .. }
            | Self::WrongOwner { path, .. }
            | Self::Exposed { path, .. }
            | Self::Invalid { path, .. }
            | Self::Mismatch { path, .. } => path,
        }
    }
}

/// What a failed fetch's output says about the credential, as what to do;
/// `None` when it says nothing about it. Git's own words ("could not read
/// Username … terminal prompts disabled") do not say that a token was sent
/// and refused.
pub fn explain_refusal(tail: &str, used: Option<&CredentialSummary>) -> Option<String> {
    let host_key = tail.contains("Host key verification failed")
        || tail.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || tail.contains("No ED25519 host key is known")
        || tail.contains("host key is known for");
    if host_key {
        return Some(match used {
            Some(CredentialSummary::SshKey { host, .. }) => format!(
                "the server's host key is not the one pinned for {host}: if the forge changed its host key, pin the new one (checked against the fingerprint the forge publishes) in known_hosts"
            ),
            _ => "the server's host key is not pinned: give a deploy key and a known_hosts line for the host (spec.nix.credentialsSecretRef)".into(),
        });
    }
    if tail.contains("Permission denied (publickey") {
        return Some(match used {
            Some(CredentialSummary::SshKey { fingerprint, .. }) => format!(
                "the server refused the deploy key {fingerprint}: add it to the repository's deploy keys (read-only is enough)"
            ),
            _ => "the server wants an SSH key: give a deploy key (spec.nix.credentialsSecretRef)".into(),
        });
    }
    if tail.contains("could not read Username")
        || tail.contains("Authentication failed")
        || tail.contains("The requested URL returned error: 401")
        || tail.contains("The requested URL returned error: 403")
    {
        return Some(match used {
            Some(CredentialSummary::AccessToken { host }) => format!(
                "the server refused the access token for {host}: check that it is the right one, not expired, and allowed to read the repository"
            ),
            _ => "the server asks for credentials: give an access token (spec.nix.credentialsSecretRef)".into(),
        });
    }
    None
}

/// The files in use after defaults, joined under the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedPaths {
    /// The private key.
    pub ssh_key: Option<PathBuf>,
    /// The known_hosts file.
    pub known_hosts: Option<PathBuf>,
    /// The access tokens.
    pub access_tokens: Option<PathBuf>,
}

impl CredentialPaths {
    /// Applies the defaults: with no flag at all, every default file that
    /// exists; with a flag of one kind, only that kind's defaults (so that
    /// naming a token file does not also pick up a first-boot key, and
    /// naming a key from sops-nix still finds the first-boot known_hosts).
    pub fn resolve(&self, root: &Root) -> ResolvedPaths {
        let present = |p: &str| {
            let joined = root.join(p);
            // A dangling symlink (a secret manager not yet run) counts as
            // present, so that reading it fails with its name.
            std::fs::symlink_metadata(&joined).is_ok().then_some(joined)
        };
        let given = |p: &Option<PathBuf>| p.as_ref().map(|p| root.join(p));
        let ssh_given = self.ssh_key.is_some() || self.known_hosts.is_some();
        let token_given = self.access_tokens.is_some();
        ResolvedPaths {
            ssh_key: given(&self.ssh_key).or_else(|| {
                (!token_given)
                    .then(|| present(layout::SSH_KEY_FILE))
                    .flatten()
            }),
            known_hosts: given(&self.known_hosts).or_else(|| {
                (!token_given)
                    .then(|| present(layout::KNOWN_HOSTS_FILE))
                    .flatten()
            }),
            access_tokens: given(&self.access_tokens).or_else(|| {
                (!ssh_given)
                    .then(|| present(layout::ACCESS_TOKENS_FILE))
                    .flatten()
            }),
        }
    }
}

/// Reads the credential (if any) and checks it against `flake`. `Ok(None)`:
/// no credential file, the flake is fetched as it is.
pub fn load(
    root: &Root,
    paths: &CredentialPaths,
    flake: &FlakeRef,
) -> Result<Option<Credential>, CredentialError> {
    let files = paths.resolve(root);
    match (&files.ssh_key, &files.known_hosts, &files.access_tokens) {
        (None, None, None) => Ok(None),
        (Some(key), _, Some(tokens)) | (None, Some(key), Some(tokens)) => {
            Err(CredentialError::Mismatch {
                path: tokens.clone(),
                message: format!(
                    "both an access token and an SSH credential ({}) are given",
                    key.display()
                ),
                hint: "give one kind: a deploy key and known_hosts for git+ssh://, or access tokens for git+https://, github: and gitlab:".into(),
            })
        }
        (None, Some(known_hosts), None) => Err(CredentialError::Mismatch {
            path: known_hosts.clone(),
            message: "a known_hosts file is given without a deploy key".into(),
            hint: format!(
                "give the key with --ssh-key-file (default {}), or remove the known_hosts file",
                layout::SSH_KEY_FILE
            ),
        }),
        (Some(key), known_hosts, None) => load_ssh(key, known_hosts.as_deref(), flake).map(Some),
        (None, None, Some(tokens)) => load_tokens(tokens, flake).map(Some),
    }
}

fn scheme_words(flake: &FlakeRef) -> &'static str {
    match flake.scheme() {
        FlakeScheme::GitHttps => "git+https://",
        FlakeScheme::GitSsh => "git+ssh://",
        FlakeScheme::GitFile => "git+file://",
        FlakeScheme::GitHub => "github:",
        FlakeScheme::GitLab => "gitlab:",
        FlakeScheme::SourceHut => "sourcehut:",
        FlakeScheme::Tarball => "tarball",
    }
}

/// `(host, port)` of the flake's remote URL.
fn remote_host(flake: &FlakeRef) -> Option<(String, Option<u16>)> {
    let remote = flake.git_remote()?;
    let url = url::Url::parse(&remote).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((host.to_string(), url.port()))
}

fn load_ssh(
    key_path: &Path,
    known_hosts: Option<&Path>,
    flake: &FlakeRef,
) -> Result<Credential, CredentialError> {
    // An exposed secret is reported first, whatever else is wrong.
    let text = read_checked(key_path, "SSH deploy key", Access::Secret)?;
    if flake.scheme() != FlakeScheme::GitSsh {
        return Err(CredentialError::Mismatch {
            path: key_path.to_path_buf(),
            message: format!(
                "an SSH deploy key is given, but the flake {flake} is a {} reference",
                scheme_words(flake)
            ),
            hint: "a deploy key is for git+ssh:// references: write the flake as git+ssh://git@host/org/fleet, or give an access token instead".into(),
        });
    }
    let (host, port) = remote_host(flake).ok_or_else(|| CredentialError::Mismatch {
        path: key_path.to_path_buf(),
        message: format!("the flake {flake} names no host to pin"),
        hint: "write the flake as git+ssh://git@host/org/fleet".into(),
    })?;
    let pinned_name = match port {
        None | Some(22) => host.clone(),
        Some(p) => format!("[{host}]:{p}"),
    };
    let key = ssh_key::PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
        CredentialError::Invalid {
            path: key_path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("not an OpenSSH private key ({e})"),
            hint: "write the key as `ssh-keygen -t ed25519 -N ''` writes it, starting with -----BEGIN OPENSSH PRIVATE KEY-----".into(),
        }
    })?;
    if key.is_encrypted() {
        return Err(CredentialError::Invalid {
            path: key_path.to_path_buf(),
            line: 1,
            column: 1,
            message: "the key is protected by a passphrase, which a machine converging unattended cannot type".into(),
            hint: "use an unencrypted deploy key (`ssh-keygen -p -N '' -f KEY` removes the passphrase)".into(),
        });
    }
    let fingerprint = key
        .public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let Some(kh_path) = known_hosts else {
        return Err(CredentialError::Mismatch {
            path: key_path.to_path_buf(),
            message: "a deploy key is given without a known_hosts file to pin the server's host key".into(),
            hint: format!(
                "give the forge's host key with --known-hosts-file (default {}), e.g. the output of `ssh-keyscan {}`; fabric never trusts a host key on first use",
                layout::KNOWN_HOSTS_FILE,
                keyscan_args(&host, port)
            ),
        });
    };
    let kh = read_checked(kh_path, "known_hosts file", Access::Public)?;
    check_known_hosts(kh_path, &kh, &host, port, &pinned_name)?;

    let command = format!(
        "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
        quote(key_path),
        quote(kh_path)
    );
    Ok(Credential {
        summary: CredentialSummary::SshKey {
            fingerprint,
            host: pinned_name,
        },
        auth: FetchAuth {
            env: vec![("GIT_SSH_COMMAND".into(), command)],
            nix_config: None,
        },
        files: vec![key_path.to_path_buf(), kh_path.to_path_buf()],
    })
}

fn keyscan_args(host: &str, port: Option<u16>) -> String {
    match port {
        None | Some(22) => host.to_string(),
        Some(p) => format!("-p {p} {host}"),
    }
}

fn quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    shlex::try_quote(&s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| s.into_owned())
}

/// Finds a known_hosts line that pins `pinned_name`, with OpenSSH's
/// pattern rules (comma lists, `*` and `?`, `!` negation).
fn check_known_hosts(
    path: &Path,
    text: &str,
    host: &str,
    port: Option<u16>,
    pinned_name: &str,
) -> Result<(), CredentialError> {
    use ssh_key::known_hosts::{Entry, HostPatterns, Marker};
    let mut hashed = 0usize;
    let mut found = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let column = raw.len() - raw.trim_start().len() + 1;
        let entry: Entry = line.parse().map_err(|e| CredentialError::Invalid {
            path: path.to_path_buf(),
            line: i + 1,
            column,
            message: format!("not a known_hosts line ({e})"),
            hint: "write lines as `ssh-keyscan` prints them: HOST KEYTYPE BASE64KEY".into(),
        })?;
        if matches!(entry.marker(), Some(Marker::Revoked)) {
            continue;
        }
        match entry.host_patterns() {
            HostPatterns::Patterns(patterns) => {
                if patterns_match(patterns, pinned_name) {
                    found = true;
                }
            }
            HostPatterns::HashedName { .. } => hashed += 1,
        }
    }
    if found {
        return Ok(());
    }
    let hashed_words = if hashed > 0 {
        format!(
            " ({hashed} hashed line(s) cannot be checked: write the host in clear, `ssh-keyscan` without -H)"
        )
    } else {
        String::new()
    };
    Err(CredentialError::Mismatch {
        path: path.to_path_buf(),
        message: format!(
            "no line pins the host key of {pinned_name}, the flake's host{hashed_words}"
        ),
        hint: format!(
            "add the forge's host key for {pinned_name}, e.g. from `ssh-keyscan {}` checked against the fingerprint the forge publishes; fabric never trusts a host key on first use",
            keyscan_args(host, port)
        ),
    })
}

fn patterns_match(patterns: &[String], name: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob(p.as_bytes(), name.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// OpenSSH's host pattern match: `*` any run, `?` one character, case-blind.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name) || (!name.is_empty() && glob(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p.eq_ignore_ascii_case(n) => glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn load_tokens(path: &Path, flake: &FlakeRef) -> Result<Credential, CredentialError> {
    // An exposed secret is reported first, whatever else is wrong.
    let text = read_checked(path, "access tokens file", Access::Secret)?;
    let (host, port, user, default_port) = match flake.scheme() {
        FlakeScheme::GitHttps => {
            let (h, p) = remote_host(flake).ok_or_else(|| CredentialError::Mismatch {
                path: path.to_path_buf(),
                message: format!("the flake {flake} names no host"),
                hint: "write the flake as git+https://host/org/fleet".into(),
            })?;
            (h, p, "x-access-token", 443)
        }
        FlakeScheme::GitHub => ("github.com".to_string(), None, "x-access-token", 443),
        FlakeScheme::GitLab => {
            let (h, p) = remote_host(flake).unwrap_or(("gitlab.com".into(), None));
            (h, p, "oauth2", 443)
        }
        _ => {
            return Err(CredentialError::Mismatch {
                path: path.to_path_buf(),
                message: format!(
                    "an access token is given, but the flake {flake} is a {} reference",
                    scheme_words(flake)
                ),
                hint: "access tokens are for git+https://, github: and gitlab: references; for git+ssh:// give a deploy key and known_hosts instead".into(),
            })
        }
    };
    let host_port = match port {
        Some(p) if p != default_port => format!("{host}:{p}"),
        _ => host.clone(),
    };
    let mut chosen: Option<(String, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let mut offset = 0usize;
        for word in raw.split_whitespace() {
            let column = raw[offset..].find(word).map_or(offset, |at| offset + at) + 1;
            offset = column - 1 + word.len();
            if word.starts_with('#') {
                break;
            }
            let invalid = |message: String, hint: String| CredentialError::Invalid {
                path: path.to_path_buf(),
                line: i + 1,
                column,
                message,
                hint,
            };
            let Some((h, token)) = word.split_once('=') else {
                return Err(invalid(
                    "this entry is not HOST=TOKEN (its text is not shown: it may be a secret)"
                        .into(),
                    format!("write {host_port}=<token>, Nix's access-tokens form"),
                ));
            };
            if h.is_empty() || token.is_empty() {
                return Err(invalid(
                    "an entry has an empty host or token".into(),
                    format!("write {host_port}=<token>"),
                ));
            }
            if !h.eq_ignore_ascii_case(&host_port) && !h.eq_ignore_ascii_case(&host) {
                return Err(invalid(
                    format!(
                        "a token for host {h}, but the flake {flake} is fetched from {host_port}"
                    ),
                    format!(
                        "give tokens only for {host_port}: a token sent to another host is a token leaked"
                    ),
                ));
            }
            // Nix keeps the last token given for a host; so does fabric.
            chosen = Some((h.to_string(), token.to_string()));
        }
    }
    let Some((token_host, token)) = chosen else {
        return Err(CredentialError::Invalid {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: "the access tokens file holds no token".into(),
            hint: format!("write {host_port}=<token>, or remove the file"),
        });
    };
    // GitLab's Nix fetcher wants the token's type in front (PAT:, OAuth2:);
    // Git's basic auth wants the bare token.
    let bare = token
        .strip_prefix("PAT:")
        .or_else(|| token.strip_prefix("OAuth2:"))
        .unwrap_or(&token);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{bare}"));
    let url = match port {
        Some(p) => format!("https://{host}:{p}/"),
        None => format!("https://{host}/"),
    };
    Ok(Credential {
        summary: CredentialSummary::AccessToken {
            host: host_port.clone(),
        },
        auth: FetchAuth {
            env: vec![
                ("GIT_CONFIG_COUNT".into(), "1".into()),
                ("GIT_CONFIG_KEY_0".into(), format!("http.{url}.extraHeader")),
                (
                    "GIT_CONFIG_VALUE_0".into(),
                    format!("Authorization: Basic {basic}"),
                ),
            ],
            nix_config: Some(format!("access-tokens = {token_host}={token}")),
        },
        files: vec![path.to_path_buf()],
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Key or token: nobody but the owner may read or write it.
    Secret,
    /// known_hosts: anyone may read it, nobody but the owner write it.
    Public,
}

fn read_checked(
    path: &Path,
    what: &'static str,
    access: Access,
) -> Result<String, CredentialError> {
    let meta = std::fs::metadata(path).map_err(|e| CredentialError::Unreadable {
        path: path.to_path_buf(),
        what,
        reason: e.to_string(),
    })?;
    let euid = rustix::process::geteuid().as_raw();
    let (mask, why, fix) = match access {
        Access::Secret => (
            0o066,
            "a credential others can read is a credential others have",
            "0600",
        ),
        Access::Public => (
            0o022,
            "whoever can write it can pin their own server in place of the forge",
            "0644",
        ),
    };
    check_guarded(&meta, euid, mask).map_err(|refused| match refused {
        Unguarded::NotAFile => CredentialError::NotAFile {
            path: path.to_path_buf(),
            what,
        },
        Unguarded::Owner(uid) => CredentialError::WrongOwner {
            path: path.to_path_buf(),
            what,
            uid,
            want: if euid == 0 {
                "root".into()
            } else {
                euid.to_string()
            },
        },
        Unguarded::Open { who, mode } => {
            let read = mode & 0o044 != 0 && access == Access::Secret;
            let write = mode & 0o022 != 0;
            CredentialError::Exposed {
                path: path.to_path_buf(),
                what,
                access: match (read, write) {
                    (true, true) => "readable and writable",
                    (true, false) => "readable",
                    _ => "writable",
                },
                who,
                mode,
                why,
                fix,
            }
        }
    })?;
    if meta.len() > MAX_CREDENTIAL_BYTES {
        return Err(CredentialError::Unreadable {
            path: path.to_path_buf(),
            what,
            reason: format!(
                "it is {} bytes, more than the {MAX_CREDENTIAL_BYTES} a {what} may have",
                meta.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| CredentialError::Unreadable {
        path: path.to_path_buf(),
        what,
        reason: e.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|_| CredentialError::Unreadable {
        path: path.to_path_buf(),
        what,
        reason: "it is not UTF-8 text".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    // A throwaway ed25519 key made for these tests only.
    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDyP1MiPEELI7er+nlF0q26Et1fU9QoL6qe1xewJd1MxgAAAJBVrBKbVawS
mwAAAAtzc2gtZWQyNTUxOQAAACDyP1MiPEELI7er+nlF0q26Et1fU9QoL6qe1xewJd1Mxg
AAAEA3inlrTxhuB1yj6gk2iRsfJAUKn0CPIfw6VWwIjGlMVvI/UyI8QQsjt6v6eUXSrboS
3V9T1Cgvqp7XF7Al3UzGAAAAC3Rlc3RAZmFicmljAQI=
-----END OPENSSH PRIVATE KEY-----
";
    const HOST_KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPI/UyI8QQsjt6v6eUXSrboS3V9T1Cgvqp7XF7Al3UzG";

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn flake(s: &str) -> FlakeRef {
        FlakeRef::parse(s).unwrap()
    }

    fn root() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let r = Root::new(d.path()).unwrap();
        (d, r)
    }

    fn ssh_files(r: &Root, kh: &str, key_mode: u32) {
        write(r.dir(), "etc/fabric/credentials/ssh-key", KEY, key_mode);
        write(r.dir(), "etc/fabric/credentials/known_hosts", kh, 0o600);
    }

    #[test]
    fn no_files_no_credential() {
        let (_d, r) = root();
        let c = load(
            &r,
            &CredentialPaths::default(),
            &flake("git+ssh://git@h/f#x"),
        )
        .unwrap();
        assert!(c.is_none());
    }

    #[test]
    fn ssh_key_with_pinned_host_gives_git_ssh_command() {
        let (_d, r) = root();
        ssh_files(
            &r,
            &format!("# pinned\n[forge.example]:2222,other {HOST_KEY}\n"),
            0o600,
        );
        let c = load(
            &r,
            &CredentialPaths::default(),
            &flake("git+ssh://git@forge.example:2222/org/fleet?ref=main#x"),
        )
        .unwrap()
        .unwrap();
        let CredentialSummary::SshKey { fingerprint, host } = &c.summary else {
            panic!("{:?}", c.summary)
        };
        assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
        assert_eq!(host, "[forge.example]:2222");
        let key = r.join(layout::SSH_KEY_FILE);
        let kh = r.join(layout::KNOWN_HOSTS_FILE);
        assert_eq!(
            c.auth.env(),
            [(
                "GIT_SSH_COMMAND".to_string(),
                format!("ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes", key.display(), kh.display())
            )]
        );
        assert!(!format!("{c:?}").contains("OPENSSH"), "{c:?}");
        let json = serde_json::to_string(&c.summary).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"kind":"ssh-key","fingerprint":"{fingerprint}","host":"[forge.example]:2222"}}"#
            )
        );
    }

    #[test]
    fn refuses_what_the_contract_refuses() {
        let ssh = flake("git+ssh://git@forge.example/org/fleet#x");
        // Key readable by others.
        let (_d, r) = root();
        ssh_files(&r, &format!("forge.example {HOST_KEY}\n"), 0o644);
        let e = load(&r, &CredentialPaths::default(), &ssh)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&r.join(layout::SSH_KEY_FILE).display().to_string()),
            "{e}"
        );
        assert!(
            e.contains("readable by group and others (mode 0644)") && e.contains("chmod 0600"),
            "{e}"
        );

        // Not owned by root.
        let (_d, r) = root();
        ssh_files(&r, &format!("forge.example {HOST_KEY}\n"), 0o600);
        std::os::unix::fs::chown(r.join(layout::SSH_KEY_FILE), Some(1000), None).unwrap();
        let e = load(&r, &CredentialPaths::default(), &ssh)
            .unwrap_err()
            .to_string();
        assert!(e.contains("owned by uid 1000, not root"), "{e}");

        // No line for the host; a wildcard that is negated does not count.
        let (_d, r) = root();
        ssh_files(
            &r,
            &format!("*.example,!forge.example {HOST_KEY}\nother {HOST_KEY}\n"),
            0o600,
        );
        let e = load(&r, &CredentialPaths::default(), &ssh)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no line pins the host key of forge.example"),
            "{e}"
        );
        assert!(e.contains("ssh-keyscan forge.example"), "{e}");

        // Port 22 is named bare; another port in brackets.
        let (_d, r) = root();
        ssh_files(&r, &format!("forge.example {HOST_KEY}\n"), 0o600);
        assert!(load(&r, &CredentialPaths::default(), &ssh).is_ok());
        let e = load(
            &r,
            &CredentialPaths::default(),
            &flake("git+ssh://git@forge.example:2222/org/fleet#x"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("[forge.example]:2222") && e.contains("ssh-keyscan -p 2222 forge.example"),
            "{e}"
        );

        // A key without known_hosts.
        let (_d, r) = root();
        write(r.dir(), "etc/fabric/credentials/ssh-key", KEY, 0o600);
        let e = load(&r, &CredentialPaths::default(), &ssh)
            .unwrap_err()
            .to_string();
        assert!(e.contains("without a known_hosts file"), "{e}");

        // A known_hosts others can write.
        let (_d, r) = root();
        ssh_files(&r, &format!("forge.example {HOST_KEY}\n"), 0o600);
        std::fs::set_permissions(
            r.join(layout::KNOWN_HOSTS_FILE),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let e = load(&r, &CredentialPaths::default(), &ssh)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("known_hosts file is writable by group and others (mode 0666)"),
            "{e}"
        );

        // A key for an https flake.
        let (_d, r) = root();
        ssh_files(&r, &format!("forge.example {HOST_KEY}\n"), 0o600);
        let e = load(
            &r,
            &CredentialPaths::default(),
            &flake("git+https://forge.example/f#x"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is a git+https:// reference"), "{e}");

        // A garbled known_hosts line names its line and column.
        let (_d, r) = root();
        ssh_files(&r, "# x\n  forge.example ssh-ed25519 @@@\n", 0o600);
        let e = load(&r, &CredentialPaths::default(), &ssh)
            .unwrap_err()
            .to_string();
        assert!(e.contains("known_hosts:2:3: not a known_hosts line"), "{e}");

        // Not a key; the message does not quote it.
        let (_d, r) = root();
        ssh_files(&r, &format!("forge.example {HOST_KEY}\n"), 0o600);
        write(
            r.dir(),
            "etc/fabric/credentials/ssh-key",
            "s3cret-not-a-key\n",
            0o600,
        );
        let e = load(&r, &CredentialPaths::default(), &ssh)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ssh-key:1:1: not an OpenSSH private key"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn tokens_must_be_for_the_flakes_host() {
        let (_d, r) = root();
        write(
            r.dir(),
            "etc/fabric/credentials/access-tokens",
            "github.com=ghp_SECRET\n",
            0o600,
        );
        let c = load(
            &r,
            &CredentialPaths::default(),
            &flake("github:org/fleet#x"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.summary,
            CredentialSummary::AccessToken {
                host: "github.com".into()
            }
        );
        assert_eq!(
            c.auth.nix_config(),
            Some("access-tokens = github.com=ghp_SECRET")
        );
        let header = base64::engine::general_purpose::STANDARD.encode("x-access-token:ghp_SECRET");
        assert_eq!(
            c.auth.env(),
            [
                ("GIT_CONFIG_COUNT".to_string(), "1".to_string()),
                (
                    "GIT_CONFIG_KEY_0".to_string(),
                    "http.https://github.com/.extraHeader".to_string()
                ),
                (
                    "GIT_CONFIG_VALUE_0".to_string(),
                    format!("Authorization: Basic {header}")
                ),
            ]
        );
        assert!(!format!("{c:?}").contains("ghp_SECRET"));

        // Another host: refused, the token not quoted.
        let e = load(
            &r,
            &CredentialPaths::default(),
            &flake("git+https://git.example.org/f#x"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("access-tokens:1:1: a token for host github.com, but the flake"),
            "{e}"
        );
        assert!(!e.contains("ghp_SECRET"), "{e}");

        // A token for an ssh flake.
        let e = load(
            &r,
            &CredentialPaths::default(),
            &flake("git+ssh://git@github.com/o/f#x"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is a git+ssh:// reference"), "{e}");

        // Not HOST=TOKEN: named by position, never quoted.
        write(
            r.dir(),
            "etc/fabric/credentials/access-tokens",
            "\n  ghp_SECRET\n",
            0o600,
        );
        let e = load(
            &r,
            &CredentialPaths::default(),
            &flake("github:org/fleet#x"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("access-tokens:2:3: this entry is not HOST=TOKEN"),
            "{e}"
        );
        assert!(!e.contains("ghp_SECRET"), "{e}");

        // A port that is not 443 belongs to the host; gitlab's PAT: prefix
        // stays for Nix and goes for Git.
        write(
            r.dir(),
            "etc/fabric/credentials/access-tokens",
            "git.example.org:8443=PAT:glpat\n",
            0o640,
        );
        let e = load(
            &r,
            &CredentialPaths::default(),
            &flake("git+https://git.example.org:8443/f#x"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("readable by group (mode 0640)"), "{e}");
        std::fs::set_permissions(
            r.join(layout::ACCESS_TOKENS_FILE),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        let c = load(
            &r,
            &CredentialPaths::default(),
            &flake("git+https://git.example.org:8443/f#x"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.summary.to_string(),
            "access token for git.example.org:8443"
        );
        assert_eq!(
            c.auth.env()[1].1,
            "http.https://git.example.org:8443/.extraHeader"
        );
    }

    #[test]
    fn defaults_follow_the_kind_of_the_flags() {
        let (_d, r) = root();
        ssh_files(&r, "h k\n", 0o600);
        write(
            r.dir(),
            "etc/fabric/credentials/access-tokens",
            "h=t\n",
            0o600,
        );
        let none = CredentialPaths::default().resolve(&r);
        assert!(
            none.ssh_key.is_some() && none.known_hosts.is_some() && none.access_tokens.is_some()
        );
        let e = load(
            &r,
            &CredentialPaths::default(),
            &flake("git+ssh://git@h/f#x"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("both an access token and an SSH credential"),
            "{e}"
        );

        let tokens = CredentialPaths {
            access_tokens: Some("/run/secrets/tokens".into()),
            ..Default::default()
        }
        .resolve(&r);
        assert_eq!(tokens.ssh_key, None);
        assert_eq!(tokens.access_tokens, Some(r.join("/run/secrets/tokens")));

        let key = CredentialPaths {
            ssh_key: Some("/run/secrets/key".into()),
            ..Default::default()
        }
        .resolve(&r);
        assert_eq!(key.ssh_key, Some(r.join("/run/secrets/key")));
        assert_eq!(key.known_hosts, Some(r.join(layout::KNOWN_HOSTS_FILE)));
        assert_eq!(key.access_tokens, None);
    }

    #[test]
    fn refusals_by_the_server_are_explained() {
        let key = CredentialSummary::SshKey {
            fingerprint: "SHA256:abc".into(),
            host: "[h]:2222".into(),
        };
        let token = CredentialSummary::AccessToken { host: "h".into() };
        let said = |tail: &str, used| explain_refusal(tail, used).unwrap_or_default();
        assert!(said("Host key verification failed.\n", Some(&key)).contains("pinned for [h]:2222"));
        assert!(said("root@h: Permission denied (publickey).\n", Some(&key))
            .contains("refused the deploy key SHA256:abc"));
        assert!(said(
            "fatal: could not read Username for 'https://h': terminal prompts disabled\n",
            Some(&token)
        )
        .contains("refused the access token for h"));
        assert!(
            said("fatal: could not read Username for 'https://h'\n", None)
                .contains("give an access token")
        );
        assert_eq!(
            explain_refusal(
                "fatal: unable to access: Could not resolve host\n",
                Some(&token)
            ),
            None
        );
    }

    #[test]
    fn host_patterns_follow_openssh() {
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(patterns_match(&p(&["*.example.org"]), "git.example.org"));
        assert!(patterns_match(&p(&["GIT.example.org"]), "git.example.org"));
        assert!(patterns_match(&p(&["[h]:22??"]), "[h]:2222"));
        assert!(!patterns_match(
            &p(&["*", "!git.example.org"]),
            "git.example.org"
        ));
        assert!(!patterns_match(
            &p(&["git.example.org"]),
            "[git.example.org]:2222"
        ));
    }
}
