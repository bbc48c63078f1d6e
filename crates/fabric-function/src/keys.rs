//! SSH keys from the Secret named by `spec.bootstrap.sshAuthorizedKeysSecretRef`.
//!
//! The Secret is asked for as a required resource, by name, in the XR's own
//! namespace, on every call (Crossplane stops asking once the requirement is
//! stable). A Secret from any other namespace is ignored, whatever sent it.
//! Its content is key material: nothing here logs or reports it, only the
//! Secret's namespace, name and data key.

use fabric_model::source::Node;
use fabric_model::{AuthorizedKey, Diagnostic, Machine, MachineKind};
use function_sdk_rust::proto::v1::{RunFunctionRequest, RunFunctionResponse};
use function_sdk_rust::request;
use function_sdk_rust::response::{self, ResourceMatch};
use serde_json::Value as Json;

use crate::Failure;

/// Requirement name of the keys Secret.
pub const REQUIREMENT: &str = "fabric-ssh-keys";

/// The label Crossplane puts on a legacy XR created through a claim.
pub const CLAIM_NAMESPACE_LABEL: &str = "crossplane.io/claim-namespace";

/// Where a Secret the machine needs stands: by default, the keys Secret's.
#[derive(Debug)]
pub enum Keys<T = Vec<AuthorizedKey>> {
    /// The machine takes nothing from a Secret.
    NotNeeded,
    /// What the Secret holds.
    Known(T),
    /// Not readable yet; why, naming only the Secret.
    Waiting(String),
    /// Crossplane has not fetched the Secret for this call yet (the first
    /// call of every reconcile); it calls again with it.
    NotFetched(String),
}

/// Asks for the Secret and reads it once Crossplane supplies it.
pub fn resolve(
    req: &RunFunctionRequest,
    machine: &Machine,
    xr: &Json,
    rsp: &mut RunFunctionResponse,
) -> Result<Keys, Failure> {
    let Some(secret_ref) = &machine.ssh_keys_secret else {
        return Ok(Keys::NotNeeded);
    };
    let found = require_secret(
        req,
        rsp,
        machine,
        xr,
        SecretRequirement {
            requirement: REQUIREMENT,
            field: "spec.bootstrap.sshAuthorizedKeysSecretRef",
            name: &secret_ref.name,
            holds: "SSH keys",
            key: Some(&secret_ref.key),
            in_log: "Secret",
        },
    )?;
    let (secret, what) = match found {
        Fetch::Found { secret, namespace } => (
            secret,
            format!(
                "Secret {namespace}/{} (key {})",
                secret_ref.name, secret_ref.key
            ),
        ),
        Fetch::Pending(state) => return Ok(state),
    };
    match fabric_model::secret::keys_from_secret(&secret, &secret_ref.key) {
        Ok(keys) => Ok(Keys::Known(keys)),
        Err(diags) => Err(Failure(
            diags
                .into_iter()
                .map(|d| Diagnostic {
                    path: format!("{what}: {}", d.path),
                    ..d
                })
                .collect(),
        )),
    }
}

/// A Secret the machine names, to ask Crossplane for.
pub(crate) struct SecretRequirement<'a> {
    /// The requirement's name in the request and the response.
    pub requirement: &'a str,
    /// The Machine field that names the Secret.
    pub field: &'a str,
    /// The Secret's name.
    pub name: &'a str,
    /// What it holds, as the waiting messages say: "SSH keys".
    pub holds: &'a str,
    /// The data key read, when the machine names one.
    pub key: Option<&'a str>,
    /// What the log calls it: "Secret", "credential Secret".
    pub in_log: &'a str,
}

/// What Crossplane's answer for a [`SecretRequirement`] gives.
pub(crate) enum Fetch<T> {
    /// The Secret, and the machine's namespace it was asked for in.
    Found { secret: Node, namespace: String },
    /// Nothing to read yet: the state to report.
    Pending(Keys<T>),
}

/// Asks for the Secret by name in the machine's own namespace (see
/// [`own_namespace`]) and picks it out of what Crossplane sent: anything
/// else it sent, from another namespace or of another kind, is ignored
/// (and logged by count, never by content).
pub(crate) fn require_secret<T>(
    req: &RunFunctionRequest,
    rsp: &mut RunFunctionResponse,
    machine: &Machine,
    xr: &Json,
    wanted: SecretRequirement<'_>,
) -> Result<Fetch<T>, Failure> {
    let namespace = own_namespace(machine, xr, wanted.field)?;
    response::require_resources(
        rsp,
        wanted.requirement,
        "v1",
        "Secret",
        Some(ResourceMatch::Name(wanted.name.to_string())),
        Some(namespace.clone()),
    );
    let what = match wanted.key {
        Some(key) => format!(
            "{} Secret {namespace}/{} (key {key})",
            wanted.holds, wanted.name
        ),
        None => format!("{} Secret {namespace}/{}", wanted.holds, wanted.name),
    };
    let Some(found) = request::get_required_resources(req, wanted.requirement) else {
        return Ok(Fetch::Pending(Keys::NotFetched(format!(
            "waiting for Crossplane to fetch the {what}"
        ))));
    };
    let is_ours = |s: &&Json| {
        s.pointer("/metadata/namespace").and_then(Json::as_str) == Some(namespace.as_str())
            && s.pointer("/metadata/name").and_then(Json::as_str) == Some(wanted.name)
            && s.get("kind").and_then(Json::as_str) == Some("Secret")
    };
    let ignored = found.iter().filter(|s| !is_ours(s)).count();
    if ignored > 0 {
        tracing::warn!(
            ignored,
            namespace = %namespace,
            secret = %wanted.name,
            "ignored required resources that are not the machine's own {}",
            wanted.in_log
        );
    }
    Ok(match found.iter().find(is_ours) {
        Some(secret) => Fetch::Found {
            secret: Node::from_json(secret),
            namespace,
        },
        None => Fetch::Pending(Keys::Waiting(format!(
            "the {what} does not exist; create it, or fix {}",
            wanted.field
        ))),
    })
}

/// The namespace a machine's Secret must live in: a Machine's own; for a
/// legacy XMachine, the namespace of the claim it was created through.
/// `field` is the Machine field that names the Secret.
pub(crate) fn own_namespace(machine: &Machine, xr: &Json, field: &str) -> Result<String, Failure> {
    match machine.kind {
        MachineKind::Machine => machine.namespace.clone().ok_or_else(|| {
            Failure::invalid(
                "metadata.namespace",
                "a Machine is namespaced, but this one has no namespace",
                "Crossplane sets it; render a namespaced Machine with metadata.namespace",
            )
        }),
        MachineKind::XMachine => xr
            .pointer("/metadata/labels")
            .and_then(|l| l.get(CLAIM_NAMESPACE_LABEL))
            .and_then(Json::as_str)
            .filter(|ns| !ns.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                Failure::invalid(
                    field,
                    "a cluster-scoped XMachine not made through a claim has no namespace to read a Secret from",
                    if field == fabric_model::credential::FIELD {
                        "create the XMachine through its Machine claim, or use a namespaced Machine"
                    } else {
                        "give the keys inline in sshAuthorizedKeys, create the XMachine through its Machine claim, or use a namespaced Machine"
                    },
                )
            }),
    }
}
