//! The Machine resource as users write it and as the cluster stores it.
//!
//! These serde types are the one description of the API: the XRD's
//! openAPIV3Schema is generated from them (see [`crate::schema`]), and the
//! parser checks manifests against that same schema, so a field cannot exist
//! in one and not the other. Semantic rules (subnets, keys, flake references)
//! live in [`crate::machine`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `apiVersion` of Machine and XMachine.
pub const API_VERSION: &str = "infra.kubelize.io/v1alpha1";
/// The API group.
pub const API_GROUP: &str = "infra.kubelize.io";

/// The desired state of one NixOS virtual machine on Proxmox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineSpec {
    /// Host name of the machine: an RFC 1123 label (lowercase letters, digits
    /// and '-', at most 63 characters). Also the Proxmox VM name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub hostname: String,

    /// DNS domain. The machine's FQDN is hostname.domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub domain: Option<String>,

    /// Size preset: small (2 cores, 4096 MiB, 32 GiB), medium (4, 8192, 100)
    /// or large (8, 16384, 200). Explicit cpu, memory and disk override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<SizeClass>,

    /// Virtual CPUs. Required unless class is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,

    /// Memory. Required unless class is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,

    /// Root disk. Defaults to the class's size, or 32 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Disk>,

    /// Name of the Proxmox NixOS template to clone.
    #[schemars(length(min = 1))]
    pub image: String,

    /// Guest network. Absent, or dhcp: true, means DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,

    /// Where the VM lives in Proxmox. Used by the composition function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox: Option<Proxmox>,

    /// The NixOS configuration the machine converges on.
    pub nix: Nix,

    /// The first-boot admin user and its SSH keys. At least one key is
    /// needed, inline or through a Secret.
    #[serde(default)]
    pub bootstrap: Bootstrap,

    /// Labels copied to the Proxmox VM as tags. Keys and values use lowercase
    /// letters, digits, '-' and '_'.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Size presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum SizeClass {
    // Variants carry no doc comments: with them schemars emits a oneOf of
    // consts, which a Kubernetes structural schema cannot express.
    Small,
    Medium,
    Large,
}

impl SizeClass {
    /// (cores, memory MiB, disk GiB)
    pub fn size(self) -> (u32, u32, u32) {
        match self {
            SizeClass::Small => (2, 4096, 32),
            SizeClass::Medium => (4, 8192, 100),
            SizeClass::Large => (8, 16384, 200),
        }
    }
}

/// Virtual CPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cpu {
    /// Cores per socket.
    #[schemars(range(min = 1, max = 128))]
    pub cores: u32,
    /// Sockets.
    #[serde(default = "default_sockets")]
    #[schemars(range(min = 1, max = 4))]
    pub sockets: u32,
}

fn default_sockets() -> u32 {
    1
}

/// Memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Memory {
    /// Size in MiB.
    #[schemars(range(min = 512, max = 524288))]
    pub size: u32,
}

/// Root disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Disk {
    /// Size in GiB.
    #[schemars(range(min = 8, max = 65536))]
    pub size: u32,
}

/// Guest network.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// true: DHCP (ip, gateway and ipv6 must then be absent). false: the
    /// static addresses below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<bool>,
    /// NIC name in the guest.
    #[serde(default = "default_interface")]
    #[schemars(length(min = 1, max = 15))]
    pub interface: String,
    /// MAC address of the NIC, six hex octets (e.g. BC:24:11:5E:00:01). Pins
    /// the NIC in Proxmox and is matched in network-config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"))]
    pub mac_address: Option<String>,
    /// Static IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// IPv4 prefix length.
    #[serde(default = "default_cidr")]
    #[schemars(range(min = 1, max = 32))]
    pub cidr: u8,
    /// IPv4 default gateway, inside ip/cidr and not the ip itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers, as IP addresses.
    #[serde(default = "default_dns")]
    pub dns: Vec<String>,
    /// DNS search domains. Default: [domain] when domain is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_domains: Option<Vec<String>>,
    /// Static IPv6, alongside IPv4 or alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6>,
}

fn default_interface() -> String {
    "ens18".into()
}
fn default_cidr() -> u8 {
    24
}
fn default_dns() -> Vec<String> {
    vec!["1.1.1.1".into(), "8.8.8.8".into()]
}

/// Static IPv6 configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ipv6 {
    /// IPv6 address.
    pub address: String,
    /// Prefix length.
    #[serde(default = "default_prefix")]
    #[schemars(range(min = 1, max = 128))]
    pub prefix: u8,
    /// IPv6 default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

fn default_prefix() -> u8 {
    64
}

/// Proxmox placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxmox {
    /// Proxmox node. Defaults to the function input's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Datastore for the VM disk.
    #[serde(default = "default_storage")]
    pub storage: String,
    /// Bridge for the NIC.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// VLAN tag of the NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan: Option<u16>,
}

fn default_storage() -> String {
    "local-zfs".into()
}
fn default_bridge() -> String {
    "vmbr0".into()
}

/// The NixOS configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Nix {
    /// Flake reference naming the nixosConfiguration after '#', e.g.
    /// git+https://github.com/org/fleet#dns01. Accepted: git+https, git+ssh,
    /// git+file (local tests), github:, gitlab:, sourcehut:, https tarballs.
    /// Never a token: name a Secret in credentialsSecretRef instead.
    #[schemars(length(min = 1))]
    pub flake_ref: String,
    /// A Secret in the machine's namespace holding the credential for a
    /// private flake: ssh-privatekey with known_hosts (git+ssh), or
    /// access-tokens (git+https, github:, gitlab:). It reaches the machine
    /// as root-only files under /etc/fabric/credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// A whole Secret in the machine's own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The first-boot admin user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bootstrap {
    /// Admin user name (POSIX; not root or another system account).
    #[serde(default = "default_admin")]
    #[schemars(length(min = 1, max = 32))]
    pub admin_user: String,
    /// OpenSSH public keys of the admin user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// A Secret in the machine's namespace holding more keys, one per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_authorized_keys_secret_ref: Option<SecretKeyRef>,
}

fn default_admin() -> String {
    "admin".into()
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            admin_user: default_admin(),
            ssh_authorized_keys: Vec::new(),
            ssh_authorized_keys_secret_ref: None,
        }
    }
}

/// A key of a Secret in the machine's own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data.
    #[serde(default = "default_secret_key")]
    pub key: String,
}

fn default_secret_key() -> String {
    "authorized_keys".into()
}

/// Metadata fields Fabric reads. Other Kubernetes metadata is allowed where
/// the cluster adds it (see [`crate::machine::ParseMode`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Object name.
    pub name: String,
    /// Namespace (Machine only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// UID assigned by the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
