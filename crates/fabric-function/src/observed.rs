//! What Crossplane observed of the composed resources, read defensively:
//! an observed object may be anything, so every accessor returns an Option.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use function_sdk_rust::proto::v1::{Resource, RunFunctionRequest};
use function_sdk_rust::resource::{get_condition, pb_to_json};
use pbjson_types::value::Kind;
use pbjson_types::{Struct, Value as PbValue};
use serde_json::Value as Json;

/// One observed composed resource.
///
/// Kept as the protobuf Struct Crossplane sent: an observed snippet carries
/// the whole user-data, and converting every object to JSON on every call
/// cost more than reading the few fields Fabric needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedResource<'a> {
    object: &'a Struct,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
}

impl<'a> ObservedResource<'a> {
    fn from_resource(r: &'a Resource) -> Option<Self> {
        let object = r.resource.as_ref()?;
        let ready = get_condition(Some(r), "Ready").status == "True";
        Some(Self { object, ready })
    }

    /// A field under `status.atProvider`, by JSON pointer (e.g. `/id`).
    pub fn at_provider(&self, pointer: &str) -> Option<Json> {
        self.field(&format!("/status/atProvider{pointer}"))
    }

    /// Any field, by JSON pointer from the object's root (`/` separated
    /// keys and list indices; no `~` escapes are needed for Fabric's paths).
    pub fn field(&self, pointer: &str) -> Option<Json> {
        let mut parts = pointer.split('/').skip(1);
        let first = parts.next()?;
        let mut cur: &PbValue = self.object.fields.get(first)?;
        for part in parts {
            cur = match cur.kind.as_ref()? {
                Kind::StructValue(s) => s.fields.get(part)?,
                Kind::ListValue(l) => l.values.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(pb_to_json(cur))
    }
}

/// The observed composed resources by their composition name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed<'a> {
    resources: HashMap<&'a str, ObservedResource<'a>>,
}

impl<'a> Observed<'a> {
    /// Reads the request's observed composed resources.
    pub fn from_request(req: &'a RunFunctionRequest) -> Self {
        let resources = req
            .observed
            .as_ref()
            .map(|o| {
                o.resources
                    .iter()
                    .filter_map(|(name, r)| {
                        ObservedResource::from_resource(r).map(|o| (name.as_str(), o))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { resources }
    }

    /// The resource composed under `name`, once Crossplane has observed it.
    pub fn get(&self, name: &str) -> Option<&ObservedResource<'a>> {
        self.resources.get(name)
    }

    /// True when any of `names` exists in the cluster.
    pub fn any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.resources.contains_key(*n))
    }
}

/// A whole number out of a JSON number or numeric string (providers report
/// ids both ways, and Struct turns every number into a float).
pub fn as_u32(value: &Json) -> Option<u32> {
    match value {
        Json::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
                    .map(|f| f as u64)
            })
            .and_then(|v| u32::try_from(v).ok()),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Guest addresses worth showing: every address the agent reported (as a
/// list, or a list of per-interface lists) except loopback and link-local,
/// without duplicates, in reported order.
pub fn guest_addresses(lists: &[Option<Json>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // The guest agent reports these, so a guest decides how many there
    // are: a set keeps the de-duplication linear in them.
    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut push = |v: &Json| {
        let Some(text) = v.as_str() else { return };
        let Ok(ip) = text.trim().parse::<IpAddr>() else {
            return;
        };
        let shown = match ip {
            IpAddr::V4(a) => !(a.is_loopback() || a.is_link_local() || a.is_unspecified()),
            IpAddr::V6(a) => {
                !(a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80)
            }
        };
        if shown && seen.insert(ip) {
            out.push(ip.to_string());
        }
    };
    for list in lists.iter().flatten() {
        let Some(items) = list.as_array() else {
            continue;
        };
        for item in items {
            match item {
                Json::Array(inner) => inner.iter().for_each(&mut push),
                other => push(other),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_come_as_numbers_floats_or_strings() {
        assert_eq!(as_u32(&json!(104)), Some(104));
        assert_eq!(as_u32(&json!(104.0)), Some(104));
        assert_eq!(as_u32(&json!("104")), Some(104));
        assert_eq!(as_u32(&json!(104.5)), None);
        assert_eq!(as_u32(&json!(-1)), None);
        assert_eq!(as_u32(&json!(1e12)), None);
        assert_eq!(as_u32(&json!(null)), None);
    }

    #[test]
    fn guest_addresses_drop_loopback_and_link_local() {
        let v4 = json!([["127.0.0.1"], ["10.0.1.10", "169.254.3.1"], ["10.0.1.10"]]);
        let v6 = json!([["::1"], ["fe80::1", "fd00::10"], "not an address", 7]);
        assert_eq!(
            guest_addresses(&[Some(v4), Some(v6), None]),
            vec!["10.0.1.10".to_string(), "fd00::10".to_string()]
        );
        // Written differently, the same address is still one address.
        let v6 = json!(["fd00::10", "fd00:0::0010", "FD00::10"]);
        assert_eq!(guest_addresses(&[Some(v6)]), vec!["fd00::10".to_string()]);
        let many: Vec<String> = (0..60_000u32)
            .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string())
            .collect();
        let twice = json!([many.clone(), many.clone()]);
        assert_eq!(guest_addresses(&[Some(twice)]), many);
    }
}
