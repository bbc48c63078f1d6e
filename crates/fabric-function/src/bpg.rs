//! Backend `bpg`: provider-proxmox-bpg's `EnvironmentFile` (the cloud-init
//! user-data snippet) and `EnvironmentVM` (the clone of the NixOS template).
//!
//! The order matters: Proxmox must hold the snippet before the VM that
//! names it is created, so the VM is composed only once the snippet is
//! observed Ready with its volume id. Once the VM exists it is composed on
//! every call, whatever the snippet does: desired state left out is deleted.
//!
//! Clone, initialization and the snippet's content are create-time only
//! (changing them later wedges the resource), so they go in
//! `spec.initProvider`, which the provider reads at create and ignores after.
//!
//! The provider hands both parameter blocks to Terraform as a template, so
//! every string in them is escaped ([`crate::terraform_template`]).

use fabric_model::status::Phase;
use serde_json::{Map, Value as Json};

use crate::observed::{as_u32, guest_addresses, Observed};
use crate::plan::{Plan, Scope};
use crate::terraform_template;
use crate::{Composed, Desired};

/// Composition name of the snippet.
pub const SNIPPET: &str = "user-data";
/// Composition name of the VM.
pub const VM: &str = "vm";

/// `apiVersion` of EnvironmentFile for the scope.
pub fn file_api_version(scope: Scope) -> &'static str {
    match scope {
        Scope::Namespaced => "virtualenvironmentfile.proxmoxbpg.m.crossplane.io/v1alpha1",
        Scope::Cluster => "virtualenvironmentfile.proxmoxbpg.crossplane.io/v1alpha1",
    }
}

/// `apiVersion` of EnvironmentVM for the scope.
pub fn vm_api_version(scope: Scope) -> &'static str {
    match scope {
        Scope::Namespaced => "virtualenvironmentvm.proxmoxbpg.m.crossplane.io/v1alpha1",
        Scope::Cluster => "virtualenvironmentvm.proxmoxbpg.crossplane.io/v1alpha1",
    }
}

/// Composes the snippet, and the VM once the snippet is in Proxmox.
pub fn compose(plan: &Plan, observed: &Observed) -> Composed {
    let snippet = observed.get(SNIPPET);
    let vm = observed.get(VM);
    let snippet_ready = snippet.is_some_and(|s| s.ready);
    let reported_id = snippet
        .and_then(|s| s.at_provider("/id"))
        .and_then(|v| v.as_str().map(str::to_string))
        .filter(|id| !id.is_empty());

    let mut resources = vec![Desired {
        name: SNIPPET,
        object: snippet_object(plan),
        ready: snippet_ready,
    }];

    // The VM keeps the file id it was created with: it is create-time only,
    // and a VM that exists must stay in desired state even if the snippet
    // is momentarily not Ready. The observed spec holds it as composed,
    // escaped; it is escaped again with the rest of the VM.
    let created_with = vm
        .and_then(|v| v.field("/spec/initProvider/initialization/0/userDataFileId"))
        .and_then(|v| v.as_str().map(terraform_template::unescape));
    let file_id = match (&created_with, snippet_ready, &reported_id) {
        (Some(id), _, _) => Some(id.clone()),
        (None, true, Some(id)) => Some(id.clone()),
        (None, _, _) if vm.is_some() => Some(plan.expected_file_id()),
        _ => None,
    };

    let Some(file_id) = file_id else {
        let message = match (snippet, snippet_ready) {
            (None, _) => format!(
                "uploading the cloud-init snippet {} to {} on node {}",
                plan.file_name, plan.snippet_datastore, plan.node
            ),
            (Some(_), false) => format!(
                "waiting for the cloud-init snippet {} to be Ready on node {}",
                plan.file_name, plan.node
            ),
            (Some(_), true) => format!(
                "the cloud-init snippet {} is Ready but the provider has not reported its volume id yet",
                plan.file_name
            ),
        };
        return Composed {
            resources,
            phase: Phase::WaitingForSnippet,
            vm_ready: false,
            vm_id: None,
            ip_addresses: Vec::new(),
            user_data_file_id: reported_id,
            message,
        };
    };

    let vm_ready = vm.is_some_and(|v| v.ready);
    resources.push(Desired {
        name: VM,
        object: vm_object(plan, &file_id),
        ready: vm_ready,
    });
    let vm_id = vm.and_then(|v| {
        v.at_provider("/vmId")
            .and_then(|v| as_u32(&v))
            .or_else(|| v.at_provider("/id").and_then(|v| as_u32(&v)))
    });
    let ip_addresses = vm
        .map(|v| {
            guest_addresses(&[
                v.at_provider("/ipv4Addresses"),
                v.at_provider("/ipv6Addresses"),
            ])
        })
        .unwrap_or_default();
    let (phase, message) = if vm_ready {
        (Phase::Running, plan.running_message(vm_id))
    } else {
        (
            Phase::Provisioning,
            format!(
                "cloning template {} into VM {} on node {}",
                plan.template_vm_id, plan.hostname, plan.node
            ),
        )
    };
    Composed {
        resources,
        phase,
        vm_ready,
        vm_id,
        ip_addresses,
        user_data_file_id: Some(file_id),
        message,
    }
}

/// An object from fields, moving the values in. (`json!` would serialise
/// every interpolated `Value` again, a deep copy per field.)
fn obj<const N: usize>(fields: [(&str, Json); N]) -> Json {
    Json::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn list(item: Json) -> Json {
    Json::Array(vec![item])
}

fn text(s: &str) -> Json {
    Json::String(s.to_string())
}

/// The EnvironmentFile holding the user-data snippet, escaped for Terraform.
pub fn snippet_object(plan: &Plan) -> Json {
    terraform_template::escape_parameters(obj([
        ("apiVersion", text(file_api_version(plan.scope))),
        ("kind", text("EnvironmentFile")),
        (
            "spec",
            obj([
                ("providerConfigRef", plan.provider_config_ref()),
                (
                    "forProvider",
                    obj([
                        ("contentType", text("snippets")),
                        ("datastoreId", text(&plan.snippet_datastore)),
                        ("nodeName", text(&plan.node)),
                    ]),
                ),
                (
                    "initProvider",
                    obj([(
                        "sourceRaw",
                        list(obj([
                            ("data", text(&plan.user_data)),
                            ("fileName", text(&plan.file_name)),
                        ])),
                    )]),
                ),
            ]),
        ),
    ]))
}

/// The EnvironmentVM cloned from the template, reading `file_id` (as
/// Proxmox names it, unescaped) as user-data; escaped for Terraform.
pub fn vm_object(plan: &Plan, file_id: &str) -> Json {
    let mut nic = Map::new();
    nic.insert("bridge".into(), text(&plan.bridge));
    nic.insert("model".into(), text("virtio"));
    if let Some(vlan) = plan.vlan {
        nic.insert("vlanId".into(), Json::from(vlan));
    }
    if let Some(mac) = &plan.mac {
        nic.insert("macAddress".into(), text(mac));
    }

    let mut init = Map::new();
    init.insert("datastoreId".into(), text(&plan.storage));
    init.insert("userDataFileId".into(), text(file_id));
    init.insert("ipConfig".into(), list(ip_config(plan)));
    if let Some(dns) = dns(plan) {
        init.insert("dns".into(), list(dns));
    }

    let tags = Json::Array(plan.tags.iter().map(|t| text(t)).collect());
    terraform_template::escape_parameters(obj([
        ("apiVersion", text(vm_api_version(plan.scope))),
        ("kind", text("EnvironmentVM")),
        (
            "spec",
            obj([
                ("providerConfigRef", plan.provider_config_ref()),
                (
                    "forProvider",
                    obj([
                        ("name", text(&plan.hostname)),
                        ("nodeName", text(&plan.node)),
                        ("description", Json::String(plan.description())),
                        ("tags", tags),
                        ("onBoot", Json::Bool(true)),
                        ("started", Json::Bool(true)),
                        ("agent", list(obj([("enabled", Json::Bool(true))]))),
                        ("operatingSystem", list(obj([("type", text("l26"))]))),
                        (
                            "cpu",
                            list(obj([
                                ("cores", Json::from(plan.cores)),
                                ("sockets", Json::from(plan.sockets)),
                            ])),
                        ),
                        (
                            "memory",
                            list(obj([("dedicated", Json::from(plan.memory_mib))])),
                        ),
                        (
                            "disk",
                            list(obj([
                                ("interface", text("scsi0")),
                                ("datastoreId", text(&plan.storage)),
                                ("size", Json::from(plan.disk_gib)),
                            ])),
                        ),
                        ("networkDevice", list(Json::Object(nic))),
                    ]),
                ),
                (
                    "initProvider",
                    obj([
                        (
                            "clone",
                            list(obj([
                                ("vmId", Json::from(plan.template_vm_id)),
                                ("full", Json::Bool(true)),
                                ("datastoreId", text(&plan.storage)),
                            ])),
                        ),
                        ("initialization", list(Json::Object(init))),
                    ]),
                ),
            ]),
        ),
    ]))
}

/// `initialization[0].ipConfig[0]`: the static addresses, or DHCP.
fn ip_config(plan: &Plan) -> Json {
    let entry = |addr: &str, gw: &Option<String>| {
        let mut m = Map::new();
        m.insert("address".into(), text(addr));
        if let Some(g) = gw {
            m.insert("gateway".into(), text(g));
        }
        Json::Object(m)
    };
    let mut cfg = Map::new();
    match &plan.ipv4 {
        Some((addr, gw)) => cfg.insert("ipv4".into(), list(entry(addr, gw))),
        None => cfg.insert("ipv4".into(), list(obj([("address", text("dhcp"))]))),
    };
    if let Some((addr, gw)) = &plan.ipv6 {
        cfg.insert("ipv6".into(), list(entry(addr, gw)));
    }
    Json::Object(cfg)
}

/// `initialization[0].dns[0]`, when there is anything to say.
fn dns(plan: &Plan) -> Option<Json> {
    if plan.dns.is_empty() && plan.search_domains.is_empty() {
        return None;
    }
    let mut m = Map::new();
    if !plan.dns.is_empty() {
        m.insert(
            "servers".into(),
            Json::Array(plan.dns.iter().map(|d| text(d)).collect()),
        );
    }
    if !plan.search_domains.is_empty() {
        // Proxmox keeps search domains as one space-separated string.
        m.insert("domain".into(), Json::String(plan.search_domains.join(" ")));
    }
    Some(Json::Object(m))
}
