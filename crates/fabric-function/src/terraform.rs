//! Backend `terraform`: one provider-terraform `Workspace` whose inline
//! module declares the bpg Terraform provider's snippet files and VM, with
//! the same content as backend `bpg`.
//!
//! The module is JSON (`inlineFormat: JSON`), built as a value and
//! serialised, so no HCL is templated by hand. Terraform orders the file
//! before the VM itself (the VM references the file's id), so there is no
//! WaitingForSnippet phase here. Sizes and placement are Terraform variables
//! in `varmap`; nothing secret is a variable. Create-time-only attributes
//! are listed in `lifecycle.ignore_changes`, the Terraform counterpart of
//! `initProvider`.
//!
//! Terraform reads every string of the module as a template, so every
//! literal taken from the plan is escaped ([`crate::terraform_template`]);
//! the `${var.…}` and resource references are the module's own expressions.
//! `varmap` values are variable values, which Terraform does not template:
//! they stay as they are.

use fabric_model::status::Phase;
use serde_json::{json, Map, Value as Json};

use crate::observed::{as_u32, guest_addresses, Observed};
use crate::plan::{Plan, Scope};
use crate::terraform_template::escape;
use crate::{Composed, Desired};

/// Composition name of the workspace.
pub const WORKSPACE: &str = "workspace";

/// `apiVersion` of Workspace for the scope.
pub fn workspace_api_version(scope: Scope) -> &'static str {
    match scope {
        Scope::Namespaced => "tf.m.upbound.io/v1beta1",
        Scope::Cluster => "tf.upbound.io/v1beta1",
    }
}

/// Composes the workspace.
pub fn compose(plan: &Plan, observed: &Observed) -> Composed {
    let ws = observed.get(WORKSPACE);
    let ready = ws.is_some_and(|w| w.ready);
    let output = |name: &str| ws.and_then(|w| w.at_provider(&format!("/outputs/{name}")));
    let vm_id = output("vm_id").and_then(|v| as_u32(&v));
    let ip_addresses = guest_addresses(&[output("ipv4_addresses"), output("ipv6_addresses")]);
    let user_data_file_id =
        output("user_data_file_id").and_then(|v| v.as_str().map(str::to_string));
    let (phase, message) = if ready {
        (Phase::Running, plan.running_message(vm_id))
    } else {
        (
            Phase::Provisioning,
            format!(
                "applying the Terraform workspace: snippet {} and a clone of template {} on node {}",
                plan.file_name, plan.template_vm_id, plan.node
            ),
        )
    };
    Composed {
        resources: vec![Desired {
            name: WORKSPACE,
            object: workspace_object(plan),
            ready,
        }],
        phase,
        vm_ready: ready,
        vm_id,
        ip_addresses,
        user_data_file_id,
        message,
    }
}

/// The Workspace.
pub fn workspace_object(plan: &Plan) -> Json {
    json!({
        "apiVersion": workspace_api_version(plan.scope),
        "kind": "Workspace",
        "spec": {
            "providerConfigRef": plan.provider_config_ref(),
            "forProvider": {
                "source": "Inline",
                "inlineFormat": "JSON",
                "module": module(plan).to_string(),
                "varmap": variables(plan),
            },
        },
    })
}

/// Values a user may want to read or tune in the Workspace; none secret.
pub fn variables(plan: &Plan) -> Json {
    let mut v = Map::new();
    v.insert("vm_name".into(), json!(plan.hostname));
    v.insert("node_name".into(), json!(plan.node));
    v.insert("template_vm_id".into(), json!(plan.template_vm_id));
    v.insert("cores".into(), json!(plan.cores));
    v.insert("sockets".into(), json!(plan.sockets));
    v.insert("memory_mib".into(), json!(plan.memory_mib));
    v.insert("disk_gib".into(), json!(plan.disk_gib));
    v.insert("datastore_id".into(), json!(plan.storage));
    v.insert("snippet_datastore_id".into(), json!(plan.snippet_datastore));
    v.insert("bridge".into(), json!(plan.bridge));
    v.insert("tags".into(), json!(plan.tags));
    Json::Object(v)
}

/// Every attribute of `network_device`'s object type in
/// bpg/terraform-provider-proxmox 0.111.1.
const NETWORK_DEVICE_ATTRIBUTES: [&str; 11] = [
    "bridge",
    "disconnected",
    "enabled",
    "firewall",
    "mac_address",
    "model",
    "mtu",
    "queues",
    "rate_limit",
    "trunks",
    "vlan_id",
];

/// The root module, as main.tf.json.
pub fn module(plan: &Plan) -> Json {
    let var = |name: &str, ty: &str| (name.to_string(), json!({"type": ty}));
    let variables: Map<String, Json> = [
        var("vm_name", "string"),
        var("node_name", "string"),
        var("template_vm_id", "number"),
        var("cores", "number"),
        var("sockets", "number"),
        var("memory_mib", "number"),
        var("disk_gib", "number"),
        var("datastore_id", "string"),
        var("snippet_datastore_id", "string"),
        var("bridge", "string"),
        var("tags", "list(string)"),
    ]
    .into_iter()
    .collect();

    // `network_device` is an attribute of type list(object) in the
    // provider's schema (SDK ConfigModeAttr), not a block: in JSON it is a
    // list, and each object names every attribute of the type, null for
    // those left to the provider's defaults. `terraform validate` against
    // the provider (tftest/) checks this list.
    let mut nic: Map<String, Json> = NETWORK_DEVICE_ATTRIBUTES
        .iter()
        .map(|a| (a.to_string(), Json::Null))
        .collect();
    nic.insert("bridge".into(), json!("${var.bridge}"));
    nic.insert("model".into(), json!("virtio"));
    if let Some(vlan) = plan.vlan {
        nic.insert("vlan_id".into(), json!(vlan));
    }
    if let Some(mac) = &plan.mac {
        nic.insert("mac_address".into(), json!(escape(mac)));
    }

    let addr = |a: &str, gw: &Option<String>| {
        let mut m = Map::new();
        m.insert("address".into(), json!(escape(a)));
        if let Some(g) = gw {
            m.insert("gateway".into(), json!(escape(g)));
        }
        Json::Object(m)
    };
    let mut ip_config = Map::new();
    match &plan.ipv4 {
        Some((a, gw)) => ip_config.insert("ipv4".into(), addr(a, gw)),
        None => ip_config.insert("ipv4".into(), json!({"address": "dhcp"})),
    };
    if let Some((a, gw)) = &plan.ipv6 {
        ip_config.insert("ipv6".into(), addr(a, gw));
    }
    // One file resource per cloud-init file, as backend bpg uploads them;
    // Proxmox would write its own meta-data and network-config otherwise.
    let mut files = Map::new();
    let mut init = Map::new();
    init.insert("datastore_id".into(), json!("${var.datastore_id}"));
    for (name, file_name, content) in plan.snippet_files() {
        let resource = name.replace('-', "_");
        files.insert(
            resource.clone(),
            json!({
                "content_type": "snippets",
                "datastore_id": "${var.snippet_datastore_id}",
                "node_name": "${var.node_name}",
                "source_raw": {
                    "data": escape(content),
                    "file_name": escape(&file_name),
                },
                "lifecycle": {"ignore_changes": ["source_raw"]},
            }),
        );
        let field = match name {
            "user-data" => "user_data_file_id",
            "meta-data" => "meta_data_file_id",
            _ => "network_data_file_id",
        };
        init.insert(
            field.into(),
            json!(format!(
                "${{proxmox_virtual_environment_file.{resource}.id}}"
            )),
        );
    }
    // With Fabric's network-config, Proxmox reads no ipconfig0 (and bpg
    // documents the two as conflicting).
    if plan.network_config.is_none() {
        init.insert("ip_config".into(), Json::Object(ip_config));
    }
    if plan.network_config.is_none() && (!plan.dns.is_empty() || !plan.search_domains.is_empty()) {
        let mut dns = Map::new();
        if !plan.dns.is_empty() {
            let servers: Vec<String> = plan.dns.iter().map(|d| escape(d)).collect();
            dns.insert("servers".into(), json!(servers));
        }
        if !plan.search_domains.is_empty() {
            dns.insert(
                "domain".into(),
                json!(escape(&plan.search_domains.join(" "))),
            );
        }
        init.insert("dns".into(), Json::Object(dns));
    }

    json!({
        "terraform": {
            "required_providers": {
                "proxmox": {"source": "bpg/proxmox"},
            },
        },
        "variable": variables,
        "resource": {
            "proxmox_virtual_environment_file": files,
            "proxmox_virtual_environment_vm": {
                "machine": {
                    "name": "${var.vm_name}",
                    "node_name": "${var.node_name}",
                    "description": escape(&plan.description()),
                    "tags": "${var.tags}",
                    "on_boot": true,
                    "started": true,
                    "agent": {"enabled": true},
                    "operating_system": {"type": "l26"},
                    "clone": {
                        "vm_id": "${var.template_vm_id}",
                        "full": true,
                        "datastore_id": "${var.datastore_id}",
                    },
                    "cpu": {"cores": "${var.cores}", "sockets": "${var.sockets}"},
                    "memory": {"dedicated": "${var.memory_mib}"},
                    "disk": {
                        // The template's own boot disk: a slot the clone
                        // lacks would get a new, empty disk.
                        "interface": plan.boot_disk,
                        "datastore_id": "${var.datastore_id}",
                        "size": "${var.disk_gib}",
                    },
                    "network_device": [Json::Object(nic)],
                    "initialization": Json::Object(init),
                    "lifecycle": {"ignore_changes": ["clone", "initialization"]},
                },
            },
        },
        "output": {
            "vm_id": {"value": "${proxmox_virtual_environment_vm.machine.vm_id}"},
            "ipv4_addresses": {"value": "${proxmox_virtual_environment_vm.machine.ipv4_addresses}"},
            "ipv6_addresses": {"value": "${proxmox_virtual_environment_vm.machine.ipv6_addresses}"},
            "user_data_file_id": {"value": "${proxmox_virtual_environment_file.user_data.id}"},
        },
    })
}
