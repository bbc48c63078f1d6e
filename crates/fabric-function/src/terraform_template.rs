//! Text handed to a Terraform-based provider, escaped so Terraform reads it
//! as itself.
//!
//! Terraform's JSON configuration syntax reads every string as a template:
//! `${…}` interpolates and `%{…}` is a directive. Both providers Fabric
//! composes for end in such a file:
//!
//! - provider-proxmox-bpg is an upjet provider of the Terraform-CLI kind: it
//!   writes each managed resource's `spec.forProvider`, with
//!   `spec.initProvider` merged in, into a `main.tf.json`, unescaped.
//! - provider-terraform writes an inline JSON module as `main.tf.json`.
//!
//! The user-data's per-boot script holds shell like `${PATH:-/usr/bin:/bin}`,
//! which Terraform would refuse ("Extra characters after interpolation
//! expression") or, worse, evaluate. Doubling `${` to `$${` and `%{` to
//! `%%{` is Terraform's escape: it reads them back as `${` and `%{`, and
//! nothing else changes. So the composed spec shows `$${`, and the VM
//! receives `${`.
//!
//! Values of Terraform *variables* (provider-terraform's `varmap`, written
//! to a `.tfvars.json` file) are not templates and must not be escaped.

use serde_json::Value as Json;

/// `text` escaped so Terraform's template reading gives back `text`.
pub fn escape(text: &str) -> String {
    text.replace("${", "$${").replace("%{", "%%{")
}

/// What Terraform reads from `escaped`, for text Fabric itself escaped
/// (e.g. a field read back from an observed spec).
pub fn unescape(escaped: &str) -> String {
    escaped.replace("$${", "${").replace("%%{", "%{")
}

/// Escapes every string in `value`, keys excepted (Terraform reads
/// argument and block names literally).
pub fn escape_strings(value: &mut Json) {
    match value {
        Json::String(s) => {
            if s.contains("${") || s.contains("%{") {
                *s = escape(s);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(escape_strings),
        Json::Object(map) => map.values_mut().for_each(escape_strings),
        Json::Null | Json::Bool(_) | Json::Number(_) => {}
    }
}

/// Escapes what an upjet provider writes into `main.tf.json` from a
/// managed resource: `spec.forProvider` and `spec.initProvider`.
pub fn escape_parameters(mut object: Json) -> Json {
    for part in ["forProvider", "initProvider"] {
        if let Some(parameters) = object.pointer_mut(&format!("/spec/{part}")) {
            escape_strings(parameters);
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::{escape, escape_parameters, unescape};
    use serde_json::json;

    #[test]
    fn template_sequences_in_literal_text_are_doubled() {
        assert_eq!(
            escape("echo ${HOME} %{x} $x %y"),
            "echo $${HOME} %%{x} $x %y"
        );
        assert_eq!(escape("plain"), "plain");
        // An escape already in the text is text too: Terraform reads `$$${`
        // as `$` then the escape `$${`.
        assert_eq!(escape("$${a} %%{b}"), "$$${a} %%%{b}");
    }

    #[test]
    fn unescape_undoes_escape() {
        for text in [
            "${PATH:-/bin}",
            "$${",
            "$$${x",
            "%%{ if }",
            "a$",
            "\\${",
            "%{}${}",
        ] {
            assert_eq!(unescape(&escape(text)), text);
        }
    }

    #[test]
    fn parameters_are_escaped_and_nothing_else() {
        let object = json!({
            "kind": "EnvironmentFile",
            "metadata": {"annotations": {"a": "${x}"}},
            "spec": {
                "providerConfigRef": {"name": "${x}"},
                "forProvider": {"description": "${x}", "tags": ["%{y}"]},
                "initProvider": {"sourceRaw": [{"data": "${PATH:-/bin}", "fileName": "f"}]},
            },
        });
        let escaped = escape_parameters(object);
        assert_eq!(escaped["metadata"]["annotations"]["a"], "${x}");
        assert_eq!(escaped["spec"]["providerConfigRef"]["name"], "${x}");
        assert_eq!(escaped["spec"]["forProvider"]["description"], "$${x}");
        assert_eq!(escaped["spec"]["forProvider"]["tags"][0], "%%{y}");
        assert_eq!(
            escaped["spec"]["initProvider"]["sourceRaw"][0]["data"],
            "$${PATH:-/bin}"
        );
    }
}
