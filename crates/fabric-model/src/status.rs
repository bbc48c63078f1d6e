//! The status the composition function writes on a Machine.
//!
//! Crossplane drops any status field its XRD does not declare, silently. The
//! XRD's status schema is therefore generated from this type, and the
//! function writes nothing but this type, so the two cannot drift apart.
//! Conditions (`Ready`, `Synced`, and the function's own) are not here:
//! Crossplane owns `status.conditions` and declares it in every XRD itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the composition function last saw of the machine's Proxmox resources.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// Where provisioning stands: WaitingForKeys (the SSH keys Secret is not
    /// readable yet), WaitingForSnippet (the cloud-init user-data snippet is
    /// not uploaded yet), Provisioning (the VM is being cloned and started),
    /// Running (the VM is ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Proxmox VM id, once the provider reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 999_999_999))]
    pub vm_id: Option<u32>,

    /// Proxmox node the VM runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// Guest addresses reported by the QEMU guest agent, loopback and
    /// link-local addresses left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,

    /// Proxmox volume id of the uploaded cloud-init user-data snippet, e.g.
    /// local:snippets/fabric-web01-0123456789abcdef.user-data.yaml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_file_id: Option<String>,

    /// cloud-init instance-id of the machine: stable for its namespace, name
    /// and uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

/// Provisioning phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum Phase {
    // Variants carry no doc comments: with them schemars emits a oneOf of
    // consts, which a Kubernetes structural schema cannot express.
    WaitingForKeys,
    WaitingForSnippet,
    Provisioning,
    Running,
}

impl Phase {
    /// The phase as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::WaitingForKeys => "WaitingForKeys",
            Phase::WaitingForSnippet => "WaitingForSnippet",
            Phase::Provisioning => "Provisioning",
            Phase::Running => "Running",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_in_the_api_spelling_and_reads_back() {
        let status = MachineStatus {
            phase: Some(Phase::Running),
            vm_id: Some(104),
            node: Some("pve1".into()),
            ip_addresses: vec!["10.0.1.10".into()],
            user_data_file_id: Some("local:snippets/x.yaml".into()),
            instance_id: Some("fabric-web01-00".into()),
        };
        let json = serde_json::to_value(&status).unwrap_or_default();
        assert_eq!(json["phase"], "Running");
        assert_eq!(json["vmId"], 104);
        assert_eq!(json["ipAddresses"][0], "10.0.1.10");
        assert_eq!(json["userDataFileId"], "local:snippets/x.yaml");
        let back: MachineStatus = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(back, status);
    }

    #[test]
    fn empty_status_is_an_empty_object() {
        let json = serde_json::to_value(MachineStatus::default()).unwrap_or_default();
        assert_eq!(json, serde_json::json!({}));
    }
}
