//! Remembers the validated Machine and its plan between calls.
//!
//! Crossplane calls the function for every reconcile of every Machine, and
//! for a Running machine nothing Fabric reads has changed since the last
//! call: validating the spec and rendering user-data again is most of the
//! function's work. Entries are found by a hash and then compared in full
//! (the XR's identity and spec, the input, the Secret's keys), so a hit is
//! exactly the same inputs and gives exactly the same plan; a miss is
//! computed as if there were no memo. Status, metadata other than identity,
//! and observed resources are not part of the key, and are never cached.
//!
//! The memo is bounded ([`CAPACITY`] machines) so memory stays flat however
//! many machines a function pod serves.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use fabric_model::Machine;
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
}

struct Entry {
    key: MachineKey,
    machine: Arc<Machine>,
    plans: Vec<(PlanKey, Arc<Plan>)>,
}

/// The memo. One per process; see [`global`].
#[derive(Default)]
pub struct Memo {
    entries: Mutex<HashMap<u64, Entry>>,
}

impl Memo {
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
