//! Whatever the input, reading a manifest returns a machine or diagnostics;
//! it never panics, and every diagnostic of a Machine names a field.

use fabric_model::machine::{parse_stream, Parsed};
use fabric_model::Machine;
use proptest::prelude::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIKgbSVplTIryI0rlsezozbM059+F0MeTz+99B8cYy6s alice@laptop";

fn template(
    host: &str,
    ip: &str,
    gw: &str,
    mac: &str,
    flake: &str,
    user: &str,
    tag: &str,
) -> String {
    // Values are emitted as JSON strings, which are valid YAML scalars, so the
    // property is about validation, not about YAML quoting.
    let q = |s: &str| serde_json::to_string(s).unwrap();
    format!(
        "apiVersion: infra.kubelize.io/v1alpha1\nkind: Machine\nmetadata: {{name: m}}\nspec:\n  hostname: {}\n  class: small\n  image: t\n  network: {{ip: {}, gateway: {}, macAddress: {}}}\n  nix: {{flakeRef: {}}}\n  bootstrap: {{adminUser: {}, sshAuthorizedKeys: [{}]}}\n  tags: {{role: {}}}\n",
        q(host), q(ip), q(gw), q(mac), q(flake), q(user), q(KEY), q(tag)
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = parse_stream(&text);
    }

    #[test]
    fn arbitrary_yaml_like_text_never_panics(text in "([a-z]{1,6}: ?(\\[|\\{|-|\"|'|&|\\*|!|\\||>|[0-9a-z:. ]{0,8})\n {0,4}){0,12}") {
        let _ = parse_stream(&text);
    }

    #[test]
    fn arbitrary_field_values_give_a_machine_or_located_errors(
        host in "\\PC{0,70}", ip in "[0-9./a-f:]{0,20}", gw in "[0-9.]{0,16}",
        mac in "[0-9A-Fa-f:zZ-]{0,20}", flake in "\\PC{0,60}", user in "\\PC{0,40}", tag in "\\PC{0,20}",
    ) {
        let yaml = template(&host, &ip, &gw, &mac, &flake, &user, &tag);
        match Machine::from_yaml(&yaml) {
            Ok(m) => {
                prop_assert_eq!(m.hostname, host);
                prop_assert!(m.network.ipv4.is_some());
            }
            Err(diags) => {
                prop_assert!(!diags.is_empty());
                for d in diags {
                    prop_assert!(d.path.starts_with("spec.") || d.path.is_empty(), "{}", d);
                    prop_assert!(d.pos.is_some(), "{} has no position", d);
                }
            }
        }
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let _ = Machine::from_json(&v);
        let wrapped = serde_json::json!({"apiVersion": "infra.kubelize.io/v1alpha1", "kind": "Machine", "metadata": {"name": "m"}, "spec": v});
        let _ = Machine::from_json(&wrapped);
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|n| serde_json::json!(n)),
        "\\PC{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("hostname".to_string()),
                    Just("network".to_string()),
                    Just("ip".to_string()),
                    Just("cpu".to_string()),
                    Just("cores".to_string()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn documents_that_are_not_machines_are_passed_over() {
    let docs = parse_stream("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n---\n- a list\n");
    assert!(docs.iter().all(|d| matches!(d, Parsed::NotAMachine { .. })));
}
