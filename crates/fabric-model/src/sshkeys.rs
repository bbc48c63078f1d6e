//! OpenSSH public keys for the admin user.
//!
//! Messages about a key never quote it: a private key pasted by mistake must
//! not end up in a terminal log, a CI log or a Crossplane event.

use std::fmt;

use ssh_key::{HashAlg, PublicKey};

/// A parsed OpenSSH public key, as it goes into `authorized_keys`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AuthorizedKey {
    line: String,
    fingerprint: String,
    algorithm: String,
}

impl AuthorizedKey {
    /// The `authorized_keys` line: algorithm, base64 key and comment.
    pub fn openssh(&self) -> &str {
        &self.line
    }

    /// `SHA256:…` fingerprint, safe to log.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Algorithm name, e.g. `ssh-ed25519`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }
}

impl fmt::Debug for AuthorizedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorizedKey({} {})", self.algorithm, self.fingerprint)
    }
}

/// Why a key was refused; neither field contains key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// What is wrong.
    pub message: String,
    /// What would be right.
    pub hint: String,
}

fn err(message: impl Into<String>, hint: impl Into<String>) -> KeyError {
    KeyError {
        message: message.into(),
        hint: hint.into(),
    }
}

const HINT: &str = "paste one line from a .pub file, e.g. ssh-ed25519 AAAAC3Nza… alice@laptop";

/// Parses one public key line.
pub fn parse(text: &str) -> Result<AuthorizedKey, KeyError> {
    if text.contains("PRIVATE KEY") {
        return Err(err(
            "is a private key; it must never leave the machine it was made on",
            "paste the public key (the .pub file) instead, and consider this private key exposed: replace it",
        ));
    }
    let trimmed = text.trim_end_matches(['\n', '\r']).trim();
    if trimmed.is_empty() {
        return Err(err("is empty", HINT));
    }
    if trimmed.contains(['\n', '\r']) {
        return Err(err(
            "spans several lines",
            "give each key as its own list entry",
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(err("contains control characters", HINT));
    }
    let first = trimmed.split_whitespace().next().unwrap_or("");
    if !first.starts_with("ssh-") && !first.starts_with("ecdsa-") && !first.starts_with("sk-") {
        let hint = if trimmed.contains("ssh-") || trimmed.contains("ecdsa-") {
            "authorized_keys options (command=, from=, …) are not supported; give the bare key"
        } else {
            HINT
        };
        return Err(err("is not an OpenSSH public key", hint));
    }
    let key = PublicKey::from_openssh(trimmed).map_err(|_| {
        err(
            "is not a valid OpenSSH public key (it does not decode)",
            HINT,
        )
    })?;
    let algorithm = key.algorithm().as_str().to_string();
    if algorithm.contains("-cert-") {
        return Err(err("is a certificate, not a key", HINT));
    }
    if algorithm == "ssh-dss" {
        return Err(err(
            "is a DSA key, which current OpenSSH refuses",
            "use an ed25519 key (ssh-keygen -t ed25519)",
        ));
    }
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    // Re-encode so that what lands in authorized_keys is exactly what was parsed.
    let line = key
        .to_openssh()
        .map_err(|_| err("could not be re-encoded", HINT))?;
    Ok(AuthorizedKey {
        line,
        fingerprint,
        algorithm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgSMbuBprsvdhMrTvUN6Wb+dCh8clQi5rzAf/8LwMXb alice@laptop";

    #[test]
    fn parses_and_keeps_comment() {
        let k = parse(ED).unwrap();
        assert_eq!(k.openssh(), ED);
        assert!(k.fingerprint().starts_with("SHA256:"));
        assert!(!format!("{k:?}").contains("AAAA"));
    }

    #[test]
    fn refuses_private_multiline_and_garbage() {
        assert!(parse(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
        )
        .unwrap_err()
        .message
        .contains("private"));
        assert!(parse(&format!("{ED}\n{ED}"))
            .unwrap_err()
            .message
            .contains("lines"));
        assert!(parse("ssh-ed25519 AAAAnotbase64 x").is_err());
        assert!(parse("ssh-ed25519 AAAAC3Nza\u{7}C1lZDI1NTE5 x").is_err());
        assert!(parse(&format!("command=\"ls\" {ED}"))
            .unwrap_err()
            .hint
            .contains("options"));
    }
}
