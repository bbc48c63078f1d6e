//! The function's input: the `fabric.kubelize.io/v1beta1` `Input` a
//! Composition's pipeline step carries.
//!
//! Crossplane never validates function input, so this module does, against
//! the schema generated from [`InputSpec`] (the same schema the package's
//! input CRD ships), and every problem names its field path under `input.`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use fabric_model::schema;
use fabric_model::source::Node;
use fabric_model::Diagnostic;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// `apiVersion` of the input.
pub const API_VERSION: &str = "fabric.kubelize.io/v1beta1";
/// `kind` of the input.
pub const KIND: &str = "Input";

/// How Fabric composes a Machine: which backend, which provider config,
/// Proxmox defaults and the template VM ids.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputSpec {
    /// Which provider composes the machine: bpg (provider-proxmox-bpg
    /// EnvironmentFile and EnvironmentVM) or terraform (one provider-terraform
    /// Workspace with the bpg Terraform provider).
    #[serde(default)]
    pub backend: Backend,

    /// The provider config every composed resource uses.
    #[serde(default)]
    pub provider_config_ref: ProviderConfigRef,

    /// Proxmox defaults for machines whose spec.proxmox does not say.
    #[serde(default)]
    pub proxmox: ProxmoxDefaults,

    /// Template VMs by Machine spec.image, e.g. nixos-template: {vmId: 9000}.
    #[serde(default)]
    pub templates: BTreeMap<String, Template>,

    /// First-boot bootstrap settings.
    #[serde(default)]
    pub bootstrap: BootstrapInput,
}

/// Composition backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Backend {
    // Variants carry no doc comments: schemars would turn the enum into a
    // oneOf, which a Kubernetes structural schema cannot express.
    #[default]
    Bpg,
    Terraform,
}

impl Backend {
    /// The backend as written in the input.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Bpg => "bpg",
            Backend::Terraform => "terraform",
        }
    }
}

/// A reference to a provider config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderConfigRef {
    /// ClusterProviderConfig or ProviderConfig (namespaced Machines only;
    /// a legacy XMachine's resources name their provider config alone).
    #[serde(default = "default_provider_config_kind")]
    pub kind: ProviderConfigKind,
    /// Name of the provider config.
    #[serde(default = "default_provider_config_name")]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl Default for ProviderConfigRef {
    fn default() -> Self {
        Self {
            kind: default_provider_config_kind(),
            name: default_provider_config_name(),
        }
    }
}

fn default_provider_config_kind() -> ProviderConfigKind {
    ProviderConfigKind::ClusterProviderConfig
}

fn default_provider_config_name() -> String {
    "default".into()
}

/// Provider config kinds of Crossplane v2 namespaced managed resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum ProviderConfigKind {
    ClusterProviderConfig,
    ProviderConfig,
}

impl ProviderConfigKind {
    /// The kind as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderConfigKind::ClusterProviderConfig => "ClusterProviderConfig",
            ProviderConfigKind::ProviderConfig => "ProviderConfig",
        }
    }
}

/// Proxmox defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxmoxDefaults {
    /// Node for machines whose spec.proxmox.node is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub node: Option<String>,
    /// VM disk datastore for machines whose spec.proxmox.storage is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub storage: Option<String>,
    /// NIC bridge for machines whose spec.proxmox.bridge is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub bridge: Option<String>,
    /// Datastore that holds the cloud-init user-data snippets. It must have
    /// the 'snippets' content type enabled.
    #[serde(default = "default_snippet_datastore")]
    #[schemars(length(min = 1))]
    pub snippet_datastore: String,
}

impl Default for ProxmoxDefaults {
    fn default() -> Self {
        Self {
            node: None,
            storage: None,
            bridge: None,
            snippet_datastore: default_snippet_datastore(),
        }
    }
}

fn default_snippet_datastore() -> String {
    "local".into()
}

/// A Proxmox template VM id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct TemplateId(#[schemars(range(min = 100, max = 999_999_999))] pub u32);

/// A template VM a Machine's spec.image names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Template {
    /// Proxmox VM id of the template.
    pub vm_id: TemplateId,
    /// The disk the template boots from, as Proxmox names it. The
    /// Machine's spec.disk.size resizes this disk; a name the template does
    /// not have would get a new, empty disk instead. Fabric's own template
    /// (nixpkgs proxmox-image.nix) boots from virtio0.
    #[serde(default = "default_boot_disk")]
    pub boot_disk: DiskInterface,
}

impl Template {
    /// A template that boots from the default disk, as Fabric's own does.
    pub fn new(vm_id: u32) -> Self {
        Self {
            vm_id: TemplateId(vm_id),
            boot_disk: default_boot_disk(),
        }
    }
}

/// The disk Fabric's own template boots from: nixpkgs' proxmox-image.nix
/// writes its only disk as `drive-virtio0` into the VMA.
pub const DEFAULT_BOOT_DISK: &str = "virtio0";

fn default_boot_disk() -> DiskInterface {
    DiskInterface(DEFAULT_BOOT_DISK.into())
}

/// A Proxmox VM disk slot: `virtio0`-`virtio15`, `scsi0`-`scsi30`,
/// `sata0`-`sata5` or `ide0`-`ide3` (qemu-server's limits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DiskInterface(pub String);

impl DiskInterface {
    /// Every slot name qemu-server accepts for a disk.
    pub fn all() -> Vec<String> {
        [("virtio", 16), ("scsi", 31), ("sata", 6), ("ide", 4)]
            .into_iter()
            .flat_map(|(bus, n)| (0..n).map(move |i| format!("{bus}{i}")))
            .collect()
    }

    /// The slot name, e.g. `virtio0`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// An enum rather than a pattern: the Input's checker and the CRD both
// enforce it, and a typo gets a "did you mean".
impl JsonSchema for DiskInterface {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DiskInterface".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "enum": DiskInterface::all()})
    }
}

/// First-boot bootstrap settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapInput {
    /// Flake that provides the fabric command on VMs whose own flake does
    /// not, as for fabric render. Defaults to Fabric's own flake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub fabric_flake: Option<String>,
}

/// Generated once: schemars builds it anew on every call otherwise, which
/// cost more than the rest of reading the input.
static INPUT_SCHEMA: LazyLock<Json> = LazyLock::new(schema::schema_for::<InputSpec>);

/// Reads the pipeline step's input. No input means every default (and no
/// templates, so every image is then unknown).
pub fn parse(input: Option<&Json>) -> Result<InputSpec, Vec<Diagnostic>> {
    let Some(value) = input else {
        return Ok(InputSpec::default());
    };
    let node = Node::from_json(value);
    let mut diags = Vec::new();
    for (field, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        let got = value.get(field).and_then(Json::as_str);
        if got != Some(want) {
            let msg = match got {
                Some(g) => format!("{g} is not the Fabric input's {field}"),
                None => "is required but missing".into(),
            };
            diags.push(
                Diagnostic::error(format!("input.{field}"), None, msg)
                    .hint(format!("write {field}: {want}")),
            );
        }
    }
    let root = |path: &str, key: &str| {
        path == "input" && matches!(key, "apiVersion" | "kind" | "metadata")
    };
    let checked = schema::check(
        &node,
        &INPUT_SCHEMA,
        &schema::FieldPath::root("input"),
        &root,
        &mut diags,
    );
    explain_bare_template_ids(value, &mut diags);
    if !diags.is_empty() {
        return Err(diags);
    }
    let Some(checked) = checked else {
        return Ok(InputSpec::default());
    };
    serde_json::from_value(checked).map_err(|e| {
        vec![
            Diagnostic::error("input", None, format!("does not match the Input: {e}"))
                .hint("see package/input for the Input's fields"),
        ]
    })
}

/// Before templates said which disk they boot from, an entry was the bare
/// VM id (`nixos-template: 9000`). Say how to write it now.
fn explain_bare_template_ids(value: &Json, diags: &mut [Diagnostic]) {
    let Some(templates) = value.get("templates").and_then(Json::as_object) else {
        return;
    };
    for (name, entry) in templates {
        let Some(id) = entry.as_u64() else { continue };
        let path = format!("input.templates.{name}");
        for d in diags.iter_mut().filter(|d| d.path == path) {
            d.message = format!("{id} is a bare VM id; a template is now a mapping");
            d.hint = Some(format!(
                "write {name}: {{vmId: {id}}} (bootDisk defaults to {DEFAULT_BOOT_DISK}, the disk Fabric's template boots from)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(r: Result<InputSpec, Vec<Diagnostic>>) -> Vec<String> {
        match r {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_issue_example_reads_with_every_field() {
        let input = json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "backend": "terraform",
            "providerConfigRef": {"kind": "ProviderConfig", "name": "lab"},
            "proxmox": {"node": "pve1", "storage": "local-zfs", "bridge": "vmbr0", "snippetDatastore": "local"},
            "templates": {"nixos-template": {"vmId": 9000}, "other": {"vmId": 9001, "bootDisk": "scsi0"}},
            "bootstrap": {"fabricFlake": "github:kubelize/fabric"},
        });
        let spec = parse(Some(&input)).map_err(|d| format!("{d:?}"));
        let spec = spec.as_ref().map_err(String::as_str);
        assert_eq!(spec.map(|s| s.backend), Ok(Backend::Terraform));
        assert_eq!(
            spec.map(|s| s.templates.get("nixos-template").cloned()),
            Ok(Some(Template::new(9000)))
        );
        assert_eq!(
            spec.map(|s| s.templates["other"].boot_disk.as_str()),
            Ok("scsi0")
        );
        assert_eq!(
            spec.map(|s| s.provider_config_ref.kind),
            Ok(ProviderConfigKind::ProviderConfig)
        );
        assert_eq!(
            spec.map(|s| s.proxmox.node.clone()),
            Ok(Some("pve1".into()))
        );
    }

    #[test]
    fn defaults_apply_when_fields_are_left_out() {
        let spec = parse(Some(&json!({"apiVersion": API_VERSION, "kind": KIND}))).ok();
        assert_eq!(spec, Some(InputSpec::default()));
        assert_eq!(parse(None).ok(), Some(InputSpec::default()));
        let d = InputSpec::default();
        assert_eq!(d.backend, Backend::Bpg);
        assert_eq!(d.provider_config_ref.name, "default");
        assert_eq!(d.proxmox.snippet_datastore, "local");
    }

    #[test]
    fn problems_name_their_field_path() {
        let input = json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "backend": "terrafrom",
            "proxmox": {"snipetDatastore": "local"},
            "templates": {"nixos-template": {"vmId": 12}, "b": {"vmId": 9000, "bootDisk": "virtoi0"}, "c": 9000},
        });
        let m = messages(parse(Some(&input)));
        assert!(
            m.iter().any(|m| m.starts_with(
                "input.backend: terrafrom is not a known value (did you mean terraform?"
            )),
            "{m:?}"
        );
        assert!(
            m.iter().any(|m| m.starts_with(
                "input.proxmox.snipetDatastore: unknown field (did you mean snippetDatastore?"
            )),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|m| m.starts_with("input.templates.nixos-template.vmId: 12 is out of range")),
            "{m:?}"
        );
        assert!(
            m.iter().any(|m| m.starts_with(
                "input.templates.b.bootDisk: virtoi0 is not a known value (did you mean virtio0?"
            )),
            "{m:?}"
        );
        assert!(
            m.iter().any(|m| m.starts_with(
                "input.templates.c: 9000 is a bare VM id; a template is now a mapping (write c: {vmId: 9000}"
            )),
            "{m:?}"
        );
    }

    #[test]
    fn a_foreign_input_is_refused_by_kind_and_version() {
        let m = messages(parse(Some(
            &json!({"apiVersion": "pt.fn.crossplane.io/v1beta1", "kind": "Resources"}),
        )));
        assert!(
            m.iter()
                .any(|m| m.starts_with("input.apiVersion: pt.fn.crossplane.io/v1beta1 is not")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|m| m.starts_with("input.kind: Resources is not")),
            "{m:?}"
        );
    }
}
