//! The package's API definitions, generated from the Rust types: the
//! Machine XRDs (v2 namespaced `Machine`, legacy cluster-scoped `XMachine`)
//! and the function input's CRD.
//!
//! schemars' output is JSON Schema; a Kubernetes structural schema is a
//! stricter dialect. [`structural`] converts: it keeps descriptions,
//! defaults, ranges, lengths, patterns and enums, drops what Kubernetes
//! refuses (`additionalProperties: false`, formats it does not know such as
//! `uint32`), and turns `const` into a one-value `enum`. Whatever it cannot
//! express (`anyOf`, `$ref`...) is left in place for the tests to catch.
//!
//! The checked-in files under `apis/` and `package/input/` must equal
//! [`files`]; `UPDATE_XRD=1 cargo test -p fabric-function --test tests xrd`
//! rewrites them.

use fabric_model::api::{MachineSpec, API_GROUP};
use fabric_model::schema::schema_for;
use fabric_model::status::MachineStatus;
use fabric_model::MachineKind;
use serde_json::{json, Map, Value as Json};

use crate::input::{self, InputSpec};

/// The Machine API version the XRDs serve.
pub const VERSION: &str = "v1alpha1";

/// Formats a Kubernetes structural schema accepts.
const KUBERNETES_FORMATS: [&str; 17] = [
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "binary",
    "date",
    "date-time",
    "password",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uri",
    "email",
    "hostname",
    "uuid",
];

/// Converts a schemars JSON schema into a Kubernetes structural schema.
pub fn structural(schema: Json) -> Json {
    match schema {
        Json::Object(obj) => {
            let mut out = Map::new();
            for (key, value) in obj {
                match key.as_str() {
                    "$schema" | "title" | "definitions" | "$defs" | "readOnly" | "writeOnly"
                    | "examples" => {}
                    "additionalProperties" if value == Json::Bool(false) => {}
                    "uniqueItems" => {}
                    "format"
                        if !value
                            .as_str()
                            .is_some_and(|f| KUBERNETES_FORMATS.contains(&f)) => {}
                    "const" => {
                        out.insert("enum".into(), json!([value]));
                    }
                    "properties" => {
                        let props = match value {
                            Json::Object(p) => p
                                .into_iter()
                                .map(|(k, v)| (k, structural(v)))
                                .collect::<Map<String, Json>>(),
                            other => return other,
                        };
                        out.insert(key, Json::Object(props));
                    }
                    // Defaults and enums are values, not schemas.
                    "default" | "enum" => {
                        out.insert(key, value);
                    }
                    _ => {
                        out.insert(key, structural(value));
                    }
                }
            }
            Json::Object(out)
        }
        Json::Array(items) => Json::Array(items.into_iter().map(structural).collect()),
        other => other,
    }
}

/// The Machine spec's structural schema.
pub fn spec_schema() -> Json {
    structural(schema_for::<MachineSpec>())
}

/// The Machine status' structural schema.
pub fn status_schema() -> Json {
    structural(schema_for::<MachineStatus>())
}

/// The XRD for `kind`: v2 namespaced for `Machine`, legacy cluster-scoped
/// (with `Machine` claims) for `XMachine`.
pub fn machine_xrd(kind: MachineKind) -> Json {
    let mut spec = spec_schema();
    if let Some(obj) = spec.as_object_mut() {
        obj.insert(
            "description".into(),
            json!("The desired state of one NixOS virtual machine on Proxmox."),
        );
    }
    let mut status = status_schema();
    if let Some(obj) = status.as_object_mut() {
        obj.insert(
            "description".into(),
            json!(
                "What the Fabric composition function last saw of the machine's Proxmox resources."
            ),
        );
    }
    let version = json!({
        "name": VERSION,
        "served": true,
        "referenceable": true,
        "additionalPrinterColumns": [
            {"name": "Hostname", "type": "string", "jsonPath": ".spec.hostname"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "VMID", "type": "integer", "jsonPath": ".status.vmId"},
            {"name": "Node", "type": "string", "jsonPath": ".status.node"},
            {"name": "IP", "type": "string", "jsonPath": ".status.ipAddresses[0]"},
        ],
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "description": "A NixOS virtual machine on Proxmox, declared in Git and kept that way by Fabric.",
                "properties": {"spec": spec, "status": status},
                "required": ["spec"],
            },
        },
    });
    match kind {
        MachineKind::Machine => json!({
            "apiVersion": "apiextensions.crossplane.io/v2",
            "kind": "CompositeResourceDefinition",
            "metadata": {"name": format!("machines.{API_GROUP}")},
            "spec": {
                "group": API_GROUP,
                "names": {"kind": "Machine", "plural": "machines", "categories": ["crossplane", "fabric"]},
                "scope": "Namespaced",
                "versions": [version],
            },
        }),
        // Claims and LegacyCluster exist only in apiextensions.crossplane.io/v1:
        // the v2 XRD's CRD allows scope Namespaced or Cluster and rejects
        // claimNames by a CEL rule, so a v2 legacy XRD never installs.
        MachineKind::XMachine => json!({
            "apiVersion": "apiextensions.crossplane.io/v1",
            "kind": "CompositeResourceDefinition",
            "metadata": {"name": format!("xmachines.{API_GROUP}")},
            "spec": {
                "group": API_GROUP,
                "names": {"kind": "XMachine", "plural": "xmachines", "categories": ["crossplane", "fabric"]},
                "claimNames": {"kind": "Machine", "plural": "machines"},
                "scope": "LegacyCluster",
                "versions": [version],
            },
        }),
    }
}

/// The CRD of the function input, for `package/input/`.
pub fn input_crd() -> Json {
    let mut schema = structural(schema_for::<InputSpec>());
    if let Some(obj) = schema.as_object_mut() {
        let mut props = Map::new();
        props.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": "fabric.kubelize.io/v1beta1"}),
        );
        props.insert(
            "kind".into(),
            json!({"type": "string", "description": "Input"}),
        );
        props.insert("metadata".into(), json!({"type": "object"}));
        if let Some(Json::Object(own)) = obj.remove("properties") {
            props.extend(own);
        }
        obj.insert("properties".into(), Json::Object(props));
        obj.insert(
            "description".into(),
            json!("How function-fabric composes Machines: the backend, the provider config, Proxmox defaults and template VM ids."),
        );
    }
    let (group, version) = input::API_VERSION
        .split_once('/')
        .unwrap_or((input::API_VERSION, ""));
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("inputs.{group}")},
        "spec": {
            "group": group,
            "names": {
                "categories": ["crossplane"],
                "kind": input::KIND,
                "listKind": "InputList",
                "plural": "inputs",
                "singular": "input",
            },
            "scope": "Namespaced",
            "versions": [{
                "name": version,
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    })
}

/// YAML for a generated file, with a header saying how to regenerate it.
pub fn to_yaml(value: &Json) -> Result<String, String> {
    let body = serde_saphyr::to_string(value).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Generated from the Rust types by fabric-function (src/xrd.rs). Do not edit:\n\
         # UPDATE_XRD=1 cargo test -p fabric-function --test tests xrd\n{body}"
    ))
}

/// Every generated file, by path relative to the workspace root.
pub fn files() -> Result<Vec<(&'static str, String)>, String> {
    Ok(vec![
        (
            "apis/machines/definition.yaml",
            to_yaml(&machine_xrd(MachineKind::Machine))?,
        ),
        (
            "apis/xmachines/definition.yaml",
            to_yaml(&machine_xrd(MachineKind::XMachine))?,
        ),
        (
            "package/input/fabric.kubelize.io_inputs.yaml",
            to_yaml(&input_crd())?,
        ),
    ])
}

/// Where a schema is not structural: `path: why`, empty when it is.
pub fn structural_problems(schema: &Json, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(obj) = schema.as_object() else {
        return vec![format!("{path}: not a schema object")];
    };
    for bad in [
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "$ref",
        "const",
        "nullable",
        "uniqueItems",
    ] {
        if obj.contains_key(bad) {
            out.push(format!("{path}: has {bad}"));
        }
    }
    if let Some(f) = obj.get("format").and_then(Json::as_str) {
        if !KUBERNETES_FORMATS.contains(&f) {
            out.push(format!("{path}: format {f} is not a Kubernetes format"));
        }
    }
    let ty = obj.get("type").and_then(Json::as_str);
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Json::Bool(true));
    if ty.is_none() && !preserve {
        out.push(format!("{path}: has no type"));
    }
    match obj.get("additionalProperties") {
        None => {}
        Some(Json::Object(_)) if obj.contains_key("properties") => out.push(format!(
            "{path}: has both properties and additionalProperties"
        )),
        Some(Json::Object(inner)) => out.extend(structural_problems(
            &Json::Object(inner.clone()),
            &format!("{path}.*"),
        )),
        Some(other) => out.push(format!("{path}: additionalProperties is {other}")),
    }
    if let Some(Json::Object(props)) = obj.get("properties") {
        for (k, v) in props {
            out.extend(structural_problems(v, &format!("{path}.{k}")));
        }
    }
    if let Some(items) = obj.get("items") {
        out.extend(structural_problems(items, &format!("{path}[]")));
    } else if ty == Some("array") {
        out.push(format!("{path}: array without items"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structural_drops_what_kubernetes_refuses_and_keeps_the_rest() {
        let s = structural(json!({
            "type": "object", "additionalProperties": false, "title": "X",
            "properties": {
                "n": {"type": "integer", "format": "uint32", "minimum": 1, "maximum": 4, "default": 1, "description": "d"},
                "i": {"type": "integer", "format": "int32"},
                "c": {"type": "string", "const": "only"},
                "m": {"type": "object", "additionalProperties": {"type": "string"}},
                "d": {"type": "object", "default": {"additionalProperties": false}},
            },
        }));
        assert_eq!(
            s,
            json!({
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1, "description": "d"},
                    "i": {"type": "integer", "format": "int32"},
                    "c": {"type": "string", "enum": ["only"]},
                    "m": {"type": "object", "additionalProperties": {"type": "string"}},
                    "d": {"type": "object", "default": {"additionalProperties": false}},
                },
            })
        );
    }

    #[test]
    fn the_checker_finds_what_is_not_structural() {
        let p = structural_problems(
            &json!({"type": "object", "properties": {
                "a": {"anyOf": [{"type": "string"}]},
                "b": {"type": "array"},
                "c": {"type": "integer", "format": "uint8"},
            }}),
            "",
        );
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
