//! Whatever the function is sent, it answers with a response and never
//! panics: arbitrary Structs as XR, input and observed resources, and
//! mutations of a valid Machine.

use fabric_function::run;
use function_sdk_rust::proto::v1::Severity;
use proptest::prelude::*;
use serde_json::{json, Value as Json};

use crate::support::*;

fn arb_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<f64>().prop_map(|f| json!(f)),
        (-5i64..70000).prop_map(|n| json!(n)),
        "[a-zA-Z0-9:./#@ -]{0,20}".prop_map(Json::String),
        prop_oneof![
            Just("Machine"),
            Just("XMachine"),
            Just("infra.kubelize.io/v1alpha1"),
            Just("10.0.1.1"),
            Just("bpg"),
            Just("terraform")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-z]{1,8}".boxed(),
                    prop_oneof![
                        Just("spec"),
                        Just("metadata"),
                        Just("cpu"),
                        Just("cores"),
                        Just("network"),
                        Just("status"),
                        Just("kind")
                    ]
                    .prop_map(str::to_string)
                    .boxed(),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON pointer into the valid machine, and a value to put there.
fn mutation() -> impl Strategy<Value = (Vec<String>, Json)> {
    let paths = prop_oneof![
        Just(vec!["spec", "cpu", "cores"]),
        Just(vec!["spec", "network", "ip"]),
        Just(vec!["spec", "network", "gateway"]),
        Just(vec!["spec", "network", "cidr"]),
        Just(vec!["spec", "network"]),
        Just(vec!["spec", "proxmox", "vlan"]),
        Just(vec!["spec", "bootstrap"]),
        Just(vec!["spec", "tags"]),
        Just(vec!["spec", "image"]),
        Just(vec!["spec"]),
        Just(vec!["metadata"]),
        Just(vec!["metadata", "namespace"]),
        Just(vec!["kind"]),
        Just(vec!["status"]),
    ]
    .prop_map(|p| p.into_iter().map(str::to_string).collect());
    (paths, arb_json())
}

fn set(target: &mut Json, path: &[String], value: Json) {
    let mut cur = target;
    for (i, key) in path.iter().enumerate() {
        if i + 1 == path.len() {
            if let Some(obj) = cur.as_object_mut() {
                obj.insert(key.clone(), value);
            }
            return;
        }
        match cur.get_mut(key) {
            Some(next) => cur = next,
            None => return,
        }
    }
}

fn well_formed(
    rsp: &function_sdk_rust::proto::v1::RunFunctionResponse,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(rsp.meta.as_ref().map(|m| m.tag.as_str()), Some("test"));
    let fatal = rsp
        .results
        .iter()
        .any(|r| r.severity == Severity::Fatal as i32);
    let composed = names(rsp)
        .iter()
        .any(|n| ["user-data", "vm", "workspace"].contains(&n.as_str()));
    prop_assert!(!(fatal && composed), "a Fatal response composes nothing");
    prop_assert!(
        fatal || composed || xr_status(rsp)["phase"] == "WaitingForKeys",
        "every answer says something: {:?}",
        rsp.results
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_structs_never_panic(xr in arb_json(), input in arb_json(), obs in arb_json()) {
        let req = request(&xr, Some(&input), &[("vm", obs.clone()), ("user-data", obs)]);
        let rsp = run(&req);
        well_formed(&rsp)?;
    }

    #[test]
    fn mutated_machines_never_panic((path, value) in mutation(), backend in prop_oneof![Just("bpg"), Just("terraform")]) {
        let mut xr = machine();
        set(&mut xr, &path, value);
        let req = request(&xr, Some(&input(backend)), &[]);
        let rsp = run(&req);
        well_formed(&rsp)?;
        if let Some(msg) = fatal(&rsp) {
            prop_assert!(!msg.is_empty());
        }
        // The remembered answer, if any, is exactly a fresh run's.
        prop_assert_eq!(&run(&req), &rsp);
        prop_assert_eq!(&fabric_function::run_uncached(&req), &rsp);
    }
}
