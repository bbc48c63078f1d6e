//! Backend `bpg`: provider-proxmox-bpg's `EnvironmentFile`s (the cloud-init
//! snippets: user-data, meta-data and, for a static network,
//! network-config) and `EnvironmentVM` (the clone of the NixOS template).
//!
//! All three of Fabric's files are uploaded because Proxmox writes its own
//! meta-data (an instance-id hashed from user-data and network) and
//! network-config for every `cicustom` part left unset.
//!
//! The order matters: Proxmox must hold the snippets before the VM that
//! names them is created, so the VM is composed only once every snippet is
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

/// Composition name of the user-data snippet.
pub const SNIPPET: &str = "user-data";
/// Composition name of the meta-data snippet.
pub const META_DATA: &str = "meta-data";
/// Composition name of the network-config snippet (static networks only).
pub const NETWORK_CONFIG: &str = "network-config";
/// Composition name of the VM.
pub const VM: &str = "vm";

/// `initialization[0]` field of the VM that names each snippet.
fn file_id_field(snippet: &str) -> &'static str {
    match snippet {
        SNIPPET => "userDataFileId",
        META_DATA => "metaDataFileId",
        _ => "networkDataFileId",
    }
}

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

/// Composes the snippets, and the VM once every snippet is in Proxmox.
pub fn compose(plan: &Plan, observed: &Observed) -> Composed {
    let vm = observed.get(VM);
    let mut resources = Vec::new();
    // Volume ids of the snippets the provider reports Ready, by VM field.
    let mut uploaded: Vec<(&'static str, String)> = Vec::new();
    let mut waiting: Option<String> = None;
    let mut user_data_reported = None;
    for (name, file_name, content) in plan.snippet_files() {
        let snippet = observed.get(name);
        let ready = snippet.is_some_and(|s| s.ready);
        let reported = snippet
            .and_then(|s| s.at_provider("/id"))
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|id| !id.is_empty());
        if name == SNIPPET {
            user_data_reported.clone_from(&reported);
        }
        match (snippet, ready, reported) {
            (Some(_), true, Some(id)) => uploaded.push((file_id_field(name), id)),
            (None, _, _) => {
                waiting.get_or_insert_with(|| {
                    format!(
                        "uploading the cloud-init snippet {file_name} to {} on node {}",
                        plan.snippet_datastore, plan.node
                    )
                });
            }
            (Some(_), false, _) => {
                waiting.get_or_insert_with(|| {
                    format!(
                        "waiting for the cloud-init snippet {file_name} to be Ready on node {}",
                        plan.node
                    )
                });
            }
            (Some(_), true, None) => {
                waiting.get_or_insert_with(|| {
                    format!(
                        "the cloud-init snippet {file_name} is Ready but the provider has not reported its volume id yet"
                    )
                });
            }
        }
        resources.push(Desired {
            name,
            object: snippet_object(plan, &file_name, content),
            ready,
        });
    }

    // A VM keeps the file ids it was created with: they are create-time
    // only, and a VM that exists must stay in desired state even if a
    // snippet is momentarily not Ready. One created before Fabric uploaded
    // meta-data and network-config keeps reading Proxmox's own. The
    // observed spec holds the ids as composed, escaped; they are escaped
    // again with the rest of the VM.
    let file_ids: Vec<(&'static str, String)> = match vm {
        Some(v) => {
            let created = |field: &str| {
                v.field(&format!("/spec/initProvider/initialization/0/{field}"))
                    .and_then(|v| v.as_str().map(terraform_template::unescape))
            };
            let user = created("userDataFileId")
                .or_else(|| user_data_reported.clone())
                .unwrap_or_else(|| plan.expected_file_id());
            let mut ids = vec![("userDataFileId", user)];
            for field in ["metaDataFileId", "networkDataFileId"] {
                if let Some(id) = created(field) {
                    ids.push((field, id));
                }
            }
            ids
        }
        None => match waiting {
            None => uploaded,
            Some(message) => {
                return Composed {
                    resources,
                    phase: Phase::WaitingForSnippet,
                    vm_ready: false,
                    vm_id: None,
                    ip_addresses: Vec::new(),
                    user_data_file_id: user_data_reported,
                    message,
                };
            }
        },
    };
    let user_data_file_id = file_ids
        .iter()
        .find(|(field, _)| *field == "userDataFileId")
        .map(|(_, id)| id.clone());

    let vm_ready = vm.is_some_and(|v| v.ready);
    resources.push(Desired {
        name: VM,
        object: vm_object(plan, &file_ids),
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
        user_data_file_id,
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

/// The EnvironmentFile holding one cloud-init file as a snippet, escaped
/// for Terraform.
pub fn snippet_object(plan: &Plan, file_name: &str, content: &str) -> Json {
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
                            ("data", text(content)),
                            ("fileName", text(file_name)),
                        ])),
                    )]),
                ),
            ]),
        ),
    ]))
}

/// The EnvironmentVM cloned from the template, reading the snippets named
/// by `file_ids` (`initialization[0]` field, volume id as Proxmox names
/// it, unescaped); escaped for Terraform.
pub fn vm_object(plan: &Plan, file_ids: &[(&str, String)]) -> Json {
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
    for (field, id) in file_ids {
        init.insert((*field).into(), text(id));
    }
    // bpg documents networkDataFileId as conflicting with ipConfig, and
    // Proxmox reads no ipconfig0 once cicustom names a network file:
    // Fabric's network-config carries addresses, routes and DNS. Without
    // one (DHCP), Proxmox writes a network-config from these.
    if !init.contains_key("networkDataFileId") {
        init.insert("ipConfig".into(), list(ip_config(plan)));
        if let Some(dns) = dns(plan) {
            init.insert("dns".into(), list(dns));
        }
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
                                // The template's own boot disk: a slot the
                                // clone lacks would get a new, empty disk.
                                ("interface", text(&plan.boot_disk)),
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
