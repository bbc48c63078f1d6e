//! The fleet credential from the Secret named by `spec.nix.credentialsSecretRef`.
//!
//! Read exactly as the SSH keys Secret is ([`crate::keys`]): asked for as a
//! required resource, by name, in the XR's own namespace, on every call; a
//! Secret from any other namespace is ignored, whatever sent it. Its content
//! goes into the user-data and nowhere else: results, conditions, status
//! and logs name the Secret, the credential's kind, host and key
//! fingerprint, never the key or a token.

use fabric_model::credential::{self, Credential};
use fabric_model::{Diagnostic, Machine};
use function_sdk_rust::proto::v1::{RunFunctionRequest, RunFunctionResponse};
use serde_json::Value as Json;

use crate::keys::{require_secret, Fetch, Keys, SecretRequirement};
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
    let found = require_secret(
        req,
        rsp,
        machine,
        xr,
        SecretRequirement {
            requirement: REQUIREMENT,
            field: credential::FIELD,
            name: &secret_ref.name,
            holds: "fleet credential",
            key: None,
            in_log: "credential Secret",
        },
    )?;
    let (secret, what) = match found {
        Fetch::Found { secret, namespace } => (
            secret,
            format!("fleet credential Secret {namespace}/{}", secret_ref.name),
        ),
        Fetch::Pending(state) => return Ok(state),
    };
    match credential::from_secret(&secret, &machine.flake) {
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
