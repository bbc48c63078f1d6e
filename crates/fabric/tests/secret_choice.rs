//! `render`, `seed` and `compose` choose a machine's keys Secret by the
//! rule the composition function uses (issue 15, item 1): by name and
//! namespace; a Secret file without metadata.namespace is in the machine's
//! namespace, as `kubectl apply` would place it; a legacy XMachine reads its
//! claim's namespace. Each case runs the three commands from the built
//! binary and the function in process, and all four must agree.

use std::path::Path;

use function_sdk_rust::proto::v1::{
    RequestMeta, Resource, Resources, RunFunctionRequest, Severity, State,
};
use function_sdk_rust::resource::json_to_struct;
use serde_json::Value as Json;

mod fabric_binary;
use fabric_binary::{fabric, repo, text};

/// The key in example/secret.yaml (base64 in the file).
const SECRET_KEY_COMMENT: &str = "bob@desk";

/// The Secret of example/secret.yaml with another name and namespace
/// (`None`: no metadata.namespace).
fn secret(name: &str, namespace: Option<&str>) -> String {
    let example = std::fs::read_to_string(repo().join("example/secret.yaml")).unwrap();
    let data = example
        .lines()
        .find(|l| l.trim_start().starts_with("authorized_keys:"))
        .unwrap()
        .to_string();
    let ns = namespace
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n{ns}type: Opaque\ndata:\n{data}\n")
}

fn xmachine(claim_namespace: &str) -> String {
    let xr = std::fs::read_to_string(repo().join("example/xr.yaml")).unwrap();
    xr.replace("kind: Machine\n", "kind: XMachine\n").replace(
        "  namespace: default\n",
        &format!("  labels:\n    crossplane.io/claim-namespace: {claim_namespace}\n"),
    )
}

/// What each party made of the Secret file: did it use the keys?
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    render: bool,
    seed: bool,
    compose: bool,
    function: bool,
}

fn verdict(dir: &Path, machine_yaml: &str, secret_yaml: &str) -> Verdict {
    let machine = dir.join("machine.yaml");
    let secret = dir.join("secret.yaml");
    std::fs::write(&machine, machine_yaml).unwrap();
    std::fs::write(&secret, secret_yaml).unwrap();
    let (m, s) = (machine.to_str().unwrap(), secret.to_str().unwrap());

    let render = fabric(&["render", m, "--secret", s]);
    let rendered = render.status.success() && text(&render.stdout).contains(SECRET_KEY_COMMENT);
    if !render.status.success() {
        // Refused, never with a panic or silently: one located line.
        assert_eq!(render.status.code(), Some(2), "{}", text(&render.stderr));
        assert!(
            text(&render.stderr).contains("secret.yaml:"),
            "{}",
            text(&render.stderr)
        );
    }

    let iso = dir.join("seed.iso");
    let _ = std::fs::remove_file(&iso);
    let seed = fabric(&["seed", m, "--secret", s, "--iso", iso.to_str().unwrap()]);
    let seeded = seed.status.success() && iso.exists();
    if seeded {
        let image = std::fs::read(&iso).unwrap();
        assert!(
            image
                .windows(SECRET_KEY_COMMENT.len())
                .any(|w| w == SECRET_KEY_COMMENT.as_bytes()),
            "a seed made with the Secret holds its key"
        );
    }

    let compose = fabric(&[
        "compose",
        m,
        "--input",
        "example/composition.yaml",
        "--secret",
        s,
    ]);
    assert_eq!(compose.status.code(), Some(0), "{}", text(&compose.stderr));
    let composed = text(&compose.stdout).contains("kind: EnvironmentFile");
    if !composed {
        assert!(text(&compose.stderr).contains("WaitingForKeys"));
    }

    Verdict {
        render: rendered,
        seed: seeded,
        compose: composed,
        function: function_uses(machine_yaml, secret_yaml),
    }
}

/// The function, given the Secret as the cluster would hold it after
/// `kubectl apply -n <machine's namespace>`, whatever the request asked for.
fn function_uses(machine_yaml: &str, secret_yaml: &str) -> bool {
    let xr: Json = serde_saphyr::from_str(machine_yaml).unwrap();
    let applied_ns = xr
        .pointer("/metadata/namespace")
        .or_else(|| xr.pointer("/metadata/labels/crossplane.io~1claim-namespace"))
        .cloned()
        .unwrap();
    let secrets: Vec<Json> = serde_saphyr::from_str_multiple(secret_yaml).unwrap();
    let items = secrets
        .into_iter()
        .map(|mut secret| {
            let meta = secret["metadata"].as_object_mut().unwrap();
            meta.entry("namespace").or_insert(applied_ns.clone());
            Resource {
                resource: secret.as_object().map(json_to_struct),
                ..Default::default()
            }
        })
        .collect();
    let composition: Json = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("example/composition.yaml")).unwrap(),
    )
    .unwrap();
    let input = composition
        .pointer("/spec/pipeline/0/input")
        .cloned()
        .unwrap();
    let req = RunFunctionRequest {
        meta: Some(RequestMeta {
            tag: "t".into(),
            capabilities: vec![],
        }),
        observed: Some(State {
            composite: Some(Resource {
                resource: xr.as_object().map(json_to_struct),
                ..Default::default()
            }),
            resources: Default::default(),
        }),
        desired: Some(State::default()),
        input: input.as_object().map(json_to_struct),
        required_resources: [(
            fabric_function::keys::REQUIREMENT.to_string(),
            Resources { items },
        )]
        .into(),
        ..Default::default()
    };
    let rsp = fabric_function::run(&req);
    assert!(
        rsp.results
            .iter()
            .all(|r| r.severity != Severity::Fatal as i32),
        "{:?}",
        rsp.results
    );
    rsp.desired
        .is_some_and(|d| d.resources.contains_key("user-data"))
}

fn all(v: bool) -> Verdict {
    Verdict {
        render: v,
        seed: v,
        compose: v,
        function: v,
    }
}

#[test]
fn every_command_and_the_function_choose_the_same_secret() {
    let dir = tempfile::tempdir().unwrap();
    let machine = std::fs::read_to_string(repo().join("example/xr.yaml")).unwrap();
    let cases = [
        (
            "the named Secret",
            secret("admin-keys", Some("default")),
            true,
        ),
        (
            "no namespace: the Machine's",
            secret("admin-keys", None),
            true,
        ),
        ("another name", secret("other-keys", Some("default")), false),
        (
            "another name, no namespace",
            secret("other-keys", None),
            false,
        ),
        (
            "another namespace",
            secret("admin-keys", Some("prod")),
            false,
        ),
    ];
    for (what, secret_yaml, used) in &cases {
        assert_eq!(
            verdict(dir.path(), &machine, secret_yaml),
            all(*used),
            "Machine, {what}"
        );
    }
    // Two Secrets in one file: the named one is chosen, whatever the order.
    let two = format!(
        "{}---\n{}",
        secret("other-keys", Some("default")),
        secret("admin-keys", Some("default"))
    );
    assert_eq!(
        verdict(dir.path(), &machine, &two),
        all(true),
        "two Secrets"
    );

    let x = xmachine("team-a");
    let cases = [
        (
            "the claim's namespace",
            secret("admin-keys", Some("team-a")),
            true,
        ),
        (
            "no namespace: the claim's",
            secret("admin-keys", None),
            true,
        ),
        (
            "the XR's own (none)",
            secret("admin-keys", Some("default")),
            false,
        ),
        ("another name", secret("other-keys", Some("team-a")), false),
    ];
    for (what, secret_yaml, used) in &cases {
        assert_eq!(
            verdict(dir.path(), &x, secret_yaml),
            all(*used),
            "XMachine, {what}"
        );
    }
}
