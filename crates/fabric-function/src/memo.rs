//! Remembers, between calls, the validated Machine and its plan, and the
//! last whole answer per XR.
//!
//! Crossplane calls the function for every reconcile of every Machine, and
//! for a Running machine nothing Fabric reads has changed since the last
//! call: validating the spec and rendering user-data again is most of the
//! function's work. Machine and plan entries are found by a hash and then
//! compared in full (the XR's identity and spec, the input, the Secret's
//! keys), so a hit is exactly the same inputs and gives exactly the same
//! plan; a miss is computed as if there were no memo. Status, metadata other
//! than identity, and observed resources are not part of that key, and are
//! never cached there.
//!
//! Answers: a request equal in every field to the one answered last for its
//! XR (the XR with its status and metadata, observed composed resources,
//! desired state from earlier steps, input, context, meta tag) gets a clone
//! of that response. [`crate::run`] is a pure function of its request, so
//! this is the answer a fresh run gives; any change anywhere in the request
//! is a miss, computed anew through the machine and plan memo. This is the
//! call Crossplane repeats for a Running machine, and answering it skips
//! converting the XR, composing the objects as JSON and converting them to
//! protobuf Structs. A request carrying Secret content (required resources
//! such as the keys Secret, credentials, connection details) is never
//! remembered whole, so no more key material is held than the plan memo's
//! public keys.
//!
//! The memo is bounded ([`CAPACITY`] machines, [`ANSWER_BUDGET_BYTES`] of
//! answers) so memory stays flat however many machines a function pod serves.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use fabric_model::Machine;
use function_sdk_rust::proto::v1::{RunFunctionRequest, RunFunctionResponse};
use pbjson_types::value::Kind;
use serde_json::Value as Json;

use crate::plan::Plan;

/// Machines remembered at most.
pub const CAPACITY: usize = 256;

/// Plans remembered per machine (one per input and key set in use).
const PLANS_PER_MACHINE: usize = 4;

/// What identifies a Machine's validation: kind, identity and spec.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineKey {
    kind: Json,
    api_version: Json,
    name: Json,
    namespace: Json,
    uid: Json,
    claim_namespace: Json,
    spec: Json,
}

impl MachineKey {
    /// The parts of the observed XR that validation and the plan read.
    pub fn of(xr: &Json) -> MachineKey {
        let at = |p: &str| xr.pointer(p).cloned().unwrap_or(Json::Null);
        MachineKey {
            kind: at("/kind"),
            api_version: at("/apiVersion"),
            name: at("/metadata/name"),
            namespace: at("/metadata/namespace"),
            uid: at("/metadata/uid"),
            claim_namespace: xr
                .pointer("/metadata/labels")
                .and_then(|l| l.get(crate::keys::CLAIM_NAMESPACE_LABEL))
                .cloned()
                .unwrap_or(Json::Null),
            spec: at("/spec"),
        }
    }

    fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for part in [
            &self.kind,
            &self.api_version,
            &self.name,
            &self.namespace,
            &self.uid,
            &self.claim_namespace,
            &self.spec,
        ] {
            hash_json(part, &mut h);
        }
        h.finish()
    }
}

/// What a plan depends on besides the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanKey {
    /// The step's input as sent.
    pub input: Json,
    /// The Secret's keys, as authorized_keys lines (public keys).
    pub secret_keys: Option<Vec<String>>,
    /// The fleet credential (its `Debug` shows no secret).
    pub credential: Option<fabric_model::credential::Credential>,
}

struct Entry {
    key: MachineKey,
    machine: Arc<Machine>,
    plans: Vec<(PlanKey, Arc<Plan>)>,
}

/// Whole answers remembered at most, counted as the encoded size of each
/// request plus its response. In memory, as prost messages, they take up to
/// about 8 times that (measured: 256 small answers, 229 kB encoded, 1.7 MiB
/// of RSS), so at most about 8 MiB; a Running machine's answer is about
/// 12 kB encoded, so some 80 machines are answered from here and the rest
/// from the machine and plan memo.
pub const ANSWER_BUDGET_BYTES: usize = 1024 * 1024;

/// An answer bigger than this is not remembered: one huge machine must not
/// push every other one out.
const ANSWER_MAX_BYTES: usize = ANSWER_BUDGET_BYTES / 8;

/// A request and the response [`crate::run`] gave it.
struct Answer {
    request: RunFunctionRequest,
    response: RunFunctionResponse,
    bytes: usize,
}

/// The last answer per XR, within [`ANSWER_BUDGET_BYTES`].
#[derive(Default)]
struct Answers {
    by_xr: HashMap<u64, Arc<Answer>>,
    bytes: usize,
}

impl Answers {
    fn forget(&mut self, xr: u64) -> Option<Arc<Answer>> {
        let old = self.by_xr.remove(&xr)?;
        self.bytes = self.bytes.saturating_sub(old.bytes);
        Some(old)
    }
}

/// The memo. One per process; see [`global`].
#[derive(Default)]
pub struct Memo {
    entries: Mutex<HashMap<u64, Entry>>,
    answers: Mutex<Answers>,
}

impl Memo {
    /// The response given to a request equal to `req` in every field, if it
    /// is the last one answered for its XR.
    pub fn answer(&self, req: &RunFunctionRequest) -> Option<RunFunctionResponse> {
        if carries_secrets(req) {
            return None;
        }
        let xr = xr_identity(req);
        // The comparison and the clone happen outside the lock.
        let last = self.answers.lock().ok()?.by_xr.get(&xr).cloned()?;
        (last.request == *req).then(|| last.response.clone())
    }

    /// Remembers `rsp` as the answer to `req`, replacing the XR's last one.
    pub fn remember_answer(&self, req: &RunFunctionRequest, rsp: &RunFunctionResponse) {
        if carries_secrets(req) {
            self.store(xr_identity(req), 0, None);
            return;
        }
        let bytes = prost::Message::encoded_len(req) + prost::Message::encoded_len(rsp);
        let kept = (bytes <= ANSWER_MAX_BYTES).then(|| (req.clone(), rsp.clone()));
        self.store(xr_identity(req), bytes, kept);
    }

    /// [`Memo::remember_answer`] for a caller that owns both: nothing is copied.
    pub fn keep_answer(&self, req: RunFunctionRequest, rsp: RunFunctionResponse) {
        let bytes = prost::Message::encoded_len(&req) + prost::Message::encoded_len(&rsp);
        let xr = xr_identity(&req);
        let kept = (bytes <= ANSWER_MAX_BYTES).then_some((req, rsp));
        self.store(xr, bytes, kept);
    }

    /// Replaces the XR's last answer with `kept`, if any, within the budget.
    fn store(
        &self,
        xr: u64,
        bytes: usize,
        kept: Option<(RunFunctionRequest, RunFunctionResponse)>,
    ) {
        let kept = kept.filter(|(request, _)| !carries_secrets(request));
        let mut old = Vec::new();
        if let Ok(mut answers) = self.answers.lock() {
            old.push(answers.forget(xr));
            if let Some((request, response)) = kept {
                while answers.bytes + bytes > ANSWER_BUDGET_BYTES || answers.by_xr.len() >= CAPACITY
                {
                    // Any answer will do: a bounded memo matters, which one goes does not.
                    let Some(victim) = answers.by_xr.keys().next().copied() else {
                        break;
                    };
                    old.push(answers.forget(victim));
                }
                answers.bytes += bytes;
                answers.by_xr.insert(
                    xr,
                    Arc::new(Answer {
                        request,
                        response,
                        bytes,
                    }),
                );
            }
        }
        // Old answers are freed outside the lock.
        drop(old);
    }

    /// How many whole answers are remembered, and their encoded bytes.
    pub fn answers(&self) -> (usize, usize) {
        self.answers
            .lock()
            .map(|a| (a.by_xr.len(), a.bytes))
            .unwrap_or((0, 0))
    }

    /// The machine validated from exactly this key, if remembered.
    pub fn machine(&self, key: &MachineKey) -> Option<Arc<Machine>> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(&key.digest())
            .filter(|e| &e.key == key)
            .map(|e| e.machine.clone())
    }

    /// Remembers a valid machine.
    pub fn remember_machine(&self, key: MachineKey, machine: Arc<Machine>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let digest = key.digest();
        if entries.len() >= CAPACITY && !entries.contains_key(&digest) {
            // Any entry will do: a bounded memo matters, which one goes does not.
            if let Some(victim) = entries.keys().next().copied() {
                entries.remove(&victim);
            }
        }
        entries.insert(
            digest,
            Entry {
                key,
                machine,
                plans: Vec::new(),
            },
        );
    }

    /// The plan made for this machine with exactly these inputs.
    pub fn plan(&self, key: &MachineKey, plan_key: &PlanKey) -> Option<Arc<Plan>> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(&key.digest()).filter(|e| &e.key == key)?;
        entry
            .plans
            .iter()
            .find(|(k, _)| k == plan_key)
            .map(|(_, p)| p.clone())
    }

    /// Remembers a plan for a remembered machine.
    pub fn remember_plan(&self, key: &MachineKey, plan_key: PlanKey, plan: Arc<Plan>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let Some(entry) = entries.get_mut(&key.digest()).filter(|e| &e.key == key) else {
            return;
        };
        if entry.plans.len() >= PLANS_PER_MACHINE {
            entry.plans.remove(0);
        }
        entry.plans.push((plan_key, plan));
    }

    /// How many machines are remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The process-wide memo [`crate::run`] uses.
pub fn global() -> &'static Memo {
    static MEMO: std::sync::LazyLock<Memo> = std::sync::LazyLock::new(Memo::default);
    &MEMO
}

/// True when the request carries Secret content: credentials, required (or
/// extra) resources such as the keys Secret, or connection details. Such a
/// request is never remembered whole, so the memo holds no more key
/// material than the machine and plan memo does (the Secret's public keys).
/// The destructuring names every field, so a field added to the protocol
/// fails to compile here until someone decides whether it is secret.
pub(crate) fn carries_secrets(req: &RunFunctionRequest) -> bool {
    use function_sdk_rust::proto::v1::{Resource, State};
    let RunFunctionRequest {
        meta: _,
        observed,
        desired,
        input: _,
        context: _,
        extra_resources,
        credentials,
        required_resources,
        // OpenAPI schemas Crossplane sends when asked: no Secret content.
        required_schemas: _,
    } = req;
    let connection_details = |state: &Option<State>| {
        state.as_ref().is_some_and(
            |State {
                 composite,
                 resources,
             }| {
                let has = |r: &Resource| {
                    let Resource {
                        resource: _,
                        connection_details,
                        ready: _,
                    } = r;
                    !connection_details.is_empty()
                };
                composite.as_ref().is_some_and(has) || resources.values().any(has)
            },
        )
    };
    !credentials.is_empty()
        || !required_resources.is_empty()
        || !extra_resources.is_empty()
        || connection_details(observed)
        || connection_details(desired)
}

/// Which XR a request is about: its kind, API version, namespace, name and
/// uid, read from the protobuf Struct without converting it. It only picks
/// the slot; a remembered answer is used only for an equal request.
fn xr_identity(req: &RunFunctionRequest) -> u64 {
    fn text<'a>(s: Option<&'a pbjson_types::Struct>, key: &str) -> Option<&'a str> {
        match s?.fields.get(key)?.kind.as_ref()? {
            Kind::StringValue(v) => Some(v.as_str()),
            _ => None,
        }
    }
    let xr = req
        .observed
        .as_ref()
        .and_then(|o| o.composite.as_ref())
        .and_then(|c| c.resource.as_ref());
    let metadata = xr
        .and_then(|x| x.fields.get("metadata"))
        .and_then(|m| match m.kind.as_ref() {
            Some(Kind::StructValue(m)) => Some(m),
            _ => None,
        });
    let mut h = DefaultHasher::new();
    for part in [
        text(xr, "apiVersion"),
        text(xr, "kind"),
        text(metadata, "namespace"),
        text(metadata, "name"),
        text(metadata, "uid"),
    ] {
        part.hash(&mut h);
    }
    h.finish()
}

/// A hash of a JSON value that does not depend on object key order: the
/// objects come from protobuf Structs, whose order changes from call to call.
fn hash_json(v: &Json, h: &mut DefaultHasher) {
    match v {
        Json::Null => 0u8.hash(h),
        Json::Bool(b) => (1u8, b).hash(h),
        Json::Number(n) => (2u8, n.to_string()).hash(h),
        Json::String(s) => (3u8, s).hash(h),
        Json::Array(items) => {
            (4u8, items.len()).hash(h);
            for i in items {
                hash_json(i, h);
            }
        }
        Json::Object(m) => {
            let mut sum = 0u64;
            for (k, v) in m {
                let mut eh = DefaultHasher::new();
                k.hash(&mut eh);
                hash_json(v, &mut eh);
                sum = sum.wrapping_add(eh.finish());
            }
            (5u8, m.len(), sum).hash(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_digest_but_values_do() {
        let a = MachineKey::of(
            &json!({"kind": "Machine", "spec": {"a": 1, "b": [1, {"x": "y", "z": null}]}}),
        );
        let b = MachineKey::of(
            &json!({"spec": {"b": [1, {"z": null, "x": "y"}], "a": 1}, "kind": "Machine"}),
        );
        let c = MachineKey::of(
            &json!({"kind": "Machine", "spec": {"a": 2, "b": [1, {"x": "y", "z": null}]}}),
        );
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a, b);
        assert_ne!(a.digest(), c.digest());
        assert_ne!(a, c);
    }

    #[test]
    fn status_and_other_metadata_are_not_part_of_the_key() {
        let a = MachineKey::of(
            &json!({"kind": "Machine", "metadata": {"name": "m", "resourceVersion": "1"}, "spec": {}, "status": {"phase": "Running"}}),
        );
        let b = MachineKey::of(
            &json!({"kind": "Machine", "metadata": {"name": "m", "resourceVersion": "2"}, "spec": {}}),
        );
        assert_eq!(a, b);
        let c = MachineKey::of(
            &json!({"kind": "Machine", "metadata": {"name": "m", "uid": "other"}, "spec": {}}),
        );
        assert_ne!(a, c);
    }
}
