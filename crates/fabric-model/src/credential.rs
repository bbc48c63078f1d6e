//! The credential for a private fleet repository, held in the Secret that
//! `spec.nix.credentialsSecretRef` names.
//!
//! The Secret holds exactly one kind: an SSH deploy key (`ssh-privatekey`)
//! with the forge's host key pinned (`known_hosts`), for `git+ssh`
//! references; or Nix's `access-tokens` (`HOST=TOKEN` pairs), for
//! `git+https`, `github:` and `gitlab:` references. Everything here treats
//! the key and the tokens as secrets: diagnostics name the Secret's data key,
//! the line or entry number, the host and the key's fingerprint, never the
//! content, and [`Credential`]'s `Debug` leaves the content out.

use std::fmt;

use base64::Engine;
use ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use ssh_key::{HashAlg, PrivateKey};

use crate::diag::{Diagnostic, Pos};
use crate::flake::{FlakeRef, FlakeScheme};
use crate::machine::Machine;
use crate::source::{Node, Value};

/// The Machine field that names the Secret.
pub const FIELD: &str = "spec.nix.credentialsSecretRef";
/// Data key of the SSH deploy key (the `kubernetes.io/ssh-auth` Secret type's key).
pub const SSH_PRIVATE_KEY: &str = "ssh-privatekey";
/// Data key of the pinned host keys.
pub const KNOWN_HOSTS: &str = "known_hosts";
/// Data key of Nix's access tokens.
pub const ACCESS_TOKENS: &str = "access-tokens";

const KEY_HINT: &str = "an unencrypted OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----), e.g. made by ssh-keygen -t ed25519 -N '' -f deploy-key";

/// The host a credential is for, as the reference fetches from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceHost {
    /// A `git+ssh` reference: the host and port, written as `known_hosts`
    /// names them (`host` for port 22, `[host]:port` otherwise).
    Ssh {
        /// Host name or address, lowercase.
        host: String,
        /// Port, 22 when the reference gives none.
        port: u16,
    },
    /// An HTTPS reference (`git+https`, `github:`, `gitlab:`): the host as
    /// Nix's `access-tokens` names it (`host`, or `host:port` for a port
    /// other than 443).
    Https(String),
}

impl ReferenceHost {
    /// The host a credential for `flake` must be for, or `None` when Fabric
    /// delivers no credential for its scheme.
    pub fn of(flake: &FlakeRef) -> Option<ReferenceHost> {
        match flake.scheme() {
            FlakeScheme::GitSsh => {
                let url = url::Url::parse(&flake.git_remote()?).ok()?;
                Some(ReferenceHost::Ssh {
                    host: url.host_str()?.to_ascii_lowercase(),
                    port: url.port().unwrap_or(22),
                })
            }
            FlakeScheme::GitHttps => {
                let url = url::Url::parse(&flake.git_remote()?).ok()?;
                let host = url.host_str()?.to_ascii_lowercase();
                Some(ReferenceHost::Https(match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                }))
            }
            FlakeScheme::GitHub => Some(ReferenceHost::Https("github.com".into())),
            FlakeScheme::GitLab => Some(ReferenceHost::Https("gitlab.com".into())),
            FlakeScheme::GitFile | FlakeScheme::SourceHut | FlakeScheme::Tarball => None,
        }
    }

    /// The name a `known_hosts` line or an `access-tokens` entry uses.
    pub fn name(&self) -> String {
        match self {
            ReferenceHost::Ssh { host, port: 22 } => host.clone(),
            ReferenceHost::Ssh { host, port } => format!("[{host}]:{port}"),
            ReferenceHost::Https(host) => host.clone(),
        }
    }
}

/// A validated credential. Its `Debug` shows the kind, host and
/// fingerprint, never the key or the tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// An SSH deploy key with its pinned host keys.
    SshKey(SshKey),
    /// Nix access tokens for the reference's host.
    AccessTokens(AccessTokens),
}

/// An SSH deploy key and the `known_hosts` lines that pin the forge.
#[derive(Clone, PartialEq, Eq)]
pub struct SshKey {
    private_key: String,
    known_hosts: String,
    fingerprint: String,
    host: String,
}

/// `HOST=TOKEN` pairs, every host the reference's.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessTokens {
    pairs: Vec<(String, String)>,
    host: String,
}

impl Credential {
    /// `ssh-key` or `access-token`, as status and doctor name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::SshKey(_) => "ssh-key",
            Credential::AccessTokens(_) => "access-token",
        }
    }

    /// The host it is for (`known_hosts` or `access-tokens` form).
    pub fn host(&self) -> &str {
        match self {
            Credential::SshKey(k) => &k.host,
            Credential::AccessTokens(t) => &t.host,
        }
    }

    /// The deploy key's SHA256 fingerprint (`SHA256:…`); `None` for tokens.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Credential::SshKey(k) => Some(&k.fingerprint),
            Credential::AccessTokens(_) => None,
        }
    }

    /// What may be said about it anywhere: kind, host, fingerprint.
    pub fn describe(&self) -> String {
        match self.fingerprint() {
            Some(fp) => format!("{} {fp} for {}", self.kind(), self.host()),
            None => format!("{} for {}", self.kind(), self.host()),
        }
    }

    /// The secret values, for callers that must make sure none of them
    /// leaks (tests, log scrubbing): the key, and each token.
    pub fn secret_values(&self) -> Vec<&str> {
        match self {
            Credential::SshKey(k) => vec![k.private_key.as_str()],
            Credential::AccessTokens(t) => t.pairs.iter().map(|(_, tok)| tok.as_str()).collect(),
        }
    }
}

impl SshKey {
    /// The private key in OpenSSH form, LF line endings, ending with a newline.
    pub fn private_key(&self) -> &str {
        &self.private_key
    }
    /// The `known_hosts` lines as given (LF line endings, ending with a newline).
    pub fn known_hosts(&self) -> &str {
        &self.known_hosts
    }
}

impl AccessTokens {
    /// The pairs, one `HOST=TOKEN` per line, ending with a newline: the
    /// content of the access-tokens file on the machine.
    pub fn file_content(&self) -> String {
        self.pairs
            .iter()
            .map(|(h, t)| format!("{h}={t}\n"))
            .collect()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind())
            .field("host", &self.host())
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshKey")
            .field("host", &self.host)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokens")
            .field("host", &self.host)
            .field("entries", &self.pairs.len())
            .finish_non_exhaustive()
    }
}

/// Why a machine's credential could not be read from a file of Secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// No Secret in the documents is the one the machine names.
    NotInFile(Diagnostic),
    /// The Secret is there (or the machine cannot have one) and is wrong.
    Invalid(Vec<Diagnostic>),
}

/// The namespace the machine's credential Secret must be in: the same rule
/// as for the SSH keys Secret (a Machine's own namespace; for a legacy
/// XMachine, its claim's).
pub fn namespace(machine: &Machine) -> Result<Option<String>, Diagnostic> {
    crate::secret::machine_secret_namespace(machine, FIELD, || {
        format!(
            "create the XMachine through its claim (the {} label), or use a namespaced Machine",
            crate::machine::CLAIM_NAMESPACE_LABEL
        )
    })
}

/// Reads the credential `machine` names from the documents of a Secret
/// file, choosing the Secret as the composition function does: by name, in
/// the machine's namespace (a Secret naming no namespace counts as being
/// in it). `Ok(None)`: the machine names no credential.
pub fn for_machine(
    docs: &[Node],
    machine: &Machine,
) -> Result<Option<Credential>, CredentialError> {
    let Some(secret_ref) = &machine.credentials_secret else {
        return Ok(None);
    };
    let ns = namespace(machine).map_err(|d| CredentialError::Invalid(vec![d]))?;
    let doc = crate::secret::find_machine_secret(
        docs,
        &secret_ref.name,
        ns.as_deref(),
        &format!(" ({FIELD})"),
        || {
            format!(
                "pass the file of the Secret {FIELD} names: metadata.name {} in the machine's namespace, or with no metadata.namespace",
                secret_ref.name
            )
        },
    )
    .map_err(CredentialError::NotInFile)?;
    from_secret(doc, &machine.flake)
        .map(Some)
        .map_err(CredentialError::Invalid)
}

/// One value of the Secret: its field path, position and decoded text.
struct SecretValue {
    path: String,
    pos: Option<Pos>,
    text: String,
}

fn value(secret: &Node, key: &str) -> Result<Option<SecretValue>, Diagnostic> {
    let plain = secret.get("stringData").and_then(|d| d.get(key));
    let encoded = secret.get("data").and_then(|d| d.get(key));
    match (plain, encoded) {
        (Some(node), _) => match &node.value {
            Value::Scalar { text, .. } => Ok(Some(SecretValue {
                path: format!("stringData.{key}"),
                pos: node.pos,
                text: text.clone(),
            })),
            _ => Err(
                Diagnostic::error(format!("stringData.{key}"), node.pos, "is not a string")
                    .hint("write the value as a YAML block scalar (key: |)"),
            ),
        },
        (None, Some(node)) => {
            let path = format!("data.{key}");
            let cleaned: String = node
                .as_text()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(cleaned)
                .map_err(|_| {
                    Diagnostic::error(&path, node.pos, "is not valid base64")
                        .hint("values under data are base64; put plain text under stringData")
                })?;
            let text = String::from_utf8(bytes).map_err(|e| {
                Diagnostic::error(
                    &path,
                    node.pos,
                    format!(
                        "does not decode to UTF-8 text (byte offset {} of the decoded value)",
                        e.utf8_error().valid_up_to()
                    ),
                )
                .hint(
                    "the credential is text: an OpenSSH key, known_hosts lines or HOST=TOKEN pairs",
                )
            })?;
            Ok(Some(SecretValue {
                path,
                pos: node.pos,
                text,
            }))
        }
        (None, None) => Ok(None),
    }
}

/// Reads and checks the credential in one Secret object for `flake`.
pub fn from_secret(secret: &Node, flake: &FlakeRef) -> Result<Credential, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut take = |key| match value(secret, key) {
        Ok(v) => v,
        Err(d) => {
            diags.push(d);
            None
        }
    };
    let key = take(SSH_PRIVATE_KEY);
    let known_hosts = take(KNOWN_HOSTS);
    let tokens = take(ACCESS_TOKENS);
    if !diags.is_empty() {
        return Err(diags);
    }
    let data_pos = secret
        .get("stringData")
        .or_else(|| secret.get("data"))
        .and_then(|n| n.pos)
        .or(secret.pos);
    let scheme_hint = "keep ssh-privatekey and known_hosts for a git+ssh:// reference, or access-tokens for git+https://, github: and gitlab: references";
    let Some(host) = ReferenceHost::of(flake) else {
        return Err(vec![Diagnostic::error(
            FIELD,
            None,
            format!(
                "spec.nix.flakeRef {} is fetched without a credential Fabric can deliver",
                flake.without_attr()
            ),
        )
        .hint(scheme_hint)]);
    };
    match (key, tokens, host) {
        (Some(k), Some(t), _) => Err(vec![Diagnostic::error(
            &t.path,
            t.pos.or(k.pos),
            format!("the Secret holds both an SSH key ({SSH_PRIVATE_KEY}) and access tokens ({ACCESS_TOKENS}); it must hold one kind"),
        )
        .hint(scheme_hint)]),
        (None, None, _) => Err(vec![Diagnostic::error(
            "data",
            data_pos,
            match known_hosts {
                Some(_) => format!("the Secret holds {KNOWN_HOSTS} but no {SSH_PRIVATE_KEY}"),
                None => format!("the Secret holds no credential: neither {SSH_PRIVATE_KEY} nor {ACCESS_TOKENS}"),
            },
        )
        .hint(scheme_hint)]),
        (Some(k), None, ReferenceHost::Ssh { host, port }) => {
            ssh_key(k, known_hosts, &host, port, data_pos).map(Credential::SshKey)
        }
        (Some(k), None, ReferenceHost::Https(host)) => Err(vec![Diagnostic::error(
            &k.path,
            k.pos,
            format!(
                "an SSH key is for git+ssh:// references, but spec.nix.flakeRef fetches {} over HTTPS",
                flake.without_attr()
            ),
        )
        .hint(format!(
            "use a git+ssh:// reference, or replace the key with access-tokens: {host}=<token>"
        ))]),
        (None, Some(t), ReferenceHost::Https(host)) => {
            if let Some(kh) = &known_hosts {
                return Err(vec![Diagnostic::error(
                    &kh.path,
                    kh.pos,
                    format!("{KNOWN_HOSTS} goes with an SSH key, and this Secret holds access tokens"),
                )
                .hint(scheme_hint)]);
            }
            access_tokens(t, &host).map(Credential::AccessTokens)
        }
        (None, Some(t), ReferenceHost::Ssh { .. }) => Err(vec![Diagnostic::error(
            &t.path,
            t.pos,
            format!(
                "access tokens are for HTTPS references, but spec.nix.flakeRef fetches {} over SSH",
                flake.without_attr()
            ),
        )
        .hint(format!(
            "use a git+https:// reference, or replace the tokens with {SSH_PRIVATE_KEY} and {KNOWN_HOSTS}"
        ))]),
    }
}

/// Line endings as the machine's ssh and Git expect them: LF only.
fn unix_lines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

fn ssh_key(
    k: SecretValue,
    known_hosts: Option<SecretValue>,
    host: &str,
    port: u16,
    data_pos: Option<Pos>,
) -> Result<SshKey, Vec<Diagnostic>> {
    let name = ReferenceHost::Ssh {
        host: host.to_string(),
        port,
    }
    .name();
    let mut diags = Vec::new();
    // Keys pasted on Windows arrive with CRLF; OpenSSH refuses those, so
    // the machine is given LF lines whatever the Secret holds.
    let pem = format!("{}\n", unix_lines(&k.text).trim());
    let fingerprint = match PrivateKey::from_openssh(&pem) {
        Ok(key) if key.is_encrypted() => {
            diags.push(
                Diagnostic::error(
                    &k.path,
                    k.pos,
                    "the SSH key is encrypted with a passphrase, which nothing on the machine can type",
                )
                .hint("remove the passphrase from a copy: ssh-keygen -p -N '' -f deploy-key"),
            );
            None
        }
        Ok(key) => Some(key.public_key().fingerprint(HashAlg::Sha256).to_string()),
        Err(e) => {
            let what = if pem.contains("BEGIN RSA PRIVATE KEY")
                || pem.contains("BEGIN EC PRIVATE KEY")
                || pem.contains("BEGIN PRIVATE KEY")
            {
                "is a PEM private key, not OpenSSH's format".to_string()
            } else if pem.starts_with("ssh-") || pem.starts_with("ecdsa-") {
                "is a public key; the Secret needs the private key".to_string()
            } else {
                format!("is not an OpenSSH private key ({e})")
            };
            diags.push(Diagnostic::error(&k.path, k.pos, what).hint(KEY_HINT));
            None
        }
    };
    let Some(kh) = known_hosts else {
        diags.push(
            Diagnostic::error(
                format!("data.{KNOWN_HOSTS}"),
                data_pos,
                "the Secret holds an SSH key but no known_hosts: the machine would trust whatever host answers first",
            )
            .hint(format!(
                "pin the forge's host key: add {KNOWN_HOSTS} with its line, e.g. from ssh-keyscan{} {host}",
                if port == 22 { String::new() } else { format!(" -p {port}") }
            )),
        );
        return Err(diags);
    };
    let known = unix_lines(&kh.text);
    let mut names_host = false;
    let mut lines = 0;
    let mut hashed = 0;
    for (i, line) in known.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        lines += 1;
        match line.parse::<Entry>() {
            Ok(entry) => {
                if matches!(entry.host_patterns(), HostPatterns::HashedName { .. }) {
                    hashed += 1;
                }
                if entry.marker() != Some(&Marker::Revoked)
                    && patterns_match(entry.host_patterns(), &name)
                {
                    names_host = true;
                }
            }
            Err(_) => diags.push(
                Diagnostic::error(
                    &kh.path,
                    kh.pos,
                    format!("line {} is not a known_hosts line", i + 1),
                )
                .hint("HOSTS KEYTYPE BASE64KEY, as ssh-keyscan prints"),
            ),
        }
    }
    if diags.is_empty() && !names_host {
        diags.push(
            Diagnostic::error(
                &kh.path,
                kh.pos,
                if lines == 0 {
                    format!("holds no host key, so nothing pins {name}")
                } else if hashed > 0 {
                    format!("no line pins {name}, the host spec.nix.flakeRef fetches from ({hashed} hashed line(s) cannot be checked: write the host in clear, ssh-keyscan without -H)")
                } else {
                    format!("no line pins {name}, the host spec.nix.flakeRef fetches from")
                },
            )
            .hint(format!(
                "add the line for {name}, e.g. from ssh-keyscan{} {host}",
                if port == 22 {
                    String::new()
                } else {
                    format!(" -p {port}")
                }
            )),
        );
    }
    match (fingerprint, diags.is_empty()) {
        (Some(fingerprint), true) => Ok(SshKey {
            private_key: pem,
            known_hosts: if known.ends_with('\n') {
                known
            } else {
                format!("{known}\n")
            },
            fingerprint,
            host: name,
        }),
        _ => Err(diags),
    }
}

/// True when `patterns` names `name` (`host` or `[host]:port`) with
/// OpenSSH's pattern rules; a negated pattern that matches excludes it. A
/// hashed name (`|1|salt|hash`) never counts: `fabric bootstrap` checks the
/// same files on the machine, and there, as here, only a line in clear
/// shows which host is pinned.
fn patterns_match(patterns: &HostPatterns, name: &str) -> bool {
    let HostPatterns::Patterns(list) = patterns else {
        return false;
    };
    let mut matched = false;
    for p in list {
        let p = p.to_ascii_lowercase();
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg, name) {
                return false;
            }
        } else if glob(&p, name) {
            matched = true;
        }
    }
    matched
}

/// OpenSSH's pattern syntax: `*` any run, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn access_tokens(t: SecretValue, host: &str) -> Result<AccessTokens, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut pairs = Vec::new();
    let hint = format!("write {host}=<token>, the host as spec.nix.flakeRef names it");
    for (i, entry) in t.text.split_whitespace().enumerate() {
        let n = i + 1;
        let err = |m: String| Diagnostic::error(&t.path, t.pos, m).hint(hint.clone());
        // The entry is never echoed: without its '=', it may be the token alone.
        let Some((h, tok)) = entry.split_once('=') else {
            diags.push(err(format!("entry {n} is not HOST=TOKEN (it has no '=')")));
            continue;
        };
        if tok.is_empty() {
            diags.push(err(format!("entry {n} gives {h} an empty token")));
            continue;
        }
        if let Some((scheme, _)) = h.split_once("://") {
            diags.push(err(format!(
                "entry {n} names the host with a {scheme}:// prefix; Nix's access-tokens names hosts bare"
            )));
            continue;
        }
        if h.contains('/') || h.contains('@') || h.is_empty() {
            diags.push(err(format!("entry {n} does not name a host before '='")));
            continue;
        }
        if !h.eq_ignore_ascii_case(host) {
            diags.push(err(format!(
                "entry {n} is for {h}, but spec.nix.flakeRef fetches from {host}"
            )));
            continue;
        }
        pairs.push((host.to_string(), tok.to_string()));
    }
    if pairs.is_empty() && diags.is_empty() {
        diags.push(Diagnostic::error(&t.path, t.pos, "holds no token").hint(hint.clone()));
    }
    if diags.is_empty() {
        Ok(AccessTokens {
            pairs,
            host: host.to_string(),
        })
    } else {
        Err(diags)
    }
}
