//! SSH keys held in a Kubernetes Secret.
//!
//! The Secret's value is key material: diagnostics name the Secret, the data
//! key and the line number, never the content.

use base64::Engine;

use crate::diag::Diagnostic;
use crate::source::{self, Node, Value};
use crate::sshkeys::{self, AuthorizedKey};

/// Reads `key` of a Secret manifest (YAML, possibly among other documents)
/// and parses it as authorized_keys lines.
pub fn keys_from_yaml(
    text: &str,
    name: &str,
    key: &str,
) -> Result<Vec<AuthorizedKey>, Vec<Diagnostic>> {
    if let Err(e) = source::check_manifest_size(text.len() as u64) {
        return Err(vec![
            Diagnostic::error("", None, e.to_string()).hint(e.hint())
        ]);
    }
    let docs = source::parse_yaml(text).map_err(|e| vec![crate::machine::syntax_diagnostic(e)])?;
    let secrets: Vec<&Node> = docs
        .iter()
        .filter(|d| d.get("kind").and_then(Node::as_text) == Some("Secret"))
        .collect();
    let chosen = secrets
        .iter()
        .find(|d| {
            d.get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Node::as_text)
                == Some(name)
        })
        .or(secrets.first().filter(|_| secrets.len() == 1));
    match chosen {
        Some(doc) => keys_from_secret(doc, key),
        None => Err(vec![Diagnostic::error(
            "kind",
            None,
            format!("no Secret named {name} in this file"),
        )
        .hint(
            "pass the Secret manifest that spec.bootstrap.sshAuthorizedKeysSecretRef names",
        )]),
    }
}

/// Reads `key` of a Secret object (`data` base64, `stringData` plain).
pub fn keys_from_secret(secret: &Node, key: &str) -> Result<Vec<AuthorizedKey>, Vec<Diagnostic>> {
    let plain = secret.get("stringData").and_then(|d| d.get(key));
    let encoded = secret.get("data").and_then(|d| d.get(key));
    let (path, pos, content) = match (plain, encoded) {
        (Some(node), _) => match &node.value {
            Value::Scalar { text, .. } => (format!("stringData.{key}"), node.pos, text.clone()),
            _ => {
                return Err(vec![Diagnostic::error(
                    format!("stringData.{key}"),
                    node.pos,
                    "is not a string",
                )
                .hint("one public key per line")])
            }
        },
        (None, Some(node)) => {
            let path = format!("data.{key}");
            let text = node.as_text().unwrap_or_default();
            let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(cleaned)
                .map_err(|_| {
                    vec![Diagnostic::error(&path, node.pos, "is not valid base64")
                        .hint("values under data are base64; put plain text under stringData")]
                })?;
            let text = String::from_utf8(bytes).map_err(|e| {
                let offset = e.utf8_error().valid_up_to();
                vec![Diagnostic::error(
                    &path,
                    node.pos,
                    format!("does not decode to UTF-8 text: byte offset {offset} of the decoded value is not UTF-8"),
                )
                .hint("one public key per line, as UTF-8 text")]
            })?;
            (path, node.pos, text)
        }
        (None, None) => {
            return Err(vec![Diagnostic::error(
                format!("data.{key}"),
                secret.pos,
                "the Secret has no such key",
            )
            .hint(format!(
                "store the keys under data.{key} (base64) or stringData.{key}"
            ))])
        }
    };
    let mut keys = Vec::new();
    let mut diags = Vec::new();
    for (i, line) in content.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match sshkeys::parse(line) {
            Ok(k) => keys.push(k),
            Err(e) => diags.push(
                Diagnostic::error(&path, pos, format!("line {}: {}", i + 1, e.message))
                    .hint(e.hint),
            ),
        }
    }
    if keys.is_empty() && diags.is_empty() {
        diags.push(
            Diagnostic::error(&path, pos, "holds no key").hint("one OpenSSH public key per line"),
        );
    }
    if diags.is_empty() {
        Ok(keys)
    } else {
        Err(diags)
    }
}
