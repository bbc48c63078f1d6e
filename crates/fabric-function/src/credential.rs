//! The fleet credential from the Secret named by `spec.nix.credentialsSecretRef`.
//!
//! Read exactly as the SSH keys Secret is ([`crate::keys`]): asked for as a
//! required resource, by name, in the XR's own namespace, on every call; a
//! Secret from any other namespace is ignored, whatever sent it. Its content
//! goes into the user-data and nowhere else: results, conditions, status
//! and logs name the Secret, the credential's kind, host and key
//! fingerprint, never the key or a token.

use fabric_model::credential::{self, Credential};
use fabric_model::source::Node;
use fabric_model::{Diagnostic, Machine};
use function_sdk_rust::proto::v1::{RunFunctionRequest, RunFunctionResponse};
use function_sdk_rust::request;
use function_sdk_rust::response::{self, ResourceMatch};
use serde_json::Value as Json;

use crate::keys::Keys;
use crate::Failure;

/// Requirement name of the credential Secret.
pub const REQUIREMENT: &str = "fabric-fleet-credential";

/// Where the credential stands; the same states as the keys' ([`Keys`]).
pub type State = Keys<Credential>;

/// Asks for the Secret and reads it once Crossplane supplies it.
pub fn resolve(
    req: &RunFunctionRequest,
    machine: &Machine,
    xr: &Json,
    rsp: &mut RunFunctionResponse,
) -> Result<State, Failure> {
    let Some(secret_ref) = &machine.credentials_secret else {
        return Ok(Keys::NotNeeded);
    };
    let namespace = crate::keys::own_namespace(machine, xr, credential::FIELD)?;
    response::require_resources(
        rsp,
        REQUIREMENT,
        "v1",
        "Secret",
        Some(ResourceMatch::Name(secret_ref.name.clone())),
        Some(namespace.clone()),
    );
    let what = format!("fleet credential Secret {namespace}/{}", secret_ref.name);
    let Some(found) = request::get_required_resources(req, REQUIREMENT) else {
        return Ok(Keys::NotFetched(format!(
            "waiting for Crossplane to fetch the {what}"
        )));
    };
    let is_ours = |s: &&Json| {
        s.pointer("/metadata/namespace").and_then(Json::as_str) == Some(namespace.as_str())
            && s.pointer("/metadata/name").and_then(Json::as_str) == Some(secret_ref.name.as_str())
            && s.get("kind").and_then(Json::as_str) == Some("Secret")
    };
    let ignored = found.iter().filter(|s| !is_ours(s)).count();
    if ignored > 0 {
        tracing::warn!(
            ignored,
            namespace = %namespace,
            secret = %secret_ref.name,
            "ignored required resources that are not the machine's own credential Secret"
        );
    }
    let Some(secret) = found.iter().find(is_ours) else {
        return Ok(Keys::Waiting(format!(
            "the {what} does not exist; create it, or fix {}",
            credential::FIELD
        )));
    };
    match credential::from_secret(&Node::from_json(secret), &machine.flake) {
        Ok(c) => {
            tracing::debug!(
                secret = %secret_ref.name,
                credential = %c.describe(),
                "read the fleet credential"
            );
            Ok(Keys::Known(c))
        }
        Err(diags) => Err(Failure(
            diags
                .into_iter()
                .map(|d| Diagnostic {
                    path: format!("{}: {what}: {}", credential::FIELD, d.path),
                    ..d
                })
                .collect(),
        )),
    }
}
