//! SSH keys held in a Kubernetes Secret.
//!
//! The Secret's value is key material: diagnostics name the Secret, the data
//! key and the line number, never the content.

use base64::Engine;

use crate::diag::{Diagnostic, Pos};
use crate::machine::{Machine, MachineKind};
use crate::source::{self, Node, Value};
use crate::sshkeys::{self, AuthorizedKey};

/// Reads `key` of the Secret named `name` in a manifest (YAML, possibly
/// among other documents) and parses it as authorized_keys lines. Only a
/// Secret of that name is used, never another one that happens to be alone
/// in the file: the cluster would not use it either.
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
    let chosen = docs
        .iter()
        .find(|d| is_secret(d) && text_at(d, "name") == Some(name));
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

/// Why a machine's keys could not be read from a file of Secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysError {
    /// The file holds no Secret the machine would be given: the wrong file
    /// (or the wrong name or namespace in it). One diagnostic, placed on the
    /// first Secret in the file when there is one.
    NotInFile(Diagnostic),
    /// The machine's Secret is there, or the machine cannot have one, and
    /// what it says is wrong.
    Invalid(Vec<Diagnostic>),
}

/// The namespace a machine's keys Secret must be in, by the composition
/// function's rule: a Machine's own; for a legacy XMachine, the namespace of
/// the claim it was made through (its `crossplane.io/claim-namespace`
/// label). `None`: a Machine that names no namespace, which `kubectl apply`
/// places in the current namespace, as it does a Secret that names none.
pub fn keys_namespace(machine: &Machine) -> Result<Option<String>, Diagnostic> {
    machine_secret_namespace(machine, "spec.bootstrap.sshAuthorizedKeysSecretRef", || {
        format!(
            "give the keys inline in sshAuthorizedKeys, give the XMachine its claim's {} label, or use a namespaced Machine",
            crate::machine::CLAIM_NAMESPACE_LABEL
        )
    })
}

/// The namespace any Secret a machine names must be in ([`keys_namespace`]
/// tells the rule). `field` is the Machine field that names the Secret;
/// `hint` says what to do instead when there is no namespace.
pub(crate) fn machine_secret_namespace(
    machine: &Machine,
    field: &str,
    hint: impl FnOnce() -> String,
) -> Result<Option<String>, Diagnostic> {
    match machine.kind {
        MachineKind::Machine => Ok(machine.namespace.clone()),
        MachineKind::XMachine => match &machine.claim_namespace {
            Some(ns) => Ok(Some(ns.clone())),
            None => Err(Diagnostic::error(
                field,
                None,
                "a cluster-scoped XMachine not made through a claim has no namespace to read a Secret from",
            )
            .hint(hint())),
        },
    }
}

/// True when `doc` is the Secret `name` in `namespace`. A Secret that names
/// no namespace counts as being in `namespace`: `kubectl apply` puts it in
/// the same namespace as the machine.
pub fn is_machine_secret(doc: &Node, name: &str, namespace: Option<&str>) -> bool {
    is_secret(doc)
        && text_at(doc, "name") == Some(name)
        && match text_at(doc, "namespace") {
            None => true,
            Some(ns) => Some(ns) == namespace,
        }
}

/// Reads the keys a machine's `spec.bootstrap.sshAuthorizedKeysSecretRef`
/// names from the documents of a Secret file, choosing the Secret exactly
/// as the composition function does: by name and namespace.
pub fn keys_for_machine(
    docs: &[Node],
    machine: &Machine,
) -> Result<Option<Vec<AuthorizedKey>>, KeysError> {
    let Some(secret_ref) = &machine.ssh_keys_secret else {
        return Ok(None);
    };
    let namespace = keys_namespace(machine).map_err(|d| KeysError::Invalid(vec![d]))?;
    let hint = || {
        let where_ns = match &namespace {
            Some(ns) => format!("in namespace {ns}, or with no metadata.namespace"),
            None => "with no metadata.namespace, as the Machine has none".to_string(),
        };
        format!(
            "pass the file of the Secret spec.bootstrap.sshAuthorizedKeysSecretRef names: metadata.name {} {where_ns}",
            secret_ref.name
        )
    };
    let doc = find_machine_secret(docs, &secret_ref.name, namespace.as_deref(), "", hint)
        .map_err(KeysError::NotInFile)?;
    keys_from_secret(doc, &secret_ref.key)
        .map(Some)
        .map_err(KeysError::Invalid)
}

/// Finds the Secret `name` a machine names among the documents of a file,
/// by [`is_machine_secret`]'s rule. When it is not there, the diagnostic
/// says which Secret the machine needs (`note` follows that in the
/// message) and which Secrets the file holds instead, placed on the first
/// of those, or at the top of a file that holds none; `hint` says which
/// file to pass.
pub(crate) fn find_machine_secret<'a>(
    docs: &'a [Node],
    name: &str,
    namespace: Option<&str>,
    note: &str,
    hint: impl FnOnce() -> String,
) -> Result<&'a Node, Diagnostic> {
    if let Some(doc) = docs.iter().find(|d| is_machine_secret(d, name, namespace)) {
        return Ok(doc);
    }
    let wanted = match namespace {
        Some(ns) => format!("Secret {ns}/{name}"),
        None => format!("Secret {name} (in the Machine's namespace)"),
    };
    let secrets: Vec<&Node> = docs.iter().filter(|d| is_secret(d)).collect();
    let Some(first) = secrets.first() else {
        return Err(Diagnostic::error(
            "",
            Some(Pos { line: 1, col: 1 }),
            format!("holds no Secret; the machine needs {wanted}{note}"),
        )
        .hint(hint()));
    };
    let found: Vec<String> = secrets
        .iter()
        .map(|d| {
            let name = text_at(d, "name").unwrap_or("(unnamed)");
            match text_at(d, "namespace") {
                Some(ns) => format!("{ns}/{name}"),
                None => format!("{name} (no namespace)"),
            }
        })
        .collect();
    let pos = first
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.pos)
        .or(first.pos);
    Err(Diagnostic::error(
        "metadata.name",
        pos,
        format!(
            "the machine needs {wanted}{note}, but this file holds only Secret {}",
            found.join(", ")
        ),
    )
    .hint(hint()))
}

fn is_secret(doc: &Node) -> bool {
    doc.get("kind").and_then(Node::as_text) == Some("Secret")
}

fn text_at<'a>(doc: &'a Node, field: &str) -> Option<&'a str> {
    doc.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Node::as_text)
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
