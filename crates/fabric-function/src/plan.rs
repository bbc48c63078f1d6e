//! What to build for one machine, decided once and independent of the
//! backend: placement resolved against the input's defaults, the template
//! id, the network in Proxmox's terms, and the rendered user-data.

use fabric_model::{Diagnostic, Machine, MachineKind};
use serde_json::{json, Value as Json};

use crate::input::{InputSpec, ProviderConfigRef};
use crate::Failure;

/// Whether the XR and so its composed resources are namespaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A v2 `Machine`: namespaced `.m.` kinds in the XR's namespace.
    Namespaced,
    /// A legacy `XMachine`: cluster-scoped kinds.
    Cluster,
}

/// Everything a backend needs to compose one machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Namespaced or cluster-scoped kinds.
    pub scope: Scope,
    /// The input's provider config.
    pub provider_config: ProviderConfigRef,
    /// `namespace/name` (or `name`) of the XR, for descriptions.
    pub owner: String,
    /// VM name (the hostname).
    pub hostname: String,
    /// Proxmox node.
    pub node: String,
    /// VM disk datastore.
    pub storage: String,
    /// NIC bridge.
    pub bridge: String,
    /// NIC VLAN tag.
    pub vlan: Option<u16>,
    /// Pinned MAC, upper case as Proxmox shows it.
    pub mac: Option<String>,
    /// Datastore holding the snippet.
    pub snippet_datastore: String,
    /// The template VM to clone.
    pub template_vm_id: u32,
    /// The template's boot disk (`virtio0`), which the machine's disk size
    /// resizes.
    pub boot_disk: String,
    /// Cores per socket.
    pub cores: u32,
    /// Sockets.
    pub sockets: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Disk in GiB.
    pub disk_gib: u32,
    /// Static IPv4 `address/prefix` and gateway; `None` is DHCP.
    pub ipv4: Option<(String, Option<String>)>,
    /// Static IPv6 `address/prefix` and gateway.
    pub ipv6: Option<(String, Option<String>)>,
    /// DNS servers.
    pub dns: Vec<String>,
    /// DNS search domains.
    pub search_domains: Vec<String>,
    /// Proxmox tags, sorted (Proxmox sorts them; a different order would be
    /// a change on every reconcile).
    pub tags: Vec<String>,
    /// The user-data `fabric render` prints for this machine.
    pub user_data: String,
    /// The meta-data `fabric render --out` writes: Fabric's instance-id and
    /// local-hostname. Uploaded too, or Proxmox would write its own.
    pub meta_data: String,
    /// The network-config `fabric render --out` writes, for a static
    /// network; `None` with DHCP.
    pub network_config: Option<String>,
    /// Snippet file name: stable for the machine, unique between machines.
    pub file_name: String,
    /// cloud-init instance-id.
    pub instance_id: String,
}

/// The tag every Fabric VM carries, so they can be found in Proxmox.
pub const FABRIC_TAG: &str = "fabric";

impl Plan {
    /// The status message of a machine whose VM is running, in every backend.
    pub fn running_message(&self, vm_id: Option<u32>) -> String {
        match vm_id {
            Some(id) => format!("VM {id} is running on node {}", self.node),
            None => format!("the VM is running on node {}", self.node),
        }
    }

    /// Resolves `machine` against the input. `raw_spec` is the observed XR's
    /// spec as sent, to tell a value the user wrote from a model default.
    pub fn new(
        machine: &Machine,
        raw_spec: Option<&Json>,
        input: &InputSpec,
        files: fabric_cloudinit::Seed,
    ) -> Result<Plan, Failure> {
        let written = |field: &str| {
            raw_spec
                .and_then(|s| s.pointer(&format!("/proxmox/{field}")))
                .is_some_and(|v| !v.is_null())
        };
        // Every problem at once, so a new Composition is fixed in one go.
        let mut problems = Vec::new();
        let node = match (&machine.proxmox.node, &input.proxmox.node) {
            (Some(n), _) | (None, Some(n)) => n.clone(),
            (None, None) => {
                problems.push(Diagnostic::error(
                    "spec.proxmox.node",
                    None,
                    "no Proxmox node: the machine does not name one and the function input has no default",
                ).hint("set spec.proxmox.node, or proxmox.node in the Composition's function input"));
                String::new()
            }
        };
        let storage = match (&input.proxmox.storage, written("storage")) {
            (Some(s), false) => s.clone(),
            _ => machine.proxmox.storage.clone(),
        };
        let bridge = match (&input.proxmox.bridge, written("bridge")) {
            (Some(b), false) => b.clone(),
            _ => machine.proxmox.bridge.clone(),
        };
        let (template_vm_id, boot_disk) = match input.templates.get(&machine.image) {
            Some(t) => (t.vm_id.0, t.boot_disk.as_str().to_string()),
            None => {
                let known: Vec<&str> = input.templates.keys().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "the function input lists no templates; add templates: {<image>: {vmId: <template VM id>}}".to_string()
                } else {
                    match fabric_model::schema::closest(&machine.image, known.iter().copied()) {
                        Some(n) => format!("did you mean {n}? known images: {}", known.join(", ")),
                        None => format!("known images: {}", known.join(", ")),
                    }
                };
                problems.push(
                    Diagnostic::error(
                        "spec.image",
                        None,
                        format!("{} is not a template the function knows", machine.image),
                    )
                    .hint(hint),
                );
                (0, String::new())
            }
        };
        if !problems.is_empty() {
            return Err(Failure(problems));
        }
        let net = &machine.network;
        let ipv4 = net
            .ipv4
            .map(|(addr, gw)| (addr.to_string(), gw.map(|g| g.to_string())));
        let ipv6 = net
            .ipv6
            .map(|(addr, gw)| (addr.to_string(), gw.map(|g| g.to_string())));
        let mut tags: Vec<String> = machine
            .tags
            .iter()
            // '.' is a valid Proxmox tag character that neither keys nor
            // values may contain, so key.value reads back unambiguously.
            .map(|(k, v)| format!("{k}.{v}"))
            .chain(std::iter::once(FABRIC_TAG.to_string()))
            .collect();
        tags.sort();
        tags.dedup();
        let owner = match &machine.namespace {
            Some(ns) => format!("{ns}/{}", machine.name),
            None => machine.name.clone(),
        };
        let instance_id = machine.instance_id();
        Ok(Plan {
            scope: match machine.kind {
                MachineKind::Machine => Scope::Namespaced,
                MachineKind::XMachine => Scope::Cluster,
            },
            provider_config: input.provider_config_ref.clone(),
            owner,
            hostname: machine.hostname.clone(),
            node,
            storage,
            bridge,
            vlan: machine.proxmox.vlan,
            mac: machine.network.mac.as_ref().map(|m| m.to_upper()),
            snippet_datastore: input.proxmox.snippet_datastore.clone(),
            template_vm_id,
            boot_disk,
            cores: machine.cores,
            sockets: machine.sockets,
            memory_mib: machine.memory_mib,
            disk_gib: machine.disk_gib,
            ipv4,
            ipv6,
            dns: net.dns.iter().map(ToString::to_string).collect(),
            search_domains: net.search_domains.clone(),
            tags,
            user_data: files.user_data,
            meta_data: files.meta_data,
            network_config: files.network_config,
            file_name: format!("{instance_id}.user-data.yaml"),
            instance_id,
        })
    }

    /// `spec.providerConfigRef` of every composed resource. Cluster-scoped
    /// managed resources name only the config; a kind there is refused.
    pub fn provider_config_ref(&self) -> Json {
        match self.scope {
            Scope::Namespaced => json!({
                "kind": self.provider_config.kind.as_str(),
                "name": self.provider_config.name,
            }),
            Scope::Cluster => json!({"name": self.provider_config.name}),
        }
    }

    /// The snippet's Proxmox volume id, as the provider reports it once
    /// uploaded (`<datastore>:snippets/<file>`).
    pub fn expected_file_id(&self) -> String {
        self.volume_id(&self.file_name)
    }

    /// The volume id of a snippet file of this machine's datastore.
    pub fn volume_id(&self, file_name: &str) -> String {
        format!("{}:snippets/{file_name}", self.snippet_datastore)
    }

    /// The cloud-init files uploaded as snippets, by composition name:
    /// (name, file name, content). user-data first; network-config only
    /// for a static network.
    pub fn snippet_files(&self) -> Vec<(&'static str, String, &str)> {
        let mut files = vec![
            ("user-data", self.file_name.clone(), self.user_data.as_str()),
            (
                "meta-data",
                format!("{}.meta-data.yaml", self.instance_id),
                self.meta_data.as_str(),
            ),
        ];
        if let Some(n) = &self.network_config {
            files.push((
                "network-config",
                format!("{}.network-config.yaml", self.instance_id),
                n.as_str(),
            ));
        }
        files
    }

    /// Text for the VM's Proxmox description.
    pub fn description(&self) -> String {
        format!(
            "Managed by Fabric for Machine {}. Edit the Machine, not this VM.",
            self.owner
        )
    }
}
